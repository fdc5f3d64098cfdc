"""The one place that reads and writes session rows (``execution_session``).

Every change of a session takes a new ``generation`` (and ``modified_at``): the lifecycle
engine writes its steps only when the generation is still the one it read (optimistic
concurrency, as placement does), so a client's cancel landing while a platform call runs wins.
Who may see a session is decided here too: its owner, or an admin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, insert, or_, update
from sqlmodel import Session, select

from ..broker import Broker
from ..db.locks import for_update, lock_session
from ..db.tables import ExecutionSession, OfferSet
from ..errors import NotFound
from .phases import ACCEPTED, AVAILABLE, EXPIRED, OFFERED, RUNNING
from .record import SessionRecord

if TYPE_CHECKING:
    from ..identity import Identity

_TABLE: Table = ExecutionSession.__table__  # type: ignore[assignment]
_INSERT = insert(_TABLE)
_BUMPED = {"generation": ExecutionSession.generation + 1}

# --- reading -------------------------------------------------------------------------------


def visible(
    broker: Broker, identity: Identity, row: ExecutionSession | None, session_uuid: str,
    service: bool = False,
) -> ExecutionSession:  # fmt: skip
    """The session, if ``identity`` may see it; another's session is as if there were none.
    ``service``: what a member of ``auth.service_groups`` may do (read, release) is asked."""
    if row is None or not (broker.may_see(identity, row.owner)
                           or (service and broker.may_release(identity))):  # fmt: skip
        raise NotFound("session", session_uuid)
    return row


def read(
    broker: Broker, session_uuid: str, identity: Identity, service: bool = False
) -> ExecutionSession:
    """The session as ``identity`` may see it, read in a transaction of its own."""
    with broker.db.read() as session:
        row = session.get(ExecutionSession, session_uuid)
        return visible(broker, identity, row, session_uuid, service)


def current(broker: Broker, session_uuid: str) -> ExecutionSession | None:
    """The session as it is now, read in a transaction of its own."""
    with broker.db.read() as session:
        return session.get(ExecutionSession, session_uuid)


def locked(session: Session, session_uuid: str) -> ExecutionSession:
    """The session locked for a change, its offer set locked first (the shared lock order)."""
    row = lock_session(session, session_uuid)
    if row is None:
        raise NotFound("session", session_uuid)
    return row


def of_offerset(session: Session, offerset_uuid: str) -> list[ExecutionSession]:
    """The offers of an offer set, earliest first."""
    return list(
        session.exec(
            select(ExecutionSession)
            .where(ExecutionSession.offerset_uuid == offerset_uuid)
            .order_by(ExecutionSession.start_at, ExecutionSession.uuid)  # type: ignore[arg-type]
        )
    )


def occurrences_of(
    session: Session, series_uuid: str, *, lock: bool = False
) -> list[ExecutionSession]:
    """The occurrences' sessions of a recurring series, in time order (locked for a change
    with ``lock``: the caller holds their offer set's lock already)."""
    query = (
        select(ExecutionSession)
        .where(ExecutionSession.series_uuid == series_uuid)
        .order_by(ExecutionSession.start_at, ExecutionSession.uuid)  # type: ignore[arg-type]
    )
    return list(session.exec(for_update(session, query) if lock else query))


def open_siblings(session: Session, row: ExecutionSession) -> list[str]:
    """The other offers of the session's offer set that are still open."""
    return list(
        session.exec(
            select(ExecutionSession.uuid).where(
                ExecutionSession.offerset_uuid == row.offerset_uuid,
                ExecutionSession.uuid != row.uuid,
                ExecutionSession.phase == OFFERED,
            )
        )
    )


def open_past_expiry(session: Session, offerset_uuids: Sequence[str], now: int) -> list[str]:
    """The open offers of these offer sets whose expiry has come."""
    return list(
        session.exec(
            select(ExecutionSession.uuid).where(
                ExecutionSession.offerset_uuid.in_(offerset_uuids),  # type: ignore[attr-defined]
                ExecutionSession.phase == OFFERED,
                ExecutionSession.expires_at <= now,
            )
        )
    )


