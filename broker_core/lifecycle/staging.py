"""Staging data resources into a session's directory: file:// and http(s):// locations.

A data resource's ``location`` is copied to ``dest`` (a file keeps its name inside ``dest``;
a directory's contents become ``dest``). Downloads are streamed with a size cap so a wrong URL
cannot fill the disk. Anything else is a ``PlatformError`` naming what is not supported.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Any

from platforms.contract import PlatformError

MAX_DOWNLOAD_BYTES = 10 * 2**30
TIMEOUT_SECONDS = 60
CHUNK = 1 << 20


def stage(data: dict[str, Any], dest: Path, *, max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """Copy one data resource into ``dest``; the staged path."""
    location = data.get("location")
    if not isinstance(location, str):
        raise PlatformError(f"data resource kind {data.get('kind')} cannot be staged here")
    url = urllib.parse.urlsplit(location)
    dest.mkdir(parents=True, exist_ok=True)
    if url.scheme == "file":
        return _copy(Path(urllib.parse.unquote(url.path)), dest)
    if url.scheme in ("http", "https"):
        return _download(location, dest, max_bytes)
    raise PlatformError(f"cannot stage {location!r}: only file:// and http(s):// locations")


def _copy(source: Path, dest: Path) -> Path:
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True)
        return dest
    if not source.is_file():
        raise PlatformError(f"cannot stage {source}: no such file or directory on this node")
    target = dest / source.name
    shutil.copyfile(source, target)
    return target


def _download(location: str, dest: Path, max_bytes: int) -> Path:
    name = PurePosixPath(urllib.parse.urlsplit(location).path).name or "data"
    target = dest / name
    partial = dest / f".{name}.partial"
    try:
        with urllib.request.urlopen(location, timeout=TIMEOUT_SECONDS) as response:
            size = 0
            with partial.open("wb") as out:
                while chunk := response.read(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise PlatformError(
                            f"cannot stage {location}: larger than {max_bytes} bytes"
                        )
                    out.write(chunk)
    except PlatformError:
        partial.unlink(missing_ok=True)
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:
        partial.unlink(missing_ok=True)
        raise PlatformError(f"cannot stage {location}: {exc}") from None
    partial.replace(target)
    return target
