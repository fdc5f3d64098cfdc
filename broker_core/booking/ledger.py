"""Reads and writes of the booking table: pools, their usage, and claims.

Claims are made inside one write transaction that first locks the pools it may draw on
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers),
then reads their usage, decides, inserts and bumps each pool's generation. So no interleaving of
concurrent requests can overbook a pool. Accepting, rejecting, cancelling and expiring only ever
lower usage (a hold is counted until it is released), so they never overbook; they bump the
generations too, so that every change to a pool's claims is visible as "newer than g" (the
per-process usage cache catches up that way, see ``cache.py``).

A maintenance window (``MaintenanceWindow``) claims like a session, with bookings of no session:
it takes what the pool has free of what it wants, never more, and whatever a state change frees
on a pool before its last window ends goes to its windows in the same transaction
(``top_up_maintenance``), so offers never find room inside a window.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from sqlalchemy import bindparam, case, func, insert, update
from sqlmodel import Session, select

from ..config import InventoryConfig, PoolConfig
from ..db.tables import (
    ACTIVE,
    CONFIRMED,
    HELD,
    LIVE_STATES,
    RELEASED,
    Allocation,
    Booking,
    ExecutionSession,
    Inventory,
    MaintenanceWindow,
    PoolOverride,
    ResourcePool,
)
from .cache import UsageCache
from .pools import Drain, InventoryView, PoolView, Slot
from .timeline import Claim, Usage


def pool_key(platform: str, pool: str) -> str:
    return f"{platform}/{pool}"


def sync_pools(session: Session, platform: str, pools: Iterable[PoolConfig], now: int) -> None:
    """Make the pool rows of one platform match its configuration (pools are never deleted:
    bookings refer to them; a pool that left the config is disabled), with each pool's admin
    override (``PoolOverride``) applied on top of what the platform gives."""
    wanted = {pool_key(platform, p.name): p for p in pools}
    existing = {
        row.name: row
        for row in session.exec(select(ResourcePool).where(ResourcePool.platform == platform))
    }
    for name, row in existing.items():
        if name not in wanted and row.enabled:
            row.enabled = False
            row.generation += 1
            row.updated_at = now
    for name, config in wanted.items():
        row = existing.get(name)
        if row is None:
            row = ResourcePool(name=name, platform=platform, updated_at=now)
            session.add(row)
            session.flush()
        row.enabled = True
        traits = sorted(config.traits)
        if (row.traits or []) != traits:  # what the pool serves changed: claims must re-read
            row.traits = traits
            row.generation += 1
            row.updated_at = now
        override = session.get(PoolOverride, row.id)
        values = overridden(
            {c: inv.model_dump() for c, inv in config.inventories.items()},
            override.inventories if override else {},
        )
        if set_inventories(session, row, values):
            row.generation += 1
            row.updated_at = now
        session.add(row)


def overridden(
    given: dict[str, dict[str, Any]], override: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Each class's inventory fields as the platform (or config) gives them, with an admin's
    override of some fields on top. An override of a class the pool no longer has is left out
    (it stays stored, and applies again if the class comes back)."""
    return {c: {**fields, **override.get(c, {})} for c, fields in given.items()}


def set_inventories(session: Session, row: ResourcePool, values: dict[str, dict[str, Any]]) -> bool:
    """Make a pool's inventory rows these (class -> fields); whether any changed. The caller
    bumps the pool's generation when they did."""
    inventories = {
        inv.resource_class: inv
        for inv in session.exec(select(Inventory).where(Inventory.pool_id == row.id))
    }
    changed = False
    for resource_class, fields in values.items():
        inv = inventories.pop(resource_class, None) or Inventory(
            pool_id=row.id, resource_class=resource_class, total=0
        )
        if inv.id is None or any(getattr(inv, k) != v for k, v in fields.items()):
            for k, v in fields.items():
                setattr(inv, k, v)
            session.add(inv)
            changed = True
    for stale in inventories.values():
        session.delete(stale)
        changed = True
    return changed


