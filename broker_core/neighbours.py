"""Other ``ebroker serve`` processes on the same SQLite file, which a second node started in the
same folder would otherwise share without a word.

Replicas of one node may share a database on purpose, so this warns rather than refuses. Each
serving process leaves ``<database>.nodes/<pid>.json`` (its URL and site name) while it runs.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
from pathlib import Path

from sqlalchemy.engine import make_url

from .config import NodeConfig


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's, but alive
        return True
    return True


def _registry(database_url: str) -> Path | None:
    url = make_url(database_url)
    if not url.get_backend_name().startswith("sqlite") or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database).resolve().with_name(Path(url.database).name + ".nodes")


def register(config: NodeConfig) -> list[str]:
    """Record this process as serving its database; warnings about the others that do too."""
    folder = _registry(config.database.url)
    if folder is None:
        return []
    with contextlib.suppress(OSError):
        folder.mkdir(exist_ok=True)
    warnings = []
    for entry in sorted(folder.glob("*.json")):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            other = json.loads(entry.read_text())
            pid = int(other["pid"])
            if pid == os.getpid():
                continue
            if not _alive(pid):
                entry.unlink(missing_ok=True)
                continue
            same_site = other["site"] == config.site.name
            warnings.append(
                f"another ebroker node (pid {pid}, {other['url']}, site {other['site']!r}) serves "
                f"the same database {config.database.url}: they share one booking table"
                + (" and one site name" if same_site else "")
                + ". That is right only for replicas of one node; for a separate node give it "
                "its own database and site name (--database sqlite:///other.db --site-name other)"
            )
    mine = folder / f"{os.getpid()}.json"
    with contextlib.suppress(OSError):
        mine.write_text(
            json.dumps({"pid": os.getpid(), "url": config.base_url, "site": config.site.name})
        )
        atexit.register(mine.unlink, missing_ok=True)
    return warnings
