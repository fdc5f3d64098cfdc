"""Each process keeps the live claims of every pool in memory and catches up by generation.

Reading a pool's usage from the table costs about a microsecond per claim in the window, which
at 100k bookings was half of every request. Every change to a pool's claims (a new claim, or a
booking changing state) bumps the pool's generation and tags the allocations it touched with
the new generation, in the transaction that holds the pool's lock. So a cache that has seen
generation ``g`` catches up with ``generation > g`` rows only, read in the same snapshot as the
pool row, and the usage it serves is exactly the table's at the generation it reports.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..db.tables import HELD, LIVE_STATES
from .timeline import Claim, Timeline, Usage, group_steps

# Windows start at "now" or later; claims that ended this long before the cache was filled or
# last pruned are dropped, and a window starting earlier than that is read from the table.
KEEP_PAST = 86_400


@dataclass
class _ClassClaims:
    """The live claims of one resource class of one pool, and the usage they add up to."""

    claims: dict[int, Claim] = field(default_factory=dict)  # by allocation id
    groups: dict[str, dict[int, Claim]] = field(default_factory=dict)  # holds by offer set
    usage: Timeline = field(default_factory=Timeline)

    def put_many(self, changes: list[tuple[int, Claim | None]]) -> None:
        """Set (or drop) many allocations' claims. An offer set's holds count together (their
        envelope), so each offer set touched is taken out once and put back once, however many
        of its holds change (an expiry or an accept changes all of them)."""
        changes = [(a, c) for a, c in changes if self.claims.get(a) != c]
        if not changes:
            return
        groups = {
            c.group
            for a, claim in changes
            for c in (self.claims.get(a), claim)
            if c is not None and c.group is not None
        }
        for group in groups:  # take back what the offer sets counted for ...
            for start, end, amount in group_steps(list(self.groups.get(group, {}).values())):
                self.usage.add(start, end, -amount)
        for allocation_id, claim in changes:
            old = self.claims.pop(allocation_id, None)
            if old is not None:
                if old.group is None:
                    self.usage.add(old.start, old.end, -old.amount)
                else:
                    del self.groups[old.group][allocation_id]
            if claim is not None:
                self.claims[allocation_id] = claim
                if claim.group is None:
                    self.usage.add(claim.start, claim.end, claim.amount)
                else:
                    self.groups.setdefault(claim.group, {})[allocation_id] = claim
        for group in groups:  # ... and add what they count for now
            members = self.groups.get(group)
            if not members:
                self.groups.pop(group, None)
                continue
            for start, end, amount in group_steps(list(members.values())):
                self.usage.add(start, end, amount)

    def fill(self, claims: dict[int, Claim]) -> None:
        """Start from these claims (the sweep of ``Usage`` is far cheaper than one ``put``
        each)."""
        self.claims = claims
        for allocation_id, claim in claims.items():
            if claim.group is not None:
                self.groups.setdefault(claim.group, {})[allocation_id] = claim
        usage = Usage(claims.values())
        self.usage.times, self.usage.used = usage.times, usage.used

    def prune(self, before: int) -> None:
        self.put_many([(a, None) for a, c in self.claims.items() if c.end <= before])
        self.usage.compact(before)


@dataclass
class _PoolClaims:
    generation: int
    floor: int  # windows starting before this are not covered
    classes: dict[str, _ClassClaims] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fill(self, rows: Iterable[Any]) -> None:
        """Rows of every live claim (allocation id, class, amount, start, end, state, offer
        set)."""
        claims: dict[str, dict[int, Claim]] = {}
        for allocation_id, resource_class, amount, start, end, state, offerset in rows:
            group = offerset if state == HELD else None
            claims.setdefault(resource_class, {})[allocation_id] = Claim(start, end, amount, group)
        for resource_class, of_class in claims.items():
            self.classes.setdefault(resource_class, _ClassClaims()).fill(of_class)

    def apply(self, rows: Iterable[Any]) -> None:
        """Rows of (allocation id, class, amount, start, end, state, offer set)."""
        changes: dict[str, list[tuple[int, Claim | None]]] = {}
        for allocation_id, resource_class, amount, start, end, state, offerset in rows:
            live = state in LIVE_STATES and end > self.floor
            group = offerset if state == HELD else None
            changes.setdefault(resource_class, []).append(
                (allocation_id, Claim(start, end, amount, group) if live else None)
            )
        for resource_class, of_class in changes.items():
            claims = self.classes.get(resource_class)
            if claims is None:
                claims = self.classes[resource_class] = _ClassClaims()
            claims.put_many(of_class)


class UsageCache:
    """Live claims per pool, shared by the threads of one process."""

    def __init__(self) -> None:
        self._pools: dict[int, _PoolClaims] = {}
        self._lock = threading.Lock()

    def usage(
        self,
        pool_id: int,
        generation: int,
        window: tuple[int, int],
        classes: Iterable[str],
        *,
        load: Any,
        changes: Any,
        now: int,
    ) -> tuple[int, dict[str, Usage]] | None:
        """The pool's usage over ``window`` per class, and the generation it is at; None when
        the window reaches further back than the cache keeps.

        ``generation`` is the pool's generation in the caller's snapshot; ``load(floor)`` reads
        every allocation row of the pool ending after ``floor`` and ``changes(since)`` the rows
        changed after generation ``since``, both in that snapshot.
        """
        with self._lock:
            pool = self._pools.get(pool_id)
            if pool is None:
                pool = self._pools[pool_id] = _PoolClaims(generation=-1, floor=now - KEEP_PAST)
        with pool.lock:
            if window[0] < pool.floor:
                return None
            if pool.generation < 0:
                pool.fill(load(pool.floor))
                pool.generation = generation
            elif pool.generation < generation:
                pool.apply(changes(pool.generation))
                pool.generation = generation
            if now - KEEP_PAST > pool.floor + KEEP_PAST:  # prune about once a day
                pool.floor = now - KEEP_PAST
                for claims in pool.classes.values():
                    claims.prune(pool.floor)
            # a snapshot older than the cache gets the cache's (newer, committed) state: the
            # generation returned says which state it is
            usage = {}
            for c in classes:
                claims = pool.classes.get(c)
                usage[c] = claims.usage.window(*window) if claims else Usage()
                if claims and len(claims.usage) > 4 * len(claims.claims) + 64:
                    claims.usage.compact(pool.floor)
            return pool.generation, usage

    def advance(self, pool_id: int, since: int, rows: Iterable[Any]) -> None:
        """Apply the claims one transaction made on the pool, from generation ``since`` (which it
        locked) to ``since + 1`` (which it committed), so the next request needs no read to catch
        up. A cache at any other generation is left to catch up from the table."""
        pool = self._pools.get(pool_id)
        if pool is None:
            return
        with pool.lock:
            if pool.generation == since:
                pool.apply(rows)
                pool.generation = since + 1
