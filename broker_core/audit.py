"""The audit log: every state change a caller makes, who made it and when, kept in the database.

An event is written by :func:`record` in the transaction of the change it records, so a change
that rolls back (a lost race, a policy's refusal) leaves no event, and a committed one always
has its event. What is recorded: accepting, rejecting, cancelling and extending a session,
booking and accepting one in a step (``direct``), withdrawing an offer set, and the admin
controls (draining and undraining a pool, booking and deleting maintenance, changing a pool's
inventory). Offers made, expiries and the lifecycle engine's own phase changes are not acts of
a caller and are not recorded here (the session records when it entered each phase).

``GET /audit`` lists events to admins, oldest first by (at, id), with the keyset cursors of
:mod:`broker_core.pages`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, insert, or_
from sqlmodel import Session, select

from . import pages
from .broker import Broker
from .db.tables import AuditEvent
from .errors import Forbidden, ParameterInvalid
from .identity import Identity
from .schedule import instant

# what is recorded, by the action's name on the wire
ACCEPT, REJECT, CANCEL, EXTEND, DIRECT, WITHDRAW = (
    "accept", "reject", "cancel", "extend", "direct", "withdraw",
)  # fmt: skip
DRAIN, UNDRAIN, BOOK_MAINTENANCE, DELETE_MAINTENANCE, CHANGE_INVENTORY = (
    "drain", "undrain", "book-maintenance", "delete-maintenance", "change-inventory",
)  # fmt: skip
ACTIONS = (ACCEPT, REJECT, CANCEL, EXTEND, DIRECT, WITHDRAW, DRAIN, UNDRAIN, BOOK_MAINTENANCE,
           DELETE_MAINTENANCE, CHANGE_INVENTORY)  # fmt: skip
MAX_DETAIL = 2048  # the column's length


def session_subject(uuid: str) -> str:
    return f"session:{uuid}"


def offerset_subject(uuid: str) -> str:
    return f"offerset:{uuid}"


def pool_subject(name: str) -> str:
    return f"pool:{name}"


_INSERT = insert(AuditEvent.__table__)  # type: ignore[arg-type]


def record(
    session: Session, actor: str, action: str, subject: str, detail: str | None, now: int
) -> None:
    """Add one event to the transaction of the change it records."""
    if detail is not None and len(detail) > MAX_DETAIL:
        detail = detail[: MAX_DETAIL - 3] + "..."
    session.connection().execute(
        _INSERT,
        [{"at": now, "actor": actor, "action": action, "subject": subject, "detail": detail}],
    )


@dataclass(frozen=True)
class AuditFilters:
    """What an admin asked for, checked; every filter is optional and they combine (and)."""

    actor: str | None = None
    actions: tuple[str, ...] = ()
    subject: str | None = None
    start: int | None = None  # events at or after
    end: int | None = None  # events before

    def digest_of(self) -> dict[str, Any]:
        return {"actor": self.actor, "action": sorted(self.actions), "subject": self.subject,
                "from": self.start, "to": self.end}  # fmt: skip


def audit_filters(
    broker: Broker,
    identity: Identity,
    *,
    actor: str | None = None,
    action: list[str] | None = None,
    subject: str | None = None,
    start: str | None = None,
    end: str | None = None,
) -> AuditFilters:
    """The filters of a list, for an admin only (anyone else: 403)."""
    if not broker.is_admin(identity):
        raise Forbidden("only admins may read the audit log")
    actions = pages.split(action)
    unknown = [a for a in actions if a not in ACTIONS]
    if unknown:
        raise ParameterInvalid("action", f"{unknown[0][:32]!r} is not an action")
    first, last = pages.window(start, end)
    return AuditFilters(actor, tuple(actions), subject, first, last)


def list_events(
    broker: Broker, filters: AuditFilters, *, limit: int, cursor: str | None
) -> dict[str, Any]:
    """A page of events (``pages.page``), oldest first, after ``cursor``."""
    limit = pages.bounded(limit)
    made_for = filters.digest_of()
    after = pages.decode_cursor(cursor, made_for)
    query = select(AuditEvent)
    if filters.actor is not None:
        query = query.where(AuditEvent.actor == filters.actor)
    if filters.actions:
        query = query.where(AuditEvent.action.in_(filters.actions))  # type: ignore[attr-defined]
    if filters.subject is not None:
        query = query.where(AuditEvent.subject == filters.subject)
    if filters.start is not None:
        query = query.where(AuditEvent.at >= filters.start)
    if filters.end is not None:
        query = query.where(AuditEvent.at < filters.end)
    if after is not None:
        at, last_id = after[0], _event_id(after[1])
        query = query.where(
            or_(AuditEvent.at > at, and_(AuditEvent.at == at, AuditEvent.id > last_id))  # type: ignore[operator]
        )
    query = query.order_by(AuditEvent.at, AuditEvent.id).limit(limit + 1)  # type: ignore[arg-type]
    with broker.db.read() as session:
        rows = list(session.exec(query))
    more, rows = len(rows) > limit, rows[:limit]
    last = rows[-1] if rows else None
    next_cursor = pages.encode_cursor((last.at, str(last.id)), made_for) if more and last else None
    return pages.page([_item(row) for row in rows], limit, next_cursor)


def _event_id(text: str) -> int:
    """The event id a cursor's key carries (as text: the keys of pages are (time, text))."""
    if not text.isdigit():
        raise ParameterInvalid("cursor", "not a cursor of this list")
    return int(text)


def _item(row: AuditEvent) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": instant(row.at),
        "actor": row.actor,
        "action": row.action,
        "subject": row.subject,
        **({"detail": row.detail} if row.detail else {}),
    }