def lock_expiring_offer_sets(session: Session, now: int, batch: int) -> tuple[int, list[str]]:
    """Up to ``batch`` offer sets with an open offer past its expiry, and those of them locked
    now (others' locks are skipped: another replica is expiring them); how many were due."""
    due = list(
        session.exec(
            select(ExecutionSession.offerset_uuid)
            .where(ExecutionSession.phase == OFFERED, ExecutionSession.expires_at <= now)
            .distinct()
            .limit(batch)
        )
    )
    if not due:
        return 0, []
    query = select(OfferSet.uuid).where(OfferSet.uuid.in_(due)).order_by(OfferSet.uuid)  # type: ignore[attr-defined]
    return len(due), list(session.exec(for_update(session, query, skip_locked=True)))


def next_expiry(session: Session) -> int | None:
    return session.exec(
        select(ExecutionSession.expires_at)
        .where(ExecutionSession.phase == OFFERED)
        .order_by(ExecutionSession.expires_at)  # type: ignore[arg-type]
        .limit(1)
    ).first()


# --- writing -------------------------------------------------------------------------------


def insert_many(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert new sessions as plain rows (no ORM objects on the hot path of requests)."""
    session.connection().execute(_INSERT, rows)


def add(session: Session, row: ExecutionSession) -> None:
    """Store one new session."""
    session.add(row)
    session.flush()


def changed(session: Session, row: ExecutionSession, now: int) -> None:
    """The (locked) row was changed: it takes a new generation."""
    row.modified_at, row.generation = now, row.generation + 1
    session.add(row)


def set_phase(session: Session, uuids: Sequence[str], phase: str, now: int) -> None:
    """Move these sessions to ``phase`` in one statement."""
    if uuids:
        session.exec(  # type: ignore[call-overload]
            update(ExecutionSession)
            .where(ExecutionSession.uuid.in_(uuids))  # type: ignore[attr-defined]
            .values(phase=phase, modified_at=now, **_BUMPED)
        )


def accept_occurrences(session: Session, uuids: Sequence[str], now: int) -> None:
    """The occurrences of an accepted series are accepted: due for the lifecycle engine."""
    if uuids:
        session.exec(  # type: ignore[call-overload]
            update(ExecutionSession)
            .where(ExecutionSession.uuid.in_(uuids))  # type: ignore[attr-defined]
            .values(phase=ACCEPTED, due_at=now, modified_at=now, **_BUMPED)
        )


def expire_offer_sets(session: Session, offerset_uuids: Sequence[str], now: int) -> None:
    """The open offers of these offer sets expire now (a new request replaced them), and so
    do the offer sets."""
    if not offerset_uuids:
        return
    connection = session.connection()
    connection.execute(
        update(ExecutionSession)
        .where(
            ExecutionSession.offerset_uuid.in_(offerset_uuids),  # type: ignore[attr-defined]
            ExecutionSession.phase == OFFERED,
        )
        .values(phase=EXPIRED, expires_at=now, modified_at=now, **_BUMPED)
    )
    connection.execute(
        update(OfferSet)
        .where(OfferSet.uuid.in_(offerset_uuids))  # type: ignore[attr-defined]
        .values(expires_at=now)
    )


def edit_record(
    broker: Broker, session_uuid: str, edit: Callable[[SessionRecord], None], now: int
) -> None:
    """Change a session's record outside the engine's steps (a note from reconciliation):
    ``edit`` changes it in place."""
    with broker.db.write() as session:
        row = session.get(ExecutionSession, session_uuid)
        if row is None:
            return
        record = SessionRecord.of(row.record)
        edit(record)
        row.record = record.stored()
        changed(session, row, now)


# --- the lifecycle engine: leases and steps --------------------------------------------------


def due(session: Session, now: int, limit: int) -> list[tuple[str, str | None, int | None]]:
    """Sessions that need a step now, soonest first: (uuid, lease owner, lease end)."""
    rows = session.exec(
        select(ExecutionSession.uuid, ExecutionSession.lease_owner, ExecutionSession.lease_until)
        .where(ExecutionSession.due_at <= now)  # type: ignore[operator]
        .order_by(ExecutionSession.due_at)  # type: ignore[arg-type]
        .limit(limit)
    ).all()
    return [(uuid, owner, until) for uuid, owner, until in rows]


def lease_of(session: Session, session_uuid: str) -> tuple[str | None, int | None] | None:
    """Who holds the session's lease and until when; None when there is no such session."""
    row = session.exec(
        select(ExecutionSession.lease_owner, ExecutionSession.lease_until).where(
            ExecutionSession.uuid == session_uuid
        )
    ).first()
    return None if row is None else (row[0], row[1])


def take_lease(
    session: Session, session_uuid: str, previous: str | None, owner: str, until: int
) -> bool:
    """Take the lease from its ``previous`` holder (or none); False when another was quicker."""
    result = session.exec(  # type: ignore[call-overload]
        update(ExecutionSession)
        .where(
            ExecutionSession.uuid == session_uuid,
            or_(
                ExecutionSession.lease_owner.is_(None),  # type: ignore[union-attr]
                ExecutionSession.lease_owner == previous,
            ),
        )
        .values(lease_owner=owner, lease_until=until)
    )
    return bool(result.rowcount == 1)


def renew_leases(session: Session, uuids: Sequence[str], owner: str, until: int) -> None:
    session.exec(  # type: ignore[call-overload]
        update(ExecutionSession)
        .where(
            ExecutionSession.uuid.in_(uuids),  # type: ignore[attr-defined]
            ExecutionSession.lease_owner == owner,
        )
        .values(lease_until=until)
    )


def drop_lease(session: Session, session_uuid: str, owner: str) -> None:
    session.exec(  # type: ignore[call-overload]
        update(ExecutionSession)
        .where(ExecutionSession.uuid == session_uuid, ExecutionSession.lease_owner == owner)
        .values(lease_owner=None, lease_until=None)
    )


def write_step(
    session: Session, row: ExecutionSession, owner: str, now: int, **values: Any
) -> bool:
    """Write a step of the engine (``values`` of the row) if nobody changed the session since
    ``row`` was read and ``owner`` still holds its lease; whether it was written."""
    result = session.exec(  # type: ignore[call-overload]
        update(ExecutionSession)
        .where(
            ExecutionSession.uuid == row.uuid,
            ExecutionSession.generation == row.generation,
            ExecutionSession.lease_owner == owner,
        )
        .values(modified_at=now, generation=row.generation + 1, **values)
    )
    return bool(result.rowcount == 1)


def keep_platform_state(
    session: Session, session_uuid: str, state: dict[str, Any], now: int
) -> None:
    """Keep what a platform made for a session that changed under the step that made it (a
    cancel), and make sure the engine comes back to clean it up."""
    current = session.get(ExecutionSession, session_uuid)
    if current is None:
        return
    record = SessionRecord.of(current.record)
    record.platform_state = {**record.platform_state, **state}
    current.record = record.stored()
    if current.due_at is None:
        current.due_at = now
    session.add(current)


# --- reconciliation --------------------------------------------------------------------------


def phases_of(session: Session, uuids: Sequence[str]) -> dict[str, tuple[str, int | None]]:
    """The phase and next due time of each of these sessions this node knows."""
    return {
        uuid: (phase, due_at)
        for uuid, phase, due_at in session.exec(
            select(ExecutionSession.uuid, ExecutionSession.phase, ExecutionSession.due_at).where(
                ExecutionSession.uuid.in_(list(uuids))
            )  # type: ignore[attr-defined]
        )
    }


def expected_running(session: Session, platform: str) -> list[str]:
    """The sessions whose work should be running on ``platform`` now."""
    return list(
        session.exec(
            select(ExecutionSession.uuid).where(
                ExecutionSession.platform == platform,
                ExecutionSession.phase.in_((AVAILABLE, RUNNING)),  # type: ignore[attr-defined]
            )
        )
    )


def make_due(session: Session, uuids: Sequence[str], now: int) -> None:
    """Have the engine look at these sessions at once."""
    session.exec(  # type: ignore[call-overload]
        update(ExecutionSession)
        .where(ExecutionSession.uuid.in_(list(uuids)))  # type: ignore[attr-defined]
        .values(due_at=now)
    )
