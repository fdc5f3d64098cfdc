"""What a caller (or a project) holds now in open offers, read from the booking table.

A hold is a claim on capacity until it expires or is accepted, so holds are bounded like claims
(``broker_core.offers.fairness`` applies the limits). An offer set's holds are alternatives
(at most one can be accepted), so on each pool they count with their envelope, as in the pool's
usage (``timeline.Usage``): what the caller keeps from everyone else, no more.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import bindparam, text, update
from sqlmodel import Session, select

from ..db.tables import (
    HELD,
    RELEASED,
    Allocation,
    Booking,
    ExecutionSession,
    OfferSet,
    ResourcePool,
)
from .timeline import Claim, Usage, group_steps

OFFERED = "OFFERED"  # the session phase of an open offer (sessions.phases, without the import)


class HeldClaim(NamedTuple):
    offerset: str
    expires_at: int
    request_key: str | None
    allocation_id: int
    pool_id: int
    resource_class: str
    amount: int
    start: int
    end: int


# (pool, class) -> the (start, end, amount) pieces some offer sets' holds count for there
Pieces = dict[tuple[int, str], list[tuple[int, int, int]]]


@dataclass
class Held:
    """The live holds of one scope (a caller or a project): its open offer sets' claims."""

    claims: list[HeldClaim] = field(default_factory=list)

    def without(self, offer_sets: Iterable[str]) -> Held:
        """These holds but those of some offer sets (the ones a new request replaces)."""
        gone = set(offer_sets)
        return Held([c for c in self.claims if c.offerset not in gone]) if gone else self

    def offer_sets(self) -> dict[str, int]:
        """Open offer sets and when each expires."""
        return {c.offerset: c.expires_at for c in self.claims}

    def same_request(self, request_key: str) -> list[str]:
        return sorted({c.offerset for c in self.claims if c.request_key == request_key})

    def pieces(self) -> Pieces:
        """Per pool and class, what the holds count for (each offer set's envelope)."""
        grouped: dict[tuple[int, str, str], list[Claim]] = defaultdict(list)
        for c in self.claims:
            grouped[(c.pool_id, c.resource_class, c.offerset)].append(
                Claim(c.start, c.end, c.amount, c.offerset)
            )
        pieces: Pieces = defaultdict(list)
        for (pool_id, resource_class, _), claims in grouped.items():
            pieces[(pool_id, resource_class)].extend(group_steps(claims))
        return pieces

    def seconds(self, resource_class: str) -> int:
        """Resource-seconds of a class held: on every pool, the envelope of each offer set."""
        return sum(
            amount * (end - start)
            for (_, c), pieces in self.pieces().items()
            if c == resource_class
            for start, end, amount in pieces
        )

    def usage(self, pool_id: int, resource_class: str) -> Usage:
        """What the holds take of one pool's class over time."""
        return Usage(
            Claim(c.start, c.end, c.amount, c.offerset)
            for c in self.claims
            if c.pool_id == pool_id and c.resource_class == resource_class
        )

    def expiries(self) -> list[tuple[int, str]]:
        """(expiry, offer set), soonest first."""
        return sorted((t, uuid) for uuid, t in self.offer_sets().items())


_HELD_COLUMNS = (
    Booking.offerset_uuid,
    Booking.expires_at,
    OfferSet.request_key,
    Allocation.id,
    Allocation.pool_id,
    Allocation.resource_class,
    Allocation.amount,
    Booking.start_at,
    Booking.end_at,
)
_HELD = (
    select(*_HELD_COLUMNS)  # type: ignore[call-overload]
    .select_from(ExecutionSession)
    .join(Booking, Booking.session_uuid == ExecutionSession.uuid)
    .join(Allocation, Allocation.booking_id == Booking.id)
    .join(OfferSet, OfferSet.uuid == Booking.offerset_uuid)
    .where(ExecutionSession.phase == OFFERED, Booking.state == HELD)
)
# what counts against a limit: holds not yet expired (the reaper frees the others promptly)
_LIVE = _HELD.where(ExecutionSession.expires_at > bindparam("now"))
_HELD_BY_OWNER = _LIVE.where(ExecutionSession.owner == bindparam("owner"))
_HELD_BY_PROJECT = _LIVE.where(ExecutionSession.project == bindparam("project"))
# every hold of some offer sets, expired or not: what replacing them frees
_HELD_OF_SETS = _HELD.where(
    Booking.offerset_uuid.in_(bindparam("sets", expanding=True))  # type: ignore[attr-defined]
)


