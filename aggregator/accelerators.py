"""Which upstreams can serve a request's accelerators, from what their node descriptions
(``GET /node``) say of their pools: a node none of whose open pools has the requested GPUs or
FPGAs, with the model and memory traits asked for, is not asked at all (as a node that does
not accept a requested kind is not), and the answer says why.

The matching is the node's own (``broker_core.offers.accelerators``), run on the pools as the
description lists them: their inventories' capacity and their traits. An upstream whose
description lists no pools (an aggregator, a node of another implementation) is asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from broker_core.booking.pools import InventoryView, PoolView
from broker_core.kinds.base import Message, Range, message
from broker_core.kinds.builtin import Accelerator
from broker_core.offers.accelerators import (
    CLASSES,
    NAMES,
    POOLS_LISTED,
    AcceleratorNeed,
    describe_pool,
    model_trait,
    serves,
)

MAX_ITEMS = 8  # the spec's maxItems: a longer list is the upstream's 400 to give


def requested(document: Any) -> tuple[AcceleratorNeed, ...]:
    """The accelerators a (normalised) request asks for; an item the node would refuse (an
    unknown type, a bad count) is left to the node to answer."""
    compute = document.get("compute") if isinstance(document, dict) else None
    items = compute.get("accelerators") if isinstance(compute, dict) else None
    if not isinstance(items, list) or len(items) > MAX_ITEMS:
        return ()
    needs = []
    for item in items:
        try:
            accelerator = Accelerator.model_validate(item)
        except ValidationError:
            return ()
        count = accelerator.count
        low = count.min if count and count.min is not None else 1
        if accelerator.type not in CLASSES or low < 0 or accelerator.problems("/"):
            return ()
        high = count.max if count and count.max is not None else max(low, 1)
        models = tuple(model_trait(accelerator.type, m) for m in accelerator.model or [])
        memory = accelerator.memory.min if accelerator.memory else None
        needs.append(AcceleratorNeed(accelerator.type, Range(low, high), models, memory))
    return tuple(needs)


def pools_of(description: Any) -> tuple[PoolView, ...] | None:
    """The open pools a node description lists, as views with their capacity and traits;
    None when it lists none (then nothing is known of its devices)."""
    platforms = description.get("platforms") if isinstance(description, dict) else None
    views: list[PoolView] = []
    for platform in platforms if isinstance(platforms, list) else []:
        pools = platform.get("pools") if isinstance(platform, dict) else None
        for pool in pools if isinstance(pools, list) else []:
            view = _view(pool, len(views), str(platform.get("name", "")))
            if view is not None:
                views.append(view)
    return tuple(views) if views else None


def _view(pool: Any, index: int, platform: str) -> PoolView | None:
    """One listed pool as a view, if it is open (a drained pool takes no new sessions)."""
    if not isinstance(pool, dict) or not isinstance(pool.get("name"), str):
        return None
    if pool.get("state", "open") != "open":
        return None
    inventories = pool.get("inventories")
    capacity = {
        c: InventoryView(inv["capacity"])
        for c, inv in (inventories.items() if isinstance(inventories, dict) else ())
        if isinstance(inv, dict) and isinstance(inv.get("capacity"), int)
    }
    traits = pool.get("traits")
    listed = frozenset(t for t in traits if isinstance(t, str)) if isinstance(traits, list) else ()
    return PoolView(index, pool["name"], platform, capacity, traits=frozenset(listed))


def skip_reason(
    upstream: str, pools: Sequence[PoolView] | None, needs: Sequence[AcceleratorNeed]
) -> Message | None:
    """Why the upstream is not asked: none of its open pools serves a need; None to ask it."""
    if pools is None or not needs:
        return None
    for need in needs:
        if need.count.max <= 0 or any(serves(p, need) for p in pools):
            continue
        having = [p for p in pools if need.resource_class in p.inventories]
        have = "; ".join(describe_pool(p, need.type) for p in having[:POOLS_LISTED])
        if not having:
            return message("upstream {upstream} skipped: none of its open pools has {devices}",
                           upstream=upstream, devices=NAMES[need.type])  # fmt: skip
        return message(
            "upstream {upstream} skipped: none of its open pools has {wanted} ({have})",
            upstream=upstream, wanted=need.wanted(), have=have,
        )  # fmt: skip
    return None
