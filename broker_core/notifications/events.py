"""What a notification says: a typed event, and its wire payload.

An event is made where the change happens (the lifecycle's step, an accept, a cancel, a
maintenance window) from the session's row, stored as :class:`Event` in the outbox, and turned
into the payload (webhooks) or a template's context (e-mail) only when it is delivered.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..schedule import instant

ACCEPTED = "session.accepted"
PREPARING = "session.preparing"
READY = "session.ready"
ENDING_SOON = "session.ending_soon"
ENDED = "session.ended"
FAILED = "session.failed"
MAINTENANCE = "session.maintenance"
EVENT_TYPES = (ACCEPTED, PREPARING, READY, ENDING_SOON, ENDED, FAILED, MAINTENANCE)
EventType = Literal[
    "session.accepted",
    "session.preparing",
    "session.ready",
    "session.ending_soon",
    "session.ended",
    "session.failed",
    "session.maintenance",
]

MAX_CONNECTORS = 16
MAX_TEXT = 1024


class _Stored(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MaintenanceNotice(_Stored):
    """The window that overlaps a booking: its session keeps the booking; the admin decides."""

    window: str
    start: int
    end: int
    reason: str = Field(max_length=MAX_TEXT)


class Event(_Stored):
    """One event of one session, as stored in the outbox (instants are epoch seconds)."""

    type: EventType
    at: int
    session: str
    phase: str
    name: str | None = None
    site: str = ""
    prepare_at: int
    start_at: int
    end_at: int
    connectors: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_CONNECTORS)
    maintenance: MaintenanceNotice | None = None
    reason: str | None = Field(default=None, max_length=MAX_TEXT)

    def payload(self, base_url: str) -> dict[str, Any]:
        """The webhook body: ``type``, ``timestamp`` and ``data`` (the Standard Webhooks
        envelope), ``data`` saying which session, where it is, and its booked times."""
        data: dict[str, Any] = {
            "session": {
                "uuid": self.session,
                "url": f"{base_url}/sessions/{self.session}",
                "phase": self.phase,
                **({"name": self.name} if self.name else {}),
            },
            "site": self.site,
            "schedule": {
                "preparing": instant(self.prepare_at),
                "start": instant(self.start_at),
                "end": instant(self.end_at),
            },
        }
        if self.type == READY:
            data["connectors"] = self.connectors
        if self.maintenance is not None:
            m = self.maintenance
            data["maintenance"] = {
                "window": m.window, "start": instant(m.start), "end": instant(m.end),
                "reason": m.reason,
            }  # fmt: skip
        if self.reason:
            data["reason"] = self.reason
        return {"type": self.type, "timestamp": instant(self.at), "data": data}


def short(text: str | None) -> str | None:
    """A message cut to what an event carries."""
    return None if text is None else text[:MAX_TEXT]