def capacities_of(
    session: Session, platform: str, pools: Iterable[PoolConfig]
) -> dict[str, dict[str, int]]:
    """``<platform>/<pool>`` -> class -> capacity of a platform's pools as given, with the admins'
    overrides applied (what the booking table holds once synced)."""
    overrides = {
        name: override.inventories
        for name, override in session.exec(
            select(ResourcePool.name, PoolOverride)  # type: ignore[call-overload]
            .join(PoolOverride, PoolOverride.pool_id == ResourcePool.id)
            .where(ResourcePool.platform == platform)
        )
    }
    found = {}
    for pool in pools:
        name = pool_key(platform, pool.name)
        given = {c: inv.model_dump() for c, inv in pool.inventories.items()}
        values = overridden(given, overrides.get(name, {}))
        found[name] = {c: InventoryConfig(**v).capacity for c, v in values.items()}
    return found


# The statements of every request are built once: building SQLAlchemy expressions per call
# costs more than running them. A drained pool is locked by no claim: it takes none.
_LOCK_POOLS = (
    select(ResourcePool.id, ResourcePool.generation)
    .where(
        ResourcePool.platform.in_(bindparam("platforms", expanding=True)),  # type: ignore[attr-defined]
        ResourcePool.enabled,
        ResourcePool.drained_at.is_(None),  # type: ignore[union-attr]
    )
    .order_by(ResourcePool.id)
    .with_for_update()
)
# what a claim is made of: (class, amount, start, end, state, offer set)
_CLAIM_COLUMNS = (
    Allocation.resource_class,
    Allocation.amount,
    Booking.start_at,
    Booking.end_at,
    Booking.state,
    Booking.offerset_uuid,
)
_CLAIMS = (
    select(Allocation.pool_id, *_CLAIM_COLUMNS)
    .join(Booking, Booking.id == Allocation.booking_id)  # type: ignore[arg-type]
    .where(
        Booking.state.in_(LIVE_STATES),  # type: ignore[attr-defined]
        Booking.end_at > bindparam("low"),
        Booking.start_at < bindparam("high"),
    )
)
# ``longest`` (the longest booking on the pools) bounds the range of end times to scan
_CLAIMS_IN_WINDOW = _CLAIMS.where(Booking.end_at < bindparam("high") + bindparam("longest"))


_POOLS = (
    select(
        ResourcePool.id,
        ResourcePool.name,
        ResourcePool.platform,
        ResourcePool.generation,
        ResourcePool.longest_booking,
        ResourcePool.drained_at,
        ResourcePool.drained_by,
        ResourcePool.drain_reason,
        ResourcePool.traits,
        Inventory.resource_class,
        Inventory.total,
        Inventory.reserved,
        Inventory.allocation_ratio,
        Inventory.min_unit,
        Inventory.max_unit,
        Inventory.step_size,
    )
    .join(Inventory, Inventory.pool_id == ResourcePool.id)  # type: ignore[arg-type]
    .where(
        ResourcePool.platform.in_(bindparam("platforms", expanding=True)),  # type: ignore[attr-defined]
        ResourcePool.enabled,
    )
    .order_by(ResourcePool.id)
)


def lock_pools(session: Session, platforms: Sequence[str]) -> dict[int, int]:
    """Take the row locks of these platforms' pools that may be claimed on (in id order, so
    lockers cannot deadlock; drained pools are left out); their generations as they are now."""
    rows = session.connection().execute(_LOCK_POOLS, {"platforms": list(platforms)}).all()
    return {pool_id: generation for pool_id, generation in rows}


def _claim_rows(session: Session, window: tuple[int, int], longest: int) -> list:
    """Live claims overlapping ``window``: (pool, class, amount, start, end, state, offer set)."""
    # Core, not ORM, execution: this is the hot read of every request, and rows stay tuples
    parameters = {"low": window[0], "high": window[1], "longest": longest}
    return session.connection().execute(_CLAIMS_IN_WINDOW, parameters).all()


def _claims(rows: Iterable[Any], pools: set[int]) -> dict[tuple[int, str], list[Claim]]:
    claims: dict[tuple[int, str], list[Claim]] = defaultdict(list)
    for pool_id, resource_class, amount, start, end, state, offerset in rows:
        if pool_id in pools:
            claims[(pool_id, resource_class)].append(
                Claim(start, end, amount, offerset if state == HELD else None)
            )
    return claims


