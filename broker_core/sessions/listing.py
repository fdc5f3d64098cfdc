"""GET /sessions: the caller's sessions (everyone's, for admins), a page at a time.

Sessions are listed by the start of their booked window, then uuid (the keyset of
:mod:`broker_core.pages`), each as a summary. Every query is bounded (a page of at most
``pages.MAX_LIMIT`` rows, filter lists of a few values) and walks an index in that order: the
owner's sessions by ``ix_session_owner_start`` (``owner, start_at, uuid``), or everyone's by
``ix_session_start`` (``start_at, uuid``); phase, window and pool are filters on the way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, tuple_
from sqlmodel import select

from .. import pages
from ..broker import Broker
from ..db.tables import Allocation, Booking, ExecutionSession, ResourcePool
from ..errors import Forbidden, ParameterInvalid
from ..identity import ANONYMOUS, Identity
from ..schedule import instant
from .phases import OFFERED, PHASES
from .record import SessionRecord

MAX_POOLS = 16  # the spec's ``pool`` maxItems


@dataclass(frozen=True)
class SessionFilters:
    """What a caller asked for, checked: ``owner`` None is everyone's (an admin's list)."""

    owner: str | None
    phases: tuple[str, ...] = ()
    start: int | None = None  # the window [start, end) the booked windows overlap
    end: int | None = None
    pools: tuple[str, ...] = ()

    def digest_of(self) -> dict[str, Any]:
        return {"owner": self.owner, "phase": sorted(self.phases), "from": self.start,
                "to": self.end, "pool": sorted(self.pools)}  # fmt: skip


def list_owner(broker: Broker, identity: Identity, owner: str | None) -> str | None:
    """Whose list this is: the caller's own, or (an admin's) everyone's or the named owner's.
    A caller who is no admin naming anyone else is refused (403), rather than answered with
    their own list as if the filter had been honoured."""
    if broker.is_admin(identity):
        return owner
    if owner is not None and owner != identity.owner:
        raise Forbidden("only admins may list the sessions or offer sets of another owner")
    return identity.owner


def session_filters(
    broker: Broker,
    identity: Identity,
    *,
    phase: Sequence[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    pool: Sequence[str] | None = None,
    owner: str | None = None,
) -> SessionFilters:
    phases = pages.split(phase)
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        raise ParameterInvalid("phase", f"{unknown[0][:32]!r} is not a phase")
    pools = pages.split(pool)
    if len(pools) > MAX_POOLS:
        raise ParameterInvalid("pool", f"at most {MAX_POOLS} pools")
    first, last = pages.window(start, end)
    return SessionFilters(
        owner=list_owner(broker, identity, owner), phases=tuple(phases), start=first,
        end=last, pools=tuple(pools),
    )  # fmt: skip


def _owned_by(owner: str) -> Any:
    column = ExecutionSession.owner
    if owner == ANONYMOUS:  # sessions stored without an owner are the anonymous caller's
        return or_(column == owner, column.is_(None))  # type: ignore[union-attr]
    return column == owner


def _on_pools(pools: Sequence[str]) -> Any:
    """Sessions booked on any of these pools (by their wire names, ``<platform>/<pool>``)."""
    booked = (
        select(Booking.session_uuid)
        .join(Allocation, Allocation.booking_id == Booking.id)  # type: ignore[arg-type]
        .join(ResourcePool, ResourcePool.id == Allocation.pool_id)  # type: ignore[arg-type]
        .where(ResourcePool.name.in_(pools))  # type: ignore[attr-defined]
    )
    return ExecutionSession.uuid.in_(booked)  # type: ignore[attr-defined]


NOT_YET_OCCURRENCES = ("OFFERED", "EXPIRED", "REJECTED")


def sessions_query(filters: SessionFilters, after: pages.Key | None, limit: int) -> Any:
    """The query of a page: the filtered sessions after the key ``after``, in order, and one
    more (to tell whether there is a next page)."""
    # a series' occurrences are sessions of their own once it was accepted, not before
    query = select(ExecutionSession).where(or_(
        ExecutionSession.series_uuid.is_(None),  # type: ignore[union-attr]
        ExecutionSession.phase.notin_(NOT_YET_OCCURRENCES),  # type: ignore[attr-defined]
    ))  # fmt: skip
    if filters.owner is not None:
        query = query.where(_owned_by(filters.owner))
    if filters.phases:
        query = query.where(ExecutionSession.phase.in_(filters.phases))  # type: ignore[attr-defined]
    if filters.start is not None:
        query = query.where(ExecutionSession.end_at > filters.start)
    if filters.end is not None:
        query = query.where(ExecutionSession.start_at < filters.end)
    if filters.pools:
        query = query.where(_on_pools(filters.pools))
    order = (ExecutionSession.start_at, ExecutionSession.uuid)
    if after is not None:  # a row value: one index condition on both databases
        query = query.where(tuple_(*order) > tuple_(*after))
    return query.order_by(*order).limit(limit + 1)  # type: ignore[arg-type]


def list_sessions(
    broker: Broker, filters: SessionFilters, *, limit: int, cursor: str | None
) -> dict[str, Any]:
    """A page of sessions (``pages.page``), after ``cursor``."""
    limit = pages.bounded(limit)
    made_for = filters.digest_of()
    query = sessions_query(filters, pages.decode_cursor(cursor, made_for), limit)
    with broker.db.read() as session:
        rows = list(session.exec(query))
    more, rows = len(rows) > limit, rows[:limit]
    items = [summary(row, broker.base_url) for row in rows]
    last = rows[-1] if rows else None
    next_cursor = (
        pages.encode_cursor((last.start_at, last.uuid), made_for) if more and last else None
    )
    return pages.page(items, limit, next_cursor)


def summary(row: ExecutionSession, base_url: str) -> dict[str, Any]:
    """A session as a list shows it: where and when it is booked, and where the rest is."""
    record = SessionRecord.of(row.record)
    item: dict[str, Any] = {
        "uuid": row.uuid,
        "href": f"{base_url}/sessions/{row.uuid}",
        **({"name": record.name} if record.name else {}),
        "phase": row.phase,
        "owner": row.owner or ANONYMOUS,
        **({"project": row.project} if row.project else {}),
        "start": instant(row.start_at),
        "end": instant(row.end_at),
        "preparing": instant(row.prepare_at),
        **({"expires": instant(row.expires_at)} if row.phase == OFFERED else {}),
        "pools": [f"{row.platform}/{name}" for name in record.pools],
        "offerset": row.offerset_uuid,
        "created": instant(row.created_at),
        "modified": instant(row.modified_at),
    }
    if record.occurrence is not None:  # found in the list, cancelled by its own uuid
        item.update(series=record.occurrence.series, occurrence=record.occurrence.index)
    return item
