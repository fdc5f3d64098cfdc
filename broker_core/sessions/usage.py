"""What a session actually used, recorded when its booking is freed.

Allocations are charged from these records (resource-seconds = amount x time), so they are
written in the same transaction that frees an ACTIVE booking: a crash can neither lose one nor
write it twice (one row per session and resource class).
"""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import Session, select

from ..db.tables import ACTIVE, Allocation, Booking, ExecutionSession, UsageRecord


def record_usage(
    session: Session, row: ExecutionSession, available_since: int | None, now: int
) -> int:
    """Record the session's use from when it became available (``available_since``; what is
    charged starts there, as the offer's duration did: preparation is the node's cost) until
    ``now``, if its booking is ACTIVE; how many records were written."""
    booking = session.exec(
        select(Booking).where(Booking.session_uuid == row.uuid, Booking.state == ACTIVE)
    ).first()
    if booking is None:
        return 0
    already = session.exec(
        select(func.count()).select_from(UsageRecord).where(UsageRecord.session_uuid == row.uuid)
    ).one()
    if already:
        return 0
    start = available_since
    if start is None:
        return 0  # cancelled or failed while preparing: nothing was used
    end = max(min(now, booking.end_at), start)
    amounts = booked_amounts(session, row.uuid)
    for resource_class, amount in sorted(amounts.items()):
        session.add(
            UsageRecord(
                session_uuid=row.uuid,
                project=row.project,
                owner=row.owner,
                platform=row.platform,
                resource_class=resource_class,
                amount=amount,
                start_at=start,
                end_at=end,
            )
        )
    session.flush()
    return len(amounts)


def booked_amounts(session: Session, session_uuid: str) -> dict[str, int]:
    """What a session's booking claims of each resource class, summed over its pools."""
    amounts: dict[str, int] = {}
    for resource_class, amount in session.exec(
        select(Allocation.resource_class, Allocation.amount)
        .join(Booking, Booking.id == Allocation.booking_id)  # type: ignore[arg-type]
        .where(Booking.session_uuid == session_uuid)
    ):
        amounts[resource_class] = amounts.get(resource_class, 0) + amount
    return amounts


def own_usage(session: Session, owner: str) -> dict[str, float]:
    """Resource-hours an owner's ended sessions used, per class."""
    totals: dict[str, float] = {}
    for c, a, s, e in session.exec(
        select(
            UsageRecord.resource_class, UsageRecord.amount, UsageRecord.start_at, UsageRecord.end_at
        ).where(UsageRecord.owner == owner)
    ):
        totals[c] = totals.get(c, 0) + a * (e - s) / 3600
    return {c: round(v, 3) for c, v in sorted(totals.items())}
