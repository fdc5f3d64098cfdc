"""Combined slots from the parts' offers: pure functions, tested without a network.

Each part has candidate offers (from one node, or several); a combined slot takes one offer
of every part such that their starts lie within ``within`` seconds of each other. Anchoring on
each offer in turn (as the earliest start of a slot) and taking, for every other part, its
earliest offer starting in ``[anchor, anchor + within]`` finds every slot worth offering in
``O(offers * parts * log offers)``, never the product of all the parts' offers."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PartOffer:
    """One node's offer for one part: where it is and when it starts (epoch seconds)."""

    part: int  # the part's position
    upstream: str
    start: float
    expires: float
    offer: Any  # the upstream's offer (merge.UpstreamOffer)


def combine(
    candidates: Sequence[Sequence[PartOffer]], within: float, limit: int
) -> list[tuple[PartOffer, ...]]:
    """At most ``limit`` combined slots, one offer per part (in part order), earliest first;
    slots that differ only by a later choice for some part are left out (the earliest choice
    per anchor is kept), and no two slots share their every offer."""
    if not candidates or any(not c for c in candidates):
        return []
    by_start = [sorted(c, key=lambda o: o.start) for c in candidates]
    starts = [[o.start for o in offers] for offers in by_start]
    anchors = sorted((o for c in by_start for o in c), key=lambda o: (o.start, o.part))
    found: list[tuple[PartOffer, ...]] = []
    seen: set[tuple[int, ...]] = set()
    for anchor in anchors:
        chosen: list[PartOffer] = []
        for part, offers in enumerate(by_start):
            if part == anchor.part:
                chosen.append(anchor)
                continue
            first = bisect_left(starts[part], anchor.start)  # its earliest from the anchor on
            if first == len(offers) or offers[first].start > anchor.start + within:
                break
            chosen.append(offers[first])
        else:
            key = tuple(id(o) for o in chosen)
            if key not in seen:
                seen.add(key)
                found.append(tuple(chosen))
    found.sort(key=lambda slot: (max(o.start for o in slot), min(o.start for o in slot)))
    return found[:limit]


def narrowed_start(candidates: Sequence[Sequence[PartOffer]]) -> float | None:
    """When no slot coincides: the latest of the parts' earliest starts, from which every part
    is asked again (None when some part has no offer at all)."""
    if not candidates or any(not c for c in candidates):
        return None
    return max(min(o.start for o in c) for c in candidates)
