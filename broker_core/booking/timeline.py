"""Usage over time of one resource class in one pool, as a step function.

Firm claims (CONFIRMED/ACTIVE) add up. The holds of one offer set are alternatives (at most one
of them can be accepted), so an offer set counts with the largest of its holds at each instant,
not their sum: counting every sibling separately would waste capacity for nothing.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from itertools import pairwise
from typing import NamedTuple


class Claim(NamedTuple):  # a tuple: thousands are made per request, and tuples are cheap
    start: int
    end: int
    amount: int
    group: str | None = None  # the offer set of a HELD claim; None for firm claims


def _envelope(claims: list[Claim]) -> list[tuple[int, int]]:
    """The pointwise maximum of a few alternative claims, as (time, delta) events."""
    points = sorted({c.start for c in claims} | {c.end for c in claims})
    events, level = [], 0
    for point in points:
        value = max((c.amount for c in claims if c.start <= point < c.end), default=0)
        if value != level:
            events.append((point, value - level))
            level = value
    return events


def _disjoint(claims: list[Claim]) -> bool:
    claims.sort()  # by start first
    return all(a.end <= b.start for a, b in pairwise(claims))


class Usage:
    """``used[i]`` is the amount in use over ``[times[i], times[i+1])``; zero before and after."""

    __slots__ = ("releases", "times", "used")

    def __init__(self, claims: Iterable[Claim] = ()):
        events: list[tuple[int, int]] = []
        groups: dict[str, list[Claim]] = defaultdict(list)
        for claim in claims:
            if claim.end <= claim.start or claim.amount <= 0:
                continue
            if claim.group is None:
                events.append((claim.start, claim.amount))
                events.append((claim.end, -claim.amount))
            else:
                groups[claim.group].append(claim)
        for members in groups.values():
            if _disjoint(members):  # the usual case: back-to-back alternatives
                for claim in members:
                    events.append((claim.start, claim.amount))
                    events.append((claim.end, -claim.amount))
            else:
                events.extend(_envelope(members))
        events.sort()
        self.times: list[int] = []
        self.used: list[int] = []
        self.releases: list[int] = []  # instants where usage drops: where new slots can begin
        level = 0
        for time, delta in events:
            level += delta
            if self.times and self.times[-1] == time:
                if level < self.used[-1] and (not self.releases or self.releases[-1] != time):
                    self.releases.append(time)
                self.used[-1] = level
            else:
                if delta < 0:
                    self.releases.append(time)
                self.times.append(time)
                self.used.append(level)

    def peak(self, start: int, end: int) -> int:
        """The most in use at any instant of [start, end)."""
        times, used = self.times, self.used
        i = bisect_right(times, start) - 1
        peak = used[i] if i >= 0 else 0
        i += 1
        n = len(times)
        while i < n and times[i] < end:
            if used[i] > peak:
                peak = used[i]
            i += 1
        return peak

    def at(self, instant: int) -> int:
        i = bisect_right(self.times, instant) - 1
        return self.used[i] if i >= 0 else 0