def load_pools(
    session: Session,
    platforms: Sequence[str],
    window: tuple[int, int],
    classes: Iterable[str] | None = None,
    *,
    cache: UsageCache | None = None,
    now: int = 0,
) -> list[PoolView]:
    """Enabled pools of these platforms with their usage over ``window`` (of the given
    resource classes only, when given: the others would be swept for nothing). Drained pools
    are among them, marked (``view.drain``): the search leaves them out and says why.

    With a ``cache`` the claims come from it, caught up to the pools' generations in this
    session's snapshot; a view's ``generation`` is the one its usage was read at.
    """
    views: dict[int, PoolView] = {}
    longest = 0
    connection = session.connection()
    rows = connection.execute(_POOLS, {"platforms": list(platforms)}).all()
    for row in rows:
        pool_id, name, platform, generation, pool_longest, drained_at, *rest = row
        drained_by, drain_reason, traits, resource_class, *inv = rest
        view = views.get(pool_id)
        if view is None:
            view = views[pool_id] = PoolView(
                pool_id, name, platform, {}, generation=generation, traits=frozenset(traits or ())
            )
            if drained_at is not None:
                view.drain = Drain(drained_at, drained_by, drain_reason)
            longest = max(longest, pool_longest)
        total, reserved, ratio, min_unit, max_unit, step = inv
        view.inventories[resource_class] = InventoryView(
            int((total - reserved) * ratio), min_unit, max_unit, step
        )
    if not views:
        return []
    uncached = []
    for view in views.values():
        wanted = (
            list(view.inventories)
            if classes is None
            else sorted(set(classes) & view.inventories.keys())
        )
        cached = None
        if cache is not None:
            cached = cache.usage(
                view.id, view.generation, window, wanted, now=now,
                load=lambda floor, pool=view.id: connection.execute(
                    _POOL_CLAIMS_LIVE, {"pool": pool, "floor": floor}
                ),
                changes=lambda since, pool=view.id: connection.execute(
                    _POOL_CLAIMS_CHANGED, {"pool": pool, "since": since}
                ),
            )  # fmt: skip
        if cached is None:
            uncached.append((view, wanted))
            continue
        view.generation, view.usage = cached
    if uncached:
        claims = _claims(_claim_rows(session, window, longest), set(views))
        for view, wanted in uncached:
            view.usage = {c: Usage(claims.get((view.id, c), ())) for c in wanted}
    return list(views.values())


# every allocation row of one pool with its booking, for the usage cache
_POOL_CLAIMS = (
    select(Allocation.id, *_CLAIM_COLUMNS)
    .join(Booking, Booking.id == Allocation.booking_id)  # type: ignore[arg-type]
    .where(Allocation.pool_id == bindparam("pool"))
)
_POOL_CLAIMS_LIVE = _POOL_CLAIMS.where(
    Booking.state.in_(LIVE_STATES),  # type: ignore[attr-defined]
    Booking.end_at > bindparam("floor"),
)
_POOL_CLAIMS_CHANGED = _POOL_CLAIMS.where(Allocation.generation > bindparam("since"))


# the claims one transaction made, per pool, as rows of the usage cache:
# (allocation id, class, amount, start, end, state, offer set)
Claims = dict[int, list[tuple[int, str, int, int, int, str, str]]]


def insert_bookings(
    session: Session,
    slots: Sequence[tuple[Slot, str]],
    *,
    offerset_uuid: str,
    state: str,
    expires_at: int | None,
    now: int,
    generations: dict[int, int],
) -> Claims:
    """One booking per (slot, session uuid), with the slot's allocations, in two statements;
    the claims made.

    ``generations`` are the locked pools' current generations; the claims create the next.
    """
    rows = [
        {
            "session_uuid": session_uuid,
            "offerset_uuid": offerset_uuid,
            "state": state,
            "start_at": slot.prepare_at,
            "end_at": slot.end_at,
            "expires_at": expires_at,
            "created_at": now,
            "modified_at": now,
        }
        for slot, session_uuid in slots
    ]
    connection = session.connection()
    ids = connection.execute(_INSERT_BOOKINGS, rows).scalars()
    made = [
        (booking_id, pool_id, c, amount, slot.prepare_at, slot.end_at)
        for booking_id, (slot, _) in zip(ids, slots, strict=True)
        for pool_id, c, amount in slot.allocations
    ]
    claims: Claims = defaultdict(list)
    if not made:
        return claims
    allocations = [
        {
            "booking_id": booking_id,
            "pool_id": pool_id,
            "resource_class": c,
            "amount": amount,
            "generation": generations[pool_id] + 1,
        }
        for booking_id, pool_id, c, amount, _, _ in made
    ]
    allocation_ids = connection.execute(_INSERT_ALLOCATIONS, allocations).scalars()
    for allocation_id, (_, pool_id, c, amount, start, end) in zip(
        allocation_ids, made, strict=True
    ):
        claims[pool_id].append((allocation_id, c, amount, start, end, state, offerset_uuid))
    return claims


