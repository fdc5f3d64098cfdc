"""Client updates of a session's phase: accept, reject, cancel.

Lock order, shared with the reaper so they cannot deadlock: offer set row, then session rows,
then booking rows, then (in ``ledger.set_booking_state``) every pool row in id order. Every
update lowers usage or leaves it unchanged (an accepted hold was already counted), so it could
never overbook; the pool locks only serialise the generation bumps that let caches catch up.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from sqlmodel import Session

from .. import audit
from ..booking import ledger
from ..broker import Broker
from ..db.tables import ACTIVE, CONFIRMED, HELD, RELEASED, ExecutionSession
from ..errors import Conflict, DocumentInvalid, FieldError, NotFound
from ..identity import ANONYMOUS_IDENTITY, Identity
from ..notifications import outbox
from ..notifications.events import ENDED
from ..notifications.status import deliveries
from ..observability.metrics import ACCEPTS, EXPIRIES
from ..offers.probe import claim_probe, is_probe
from ..policy_host import admission_problems
from ..schedule import instant
from ..suggest import close_matches
from . import series, store
from .extend import extend, is_extension
from .phases import (
    ACCEPTED,
    AFTER_ACCEPTANCE,
    CANCELLED,
    CLIENT_TRANSITIONS,
    EXPIRED,
    OFFERED,
    PHASES,
    REJECTED,
)
from .record import SessionRecord
from .usage import record_usage
from .views import render_session


def get_session(
    broker: Broker, session_uuid: str, identity: Identity = ANONYMOUS_IDENTITY
) -> dict[str, Any]:
    """The session as ``identity`` may see it; its ``notify`` with how each of its
    notifications went (only here: who may read the session is its owner, or an admin). A
    service (``auth.service_groups``) reads it without its ``notify``: whom it tells is not
    a service's to know."""
    row = store.read(broker, session_uuid, identity, service=True)
    owners = broker.may_see(identity, row.owner)
    record = SessionRecord.of(row.record)
    single = row.series_uuid is not None or record.series is None
    if single and (record.notify is None or not owners):
        rendered = render_session(row, broker.base_url, record)
        if not owners:
            rendered.pop("notify", None)
        return rendered
    with broker.db.read() as session:
        if single:
            rendered = render_session(row, broker.base_url, record)
        else:  # a series: with its occurrences' phases
            rendered = series.render(session, row, broker.base_url)
        if not owners:
            rendered.pop("notify", None)
        elif record.notify is not None and "notify" in rendered:
            rendered["notify"]["deliveries"] = deliveries(session, row.uuid, record.notify)
    return rendered


def update_session(
    broker: Broker,
    session_uuid: str,
    update_doc: dict[str, Any],
    identity: Identity = ANONYMOUS_IDENTITY,
) -> dict[str, Any]:
    """Apply a client's update; the session as it is then.

    A refused update (a 400 for a value that is no phase, a 409 for one the session does not
    allow now, an expired offer) carries the session as it is after the refusal in the
    exception's ``session``, so the problem shows it: the standard's other implementation
    answers such updates 200 with the session, hiding the fault; here the 4xx stays."""
    try:
        return _update_session(broker, session_uuid, update_doc, identity)
    except (Conflict, DocumentInvalid) as exc:
        if exc.session is None:
            # read afresh: what the refused transaction tried was rolled back
            with contextlib.suppress(NotFound):
                exc.session = get_session(broker, session_uuid, identity)
        raise


def _is_release(update_doc: dict[str, Any]) -> bool:
    """An update a service may make of anyone's session: it only frees what the session holds."""
    return (update_doc.get("kind") == "uri:enum-value-update" and update_doc.get("path") == "phase"
            and update_doc.get("value") in (REJECTED, CANCELLED))  # fmt: skip


