"""The one place that reads and writes the ``notification_outbox`` table.

:func:`emit` is called inside the transaction of the change that causes an event, so an event
is stored exactly when its change is (a rolled-back accept notifies nobody; a committed one is
notified even if the process dies the next instant). The worker :func:`claim`\\ s due rows with a
lease, as the lifecycle engine leases sessions: a row is sent by one process at a time, and a
process that dies lets go of it when its lease runs out (at once, to a process of its own
host). A session's rows of one channel are delivered in the order of their events: a row
waits while an earlier one is still pending.
"""

from __future__ import annotations

import logging
import random
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, or_, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, select

from ..db.locks import for_update
from ..db.tables import NotificationOutbox
from ..owners import dead_on_this_host
from .events import ACCEPTED, ENDING_SOON, Event, MaintenanceNotice, short

if TYPE_CHECKING:
    from ..sessions.record import SessionRecord
    from .config import NotificationsConfig

log = logging.getLogger(__name__)

PENDING, DELIVERED, FAILED, DROPPED = "PENDING", "DELIVERED", "FAILED", "DROPPED"
WEBHOOK, EMAIL = "webhook", "email"


@dataclass(frozen=True)
class SessionFacts:
    """What an event says of its session: the row's columns it reads (an ORM row, or the
    plain rows a request inserts, both have them)."""

    uuid: str
    phase: str
    prepare_at: int
    start_at: int
    end_at: int

    @classmethod
    def of(cls, row: Any, phase: str | None = None) -> SessionFacts:
        return cls(row.uuid, phase or row.phase, row.prepare_at, row.start_at, row.end_at)


def emit(
    session: Session,
    config: NotificationsConfig,
    facts: SessionFacts,
    record: SessionRecord,
    event: str,
    now: int,
    *,
    scheduled_at: int | None = None,
    maintenance: MaintenanceNotice | None = None,
    reason: str | None = None,
) -> int:
    """Store the event for each channel the session's ``notify`` asks it on (none: nothing is
    stored, and nothing is read); how many rows. A session past ``max_per_session`` rows gets
    no more (logged): a session changing without end must not fill the table."""
    notify = record.notify
    if notify is None or not notify.wants(event):
        return 0
    channels = ([WEBHOOK] if notify.webhook is not None else []) + ([EMAIL] if notify.email else [])
    if not channels:
        return 0
    stored = session.exec(
        select(func.count()).where(NotificationOutbox.session_uuid == facts.uuid)
    ).one()
    if stored + len(channels) > config.max_per_session:
        log.warning("session %s: %s not notified: it has %d notifications already",
                    facts.uuid, event, stored)  # fmt: skip
        return 0
    data = Event(
        type=event, at=now, session=facts.uuid, phase=facts.phase, name=record.name,
        site=record.site, prepare_at=facts.prepare_at, start_at=facts.start_at,
        end_at=facts.end_at, connectors=list(record.connectors or [])[:16],
        maintenance=maintenance, reason=short(reason),
    ).model_dump(mode="json", exclude_none=True)  # fmt: skip
    when = now if scheduled_at is None else scheduled_at
    for channel in channels:
        session.add(NotificationOutbox(
            message_id=f"msg_{uuidlib.uuid4().hex}", session_uuid=facts.uuid, event=event,
            channel=channel, state=PENDING, created_at=now, scheduled_at=when, due_at=when,
            data=data,
        ))  # fmt: skip
    return len(channels)


def emit_accepted(
    session: Session, config: NotificationsConfig, facts: SessionFacts, record: SessionRecord,
    now: int,
) -> None:  # fmt: skip
    """An accept: the event now, and the ending-soon one ahead of the booked end (at the start
    when the session is shorter than the lead); the worker moves it if the end moves."""
    emit(session, config, facts, record, ACCEPTED, now)
    emit_ending_soon(session, config, facts, record, now)


def emit_ending_soon(
    session: Session, config: NotificationsConfig, facts: SessionFacts, record: SessionRecord,
    now: int,
) -> None:  # fmt: skip
    """The ending-soon event, due the configured lead ahead of the booked end (at the start
    when the session is shorter than the lead)."""
    lead = int(config.ending_soon.total_seconds())
    emit(session, config, facts, record, ENDING_SOON, now,
         scheduled_at=max(facts.end_at - lead, facts.start_at, now))  # fmt: skip


