"""Accelerators: what a request's ``compute.accelerators`` need, and which pools have it.

A pool says what its devices are with traits, as OpenStack placement does: ``GPU_A100`` for a
model, ``GPU_MEM_80G`` for the memory of each device (``FPGA_`` for FPGAs); the count is its
``gpus`` (``fpgas``) inventory. A request's item asks for a count of one type, optionally of
one of some models (any of them will do) and with at least some memory per device:

- ``model: [A100, H100]`` is satisfied by a pool with trait GPU_A100 or GPU_H100 (a model is
  upper-cased, anything but letters and digits becomes ``_``; a model written as a whole trait,
  ``GPU_A100`` or ``CUSTOM_...``, is taken as it is);
- ``memory: {min: 40}`` by a pool with a GPU_MEM_<N>G trait with N >= 40.

Pure functions of the pool views (:mod:`broker_core.booking.pools`), so the offer search and its
NO messages share them, and tests need no database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..booking.pools import PoolView
from ..kinds.base import Message, MinMax, Range, message

# the request's type -> the resource class counted, the traits' prefix, how it reads
CLASSES = {"gpu": "gpus", "fpga": "fpgas"}
PREFIXES = {"gpu": "GPU", "fpga": "FPGA"}
NAMES = {"gpu": "GPUs", "fpga": "FPGAs"}
_MEMORY = re.compile(r"^(GPU|FPGA)_MEM_(\d{1,7})G$")
POOLS_LISTED = 8  # pools named in one NO message


@dataclass(frozen=True)
class AcceleratorNeed:
    """One resolved ``accelerators`` item: ``models`` are trait names, any one will do."""

    type: str
    count: Range
    models: tuple[str, ...] = ()
    memory: int | None = None  # GiB per device, at least

    @property
    def resource_class(self) -> str:
        return CLASSES[self.type]

    def wanted(self) -> str:
        """What a pool must have, for messages: ``GPU_A100 or GPU_H100, GPU_MEM_<N>G, N >= 80``."""
        parts = [" or ".join(self.models)] if self.models else []
        if self.memory:
            parts.append(f"{PREFIXES[self.type]}_MEM_<N>G with N >= {self.memory}")
        return " and ".join(parts) if parts else NAMES[self.type]


def model_trait(accelerator_type: str, model: str) -> str:
    """The trait a pool of this model has: ``A100`` -> GPU_A100, ``xilinx u250`` ->
    FPGA_XILINX_U250; a whole trait (GPU_A100, CUSTOM_X) stays as it is."""
    name = re.sub(r"[^A-Z0-9]+", "_", model.upper()).strip("_")
    prefix = PREFIXES[accelerator_type]
    if name.startswith((prefix + "_", "CUSTOM_")):
        return name
    return f"{prefix}_{name}"


def _bound(value: MinMax | None) -> int | None:
    return value.min if value is not None and value.min else None


def needs_of(compute: Any, count_of: dict[str, Range]) -> tuple[AcceleratorNeed, ...]:
    """The request's accelerator items as needs; ``count_of`` has each type's resolved count."""
    needs = []
    for item in getattr(compute, "accelerators", None) or []:
        if item.type not in CLASSES:
            continue  # answered NO before anything is searched (the kind's problems)
        models = tuple(dict.fromkeys(model_trait(item.type, m) for m in item.model or []))
        needs.append(AcceleratorNeed(item.type, count_of[item.type], models, _bound(item.memory)))
    return tuple(needs)


def memory_of(traits: Iterable[str], accelerator_type: str) -> int | None:
    """The GiB per device a pool's traits say (the largest GPU_MEM_<N>G), if any."""
    prefix = PREFIXES[accelerator_type]
    sizes = [int(m.group(2)) for t in traits if (m := _MEMORY.match(t)) and m.group(1) == prefix]
    return max(sizes) if sizes else None


def models_of(traits: Iterable[str], accelerator_type: str) -> list[str]:
    """The models a pool's traits name (GPU_A100 -> A100), not its memory traits."""
    prefix = PREFIXES[accelerator_type] + "_"
    return sorted(t[len(prefix) :] for t in traits if t.startswith(prefix) and not _MEMORY.match(t))


def serves(pool: PoolView, need: AcceleratorNeed) -> bool:
    """Whether the pool has devices of the need's class with its model and memory."""
    if need.resource_class not in pool.inventories:
        return False
    if need.models and not set(need.models) & pool.traits:
        return False
    return not need.memory or (memory_of(pool.traits, need.type) or 0) >= need.memory


def pool_set_serves(pools: Sequence[PoolView], needs: Sequence[AcceleratorNeed]) -> bool:
    """Whether a booking on these pools may draw the needed devices: some pool carries each
    needed class, and every pool carrying it has the wanted traits (a combined set never takes
    an A100 request's GPUs from its T4 pool)."""
    for need in needs:
        if need.count.max <= 0:
            continue
        carriers = [p for p in pools if need.resource_class in p.inventories]
        if not carriers or not all(serves(p, need) for p in carriers):
            return False
    return True


def describe_pool(pool: PoolView, accelerator_type: str) -> str:
    """``pool sim/gpu-a has 8 GPUs (GPU_A100, GPU_MEM_80G)``."""
    inventory = pool.inventories[CLASSES[accelerator_type]]
    traits = sorted(t for t in pool.traits if t.startswith(PREFIXES[accelerator_type] + "_"))
    listed = f" ({', '.join(traits)})" if traits else " (no traits)"
    return f"pool {pool.name} has {inventory.capacity} {NAMES[accelerator_type]}{listed}"


def unmatched(needs: Sequence[AcceleratorNeed], pools: Sequence[PoolView]) -> list[Message]:
    """Why no pool can serve the needs: for each need no pool serves, what was wanted and
    what the pools of this node have instead."""
    reasons = []
    for need in needs:
        if need.count.max <= 0 or any(serves(p, need) for p in pools):
            continue
        having = [p for p in pools if need.resource_class in p.inventories]
        have = "; ".join(describe_pool(p, need.type) for p in having[:POOLS_LISTED])
        if len(having) > POOLS_LISTED:
            have += f"; and {len(having) - POOLS_LISTED} more pools"
        reasons.append(message(
            "no pool open to you has {wanted}; "
            + ("{have}" if having else "no pool of this node has {devices}"),
            level="WARN", wanted=need.wanted(), devices=NAMES[need.type],
            **({"have": have} if having else {}),
        ))  # fmt: skip
    return reasons


def offered(needs: Sequence[AcceleratorNeed], slot_pools: Sequence[PoolView],
            totals: dict[str, int]) -> list[dict[str, Any]]:  # fmt: skip
    """The compute resource's ``accelerators`` as offered: the count booked, and the model
    and memory of the pools it is booked on."""
    items = []
    for need in needs:
        granted = totals.get(need.resource_class, 0)
        carriers = [p for p in slot_pools if need.resource_class in p.inventories]
        item: dict[str, Any] = {"type": need.type, "count": {"min": granted, "max": granted}}
        models = sorted({m for p in carriers for m in models_of(p.traits, need.type)})
        if models:
            item["model"] = models
        memories = [memory_of(p.traits, need.type) for p in carriers]
        if memories and all(m is not None for m in memories):
            least = min(m for m in memories if m is not None)
            item["memory"] = {"min": least, "max": least}
        items.append(item)
    return items
