"""Drive accepted sessions through their phases by calling their platform, one step at a time.

ACCEPTED → WAITING (the platform reserves the slot) → PREPARING at the preparing start (storage,
then data, then the executable, each component with its own phase) → AVAILABLE at the booked
start (the work is started) → RUNNING → RELEASING → COMPLETED or FAILED; a client may cancel at
any point, and the end of the booked window stops the work.

Every step is persisted before the next one starts, with the session's generation compared
(optimistic concurrency, as placement does): a client's cancel that lands while a platform call
runs wins, and the engine then cleans up what that call made. A node process works only on the
sessions it holds a lease on, so replicas sharing one database never run a session twice; after
a crash the lease runs out (or, on the same host, is taken over at once from the dead process)
and the session resumes with the step it was in: platform steps are idempotent.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session

from platforms.contract import Execution, Platform, PlatformError, WorkState

from ..booking import ledger
from ..broker import Broker
from ..db.tables import ACTIVE, CONFIRMED, RELEASED, ExecutionSession
from ..kinds.base import Component, Level
from ..notifications import events, outbox
from ..observability.metrics import PLATFORM_ERRORS, PLATFORM_STEPS
from ..owners import dead_on_this_host, process_owner
from ..schedule import instant
from ..sessions import series, store
from ..sessions.execution import execution_of
from ..sessions.phases import (
    ACCEPTED,
    AVAILABLE,
    CANCELLED,
    COMPLETED,
    FAILED,
    FINAL,
    PREPARING,
    RELEASING,
    RUNNING,
    WAITING,
)
from ..sessions.record import ComponentStatus, Prepared, SessionRecord
from ..sessions.usage import record_usage
from ..staging.rules import rules_for

log = logging.getLogger(__name__)

# the phases whose entry is notified, and their events
PHASE_EVENTS = {
    PREPARING: events.PREPARING, AVAILABLE: events.READY, COMPLETED: events.ENDED,
    FAILED: events.FAILED,
}  # fmt: skip
MAX_STEPS = 32  # per visit: a session that keeps changing is looked at again next tick


@dataclass
class Outcome:
    """What one step decided."""

    phase: str
    due_at: int | None
    booking: tuple[tuple[str, ...], str] | None = None  # (from states, to state)


class Lifecycle:
    """The lifecycle engine of one node process (its loop lives in ``runner``)."""

    def __init__(self, broker: Broker, owner: str | None = None):
        self.broker = broker
        self.owner = owner or process_owner()
        self.config = broker.config.lifecycle
        self.platforms: dict[str, Platform] = {p.name: p for p in broker.platforms}
        self.staging = rules_for(broker.config)

    # --- leases --------------------------------------------------------------------------------

    def due(self, limit: int, now: int | None = None) -> list[str]:
        """Sessions that need a step now and that no live process holds."""
        now = int(time.time()) if now is None else now
        with self.broker.db.read() as session:
            rows = store.due(session, now, limit * 4)
        return [uuid for uuid, owner, until in rows if self._may_take(owner, until, now)][:limit]

    def _may_take(self, owner: str | None, until: int | None, now: int) -> bool:
        return (
            owner is None or owner == self.owner or (until or 0) < now or dead_on_this_host(owner)
        )

    def acquire(self, uuid: str, now: int | None = None) -> bool:
        now = int(time.time()) if now is None else now
        with self.broker.db.write() as session:
            lease = store.lease_of(session, uuid)
            if lease is None or not self._may_take(*lease, now):
                return False
            return store.take_lease(session, uuid, lease[0], self.owner, now + self._lease_seconds)

    def renew(self, uuids: list[str]) -> None:
        if not uuids:
            return
        with self.broker.db.write() as session:
            store.renew_leases(session, uuids, self.owner, int(time.time()) + self._lease_seconds)

    def let_go(self, uuid: str) -> None:
        with self.broker.db.write() as session:
            store.drop_lease(session, uuid, self.owner)

    @property
    def _lease_seconds(self) -> int:
        return max(int(self.config.lease.total_seconds()), 1)

    # --- steps ---------------------------------------------------------------------------------

    def advance(self, uuid: str) -> None:
        """Take the session through every step that is due now (it must be leased to us)."""
        for _ in range(MAX_STEPS):
            row = store.current(self.broker, uuid)
            if row is None or row.lease_owner != self.owner:
                return
            now = int(time.time())
            if row.due_at is None or row.due_at > now:
                return
            record = SessionRecord.of(row.record)
            unreadable: PlatformError | None = None
            try:
                execution = self.execution(row)
            except PlatformError as exc:  # a kind's plugin is gone: the work can still go
                execution, unreadable = self.execution(row, components=False), exc
            step = Step(self.platforms.get(row.platform), row, execution, record, now)
            started = time.perf_counter()
            try:
                if unreadable is not None and row.phase not in (RELEASING, CANCELLED):
                    raise unreadable
                outcome = self._step(step)
            except Exception as exc:  # a platform bug must not stop the engine
                PLATFORM_ERRORS.labels(row.platform, row.phase).inc()
                detail = str(exc) if isinstance(exc, PlatformError) else _unexpected(exc)
                record.note("{phase} failed: {error}", "ERROR", phase=row.phase, error=detail)
                log.warning("session %s: %s failed: %s", uuid, row.phase, detail)
                outcome = self._failure(row, record)
            PLATFORM_STEPS.labels(row.platform, row.phase).observe(time.perf_counter() - started)
            for note in execution.notes:
                record.note("{note}", note=note)
            if not self._persist(row, record, execution, outcome):
                self._keep_platform_state(row, execution)
            elif row.series_uuid is not None and outcome.phase in FINAL:
                series.settle_after_step(self.broker, row.series_uuid)  # its last occurrence?

    def _failure(self, row: ExecutionSession, record: SessionRecord) -> Outcome:
        if row.phase in (RELEASING, CANCELLED):
            return self._retry_release(row, record)
        record.outcome = FAILED
        return Outcome(RELEASING, int(time.time()))

    def _step(self, step: Step) -> Outcome:
        row, record, now = step.row, step.record, step.now
        if step.platform is None:
            raise PlatformError(f"platform {row.platform} is not configured on this node")
        platform, execution = step.platform, step.execution
        phase = row.phase
        if phase == ACCEPTED:
            platform.reserve(execution)
            record.enter(WAITING, now)
            return Outcome(WAITING, row.prepare_at)
        if phase == WAITING:
            if now < row.prepare_at:
                return Outcome(WAITING, row.prepare_at)
            record.enter(PREPARING, now)
            for status in record.component_statuses():
                status.phase = WAITING
            return Outcome(PREPARING, now, ((CONFIRMED,), ACTIVE))
        if phase == PREPARING:
            return self._prepare(step)
        if phase in (AVAILABLE, RUNNING):
            return self._watch(step)
        if phase == RELEASING:
            return self._release(step)
        if phase == CANCELLED:
            if execution.state:
                platform.stop(execution, "the session was cancelled")
                platform.release(execution)
                record.note("the work was stopped and removed from {platform}",
                            platform=row.platform)  # fmt: skip
            record.enter("finished", now)
            return Outcome(CANCELLED, None, ((CONFIRMED, ACTIVE), RELEASED))
        return Outcome(phase, None)  # nothing to do in any other phase

    def _prepare(self, step: Step) -> Outcome:
        """One component per step, in order: storage, then data, then the executable."""
        platform, row, execution, record = step.working
        for status in record.component_statuses():
            if status.phase == AVAILABLE:
                continue
            started = time.time()
            status.phase = PREPARING
            component = _component(execution, status)
            if status.category == "storage" and component is not None:
                platform.prepare_storage(execution, component)
            elif status.category == "data" and component is not None:
                platform.stage_data(execution, component)
            else:
                platform.prepare_executable(execution)
            status.phase = AVAILABLE
            status.prepared = Prepared(start=int(started), seconds=round(time.time() - started, 3))
            return Outcome(PREPARING, int(time.time()))
        if step.now < row.start_at:
            return Outcome(PREPARING, row.start_at)
        platform.start(execution)
        record.connectors = platform.connectors(execution)
        record.enter(AVAILABLE, step.now)
        return Outcome(AVAILABLE, step.now)

    def _watch(self, step: Step) -> Outcome:
        platform, row, execution, record = step.working
        now = step.now
        status = platform.poll(execution)
        running = status.state in (WorkState.PENDING, WorkState.RUNNING)
        if running and now >= row.end_at:
            platform.stop(execution, f"the booked window ended at {instant(row.end_at)}")
            if execution.executable is not None and execution.executable.INTERACTIVE:
                # a notebook's (a VM's) window ending is its session's normal end
                record.note("the booked window ended at {end}", end=instant(row.end_at))
                record.outcome = COMPLETED
            else:  # batch work still running at its window's end did not finish
                record.note("stopped: the booked window ended at {end}", "WARN",
                            end=instant(row.end_at))  # fmt: skip
                record.outcome = FAILED
            return Outcome(RELEASING, now)
        tick = max(int(self.config.poll_interval.total_seconds()), 1)
        next_look = min(now + tick, row.end_at)
        if running:
            if status.state == WorkState.RUNNING and row.phase != RUNNING:
                record.enter(RUNNING, now)
                record.connectors = platform.connectors(execution)
                return Outcome(RUNNING, next_look)
            return Outcome(row.phase, next_look)
        if status.state == WorkState.SUCCEEDED:
            record.note("the work finished: {detail}", detail=status.message or "exit code 0")
            record.outcome = COMPLETED
        elif status.state == WorkState.FAILED:
            record.note("the work failed: {detail}", "ERROR",
                        detail=status.message or f"exit code {status.exit_code}")  # fmt: skip
            record.outcome = FAILED
        else:
            record.note("drift: the work is gone from platform {platform} ({detail})", "ERROR",
                        platform=row.platform, detail=status.message or "not found")  # fmt: skip
            log.warning("session %s: work missing on %s", row.uuid, row.platform)
            record.outcome = FAILED
        if status.exit_code is not None:
            record.exit_code = status.exit_code
        return Outcome(RELEASING, now)

    def _release(self, step: Step) -> Outcome:
        platform, _, execution, record = step.working
        platform.stop(execution, "the session is ending")
        platform.release(execution)
        record.connectors = []
        record.enter("finished", step.now)
        outcome = record.outcome or COMPLETED
        record.enter(outcome, step.now)
        return Outcome(outcome, None, ((CONFIRMED, ACTIVE), RELEASED))

    def _retry_release(self, row: ExecutionSession, record: SessionRecord) -> Outcome:
        record.release_attempts = attempts = record.release_attempts + 1
        now = int(time.time())
        if attempts < self.config.release_attempts:
            return Outcome(row.phase, now + min(2**attempts, 60))
        record.note("gave up releasing after {attempts} attempts; the platform may hold "
                    "leftovers (reconciliation removes them)", "ERROR",
                    attempts=attempts)  # fmt: skip
        final = CANCELLED if row.phase == CANCELLED else FAILED
        return Outcome(final, None, ((CONFIRMED, ACTIVE), RELEASED))

    # --- persistence ---------------------------------------------------------------------------

    def _persist(
        self,
        row: ExecutionSession,
        record: SessionRecord,
        execution: Execution,
        outcome: Outcome,
    ) -> bool:
        """Write the step if nobody changed the session meanwhile (its generation)."""
        now = int(time.time())
        record.platform_state = execution.state
        with self.broker.db.write() as session:
            written = store.write_step(
                session, row, self.owner, now,
                phase=outcome.phase,
                record=record.stored(),
                due_at=outcome.due_at,
                lease_until=now + self._lease_seconds,
            )  # fmt: skip
            if not written:
                return False
            if outcome.phase != row.phase:
                self._notify(session, row, record, outcome.phase, now)
            if outcome.booking is not None:
                old, new = outcome.booking
                if new == RELEASED:
                    record_usage(session, row, record.available_since, now)
                ledger.set_booking_state(
                    session, session_uuids=[row.uuid], old=old, new=new, now=now
                )
        if outcome.phase != row.phase:
            log.info("session %s: %s -> %s", row.uuid, row.phase, outcome.phase)
        return True

    def _notify(
        self, session: Session, row: ExecutionSession, record: SessionRecord, phase: str, now: int
    ) -> None:
        """The event of entering ``phase``, stored with the step that entered it."""
        event = PHASE_EVENTS.get(phase)
        if event is None:
            return
        reason = None
        if phase == FAILED:
            errors = [m.message for m in record.messages if m.level == "ERROR"]
            reason = errors[-1] if errors else None
        outbox.emit(session, self.broker.config.notifications,
                    outbox.SessionFacts.of(row, phase), record, event, now,
                    reason=reason)  # fmt: skip

    def _keep_platform_state(self, row: ExecutionSession, execution: Execution) -> None:
        """The session changed under a step (a cancel): keep what the platform made, and make
        sure the engine comes back to clean it up."""
        if not execution.state:
            return
        with self.broker.db.write() as session:
            store.keep_platform_state(session, row.uuid, execution.state, int(time.time()))

    # --- views of a session --------------------------------------------------------------------

    def execution(self, row: ExecutionSession, *, components: bool = True) -> Execution:
        return execution_of(
            row, self.broker.registry, self.config.workdir, self.staging, components=components
        )


@dataclass
class Step:
    """What one step of a session works with: its platform (None when the node no longer
    has it), the row as read, the platform's view of it, and its record, changed in place and
    written with the step."""

    platform: Platform | None
    row: ExecutionSession
    execution: Execution
    record: SessionRecord
    now: int

    @property
    def working(self) -> tuple[Platform, ExecutionSession, Execution, SessionRecord]:
        assert self.platform is not None  # _step refuses a step without its platform
        return self.platform, self.row, self.execution, self.record


def add_note(
    broker: Broker, uuid: str, template: str, level: Level = "INFO", **values: Any
) -> None:
    """Add a message to a session outside the engine's steps (reconciliation, for one)."""
    store.edit_record(
        broker, uuid, lambda record: record.note(template, level, **values), int(time.time())
    )


def _component(execution: Execution, status: ComponentStatus) -> Component | None:
    if status.category == "executable":
        return execution.executable
    for component in getattr(execution, status.category):
        if component.meta is not None and component.meta.uuid == status.uuid:
            return component
    raise PlatformError(f"{status.category} component {status.uuid} is missing from the session")


def _unexpected(exc: Exception) -> str:
    log.error("platform step raised %s", "".join(traceback.format_exception(exc)))
    return f"internal error in the platform plugin ({type(exc).__name__}: {exc})"
