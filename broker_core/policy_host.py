"""What a node lets its policies read (``policies.contract.PolicyHost``): its configuration, its
clock, and the booking table through :class:`BookingUsage`, so that a policy plugin needs
neither the node (``Broker``) nor its tables.

It also turns an accept into the typed values ``PolicyBase.admit`` is asked with.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import bindparam
from sqlmodel import Session, select

from policies.contract import Accepted, Claim, CommittedUse, Policy, admit

from .config import NodeConfig
from .db.engine import Database
from .db.tables import ACTIVE, CONFIRMED, HELD, Allocation, Booking, ExecutionSession, UsageRecord
from .identity import ANONYMOUS
from .kinds.base import Message
from .sessions.usage import booked_amounts


@dataclass(frozen=True)
class NodeHost:
    """The :class:`~policies.contract.PolicyHost` of a running node."""

    config: NodeConfig
    db: Database

    def now(self) -> int:
        return int(time.time())

    @contextmanager
    def usage(self) -> Iterator[BookingUsage]:
        with self.db.read() as session:
            yield BookingUsage(session)


class BookingUsage:
    """The :class:`~policies.contract.UsageQuery` of one database transaction."""

    def __init__(self, session: Session):
        self.session = session

    def committed(self, projects: Collection[str]) -> list[CommittedUse]:
        rows = self.session.connection().execute(_COMMITTED, {"projects": list(projects)})
        return [CommittedUse._make(row) for row in rows]

    def held(
        self, projects: Collection[str], resource_class: str, now: int, leave_out: Collection[str]
    ) -> list[Claim]:
        rows = self.session.connection().execute(
            _HELD, {"projects": list(projects), "resource": resource_class, "now": now}
        )
        return [
            Claim(start, end, amount, offerset)
            for amount, start, end, offerset in rows
            if offerset not in leave_out
        ]

    def used_seconds(self, projects: Collection[str], resource_class: str, lo: int, hi: int) -> int:
        rows = self.session.exec(
            select(UsageRecord.amount, UsageRecord.start_at, UsageRecord.end_at).where(
                UsageRecord.project.in_(list(projects)),  # type: ignore[union-attr]
                UsageRecord.resource_class == resource_class,
                UsageRecord.end_at > lo,
                UsageRecord.start_at < hi,
            )
        )
        return sum(a * (min(e, hi) - max(s, lo)) for a, s, e in rows)


def admission_problems(
    policies: list[Policy],
    session: Session,
    row: ExecutionSession,
    now: int,
    occurrences: Sequence[ExecutionSession] = (),
) -> list[Message]:
    """Why the policies refuse the accept of ``row`` (its booking just CONFIRMED, in the
    accepting transaction ``session``): every policy is asked, in that transaction. A series
    (``row``, booking nothing itself) is asked about once, with its ``occurrences``' bookings
    (all CONFIRMED, each of the same amounts)."""
    if not policies:
        return []
    first = occurrences[0] if occurrences else row
    accepted = Accepted(
        uuid=row.uuid,
        owner=row.owner or ANONYMOUS,
        project=row.project,
        prepare_at=first.prepare_at,
        start_at=first.start_at,
        end_at=first.end_at,
        amounts=booked_amounts(session, first.uuid),
        occurrences=tuple((o.prepare_at, o.start_at, o.end_at) for o in occurrences),
    )
    usage = BookingUsage(session)
    return [m for policy in policies for m in admit(policy, accepted, usage, now)]


# the projects' accepted sessions, per class: available period and whole booking
_COMMITTED = (
    select(  # type: ignore[call-overload]
        ExecutionSession.project, Allocation.resource_class, Allocation.amount,
        ExecutionSession.start_at, ExecutionSession.end_at, Booking.start_at, Booking.end_at,
    )
    .join(Booking, Booking.id == Allocation.booking_id)
    .join(ExecutionSession, ExecutionSession.uuid == Booking.session_uuid)
    .where(
        ExecutionSession.project.in_(bindparam("projects", expanding=True)),  # type: ignore[union-attr]
        Booking.state.in_((CONFIRMED, ACTIVE)),  # type: ignore[attr-defined]
    )
)  # fmt: skip


_HELD = (
    select(  # type: ignore[call-overload]
        Allocation.amount, Booking.start_at, Booking.end_at, Booking.offerset_uuid,
    )
    .join(Booking, Booking.id == Allocation.booking_id)
    .join(ExecutionSession, ExecutionSession.uuid == Booking.session_uuid)
    .where(
        ExecutionSession.project.in_(bindparam("projects", expanding=True)),  # type: ignore[union-attr]
        Allocation.resource_class == bindparam("resource"),
        Booking.state == HELD,
        ExecutionSession.expires_at > bindparam("now"),
    )
)  # fmt: skip