_INSERT_BOOKINGS = (
    insert(Booking.__table__).returning(Booking.__table__.c.id, sort_by_parameter_order=True)  # type: ignore[arg-type]  # type: ignore[attr-defined]
)
_INSERT_ALLOCATIONS = (
    insert(Allocation.__table__).returning(Allocation.__table__.c.id, sort_by_parameter_order=True)  # type: ignore[arg-type]  # type: ignore[attr-defined]
)


def record_claims(session: Session, slots: Iterable[Slot], now: int) -> None:
    """Bump the generation of every pool claimed on and widen its ``longest_booking``."""
    longest: dict[int, int] = {}
    for slot in slots:
        for pool_id, _, _ in slot.allocations:
            longest[pool_id] = max(longest.get(pool_id, 0), slot.end_at - slot.prepare_at)
    connection = session.connection()
    for pool_id in sorted(longest):
        connection.execute(_RECORD_CLAIM, {"pool": pool_id, "now": now, "length": longest[pool_id]})


_RECORD_CLAIM = (
    update(ResourcePool)
    .where(ResourcePool.id == bindparam("pool"))  # type: ignore[arg-type]
    .values(
        generation=ResourcePool.generation + 1,
        updated_at=bindparam("now"),
        longest_booking=case(
            (ResourcePool.longest_booking < bindparam("length"), bindparam("length")),
            else_=ResourcePool.longest_booking,
        ),
    )
)


def refresh_longest_bookings(session: Session) -> None:
    """Recompute ``longest_booking`` from the live bookings (at start-up), never shrinking it,
    so that bookings written by other means are still found by window queries."""
    rows = session.connection().execute(
        select(Allocation.pool_id, func.max(Booking.end_at - Booking.start_at))
        .join(Booking, Booking.id == Allocation.booking_id)  # type: ignore[arg-type]
        .where(Booking.state.in_(LIVE_STATES))  # type: ignore[attr-defined]
        .group_by(Allocation.pool_id)
    )
    for pool_id, length in rows.all():
        session.exec(  # type: ignore[call-overload]
            update(ResourcePool)
            .where(ResourcePool.id == pool_id, ResourcePool.longest_booking < length)  # type: ignore[arg-type]
            .values(longest_booking=length)
        )


def extend_booking(
    session: Session, *, session_uuid: str, end_at: int, generations: dict[int, int], now: int
) -> list[tuple[int, str, int]]:
    """Move a live booking's end to ``end_at`` on its locked pools; its allocations
    (pool, class, amount). The pools get a new generation, as for any claim."""
    connection = session.connection()
    rows = connection.execute(_BOOKING_ALLOCATIONS, {"uuid": session_uuid}).all()
    if not rows:
        return []
    booking_id, start_at = rows[0][0], rows[0][1]
    connection.execute(_EXTEND, {"booking": booking_id, "end": end_at, "now": now})
    for pool_id in sorted({pool for _, _, pool, _, _ in rows}):
        following = generations[pool_id] + 1
        connection.execute(
            _RETAG, {"pool": pool_id, "ids": [booking_id], "next_generation": following}
        )
        connection.execute(
            _RECORD_CLAIM, {"pool": pool_id, "now": now, "length": end_at - start_at}
        )
        generations[pool_id] = following
    return [(pool, resource_class, amount) for _, _, pool, resource_class, amount in rows]


def booked_allocations(session: Session, session_uuid: str) -> list[tuple[int, str, int]]:
    """(pool, class, amount) of a session's live booking."""
    rows = session.connection().execute(_BOOKING_ALLOCATIONS, {"uuid": session_uuid}).all()
    return [(pool, resource_class, amount) for _, _, pool, resource_class, amount in rows]