def claim(
    session: Session, owner: str, now: int, limit: int, lease_seconds: int
) -> list[NotificationOutbox]:
    """Lease up to ``limit`` due rows to ``owner``: pending, not leased by a live holder (a
    lease runs out, or its holder is a process of this host that is gone), and first of their
    session and channel. Rows another transaction has locked are skipped
    (PostgreSQL); the lease's compare-and-set makes a row go to one process only."""
    earlier = aliased(NotificationOutbox)
    blocked = (
        select(earlier.id)
        .where(
            earlier.session_uuid == NotificationOutbox.session_uuid,
            earlier.channel == NotificationOutbox.channel,
            earlier.state == PENDING,
            or_(
                earlier.scheduled_at < NotificationOutbox.scheduled_at,
                and_(
                    earlier.scheduled_at == NotificationOutbox.scheduled_at,
                    earlier.id < NotificationOutbox.id,  # type: ignore[operator]
                ),
            ),
        )
        .exists()
    )
    free = or_(
        NotificationOutbox.lease_until.is_(None),  # type: ignore[union-attr]
        NotificationOutbox.lease_until < now,  # type: ignore[operator]
        NotificationOutbox.lease_owner.in_(_gone(session, owner, now)),  # type: ignore[union-attr]
    )
    query = (
        select(NotificationOutbox.id)
        .where(NotificationOutbox.state == PENDING, NotificationOutbox.due_at <= now, free,
               ~blocked)
        .order_by(NotificationOutbox.due_at, NotificationOutbox.id)  # type: ignore[arg-type]
        .limit(limit)
    )
    ids = list(session.exec(for_update(session, query, skip_locked=True)))
    if not ids:
        return []
    session.exec(  # type: ignore[call-overload]
        update(NotificationOutbox)
        .where(NotificationOutbox.id.in_(ids), free)  # type: ignore[union-attr]
        .values(lease_owner=owner, lease_until=now + lease_seconds)
    )
    return list(
        session.exec(
            select(NotificationOutbox)
            .where(NotificationOutbox.id.in_(ids), NotificationOutbox.lease_owner == owner)  # type: ignore[union-attr]
            .order_by(NotificationOutbox.due_at, NotificationOutbox.id)  # type: ignore[arg-type]
        )
    )


def _gone(session: Session, owner: str, now: int) -> list[str]:
    """The holders of live leases on pending rows that are dead processes of this host: their
    rows are taken over at once, as the lifecycle engine takes over their sessions."""
    holders = session.exec(
        select(NotificationOutbox.lease_owner)
        .where(NotificationOutbox.state == PENDING, NotificationOutbox.lease_until >= now,  # type: ignore[operator]
               NotificationOutbox.lease_owner != owner)
        .distinct()
    )
    return [holder for holder in holders if dead_on_this_host(holder)]


def settle(session: Session, row_id: int, owner: str, **values: Any) -> bool:
    """Write what a delivery attempt found (``values``), and let go of the row, if ``owner``
    still holds it; whether it did."""
    result = session.exec(  # type: ignore[call-overload]
        update(NotificationOutbox)
        .where(NotificationOutbox.id == row_id, NotificationOutbox.lease_owner == owner)
        .values(lease_owner=None, lease_until=None, **values)
    )
    return bool(result.rowcount == 1)


def of_session(session: Session, session_uuid: str) -> Sequence[NotificationOutbox]:
    """A session's notifications, in the order of their events."""
    return session.exec(
        select(NotificationOutbox)
        .where(NotificationOutbox.session_uuid == session_uuid)
        .order_by(NotificationOutbox.scheduled_at, NotificationOutbox.id)  # type: ignore[arg-type]
    ).all()


def backoff(attempt: int, base: float, ceiling: float, rng: random.Random | None = None) -> float:
    """Seconds before retry number ``attempt`` (1 after the first failure): exponential from
    ``base``, capped at ``ceiling``, with "equal jitter" (between half and all of it) so that
    retries after an outage of a receiver do not all arrive at once."""
    full = min(ceiling, base * 2 ** (attempt - 1))
    return full / 2 + (rng or random).uniform(0, full / 2)
