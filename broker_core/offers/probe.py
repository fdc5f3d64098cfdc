"""Accepting a probe offer: it held nothing, so accepting it is a fresh claim of its slot.

The claim is made as a request makes one: the pools are locked, their usage read as it is now
(the platform's own reservations included), and the slot is booked only when every allocation
still fits. When another request took the slot since the probe, the accept is a 409 saying
what is free, and the client asks again.
"""

from __future__ import annotations

from sqlmodel import Session

from platforms.contract import PlatformError

from ..booking import ledger
from ..booking.pools import Slot
from ..broker import Broker
from ..config import UNITS
from ..db.tables import CONFIRMED, ExecutionSession
from ..errors import Conflict
from ..schedule import instant
from ..sessions.record import SessionRecord
from .holding import add_external_claims


def is_probe(row: ExecutionSession) -> bool:
    return SessionRecord.of(row.record).probe


def claim_probe(broker: Broker, session: Session, row: ExecutionSession, now: int) -> None:
    """Book the (locked) probe offer's slot, CONFIRMED, or raise a Conflict when it no longer
    fits; the session loses its probe marks."""
    record = SessionRecord.of(row.record)
    allocations = [(g.pool_id, g.resource_class, g.amount) for g in record.allocations]
    generations = ledger.lock_pools(session, [row.platform])
    window = (row.prepare_at, row.end_at)
    views = {
        view.id: view
        for view in ledger.load_pools(
            session, [row.platform], window, {c for _, c, _ in allocations},
            cache=broker.usage_cache, now=now,
        )
    }  # fmt: skip
    platform = next((p for p in broker.platforms if p.name == row.platform), None)
    if platform is not None:
        try:
            add_external_claims(platform, list(views.values()), *window)
        except PlatformError as exc:
            raise Conflict(
                f"platform {row.platform} cannot be asked what is free: {exc}", phase=row.phase
            ) from None
    late = now - int(broker.config.offers.granularity.total_seconds())
    if not allocations or row.prepare_at < late:
        raise Conflict(
            f"the probe's slot began at {instant(row.prepare_at)}; ask again (POST /requests) "
            "for a slot that is still ahead",
            phase=row.phase,
        )
    for pool_id, resource_class, amount in allocations:
        view = views.get(pool_id)
        if view is not None and view.drain is not None:
            raise Conflict(
                f"pool {view.name} is drained since {instant(view.drain.since)}"
                + (f" ({view.drain.reason})" if view.drain.reason else "")
                + ": it takes no new sessions, and a probe holds nothing; ask again "
                "(POST /requests) for an offer elsewhere",
                phase=row.phase,
            )
        free = (
            view.free(resource_class, *window)
            if view is not None and resource_class in view.usage and pool_id in generations
            else 0
        )
        if free < amount:
            unit = UNITS.get(resource_class, resource_class)
            pool = view.name if view else "its pool"
            raise Conflict(
                f"the probe's slot was taken since: {free} {unit} free on {pool} from "
                f"{instant(row.prepare_at)} to {instant(row.end_at)}; {amount} needed. A probe "
                "holds nothing: ask again (POST /requests) for a new offer",
                phase=row.phase,
            )
    slot = Slot(row.prepare_at, row.start_at, row.end_at, [], {}, allocations)
    ledger.insert_bookings(
        session, [(slot, row.uuid)], offerset_uuid=row.offerset_uuid, state=CONFIRMED,
        expires_at=None, now=now, generations=generations,
    )  # fmt: skip
    ledger.record_claims(session, [slot], now)
    record.probe = False
    record.note("accepted from a probe: its slot was claimed afresh")
    row.record = record.stored()
