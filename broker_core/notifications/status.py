"""What a session's owner sees of its notifications: each one's event, channel, state,
attempts and last error, in the session's ``notify.deliveries``.

Read from the outbox when the session is read by who may see it (its owner; an admin); never
in lists or feeds. An error names a webhook by its URL's origin only (``webhook.origin``), and
carries no secret: the signing secret is never in an error, nor is the mail server's password.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session
from yarl import URL

from ..db.tables import NotificationOutbox
from ..schedule import instant
from . import outbox
from .request import Notify
from .webhook import origin

# the outbox's states as shown; a pending row already tried is "failed" (it is due again)
SHOWN = {outbox.DELIVERED: "delivered", outbox.FAILED: "given_up", outbox.DROPPED: "dropped"}


@dataclass(frozen=True)
class Delivery:
    """One notification as shown (instants in epoch seconds; ``due`` only while pending)."""

    event: str
    channel: str
    state: str
    attempts: int
    error: str | None
    due: int | None
    delivered: int | None

    @classmethod
    def of(cls, row: NotificationOutbox, webhook_url: str | None) -> Delivery:
        pending = row.state == outbox.PENDING
        state = ("failed" if row.attempts else "pending") if pending else SHOWN[row.state]
        error = row.last_error
        if error and webhook_url:  # a row written before errors named the origin only
            error = error.replace(webhook_url, origin(URL(webhook_url)))
        return cls(row.event, row.channel, state, row.attempts, error,
                   row.due_at if pending else None, row.delivered_at)  # fmt: skip

    def wire(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"event": self.event, "channel": self.channel,
                                 "state": self.state, "attempts": self.attempts}  # fmt: skip
        if self.error:
            shown["error"] = self.error
        if self.due is not None:
            shown["due"] = instant(self.due)
        if self.delivered is not None:
            shown["delivered"] = instant(self.delivered)
        return shown


def deliveries(session: Session, session_uuid: str, notify: Notify) -> list[dict[str, Any]]:
    """The session's notifications as its owner sees them, in the order of their events."""
    url = notify.webhook.url if notify.webhook is not None else None
    return [Delivery.of(row, url).wire() for row in outbox.of_session(session, session_uuid)]
