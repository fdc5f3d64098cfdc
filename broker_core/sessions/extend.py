"""Extending a session's booked window: ``{kind: uri:integer-delta-update, path:
schedule.duration, delta: N, units: seconds|minutes|hours}``.

The extension is a claim like any other: the session's pools are locked, their usage over the
added time is read, and only when every allocation of the booking fits does its end move (the
pools get a new generation). The platform moves what it holds for the session (a Slurm
reservation's end, a job's time limit) in the same transaction; if it cannot, nothing changes.
"""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from platforms.contract import PlatformError

from ..booking import ledger
from ..broker import Broker
from ..db.tables import ExecutionSession
from ..errors import Conflict
from ..pricing import price_lists, quote
from ..schedule import format_duration, format_seconds, instant
from . import store
from .execution import execution_of
from .phases import DURATION_PATH, EXTENDABLE
from .record import SessionRecord

UNITS = {
    "seconds": 1,
    "second": 1,
    "s": 1,
    "minutes": 60,
    "minute": 60,
    "hours": 3600,
    "hour": 3600,
}


def is_extension(update_doc: dict[str, Any]) -> bool:
    return update_doc.get("kind") == "uri:integer-delta-update"


def extend(broker: Broker, session: Session, row: ExecutionSession, update_doc: dict[str, Any],
           now: int) -> None:  # fmt: skip
    """Extend the (locked) session's window, or raise a Conflict saying why not."""
    delta = _seconds(update_doc, row.phase)
    if row.phase not in EXTENDABLE:
        raise Conflict(f"a {row.phase} session cannot be extended", phase=row.phase)
    offers = broker.config.offers
    end_at = row.end_at + delta
    longest = int(offers.max_duration.total_seconds())
    if end_at - row.start_at > longest:
        raise Conflict(
            f"a session may last at most {format_duration(offers.max_duration)}; "
            f"extended it would last {format_seconds(end_at - row.start_at)}",
            phase=row.phase,
        )
    if end_at <= now:
        raise Conflict(f"the booked window ended at {instant(row.end_at)}", phase=row.phase)
    generations = ledger.lock_pools(session, [row.platform])
    views = {
        view.id: view
        for view in ledger.load_pools(
            session, [row.platform], (row.end_at, end_at), cache=broker.usage_cache, now=now
        )
    }
    allocations = ledger.booked_allocations(session, row.uuid)
    for pool_id, resource_class, amount in allocations:
        view = views.get(pool_id)
        if pool_id not in generations:  # drained (or gone): it takes no new claims
            drained = view is not None and view.drain is not None
            raise Conflict(
                f"cannot extend: pool {view.name if view else pool_id} "
                + ("is drained" if drained else "is no longer configured")
                + "; the session keeps its booked window",
                phase=row.phase,
            )
        free = view.free(resource_class, row.end_at, end_at) if view else 0
        if free < amount:
            raise Conflict(
                f"cannot extend to {instant(end_at)}: {free} {resource_class} free on "
                f"{view.name if view else pool_id} after {instant(row.end_at)}; {amount} needed",
                phase=row.phase,
            )
    ledger.extend_booking(
        session, session_uuid=row.uuid, end_at=end_at, generations=generations, now=now
    )
    platform = next((p for p in broker.platforms if p.name == row.platform), None)
    extended = None
    if platform is not None:
        try:
            execution = execution_of(row, broker.registry, broker.config.lifecycle.workdir)
            platform.extend(execution, end_at)
            extended = execution
        except PlatformError as exc:  # the transaction rolls back: nothing changes
            raise Conflict(
                f"platform {row.platform} cannot extend: {exc}", phase=row.phase
            ) from None
    # the quote follows the window: the granted amounts for the longer available time
    names = {pool_id: view.name for pool_id, view in views.items()}
    priced = [(names.get(pool_id, ""), c, amount) for pool_id, c, amount in allocations]
    quoted = quote(price_lists(broker.config), priced, end_at - row.start_at)
    record = SessionRecord.of(row.record)
    record.costs, record.metrics = quoted.costs, quoted.metrics
    if extended is not None:  # what the platform moved, and what it has to say of it
        record.platform_state = extended.state
        for note in extended.notes:
            record.note("{note}", note=note)
    row.record, row.end_at = record.stored(), end_at
    if row.due_at is not None:
        row.due_at = min(row.due_at, now)  # the engine re-reads the new end at once
    store.changed(session, row, now)


def _seconds(update_doc: dict[str, Any], phase: str) -> int:
    if update_doc.get("path") != DURATION_PATH:
        raise Conflict(
            f"integer deltas apply to {DURATION_PATH}, not {update_doc.get('path')!r}; "
            "see meta.options",
            phase=phase,
        )
    value = update_doc.get("delta", update_doc.get("value"))
    units = str(update_doc.get("units") or "seconds").lower()
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise Conflict(f"the delta must be a positive integer, not {value!r}", phase=phase)
    if units not in UNITS:
        raise Conflict(f"unknown units {units!r}; use seconds, minutes or hours", phase=phase)
    return value * UNITS[units]
