"""Compare what each platform really runs with the booking table, repair what is safe, report
drift. A booking table that silently drifts from the platform is the classic failure of
reservation portals.

- Work on the platform for a session that is over (or cancelled) is removed, and the session's
  messages say so.
- Work named like ours for a session this node does not know is only logged: it may belong to
  another broker sharing the platform.
- A session that should be running but whose work the platform does not list is looked at at
  once: its poll finds the work missing and fails it with a drift message.
"""

from __future__ import annotations

import logging
import time

from platforms.contract import WORK_PREFIX, PlatformError, work_name

from ..sessions import store
from .engine import Lifecycle, add_note

log = logging.getLogger(__name__)


def reconcile(engine: Lifecycle) -> dict[str, list[str]]:
    """One pass over every platform that can list its work; what was found, by kind."""
    found: dict[str, list[str]] = {"removed": [], "unknown": [], "missing": []}
    for platform in engine.platforms.values():
        try:
            names = platform.list_work()
        except PlatformError as exc:
            log.warning("reconciliation: cannot list the work on %s: %s", platform.name, exc)
            continue
        if names is None:
            continue
        ours = {name[len(WORK_PREFIX) :]: name for name in names if name.startswith(WORK_PREFIX)}
        with engine.broker.db.read() as session:
            known = store.phases_of(session, list(ours))
            expected_running = store.expected_running(session, platform.name)
        for uuid, name in ours.items():
            if uuid not in known:
                log.warning("reconciliation: %s on %s belongs to no session of this node",
                            name, platform.name)  # fmt: skip
                found["unknown"].append(name)
                continue
            phase, due = known[uuid]
            if due is not None:
                continue  # the engine is still working on it
            try:
                platform.remove_work(name)
            except PlatformError as exc:
                log.warning(
                    "reconciliation: cannot remove %s from %s: %s", name, platform.name, exc
                )
                continue
            log.warning("reconciliation: removed stray %s from %s (session %s)",
                        name, platform.name, phase)  # fmt: skip
            add_note(engine.broker, uuid,
                     "reconciliation removed stray work {name} from {platform} after the "
                     "session ended", "WARN", name=name, platform=platform.name)  # fmt: skip
            found["removed"].append(name)
        missing = [uuid for uuid in expected_running if work_name(uuid) not in names]
        if missing:
            with engine.broker.db.write() as session:
                store.make_due(session, missing, int(time.time()))
            found["missing"].extend(work_name(uuid) for uuid in missing)
    return found
