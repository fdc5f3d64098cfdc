"""GET /offersets: the caller's offer sets (everyone's, for admins), a page at a time.

Offer sets are listed by creation, then uuid (the keyset of :mod:`broker_core.pages`), walking
``ix_offer_set_owner_created`` (``owner, created_at, uuid``) or, for everyone's,
``ix_offer_set_created``. ``state`` is whether an offer can still be accepted (an OFFERED offer
not past its expiry), read by the offers' own index (``offerset_uuid``); each page's offers are
counted by phase in one grouped query.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, case, exists, func, or_, tuple_
from sqlmodel import select

from .. import pages
from ..broker import Broker
from ..db.tables import ExecutionSession, OfferSet
from ..identity import ANONYMOUS, Identity
from ..schedule import instant
from ..sessions.listing import list_owner
from ..sessions.phases import OFFERED

OPEN, CLOSED = "open", "closed"


@dataclass(frozen=True)
class OfferSetFilters:
    owner: str | None  # None: everyone's (an admin's list)
    state: str | None = None
    result: str | None = None
    start: int | None = None  # created in [start, end)
    end: int | None = None

    def digest_of(self) -> dict[str, Any]:
        return {"owner": self.owner, "state": self.state, "result": self.result,
                "from": self.start, "to": self.end}  # fmt: skip


def offerset_filters(
    broker: Broker,
    identity: Identity,
    *,
    state: str | None = None,
    result: str | None = None,
    start: str | None = None,
    end: str | None = None,
    owner: str | None = None,
) -> OfferSetFilters:
    first, last = pages.window(start, end)
    return OfferSetFilters(
        owner=list_owner(broker, identity, owner), state=state, result=result, start=first,
        end=last,
    )  # fmt: skip


def _open_offer(now: int) -> Any:
    return exists().where(
        ExecutionSession.offerset_uuid == OfferSet.uuid,
        ExecutionSession.phase == OFFERED,
        ExecutionSession.expires_at > now,
    )


def offersets_query(filters: OfferSetFilters, after: pages.Key | None, limit: int, now: int) -> Any:
    """The query of a page: the filtered offer sets after the key ``after``, in order, and
    one more (to tell whether there is a next page)."""
    query = select(OfferSet)
    if filters.owner is not None:
        column = OfferSet.owner
        query = query.where(
            or_(column == filters.owner, column.is_(None))  # type: ignore[union-attr]
            if filters.owner == ANONYMOUS
            else column == filters.owner
        )
    if filters.result is not None:
        query = query.where(OfferSet.result == filters.result)
    if filters.state == OPEN:
        query = query.where(_open_offer(now))
    elif filters.state == CLOSED:
        query = query.where(~_open_offer(now))
    if filters.start is not None:
        query = query.where(OfferSet.created_at >= filters.start)
    if filters.end is not None:
        query = query.where(OfferSet.created_at < filters.end)
    order = (OfferSet.created_at, OfferSet.uuid)
    if after is not None:  # a row value: one index condition on both databases
        query = query.where(tuple_(*order) > tuple_(*after))
    return query.order_by(*order).limit(limit + 1)  # type: ignore[arg-type]


def list_offersets(
    broker: Broker, filters: OfferSetFilters, *, limit: int, cursor: str | None
) -> dict[str, Any]:
    limit = pages.bounded(limit)
    made_for = filters.digest_of()
    now = int(time.time())
    query = offersets_query(filters, pages.decode_cursor(cursor, made_for), limit, now)
    with broker.db.read() as session:
        rows = list(session.exec(query))
        more, rows = len(rows) > limit, rows[:limit]
        counts = _offer_counts(session, [r.uuid for r in rows], now)
    items = [summary(row, counts.get(row.uuid, ({}, 0)), broker.base_url) for row in rows]
    last = rows[-1] if rows else None
    next_cursor = (
        pages.encode_cursor((last.created_at, last.uuid), made_for) if more and last else None
    )
    return pages.page(items, limit, next_cursor)


def _offer_counts(
    session: Any, uuids: Sequence[str], now: int
) -> dict[str, tuple[dict[str, int], int]]:
    """Per offer set, its offers by phase, and how many can still be accepted."""
    if not uuids:
        return {}
    live = and_(ExecutionSession.phase == OFFERED, ExecutionSession.expires_at > now)
    rows = session.exec(
        select(
            ExecutionSession.offerset_uuid,
            ExecutionSession.phase,
            func.count(),
            func.sum(case((live, 1), else_=0)),
        )
        .where(
            ExecutionSession.offerset_uuid.in_(list(uuids)),  # type: ignore[attr-defined]
            ExecutionSession.series_uuid.is_(None),  # type: ignore[union-attr]  # no occurrences
        )
        .group_by(ExecutionSession.offerset_uuid, ExecutionSession.phase)
    ).all()
    counts: dict[str, tuple[dict[str, int], int]] = {}
    for uuid, phase, count, open_count in rows:
        phases, acceptable = counts.get(uuid, ({}, 0))
        phases[phase] = int(count)
        counts[uuid] = (phases, acceptable + int(open_count or 0))
    return counts


def summary(row: OfferSet, counts: tuple[dict[str, int], int], base_url: str) -> dict[str, Any]:
    phases, acceptable = counts
    name = (row.document.get("meta") or {}).get("name") if isinstance(row.document, dict) else None
    return {
        "uuid": row.uuid,
        "href": f"{base_url}/offersets/{row.uuid}",
        **({"name": name} if isinstance(name, str) and name else {}),
        "result": row.result,
        "state": OPEN if acceptable else CLOSED,
        "owner": row.owner or ANONYMOUS,
        "created": instant(row.created_at),
        "expires": instant(row.expires_at),
        "offers": dict(sorted(phases.items())),
    }