def _update_session(
    broker: Broker,
    session_uuid: str,
    update_doc: dict[str, Any],
    identity: Identity,
) -> dict[str, Any]:
    now = int(time.time())
    expired = False
    with broker.db.write() as session:
        row = store.visible(broker, identity, store.locked(session, session_uuid), session_uuid,
                            service=_is_release(update_doc))  # fmt: skip
        if is_extension(update_doc):
            series.refuse_extension(row)
            was = row.end_at
            extend(broker, session, row, update_doc, now)
            audit.record(session, identity.owner, audit.EXTEND, audit.session_subject(row.uuid),
                         f"booked end {instant(was)} -> {instant(row.end_at)}", now)  # fmt: skip
            rendered = render_session(row, broker.base_url)
            broker.session_changed()
            return rendered
        _check_phase_value(update_doc)
        value = _phase_update(update_doc, row.phase)
        series.refuse_occurrence_offer(row)
        if row.phase == value or (value == ACCEPTED and row.phase in AFTER_ACCEPTANCE):
            return series.render(session, row, broker.base_url)  # repeating is harmless
        allowed = CLIENT_TRANSITIONS.get(row.phase, ())
        was = row.phase
        if value not in allowed:
            if value == ACCEPTED:
                ACCEPTS.labels("conflict").inc()
            raise Conflict(
                f"cannot change phase from {row.phase} to {value}"
                + (f"; allowed: {', '.join(allowed)}" if allowed else ""),
                phase=row.phase,
            )
        if value == ACCEPTED and row.expires_at <= now:
            _expire(session, [row.offerset_uuid], now)
            expired = True
            ACCEPTS.labels("expired").inc()
        elif value == ACCEPTED:
            try:
                (series.accept if series.is_series(row) else _accept)(broker, session, row, now)
            except Conflict:
                ACCEPTS.labels("conflict").inc()
                raise
            ACCEPTS.labels("accepted").inc()
        elif value == REJECTED or (value == CANCELLED and row.phase == OFFERED):
            # withdrawing one offer frees its hold; its siblings stay OFFERED
            _finish(session, row, value, (HELD,), now)
            series.withdraw(session, row, now)  # a series' occurrences with it
        elif value == CANCELLED:
            _finish(session, row, CANCELLED, (HELD, CONFIRMED, ACTIVE), now)
            outbox.emit(session, broker.config.notifications, outbox.SessionFacts.of(row),
                        SessionRecord.of(row.record), ENDED, now,
                        reason=f"cancelled by {identity.owner} in phase {was}")  # fmt: skip
            series.cancelled(broker, session, row, now, _finish, identity.owner)
        if not expired:
            action = {ACCEPTED: audit.ACCEPT, REJECTED: audit.REJECT}.get(value, audit.CANCEL)
            audit.record(session, identity.owner, action, audit.session_subject(row.uuid),
                         f"{was} -> {row.phase}", now)  # fmt: skip
            rendered = series.render(session, row, broker.base_url)
    if not expired:
        broker.session_changed()
        return rendered
    raise Conflict(
        f"the offer expired at {instant(row.expires_at)}; current phase is {EXPIRED}",
        phase=EXPIRED,
    )


def _check_phase_value(update_doc: dict[str, Any]) -> None:
    """A phase update whose value is no phase at all is a malformed document (400 naming
    ``/value`` and the phases a client may set), not a conflict with the session's phase."""
    if update_doc.get("kind") != "uri:enum-value-update" or update_doc.get("path") != "phase":
        return
    value = update_doc.get("value")
    if isinstance(value, str) and value in PHASES:
        return
    settable = list(dict.fromkeys(p for values in CLIENT_TRANSITIONS.values() for p in values))
    guess = close_matches(value, PHASES) if isinstance(value, str) else []
    what = f"{repr(value)[:100]} is not a phase" if "value" in update_doc else "value is required"
    if guess:
        what += f" (did you mean {guess[0]!r}?)"
    raise DocumentInvalid(
        [
            FieldError(
                "/value",
                f"{what}; a client may set the phase to {', '.join(settable[:-1])} or "
                f"{settable[-1]} (the session's meta.options lists those it allows now)",
            )
        ]
    )