_BOOKING_ALLOCATIONS = (
    select(
        Booking.id,
        Booking.start_at,
        Allocation.pool_id,
        Allocation.resource_class,
        Allocation.amount,
    )
    .join(Allocation, Allocation.booking_id == Booking.id)  # type: ignore[arg-type]
    .where(
        Booking.session_uuid == bindparam("uuid"),
        Booking.state.in_(LIVE_STATES),  # type: ignore[attr-defined]
    )
)
_EXTEND = (
    update(Booking)
    .where(Booking.id == bindparam("booking"))  # type: ignore[arg-type]
    .values(end_at=bindparam("end"), modified_at=bindparam("now"))
)


def set_booking_state(
    session: Session, *, session_uuids: Sequence[str], old: Sequence[str], new: str, now: int
) -> int:
    """Move the bookings of these sessions from any of ``old`` states to ``new``; how many moved.

    The pools they draw on get a new generation, and their allocations are tagged with it.
    Every pool is locked (in id order, in one statement, so lockers cannot deadlock however
    many times one transaction comes here); callers already hold the offer set's lock.
    """
    connection = session.connection()
    moved = _move(connection, session_uuids, old, new, now)
    _moved_on_pools(connection, moved, now)
    return len(moved)


def accept_booking(
    session: Session, *, session_uuid: str, siblings: Sequence[str], now: int, held: bool = True
) -> bool:
    """Accept one offer of an offer set in one trip: its held booking becomes CONFIRMED and its
    ``siblings``' holds are RELEASED, under one lock of the pools, each pool touched taking one
    new generation. False, with nothing changed, when the offer's booking is no longer held.
    An offer that holds nothing (``held=False``: a probe, claimed afresh already) only frees
    its siblings."""
    connection = session.connection()
    confirmed: list[int] = []
    if held:
        confirmed = _move(connection, [session_uuid], (HELD,), CONFIRMED, now)
        if not confirmed:
            return False
    released = _move(connection, siblings, (HELD,), RELEASED, now)
    _moved_on_pools(connection, confirmed + released, now)
    return True


def accept_all(
    session: Session, *, session_uuids: Sequence[str], siblings: Sequence[str], now: int
) -> bool:
    """Accept several held bookings as one (a recurring series' occurrences): each becomes
    CONFIRMED and the ``siblings``' holds are RELEASED, under one lock of the pools. False when
    one of them is no longer held; the caller then rolls the transaction back, so that none
    is confirmed."""
    connection = session.connection()
    confirmed = _move(connection, session_uuids, (HELD,), CONFIRMED, now)
    if len(confirmed) != len(session_uuids):
        return False
    released = _move(connection, siblings, (HELD,), RELEASED, now)
    _moved_on_pools(connection, confirmed + released, now)
    return True


def _move(
    connection: Any, session_uuids: Sequence[str], old: Sequence[str], new: str, now: int
) -> list[int]:
    """Move bookings between states; the ids of those moved."""
    if not session_uuids:
        return []
    statement = _MOVE_HELD if new == HELD else _MOVE
    parameters = {"uuids": list(session_uuids), "old": list(old), "new": new, "now": now}
    return list(connection.execute(statement, parameters).scalars())


def _moved_on_pools(connection: Any, moved: list[int], now: int) -> None:
    """The pools the ``moved`` bookings draw on take a new generation, and their allocations
    are tagged with it. Every pool is locked, in id order, in one statement, so lockers cannot
    deadlock however many times one transaction comes here."""
    if not moved:
        return
    touched = set(connection.execute(_POOLS_OF_BOOKINGS, {"ids": moved}).scalars())
    under_maintenance = []
    for pool_id, generation, maintenance_until in connection.execute(_LOCK_ALL_POOLS).all():
        if pool_id in touched:
            connection.execute(
                _RETAG, {"pool": pool_id, "ids": moved, "next_generation": generation + 1}
            )
            connection.execute(
                _BUMP, {"pool": pool_id, "next_generation": generation + 1, "now": now}
            )
            if maintenance_until is not None and maintenance_until > now:
                under_maintenance.append(pool_id)
    # what a booking frees in a maintenance window goes to the window (the pool is locked)
    for pool_id in under_maintenance:
        top_up_maintenance(connection, pool_id, now)


