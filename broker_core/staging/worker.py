"""Staging one location into a directory, in this process or in a child process of another user.

``python -m broker_core.staging.worker`` reads ``{"location", "out", "rules", "account"}`` as
JSON on stdin, stages, and writes one JSON answer on stdout: ``{"staged": {...}}``,
``{"refused": {...}}`` or ``{"failed": "..."}``. The node starts it as root; with an
``account`` (uid, gid, groups) it drops to that user for good before it reads the request's
location, so the operating system's permissions apply on top of the staging rules. Everything
it runs is imported before the drop: the interpreter's own files need not be readable by the
user.
"""

from __future__ import annotations

import dataclasses
import encodings.idna  # noqa: F401  (host names are encoded after the drop)
import json
import os
import sys
from pathlib import Path
from typing import Any

from .fetch import download
from .files import Staged, copy_path
from .rules import StagingFailed, StagingRefused, StagingRules, file_path, parse_location


def stage_into(location: str, out: Path, rules: StagingRules) -> Staged:
    """Stage ``location`` into the empty directory ``out``, by its scheme."""
    url = parse_location(location)
    scheme = url.scheme.lower()
    if scheme == "file":
        return copy_path(file_path(url, location), out, rules)
    if scheme in ("http", "https"):
        return download(location, out, rules)
    raise rules.scheme_refusal(scheme)


def answer(request: dict) -> dict:
    location = str(request["location"])
    try:
        rules = StagingRules.model_validate(request["rules"])
        staged = stage_into(location, Path(request["out"]), rules)
    except StagingRefused as refused:
        return {"refused": refused.as_json()}
    except StagingFailed as failed:
        return {"failed": str(failed)}
    except OSError as exc:
        return {"failed": f"cannot stage {location}: {exc.strerror or exc}"}
    return {"staged": dataclasses.asdict(staged)}


def drop_privileges(account: dict[str, Any]) -> None:
    """Become the account's user, irrevocably: groups, gid, then uid (real, effective and
    saved); an account that is root, or a drop that did not hold, stops the worker."""
    uid, gid = int(account["uid"]), int(account["gid"])
    if uid == 0:
        raise SystemExit("staging worker: refusing to stage as root")
    os.setgroups([int(g) for g in account.get("groups") or [gid]])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise SystemExit("staging worker: could not switch user")
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise SystemExit("staging worker: could regain root after switching user")
    os.umask(0o022)
    os.environ.clear()
    os.environ.update({"PATH": os.defpath, "HOME": str(account.get("home") or "/"),
                       "LANG": "C.UTF-8"})  # fmt: skip


def main() -> int:
    request = json.load(sys.stdin)
    if request.get("account"):
        drop_privileges(request["account"])
    print(json.dumps(answer(request)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