def _phase_update(update_doc: dict[str, Any], phase: str) -> str:
    """The phase asked for; anything not among the session's options is a conflict."""
    kind, path, value = update_doc.get("kind"), update_doc.get("path"), update_doc.get("value")
    if kind != "uri:enum-value-update" or path != "phase":
        raise Conflict(
            f"update {kind} of {path!r} is not offered for this session; "
            "see meta.options for the updates it allows",
            phase=phase,
        )
    if not isinstance(value, str):
        raise Conflict(f"phase must be set to a phase name, not {value!r}", phase=phase)
    return value


def _accept(broker: Broker, session: Session, row: ExecutionSession, now: int) -> None:
    """Book the offer and free its siblings' holds in one ledger operation, then let the
    policies check it: the pools are locked now, so accepts are serialised, policies that count
    what is accepted (allocations) see every earlier accept, and a refusal rolls this one back."""
    probe = is_probe(row)
    if probe:  # it held nothing: a fresh claim, which may lose the race (409)
        claim_probe(broker, session, row, now)
    siblings = store.open_siblings(session, row)
    accepted = ledger.accept_booking(
        session, session_uuid=row.uuid, siblings=siblings, now=now, held=not probe
    )
    if not accepted:
        raise Conflict("the offer's booking is no longer held", phase=row.phase)
    store.set_phase(session, siblings, REJECTED, now)
    problems = admission_problems(broker.policies, session, row, now)
    if problems:
        raise Conflict(
            "the offer can no longer be accepted: " + "; ".join(m.message for m in problems),
            phase=row.phase,
            messages=[m.message for m in problems],
        )
    row.phase = ACCEPTED
    row.due_at = now  # the lifecycle engine takes it from here
    store.changed(session, row, now)
    outbox.emit_accepted(session, broker.config.notifications, outbox.SessionFacts.of(row),
                         SessionRecord.of(row.record), now)  # fmt: skip


def _finish(
    session: Session, row: ExecutionSession, phase: str, states: tuple[str, ...], now: int
) -> None:
    record = SessionRecord.of(row.record)
    if record.platform_state:
        # the platform holds work for it: the lifecycle engine stops and removes it, then
        # frees the booking (freeing it first could let another session start beside it)
        row.due_at = now
    else:
        record_usage(session, row, record.available_since, now)
        ledger.set_booking_state(
            session, session_uuids=[row.uuid], old=states, new=RELEASED, now=now
        )
        row.due_at = None
    row.phase = phase
    store.changed(session, row, now)


def _expire(session: Session, offerset_uuids: list[str], now: int) -> int:
    """Expire the open offers of these (locked) offer sets and free their holds, all in a few
    statements: under load as many offer sets expire as are made."""
    uuids = store.open_past_expiry(session, offerset_uuids, now)
    store.set_phase(session, uuids, EXPIRED, now)
    ledger.set_booking_state(session, session_uuids=uuids, old=(HELD,), new=RELEASED, now=now)
    return len(uuids)


def expire_due(broker: Broker, now: int | None = None, batch: int = 50) -> int:
    """Expire every offer past its expiry; returns how many. Safe to run on many replicas.

    Each batch is one short write transaction, and requests waiting for the write lock get
    their turn between batches: a second's worth of expiries under load must not hold up the
    offers being made meanwhile."""
    now = int(time.time()) if now is None else now
    total = 0
    while True:
        # a lost expiry is repeated after a restart: no need to wait for the disk
        with broker.db.write(durable=False) as session:
            due, locked = store.lock_expiring_offer_sets(session, now, batch)
            if not due:
                return total
            count = _expire(session, locked, now)
        EXPIRIES.inc(count)
        total += count
        if due < batch or count == 0:
            return total
        time.sleep(0.005)  # let the writers waiting meanwhile take the lock first


def next_expiry(broker: Broker) -> int | None:
    with broker.db.read() as session:
        return store.next_expiry(session)
