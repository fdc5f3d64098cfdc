"""The pools as the ledger reads them, and the slots claimed on them.

A :class:`PoolView` is one pool's inventories and usage over a window, read in one transaction
(``ledger.load_pools``); the offer engine sweeps these, and a :class:`Slot` it finds is what
the ledger books (``ledger.insert_bookings``). Plain data, so the search runs without a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .timeline import Usage


@dataclass(frozen=True)
class InventoryView:
    capacity: int
    min_unit: int = 1
    max_unit: int | None = None
    step_size: int = 1


@dataclass(frozen=True)
class Drain:
    """Why a pool takes no new claims: since when, by whom, the admin's reason."""

    since: int
    by: str | None
    reason: str | None


@dataclass
class PoolView:
    id: int
    name: str
    platform: str
    inventories: dict[str, InventoryView]
    usage: dict[str, Usage] = field(default_factory=dict)
    generation: int = 0
    # (start, end, amount) per class that the platform gave away outside the broker
    external: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)
    # drained by an admin: no new claims (see ``Drain``); None when open
    drain: Drain | None = None
    # what its accelerators are (GPU_A100, GPU_MEM_80G), as configured or discovered
    traits: frozenset[str] = frozenset()

    def free(self, resource_class: str, start: int, end: int) -> int:
        # a class whose usage was not loaded is an error, never an empty pool
        used = self.usage[resource_class].peak(start, end)
        return max(self.inventories[resource_class].capacity - used, 0)

    def add_external(self, claims: dict[str, list[tuple[int, int, int]]]) -> None:
        """Count claims made outside the broker (the platform's own reservations, maintenance)
        as firm usage."""
        for c, extra in claims.items():
            if c in self.usage and extra:
                self.usage[c] = self.usage[c].plus(extra)
                self.external.setdefault(c, []).extend(extra)


@dataclass
class Slot:
    prepare_at: int
    start_at: int
    end_at: int
    pools: list[PoolView]
    totals: dict[str, int]
    allocations: list[tuple[int, str, int]]  # (pool id, resource class, amount)

    def overlaps(self, other: Slot) -> bool:
        return self.start_at < other.end_at and other.start_at < self.end_at
