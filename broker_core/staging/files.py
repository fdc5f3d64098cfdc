"""Copies of local files and directories, confined to the node's data roots.

A path is resolved (``..`` and symbolic links) and checked against the roots; then it is opened
again from its root one component at a time with ``O_NOFOLLOW``, so a link swapped in between the
check and the open fails instead of leading elsewhere. What was opened is checked once more by
its own identity: a regular file or directory, not one of the node's own files (compared by
device and inode, so a hard link to the database is caught too). Directory trees are walked by
file descriptor without following links; links in them are not copied, nor are devices, FIFOs
and sockets. A copy stops at ``max_bytes`` and ``max_files``.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .rules import (
    FILE_TYPE,
    MAX_BYTES,
    MAX_FILES,
    NO_LINKS,
    NODE_FILES,
    StagingFailed,
    StagingRefused,
    StagingRules,
)

CHUNK = 1 << 20
MAX_DEPTH = 64
DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass
class Staged:
    """What one staging made: bytes and files written, and what it left out."""

    bytes: int = 0
    files: int = 0
    skipped: list[str] = field(default_factory=list)  # relative paths not copied, and why

    def notes(self, location: str) -> list[str]:
        if not self.skipped:
            return []
        shown = "; ".join(self.skipped[:5])
        more = f" and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
        return [f"staging {location}: not copied: {shown}{more}"]


def copy_path(path: str, out: Path, rules: StagingRules) -> Staged:
    """Copy the file or directory at ``path`` into the empty directory ``out``: a file keeps
    its name inside it, a directory's contents become its contents."""
    refused = rules.file_refusal(path)
    if refused is not None:
        raise refused
    real = os.path.realpath(path)
    root = rules.root_of(real)
    assert root is not None  # file_refusal checked it
    denied = _identities(rules.denied)
    fd = _open_beneath(root, os.path.relpath(real, root), path)
    try:
        info = os.fstat(fd)
        _check_identity(info, denied, path)
        staged = Staged()
        if stat.S_ISDIR(info.st_mode):
            try:
                _copy_tree(fd, out, rules, denied, staged, "", 0)
            except _Unreadable as exc:
                raise StagingFailed(
                    f"cannot stage {path}: {exc.shown}: {exc.error.strerror or exc.error}"
                ) from None
        elif stat.S_ISREG(info.st_mode):
            name = Path(path).name
            if name in ("", ".", ".."):
                name = os.path.basename(real) or "data"
            _copy_file(fd, out / name, rules, staged, path)
        else:
            raise StagingRefused(
                FILE_TYPE, "{path} is not a regular file or a directory; give one", path=path
            )
        return staged
    finally:
        os.close(fd)


def _open_beneath(root: str, relative: str, shown: str) -> int:
    """``root/relative`` opened one component at a time, following no link on the way."""
    parts = [] if relative == "." else relative.split(os.sep)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            try:
                next_fd = os.open(part, FILE if last else DIRECTORY, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise StagingRefused(
                        NO_LINKS,
                        "{path} changed while it was opened (a symbolic link appeared on its "
                        "way); give a path that stays put",
                        path=shown,
                    ) from None
                raise
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _identities(paths: tuple[str, ...]) -> set[tuple[int, int]]:
    found = set()
    for path in paths:
        try:
            info = os.stat(path)
        except OSError:
            continue
        found.add((info.st_dev, info.st_ino))
    return found


def _check_identity(info: os.stat_result, denied: set[tuple[int, int]], shown: str) -> None:
    if (info.st_dev, info.st_ino) in denied:
        raise StagingRefused(
            NODE_FILES,
            "{path} is one of this node's own files (its database or session directories), "
            "which are never staged; give another location",
            path=shown,
        )


def _copy_tree(
    fd: int,
    out: Path,
    rules: StagingRules,
    denied: set[tuple[int, int]],
    staged: Staged,
    prefix: str,
    depth: int,
) -> None:
    if depth >= MAX_DEPTH:
        raise StagingRefused(
            MAX_FILES, "the directory is more than {depth} levels deep; give a shallower one",
            depth=MAX_DEPTH,
        )  # fmt: skip
    with os.scandir(fd) as entries:
        names = sorted((entry.name, entry) for entry in entries)
    for name, entry in names:
        shown = f"{prefix}{name}"
        if entry.is_symlink():
            staged.skipped.append(f"{shown} (a symbolic link)")
            continue
        is_dir = entry.is_dir(follow_symlinks=False)
        if not is_dir and not entry.is_file(follow_symlinks=False):
            staged.skipped.append(f"{shown} (not a regular file)")
            continue
        _count(staged, rules)
        try:
            child = os.open(name, DIRECTORY if is_dir else FILE, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                staged.skipped.append(f"{shown} (changed while copied)")
                continue
            raise _Unreadable(shown, exc) from None
        try:
            info = os.fstat(child)
            _check_identity(info, denied, shown)
            if stat.S_ISDIR(info.st_mode) and is_dir:
                (out / name).mkdir(mode=0o755)
                _copy_tree(child, out / name, rules, denied, staged, f"{shown}/", depth + 1)
            elif stat.S_ISREG(info.st_mode) and not is_dir:
                _copy_file(child, out / name, rules, staged, shown)
            else:
                staged.skipped.append(f"{shown} (changed while copied)")
        finally:
            os.close(child)


class _Unreadable(Exception):
    """A file or directory of a tree that could not be opened (e.g. not the user's to read)."""

    def __init__(self, shown: str, error: OSError):
        super().__init__(shown)
        self.shown, self.error = shown, error


def _count(staged: Staged, rules: StagingRules) -> None:
    staged.files += 1
    if staged.files > rules.max_files:
        raise StagingRefused(
            MAX_FILES,
            "the directory has more than {limit} files and directories; give a smaller one",
            limit=rules.max_files,
        )


def _copy_file(fd: int, target: Path, rules: StagingRules, staged: Staged, shown: str) -> None:
    """Copy the open regular file ``fd`` to the new file ``target``, within the byte budget."""
    os.set_blocking(fd, True)
    with open(target, "xb") as sink:
        while chunk := os.read(fd, CHUNK):
            staged.bytes += len(chunk)
            if staged.bytes > rules.max_bytes:
                raise too_large(rules.max_bytes, shown)
            sink.write(chunk)


def too_large(limit: int, shown: str) -> StagingRefused:
    return StagingRefused(
        MAX_BYTES,
        "{location} is larger than this node stages ({limit} bytes); give a smaller data set",
        location=shown,
        limit=limit,
    )
