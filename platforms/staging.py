"""Staging data resources into a session's directory, within the node's staging rules.

A data resource's ``location`` is copied (``file://``, from the site's data roots only) or
downloaded (``http(s)://``, from addresses the rules allow) into a fresh directory beside
``dest``, which then replaces ``dest``: a file keeps its name inside ``dest``, a directory's
contents become ``dest``'s. A staging that fails leaves nothing behind, and one repeated after a
crash starts over. The rules are in :mod:`broker_core.staging`; a refusal is a
``PlatformError`` naming the rule. This is the contract's default ``stage_data``, a helper of the
platform side: platforms that stage data their own way need not use it.

With a ``user`` (the session's user, e.g. a Slurm job's) and a node running as root, staging
runs in a worker process that switches to that user's uid, gid and groups before it reads
anything: the operating system's permissions then apply on top of the rules, and the staged
files are the user's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from broker_core.staging.files import Staged
from broker_core.staging.rules import StagingFailed, StagingRefused, StagingRules
from broker_core.staging.worker import stage_into

from .errors import PlatformError

CHILD_MARGIN_SECONDS = 30  # beyond rules.max_time, for the child process to start and answer
ERROR_CHARS = 500


@dataclasses.dataclass(frozen=True)
class Account:
    """A Unix user that staging switches to."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def stage(
    data: dict[str, Any], dest: Path, rules: StagingRules | None = None, user: str | None = None
) -> list[str]:
    """Stage one data resource into ``dest``; notes for the session's messages."""
    rules = rules or StagingRules()
    location = data.get("location")
    if not isinstance(location, str) or not location:
        raise PlatformError(f"data resource kind {data.get('kind')} cannot be staged here")
    account, notes = account_for(user)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.parent / f".{dest.name}.staging"
    _remove(work)
    work.mkdir(mode=0o711)  # the node's: a child may enter, but not replace ``out``
    out = work / "out"
    out.mkdir(mode=0o755)
    try:
        if account is None:
            staged = stage_into(location, out, rules)
        else:
            os.chown(out, account.uid, account.gid)
            staged = _in_child(location, out, rules, account, work)
            notes.append(f"staged {location} as user {account.name}")
        _remove(dest)
        os.rename(out, dest)
    except StagingRefused as refused:
        raise PlatformError(f"cannot stage {location}: {refused.text}") from None
    except StagingFailed as failed:
        raise PlatformError(str(failed)) from None
    except OSError as exc:
        raise PlatformError(f"cannot stage {location}: {exc.strerror or exc}") from None
    finally:
        _remove(work)
    return staged.notes(location) + notes


def stage_files(
    parts: list[tuple[dict[str, Any], StagingRules]],
    dest: Path,
    max_bytes: int,
    user: str | None = None,
) -> list[str]:
    """Stage several locations (a Rucio dataset's files) side by side into ``dest``: each is
    staged as one resource is, into a part of its own, then the parts' files are moved into
    ``dest``; more than ``max_bytes`` in all, or a failure of any, leaves nothing behind."""
    notes: list[str] = []
    work = [dest.parent / f".{dest.name}.part{i}" for i in range(len(parts))]
    try:
        for (document, rules), part in zip(parts, work, strict=True):
            notes += stage(document, part, rules, user=user)
        total = sum(f.stat().st_size for part in work for f in part.iterdir() if f.is_file())
        if total > max_bytes:
            raise PlatformError(
                f"cannot stage {len(parts)} files of {total} bytes: more than the node's "
                f"staging.max_bytes ({max_bytes})"
            )
        _remove(dest)
        os.rename(work[0], dest)  # the first part's directory, as staging made it, is dest
        for part in work[1:]:
            for item in part.iterdir():
                os.rename(item, dest / item.name)
    except OSError as exc:
        _remove(dest)
        raise PlatformError(f"cannot stage into {dest}: {exc.strerror or exc}") from None
    except PlatformError:
        _remove(dest)
        raise
    finally:
        for part in work:
            _remove(part)
    return notes


def account_for(user: str | None) -> tuple[Account | None, list[str]]:
    """The account to switch to for ``user`` (None: stage in this process), and a note when
    switching is not possible."""
    if user is None:
        return None, []
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PlatformError(f"cannot stage as user {user!r}: no such user on this host") from None
    if entry.pw_uid == os.geteuid():
        return None, []
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        return None, [f"staged as the node's user {me}, not {user}: switching needs root"]
    groups = tuple(os.getgrouplist(user, entry.pw_gid))
    return Account(user, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir), []


def _in_child(
    location: str, out: Path, rules: StagingRules, account: Account, work: Path
) -> Staged:
    """Stage in a worker process that drops to ``account`` before it reads anything."""
    request = {
        "location": location,
        "out": str(out),
        "rules": rules.model_dump(mode="json", exclude={"mappings"}),  # resolved already
        "account": dataclasses.asdict(account),
    }
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-m", "broker_core.staging.worker"],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=rules.max_time + CHILD_MARGIN_SECONDS,
            cwd=work,
            env={"PATH": os.defpath, "LANG": "C.UTF-8"},
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise StagingFailed(
            f"cannot stage {location}: not done within {rules.max_time:g} s"
        ) from None
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        error = " ".join((done.stderr or done.stdout or "no output").split())[-ERROR_CHARS:]
        raise StagingFailed(
            f"cannot stage {location}: the staging process of user {account.name} failed "
            f"(exit {done.returncode}): {error}"
        ) from None
    if "refused" in answer:
        raise StagingRefused.from_json(answer["refused"])
    if "failed" in answer:
        raise StagingFailed(str(answer["failed"]))
    return Staged(**answer["staged"])


def _remove(path: Path) -> None:
    """Remove a file or directory tree of the session's (links are removed, not followed)."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
