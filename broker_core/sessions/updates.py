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

from sqlalchemy import update
from sqlmodel import Session, select

from ..booking import ledger
from ..broker import Broker
from ..db.tables import ACTIVE, CONFIRMED, HELD, RELEASED, ExecutionSession, OfferSet
from ..errors import Conflict, DocumentInvalid, FieldError, NotFound
from ..identity import ANONYMOUS_IDENTITY, Identity
from ..offers.probe import claim_probe, is_probe
from ..policy_host import admission_problems
from ..suggest import close_matches
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
from .usage import record_usage
from .views import instant, render_session


def get_session(
    broker: Broker, session_uuid: str, identity: Identity = ANONYMOUS_IDENTITY
) -> dict[str, Any]:
    with broker.db.read() as session:
        row = session.get(ExecutionSession, session_uuid)
        if row is None or not broker.may_see(identity, row.owner):
            raise NotFound("session", session_uuid)  # another's session: as if there were none
        return render_session(row, broker.base_url)


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


def _update_session(
    broker: Broker,
    session_uuid: str,
    update_doc: dict[str, Any],
    identity: Identity,
) -> dict[str, Any]:
    now = int(time.time())
    expired = False
    with broker.db.write() as session:
        row = _locked(broker, session, session_uuid)
        if not broker.may_see(identity, row.owner):
            raise NotFound("session", session_uuid)
        if is_extension(update_doc):
            extend(broker, session, row, update_doc, now)
            rendered = render_session(row, broker.base_url)
            broker.session_changed()
            return rendered
        _check_phase_value(update_doc)
        value = _phase_update(update_doc, row.phase)
        if row.phase == value or (value == ACCEPTED and row.phase in AFTER_ACCEPTANCE):
            return render_session(row, broker.base_url)  # repeating an update is harmless
        allowed = CLIENT_TRANSITIONS.get(row.phase, ())
        if value not in allowed:
            raise Conflict(
                f"cannot change phase from {row.phase} to {value}"
                + (f"; allowed: {', '.join(allowed)}" if allowed else ""),
                phase=row.phase,
            )
        if value == ACCEPTED and row.expires_at <= now:
            _expire(session, [row.offerset_uuid], now)
            expired = True
        elif value == ACCEPTED:
            _accept(broker, session, row, now)
        elif value == REJECTED or (value == CANCELLED and row.phase == OFFERED):
            # withdrawing one offer frees its hold; its siblings stay OFFERED
            _finish(session, row, value, (HELD,), now)
        elif value == CANCELLED:
            _finish(session, row, CANCELLED, (HELD, CONFIRMED, ACTIVE), now)
        if not expired:
            rendered = render_session(row, broker.base_url)
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


def _locked(broker: Broker, session: Session, session_uuid: str) -> ExecutionSession:
    """The session, with its offer set locked first (the shared lock order). SQLite's
    BEGIN IMMEDIATE has already serialised every writer, so there is nothing to lock there."""
    if broker.db.is_sqlite:
        row = session.get(ExecutionSession, session_uuid)
        if row is None:
            raise NotFound("session", session_uuid)
        return row
    offerset_uuid = session.exec(
        select(ExecutionSession.offerset_uuid).where(ExecutionSession.uuid == session_uuid)
    ).first()
    if offerset_uuid is None:
        raise NotFound("session", session_uuid)
    session.exec(select(OfferSet.uuid).where(OfferSet.uuid == offerset_uuid).with_for_update())
    return session.exec(
        select(ExecutionSession).where(ExecutionSession.uuid == session_uuid).with_for_update()
    ).one()


def _accept(broker: Broker, session: Session, row: ExecutionSession, now: int) -> None:
    if is_probe(row):  # it held nothing: a fresh claim, which may lose the race (409)
        claim_probe(broker, session, row, now)
    else:
        confirmed = ledger.set_booking_state(
            session, session_uuids=[row.uuid], old=(HELD,), new=CONFIRMED, now=now
        )
        if confirmed != 1:
            raise Conflict("the offer's booking is no longer held", phase=row.phase)
    # The pools are locked now, so accepts are serialised: policies that count what is
    # accepted (allocations) see every earlier accept, and a refusal rolls this one back.
    problems = admission_problems(broker.policies, session, row, now)
    if problems:
        raise Conflict(
            "the offer can no longer be accepted: " + "; ".join(m.message for m in problems),
            phase=row.phase,
            messages=[m.message for m in problems],
        )
    siblings = list(
        session.exec(
            select(ExecutionSession.uuid).where(
                ExecutionSession.offerset_uuid == row.offerset_uuid,
                ExecutionSession.uuid != row.uuid,
                ExecutionSession.phase == OFFERED,
            )
        )
    )
    _set_phase(session, siblings, REJECTED, now)
    ledger.set_booking_state(session, session_uuids=siblings, old=(HELD,), new=RELEASED, now=now)
    row.phase, row.modified_at, row.generation = ACCEPTED, now, row.generation + 1
    row.due_at = now  # the lifecycle engine takes it from here
    session.add(row)


def _finish(
    session: Session, row: ExecutionSession, phase: str, states: tuple[str, ...], now: int
) -> None:
    if row.platform_state:
        # the platform holds work for it: the lifecycle engine stops and removes it, then
        # frees the booking (freeing it first could let another session start beside it)
        row.due_at = now
    else:
        record_usage(session, row, row.document, now)
        ledger.set_booking_state(
            session, session_uuids=[row.uuid], old=states, new=RELEASED, now=now
        )
        row.due_at = None
    row.phase, row.modified_at, row.generation = phase, now, row.generation + 1
    session.add(row)


def _set_phase(session: Session, uuids: list[str], phase: str, now: int) -> None:
    if uuids:
        session.exec(  # type: ignore[call-overload]
            update(ExecutionSession)
            .where(ExecutionSession.uuid.in_(uuids))  # type: ignore[attr-defined]
            .values(phase=phase, modified_at=now, generation=ExecutionSession.generation + 1)
        )


def _expire(session: Session, offerset_uuids: list[str], now: int) -> int:
    """Expire the open offers of these (locked) offer sets and free their holds, all in a few
    statements: under load as many offer sets expire as are made."""
    uuids = list(
        session.exec(
            select(ExecutionSession.uuid).where(
                ExecutionSession.offerset_uuid.in_(offerset_uuids),  # type: ignore[attr-defined]
                ExecutionSession.phase == OFFERED,
                ExecutionSession.expires_at <= now,
            )
        )
    )
    _set_phase(session, uuids, EXPIRED, now)
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
            due = list(
                session.exec(
                    select(ExecutionSession.offerset_uuid)
                    .where(ExecutionSession.phase == OFFERED, ExecutionSession.expires_at <= now)
                    .distinct()
                    .limit(batch)
                )
            )
            if not due:
                return total
            query = select(OfferSet.uuid).where(OfferSet.uuid.in_(due)).order_by(OfferSet.uuid)  # type: ignore[attr-defined]
            if not broker.db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            locked = list(session.exec(query))
            count = _expire(session, locked, now)
        total += count
        if len(due) < batch or count == 0:
            return total
        time.sleep(0.005)  # let the writers waiting meanwhile take the lock first


def next_expiry(broker: Broker) -> int | None:
    with broker.db.read() as session:
        return session.exec(
            select(ExecutionSession.expires_at)
            .where(ExecutionSession.phase == OFFERED)
            .order_by(ExecutionSession.expires_at)
            .limit(1)
        ).first()
