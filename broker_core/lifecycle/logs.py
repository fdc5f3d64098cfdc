"""A session's output, as its platform keeps it."""

from __future__ import annotations

from platforms.contract import PlatformError

from ..broker import Broker
from ..identity import ANONYMOUS_IDENTITY, Identity
from ..sessions import store
from ..sessions.execution import execution_of
from ..sessions.record import SessionRecord

MAX_LOG_CHARS = 1 << 20


def session_logs(broker: Broker, session_uuid: str, identity: Identity = ANONYMOUS_IDENTITY) -> str:
    """The last MiB of the session's output; empty when there is none (yet)."""
    row = store.read(broker, session_uuid, identity)
    platform = next((p for p in broker.platforms if p.name == row.platform), None)
    if platform is None or not SessionRecord.of(row.record).platform_state:
        return ""
    try:
        execution = execution_of(row, broker.registry, broker.config.lifecycle.workdir)
        text = platform.logs(execution) or ""
    except PlatformError as exc:
        return f"[the platform could not read the output: {exc}]\n"
    return text[-MAX_LOG_CHARS:]