def held_by_owner(session: Session, owner: str, now: int) -> Held:
    rows = session.connection().execute(_HELD_BY_OWNER, {"owner": owner, "now": now})
    return Held([HeldClaim(*row) for row in rows])


def held_by_project(session: Session, project: str, now: int) -> Held:
    rows = session.connection().execute(_HELD_BY_PROJECT, {"project": project, "now": now})
    return Held([HeldClaim(*row) for row in rows])


def held_of(session: Session, offer_sets: Iterable[str]) -> Held:
    """Every hold of these offer sets, expired or not."""
    wanted = sorted(set(offer_sets))
    if not wanted:
        return Held()
    rows = session.connection().execute(_HELD_OF_SETS, {"sets": wanted})
    return Held([HeldClaim(*row) for row in rows])


def lock_scopes(session: Session, keys: Iterable[str], *, sqlite: bool) -> None:
    """Serialise the requests of one caller or project (PostgreSQL transaction-level advisory
    locks, in a fixed order; SQLite's BEGIN IMMEDIATE already serialises every writer), so two
    concurrent requests cannot both take the last of a hold limit. Only requests take them,
    first, so they cannot deadlock with the offer set and pool locks others take."""
    if sqlite:
        return
    for key in sorted(set(keys)):
        digest = hashlib.blake2b(f"ebroker-holds:{key}".encode(), digest_size=8).digest()
        number = int.from_bytes(digest, "big", signed=True)
        session.connection().execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": number})


def lock_offer_sets(session: Session, offer_sets: Iterable[str], *, sqlite: bool) -> None:
    """Lock offer set rows (in uuid order), as accepts and expiries do first."""
    wanted = sorted(set(offer_sets))
    if sqlite or not wanted:
        return
    session.exec(
        select(OfferSet.uuid)
        .where(OfferSet.uuid.in_(wanted))  # type: ignore[attr-defined]
        .order_by(OfferSet.uuid)
        .with_for_update()
    ).all()


def release_replaced(
    session: Session, held: Held, generations: dict[int, int], claimed: set[int], now: int
) -> list[tuple[int, int, str, int, int, int, str, str]]:
    """Free the holds of the offer sets in ``held`` (replaced by a new request for the same
    thing, in the same transaction; the caller expires their offers), on pools the caller has
    locked: their allocations take the pools' next generation, as the new claims do, and the
    pools not ``claimed`` on move to it here. The changed rows, as (pool, allocation id, class,
    amount, start, end, state, offer set) for the usage cache."""
    if not held.claims:
        return []
    offer_sets = sorted(held.offer_sets())
    connection = session.connection()
    connection.execute(
        update(Booking)
        .where(
            Booking.offerset_uuid.in_(offer_sets),  # type: ignore[attr-defined]
            Booking.state == HELD,
        )
        .values(state=RELEASED, expires_at=None, modified_at=now)
    )
    for pool_id in sorted({c.pool_id for c in held.claims}):
        ids = sorted({c.allocation_id for c in held.claims if c.pool_id == pool_id})
        connection.execute(
            update(Allocation)
            .where(Allocation.id.in_(ids))  # type: ignore[attr-defined]
            .values(generation=generations[pool_id] + 1)
        )
        if pool_id not in claimed:
            connection.execute(
                update(ResourcePool)
                .where(ResourcePool.id == pool_id)  # type: ignore[arg-type]
                .values(generation=generations[pool_id] + 1, updated_at=now)
            )
    return [
        (c.pool_id, c.allocation_id, c.resource_class, c.amount, c.start, c.end, RELEASED,
         c.offerset)
        for c in held.claims
    ]  # fmt: skip