_MOVE_WHERE = (
    Booking.session_uuid.in_(bindparam("uuids", expanding=True)),  # type: ignore[attr-defined]
    Booking.state.in_(bindparam("old", expanding=True)),  # type: ignore[attr-defined]
)
_MOVE_HELD = (
    update(Booking)
    .where(*_MOVE_WHERE)
    .values(state=bindparam("new"), modified_at=bindparam("now"))
    .returning(Booking.id)
)
# a booking that is no longer held has no expiry
_MOVE = _MOVE_HELD.values(expires_at=None)
_POOLS_OF_BOOKINGS = (
    select(Allocation.pool_id)
    .where(Allocation.booking_id.in_(bindparam("ids", expanding=True)))  # type: ignore[attr-defined]
    .distinct()
)
_LOCK_ALL_POOLS = (
    select(ResourcePool.id, ResourcePool.generation, ResourcePool.maintenance_until)
    .order_by(ResourcePool.id)
    .with_for_update()
)
_RETAG = (
    update(Allocation)
    .where(
        Allocation.pool_id == bindparam("pool"),  # type: ignore[arg-type]
        Allocation.booking_id.in_(bindparam("ids", expanding=True)),  # type: ignore[attr-defined]
    )
    .values(generation=bindparam("next_generation"))
)
_BUMP = (
    update(ResourcePool)
    .where(ResourcePool.id == bindparam("pool"))  # type: ignore[arg-type]
    .values(generation=bindparam("next_generation"), updated_at=bindparam("now"))
)


@dataclass
class Overbooking:
    """Where a pool's confirmed and active bookings need more of a class than it has: the
    first such instant, how much is needed then, and the sessions in use at that instant."""

    pool: str
    resource_class: str
    capacity: int
    needed: int
    at: int
    sessions: list[str]
    configured: bool = True  # False: the pool is no longer in the configuration


_FIRM_CLAIMS = (
    select(
        ResourcePool.name,
        Allocation.resource_class,
        Allocation.amount,
        Booking.start_at,
        Booking.end_at,
        Booking.session_uuid,
        Booking.maintenance_uuid,
    )
    .join(Booking, Booking.id == Allocation.booking_id)  # type: ignore[arg-type]
    .join(ResourcePool, ResourcePool.id == Allocation.pool_id)  # type: ignore[arg-type]
    .where(
        Booking.state.in_((CONFIRMED, ACTIVE)),  # type: ignore[attr-defined]
        Booking.end_at > bindparam("now"),
    )
)


def overbookings(
    session: Session,
    capacities: dict[str, dict[str, int]],
    now: int,
    unknown: Iterable[str] = (),
) -> list[Overbooking]:
    """Pools (``<platform>/<pool>`` -> class -> capacity, as configured) that their confirmed
    and active bookings overbook from ``now`` on. A pool missing from ``capacities`` has none,
    unless its platform is one of ``unknown`` (whose pools could not be read): those are left
    out. The bookings stand; this only says where, for the admin to decide."""
    claims: dict[tuple[str, str], list[tuple[int, int, int, str]]] = defaultdict(list)
    rows = session.connection().execute(_FIRM_CLAIMS, {"now": now})
    for name, resource_class, amount, start, end, session_uuid, window in rows:
        uuid = session_uuid or f"maintenance {window}"
        if name in capacities or name.split("/", 1)[0] not in set(unknown):
            claims[(name, resource_class)].append((max(start, now), end, amount, uuid))
    found = []
    for (name, resource_class), rows in sorted(claims.items()):
        capacity = capacities.get(name, {}).get(resource_class, 0)
        usage = Usage(Claim(start, end, amount) for start, end, amount, _ in rows)
        over = next(
            ((t, u) for t, u in zip(usage.times, usage.used, strict=True) if u > capacity), None
        )
        if over is None:
            continue
        at, needed = over
        sessions = sorted({uuid for start, end, _, uuid in rows if start <= at < end})
        found.append(
            Overbooking(name, resource_class, capacity, needed, at, sessions, name in capacities)
        )
    return found


def lock_all_pools(session: Session) -> dict[int, int]:
    """Every pool's row lock, in id order (the order every locker of several takes), and the
    generations as they are now: what an admin's change to a pool's claims or capacity takes
    first, so that it is serialised with every claim, accept and expiry."""
    rows = session.connection().execute(_LOCK_ALL_POOLS).all()
    return {pool_id: generation for pool_id, generation, _ in rows}


