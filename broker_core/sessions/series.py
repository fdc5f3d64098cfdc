"""A recurring series after it was offered: accepted as one act, cancelled whole or one
occurrence at a time, ended once its last occurrence ends.

The series' session books nothing itself; each occurrence has its own session (its
``series_uuid`` names the series) and booking, made when the series was offered, in the
series' offer set. Until the series is accepted its occurrences are no offers of their own:
the client accepts, rejects or cancels the series. Accepting it confirms every occurrence's
booking in one transaction (all or none: a booking no longer held is a 409, and the
transaction is rolled back) and hands each occurrence to the lifecycle engine, which runs it
at its own time. Cancelling the series cancels every occurrence not yet ended; an occurrence
may be cancelled (or extended) by its own uuid like any session. The series ends when its
last occurrence ends: CANCELLED when every one was cancelled, FAILED when one failed, else
COMPLETED.

Locks follow the shared order (offer set, then sessions, then bookings, then pools): the
series and its occurrences share one offer set, which ``store.locked`` takes first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlmodel import Session

from ..booking import ledger
from ..broker import Broker
from ..db.tables import ACTIVE, CONFIRMED, HELD, RELEASED, ExecutionSession
from ..errors import Conflict, NotFound
from ..notifications import outbox
from ..notifications.events import ACCEPTED as ACCEPTED_EVENT
from ..notifications.events import ENDED
from ..policy_host import admission_problems
from . import store
from .phases import ACCEPTED, CANCELLED, COMPLETED, EXPIRED, FAILED, FINAL, OFFERED, REJECTED
from .record import SessionRecord
from .views import render_session

Finish = Callable[[Session, ExecutionSession, str, tuple[str, ...], int], None]


def is_series(row: ExecutionSession) -> bool:
    """Whether the session is a recurring series (it has occurrences)."""
    return SessionRecord.of(row.record).series is not None


def refuse_occurrence_offer(row: ExecutionSession) -> None:
    """An occurrence of a series not yet accepted is no offer of its own: a 409 naming the
    series to accept, reject or cancel instead."""
    if row.series_uuid is not None and row.phase == OFFERED:
        raise Conflict(
            f"this session is an occurrence of the series {row.series_uuid}, which is still "
            "offered: accept, reject or cancel the series (POST /sessions/"
            f"{row.series_uuid})",
            phase=row.phase,
        )


def refuse_extension(row: ExecutionSession) -> None:
    """A series books nothing itself: extend one of its occurrences, by its own uuid."""
    if is_series(row):
        raise Conflict(
            "a series has no booked window of its own: extend one of its occurrences "
            "(series.occurrences[].uuid) instead",
            phase=row.phase,
        )


def accept(broker: Broker, session: Session, row: ExecutionSession, now: int) -> None:
    """Accept the series: confirm every occurrence's booking and free the holds of the other
    offers of its offer set, in one ledger operation; then the policies judge the series
    whole, every occurrence booked. The series' accept is notified once, and each occurrence's
    ending soon at its own time. Any refusal rolls all of it back (the caller's transaction)."""
    occurrences = store.occurrences_of(session, row.uuid, lock=True)
    uuids = [o.uuid for o in occurrences]
    own = set(uuids)
    siblings = [u for u in store.open_siblings(session, row) if u not in own]
    if not occurrences or not ledger.accept_all(
        session, session_uuids=uuids, siblings=siblings, now=now
    ):
        raise Conflict(
            "the series' occurrences are no longer all held; none was booked", phase=row.phase
        )
    store.set_phase(session, siblings, REJECTED, now)
    problems = admission_problems(broker.policies, session, row, now, occurrences)
    if problems:
        raise Conflict(
            "the series can no longer be accepted: " + "; ".join(m.message for m in problems),
            phase=row.phase,
            messages=[m.message for m in problems],
        )
    store.accept_occurrences(session, uuids, now)  # the lifecycle engine takes each from here
    row.phase = ACCEPTED
    row.due_at = None  # the series itself has nothing to run
    store.changed(session, row, now)
    # one accepted event for the series; each occurrence is told ahead of its own end
    config = broker.config.notifications
    outbox.emit(session, config, outbox.SessionFacts.of(row), SessionRecord.of(row.record),
                ACCEPTED_EVENT, now)  # fmt: skip
    for occurrence in occurrences:
        outbox.emit_ending_soon(session, config, outbox.SessionFacts.of(occurrence, ACCEPTED),
                                SessionRecord.of(occurrence.record), now)  # fmt: skip


def withdraw(session: Session, row: ExecutionSession, now: int) -> None:
    """The series was rejected (or cancelled) while offered: its occurrences are rejected
    too, and their holds freed."""
    if not is_series(row):
        return
    uuids = [o.uuid for o in store.occurrences_of(session, row.uuid, lock=True)
             if o.phase == OFFERED]  # fmt: skip
    store.set_phase(session, uuids, REJECTED, now)
    ledger.set_booking_state(session, session_uuids=uuids, old=(HELD,), new=RELEASED, now=now)


def cancelled(
    broker: Broker, session: Session, row: ExecutionSession, now: int, finish: Finish, by: str
) -> None:
    """After a cancel (by ``by``): a series cancels every occurrence not yet ended, each
    notified as ended like a session cancelled on its own; an occurrence may have been its
    series' last one to end."""
    if is_series(row):
        for occurrence in store.occurrences_of(session, row.uuid, lock=True):
            if occurrence.phase not in FINAL:
                was = occurrence.phase
                finish(session, occurrence, CANCELLED, (HELD, CONFIRMED, ACTIVE), now)
                outbox.emit(session, broker.config.notifications,
                            outbox.SessionFacts.of(occurrence),
                            SessionRecord.of(occurrence.record), ENDED, now,
                            reason=f"cancelled with its series by {by} in phase {was}")  # fmt: skip
    elif row.series_uuid is not None:
        settle(broker, session, row.series_uuid, now)


def settle(broker: Broker, session: Session, series_uuid: str, now: int) -> None:
    """End the (accepted) series once every occurrence has ended, notified as its end."""
    series = session.get(ExecutionSession, series_uuid)
    if series is None or series.phase != ACCEPTED:
        return
    phases = [o.phase for o in store.occurrences_of(session, series_uuid)]
    if not phases or not all(p in FINAL for p in phases):
        return
    if all(p == CANCELLED for p in phases):
        series.phase = CANCELLED
    else:
        series.phase = FAILED if FAILED in phases else COMPLETED
    record = SessionRecord.of(series.record)
    record.enter("finished", now)
    counts = ", ".join(f"{phases.count(p)} {p}" for p in sorted(set(phases)))
    record.note("every occurrence has ended: {counts}", counts=counts)
    series.record = record.stored()
    store.changed(session, series, now)
    outbox.emit(session, broker.config.notifications, outbox.SessionFacts.of(series), record,
                ENDED, now, reason=f"every occurrence has ended: {counts}")  # fmt: skip


def settle_after_step(broker: Broker, series_uuid: str) -> None:
    """The lifecycle engine ended an occurrence: end its series if that was the last one
    (a transaction of its own, taking the series' locks in the shared order)."""
    with broker.db.write() as session:
        try:
            store.locked(session, series_uuid)
        except NotFound:  # the series is gone: nothing to settle
            return
        settle(broker, session, series_uuid, int(time.time()))


def render(session: Session, row: ExecutionSession, base_url: str) -> dict[str, Any]:
    """The session as a client sees it; a series with its occurrences' sessions and phases
    once it was accepted (before, they are no sessions of the client's)."""
    record = SessionRecord.of(row.record)
    if record.series is None:
        return render_session(row, base_url, record)
    phases = {o.uuid: o.phase for o in store.occurrences_of(session, row.uuid)}
    accepted = any(p not in (OFFERED, REJECTED, EXPIRED) for p in phases.values())
    return render_session(row, base_url, record, phases if accepted else None)
