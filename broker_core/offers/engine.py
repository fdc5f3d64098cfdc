"""Find time-slot offers by sweeping the booking table's usage over a bounded look-ahead.

Pure functions over in-memory pool views (:mod:`broker_core.booking.pools`), so the search can
run inside the transaction that holds the pool locks, and tests can exercise it without a
database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..booking.pools import PoolView, Slot
from ..kinds.base import Range
from .demand import Demand


@dataclass
class Search:
    """The inputs of one search. ``pool_sets`` are the pool combinations one booking may span."""

    demand: Demand
    pool_sets: Sequence[Sequence[PoolView]]
    now: int
    preparation: int
    horizon: int  # latest allowed available start
    granularity: int
    max_offers: int
    # caps that vary over time (a project's concurrency cap): objects with ``resource_class``
    # and ``room(start, end)``, see :class:`policies.contract.Limit`
    limits: Sequence[Any] = ()
    # caps per pool (the share of a pool a caller may hold): objects with
    # ``room(pool, resource_class, start, end)``, an amount or None for no cap
    pool_caps: Sequence[Any] = ()


@dataclass
class Outcome:
    slots: list[Slot]
    best: dict[str, int]  # most of each class seen free at any candidate (for NO messages)
    candidates: int
    notes: list = field(default_factory=list)  # messages about the search (a platform left out)


def _ceil(value: int, step: int) -> int:
    return -(-value // step) * step


def _split(
    pools: Sequence[PoolView],
    resource_class: str,
    wanted: Range,
    start: int,
    end: int,
    caps: Sequence[Any] = (),
) -> tuple[int, list[tuple[int, str, int]]]:
    """Take up to ``wanted.max`` of a class from the pools in order, honouring unit and step
    and the per-pool ``caps``."""
    remaining = wanted.max
    parts: list[tuple[int, str, int]] = []
    for pool in pools:
        inv = pool.inventories.get(resource_class)
        if inv is None or remaining <= 0:
            continue
        amount = min(pool.free(resource_class, start, end), remaining)
        for cap in caps:
            room = cap.room(pool, resource_class, start, end)
            if room is not None:
                amount = min(amount, max(room, 0))
        if inv.max_unit is not None:
            amount = min(amount, inv.max_unit)
        amount -= amount % inv.step_size
        if amount < inv.min_unit:
            continue
        parts.append((pool.id, resource_class, amount))
        remaining -= amount
    return wanted.max - remaining, parts


def evaluate(
    search: Search, pools: Sequence[PoolView], start: int, amounts: dict[str, Range]
) -> tuple[Slot | None, dict]:
    """The slot available at ``start`` on these pools, and how much of each class was free."""
    prepare_at = start - search.preparation
    end = start + search.demand.duration
    totals: dict[str, int] = {}
    allocations: list[tuple[int, str, int]] = []
    feasible = True
    for resource_class, wanted in amounts.items():
        for limit in search.limits:
            if limit.resource_class == resource_class:
                room = limit.room(prepare_at, end)
                if room < wanted.min:
                    feasible = False
                wanted = Range(wanted.min, max(min(wanted.max, room), 0))
        if wanted.max == 0:
            totals[resource_class] = 0
            continue
        granted, parts = _split(pools, resource_class, wanted, prepare_at, end, search.pool_caps)
        totals[resource_class] = granted
        allocations.extend(parts)
        if granted < wanted.min:
            feasible = False
    if not feasible:
        return None, totals
    return Slot(prepare_at, start, end, list(pools), totals, allocations), totals


def _candidates(search: Search, pools: Sequence[PoolView]) -> list[int]:
    """Available-start instants worth trying: window starts, and wherever capacity frees up."""
    granularity = search.granularity
    earliest = _ceil(search.now + search.preparation, granularity)
    windows = search.demand.windows
    if windows is None:  # as soon as possible; an empty list is no start at all
        windows = [(earliest, search.horizon)]
    releases = sorted(
        {t + search.preparation for p in pools for u in p.usage.values() for t in u.releases}
    )
    starts: set[int] = set()
    for window_start, window_end in windows:
        low = max(_ceil(window_start, granularity), earliest)
        high = min(window_end, search.horizon)
        if low > high:
            continue
        # back-to-back starts give alternatives even in an empty pool; releases catch the
        # moments capacity frees up in a busy one
        step = max(_ceil(search.demand.duration, granularity), granularity)
        starts.update(range(low, high + 1, step)[: search.max_offers * 4])
        starts.update(
            s for s in (_ceil(t, granularity) for t in releases if low < t <= high) if s <= high
        )
    return sorted(starts)


def distinct(slot: Slot, chosen: list[Slot]) -> bool:
    """A real alternative: no overlap with a chosen slot, or strictly more than each it overlaps."""
    for other in chosen:
        if slot.overlaps(other) and not any(
            slot.totals[c] > other.totals.get(c, 0) for c in slot.totals
        ):
            return False
    return True


def find_slots(search: Search) -> Outcome:
    best: dict[str, int] = {c: 0 for c in search.demand.amounts}
    candidates: list[tuple[int, int]] = []  # (start, pool set index)
    amounts: dict[int, dict[str, Range]] = {}
    for index, pools in enumerate(search.pool_sets):
        wanted = search.demand.on(_classes(pools))
        if wanted is not None:
            amounts[index] = wanted
            candidates.extend((start, index) for start in _candidates(search, pools))
    candidates.sort()
    chosen: list[Slot] = []
    duration = search.demand.duration
    for start, index in candidates:
        if _outdone(chosen, start, start + duration, amounts[index]):
            continue  # most candidates of a busy window, once an offer covers them
        slot, totals = evaluate(search, search.pool_sets[index], start, amounts[index])
        for c, v in totals.items():
            best[c] = max(best[c], v)
        if slot is not None and distinct(slot, chosen):
            chosen.append(slot)
            if len(chosen) >= search.max_offers:
                break
    return Outcome(chosen, best, len(candidates))


def _outdone(chosen: list[Slot], start: int, end: int, wanted: dict[str, Range]) -> bool:
    """Whether a chosen slot overlapping [start, end) already has the most of every class a
    slot there could get: then no slot there is a real alternative (see :func:`distinct`), and
    evaluating it is wasted. (``best`` misses such candidates, but it only matters when nothing
    was chosen.)"""
    return any(
        other.start_at < end
        and start < other.end_at
        and all(other.totals.get(c, 0) >= r.max for c, r in wanted.items())
        for other in chosen
    )


def select_distinct(slots: Sequence[Slot], limit: int) -> list[Slot]:
    """The first ``limit`` real alternatives among slots sorted by start."""
    chosen: list[Slot] = []
    for slot in slots:
        if distinct(slot, chosen):
            chosen.append(slot)
            if len(chosen) >= limit:
                break
    return chosen


def _classes(pools: Sequence[PoolView]) -> set[str]:
    return {c for p in pools for c in p.inventories}


def largest_capacity(search: Search) -> dict[str, int]:
    """Per class, the most any pool set could give if it were empty."""
    result: dict[str, int] = {}
    for pools in search.pool_sets:
        for c in search.demand.amounts:
            total = sum(
                min(p.inventories[c].capacity, p.inventories[c].max_unit or 10**18)
                for p in pools
                if c in p.inventories
            )
            result[c] = max(result.get(c, 0), total)
    return result