def insert_maintenance(
    connection: Any, maintenance_uuid: str, pieces: Sequence[Piece], *, pool_id: int, now: int
) -> None:
    """Book a maintenance window's pieces ((start, end, amount per class)) on its (locked)
    pool as CONFIRMED bookings of no session: the pool moves to its next generation, which
    tags them."""
    pieces = [p for p in pieces if any(p[2].values())]
    if not pieces:
        return
    rows = [
        {
            "session_uuid": None,
            "offerset_uuid": maintenance_uuid,
            "maintenance_uuid": maintenance_uuid,
            "state": CONFIRMED,
            "start_at": start,
            "end_at": end,
            "expires_at": None,
            "created_at": now,
            "modified_at": now,
        }
        for start, end, _ in pieces
    ]
    generation = connection.execute(_GENERATION, {"pool": pool_id}).scalar_one()
    ids = connection.execute(_INSERT_BOOKINGS, rows).scalars()
    allocations = [
        {
            "booking_id": booking_id,
            "pool_id": pool_id,
            "resource_class": c,
            "amount": amount,
            "generation": generation + 1,
        }
        for booking_id, (_, _, amounts) in zip(ids, pieces, strict=True)
        for c, amount in sorted(amounts.items())
        if amount > 0
    ]
    connection.execute(_INSERT_ALLOCATIONS, allocations)
    longest = max(end - start for start, end, _ in pieces)
    connection.execute(_RECORD_CLAIM, {"pool": pool_id, "now": now, "length": longest})


_GENERATION = select(ResourcePool.generation).where(ResourcePool.id == bindparam("pool"))
# (start, end, amount per class): a stretch of a maintenance window's claim
Piece = tuple[int, int, dict[str, int]]


def fit_maintenance(
    low: int,
    high: int,
    wanted: dict[str, int],
    capacities: dict[str, int],
    usage: dict[str, Usage],
    own: dict[str, Usage] | None = None,
) -> list[Piece]:
    """Pure: what a window wanting ``wanted`` per class may take more of over [low, high),
    stretch by stretch: the least of what it lacks (``wanted`` less what it has, ``own``) and
    what the pool's ``usage`` (every live claim, its own included) leaves of the capacity."""
    own = own or {}
    points = sorted(
        {low, high}
        | {t for u in (*usage.values(), *own.values()) for t in u.times if low < t < high}
    )
    pieces: list[Piece] = []
    for a, b in pairwise(points):
        amounts = {}
        for c, want in wanted.items():
            have = own[c].peak(a, b) if c in own else 0
            left = capacities.get(c, 0) - usage[c].peak(a, b)
            amounts[c] = max(0, min(want - have, left))
        if pieces and pieces[-1][1] == a and pieces[-1][2] == amounts:
            pieces[-1] = (pieces[-1][0], b, amounts)
        else:
            pieces.append((a, b, amounts))
    return pieces


def take_maintenance(connection: Any, window: MaintenanceWindow, now: int) -> list[Piece]:
    """Book what the (locked) pool has free of what the window still lacks, from now on; the
    pieces booked (some may take nothing)."""
    low = max(window.start_at, now)
    if low >= window.end_at:
        return []
    capacities = {
        c: int((total - reserved) * ratio)
        for c, total, reserved, ratio in connection.execute(_CAPACITIES, {"pool": window.pool_id})
    }
    claims = pool_claims(connection, window.pool_id, (low, window.end_at))
    wanted = window.amounts if window.amounts is not None else capacities
    classes = [c for c in wanted if c in capacities]
    usage = {c: usage_of(claims, c) for c in classes}
    own = {c: usage_of([x for x in claims if x.maintenance == window.uuid], c) for c in classes}
    pieces = fit_maintenance(
        low, window.end_at, {c: wanted[c] for c in classes}, capacities, usage, own
    )
    insert_maintenance(connection, window.uuid, pieces, pool_id=window.pool_id, now=now)
    return pieces


_CAPACITIES = select(
    Inventory.resource_class, Inventory.total, Inventory.reserved, Inventory.allocation_ratio
).where(Inventory.pool_id == bindparam("pool"))
_LIVE_WINDOWS = (
    select(MaintenanceWindow)
    .where(
        MaintenanceWindow.pool_id == bindparam("pool"),
        MaintenanceWindow.end_at > bindparam("now"),
        MaintenanceWindow.deleted_at.is_(None),  # type: ignore[union-attr]
    )
    .order_by(MaintenanceWindow.start_at, MaintenanceWindow.uuid)  # type: ignore[arg-type]
)


def live_windows(connection: Any, pool_id: int | None, now: int) -> list[MaintenanceWindow]:
    """The pool's maintenance windows not deleted and not yet over, by start."""
    rows = connection.execute(_LIVE_WINDOWS, {"pool": pool_id, "now": now}).mappings()
    return [MaintenanceWindow(**row) for row in rows]


def top_up_maintenance(connection: Any, pool_id: int, now: int) -> None:
    """Give the (locked) pool's maintenance windows what was freed in them (a session cancelled
    or ended early, an offer lapsed), and note when the last of them ends."""
    windows = live_windows(connection, pool_id, now)
    for window in windows:
        take_maintenance(connection, window, now)
    set_maintenance_until(connection, pool_id, windows)


def set_maintenance_until(
    connection: Any, pool_id: int | None, windows: Sequence[MaintenanceWindow]
) -> None:
    """Note on the pool when its last live window ends (None: it has none), so that a booking
    freed on it is given to its windows without a look at them for every other pool."""
    until = max((w.end_at for w in windows), default=None)
    connection.execute(
        update(ResourcePool)
        .where(ResourcePool.id == pool_id)  # type: ignore[arg-type]
        .values(maintenance_until=until)
    )


def release_maintenance(connection: Any, maintenance_uuid: str, now: int) -> int:
    """Free a maintenance window's bookings (the pools take a new generation); how many."""
    moved = list(
        connection.execute(
            update(Booking)
            .where(
                Booking.maintenance_uuid == maintenance_uuid,  # type: ignore[arg-type]
                Booking.state.in_(LIVE_STATES),  # type: ignore[attr-defined]
            )
            .values(state=RELEASED, modified_at=now)
            .returning(Booking.id)
        ).scalars()
    )
    _moved_on_pools(connection, moved, now)
    return len(moved)


@dataclass(frozen=True)
class PoolClaim:
    """One live claim on a pool: a session's (its uuid, phase and owner) or a maintenance
    window's (``maintenance`` its uuid)."""

    resource_class: str
    amount: int
    start: int
    end: int
    state: str
    offerset: str
    session: str | None
    phase: str | None
    owner: str | None
    maintenance: str | None


_POOL_LIVE_CLAIMS = (
    select(
        Allocation.resource_class,
        Allocation.amount,
        Booking.start_at,
        Booking.end_at,
        Booking.state,
        Booking.offerset_uuid,
        Booking.session_uuid,
        ExecutionSession.phase,
        ExecutionSession.owner,
        Booking.maintenance_uuid,
    )
    .join(Booking, Booking.id == Allocation.booking_id)  # type: ignore[arg-type]
    .outerjoin(ExecutionSession, ExecutionSession.uuid == Booking.session_uuid)  # type: ignore[arg-type]
    .where(
        Allocation.pool_id == bindparam("pool"),
        Booking.state.in_(LIVE_STATES),  # type: ignore[attr-defined]
        Booking.end_at > bindparam("low"),
        Booking.start_at < bindparam("high"),
    )
    .order_by(Booking.start_at, Booking.id)
)


def pool_claims(connection: Any, pool_id: int | None, window: tuple[int, int]) -> list[PoolClaim]:
    """Every live claim on one pool overlapping ``window``, in start order."""
    rows = connection.execute(
        _POOL_LIVE_CLAIMS, {"pool": pool_id, "low": window[0], "high": window[1]}
    )
    return [PoolClaim(*row) for row in rows]


def usage_of(claims: Iterable[PoolClaim], resource_class: str) -> Usage:
    """What some claims of one pool use of a class over time (an offer set's holds with their
    envelope, as everywhere)."""
    return Usage(
        Claim(c.start, c.end, c.amount, c.offerset if c.state == HELD else None)
        for c in claims
        if c.resource_class == resource_class
    )
