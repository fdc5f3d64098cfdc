"""Usage over time of one resource class in one pool, as a step function.

Firm claims (CONFIRMED/ACTIVE) add up. The holds of one offer set are alternatives (at most one
of them can be accepted), so an offer set counts with the largest of its holds at each instant,
not their sum: counting every sibling separately would waste capacity for nothing.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
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


def _drops(times: list[int], used: list[int]) -> list[int]:
    """The instants where usage falls: where a new slot may fit better than just before."""
    return [
        t for t, before, after in zip(times[1:], used, used[1:], strict=False) if after < before
    ]


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
        times: list[int] = []
        used: list[int] = []
        level = 0
        for time, delta in events:
            level += delta
            if times and times[-1] == time:
                used[-1] = level
            else:
                times.append(time)
                used.append(level)
        self.times, self.used = times, used
        self.releases = _drops(times, used)

    @classmethod
    def of_steps(cls, times: list[int], used: list[int]) -> Usage:
        """A usage given as its steps (``used[i]`` over ``[times[i], times[i+1])``)."""
        usage = cls.__new__(cls)
        usage.times, usage.used = times, used
        usage.releases = _drops(times, used)
        return usage

    def plus(self, claims: Iterable[tuple[int, int, int]]) -> Usage:
        """This usage with more firm (start, end, amount) claims added."""
        timeline = Timeline()
        timeline.times, timeline.used = list(self.times), list(self.used)
        for start, end, amount in claims:
            timeline.add(start, end, amount)
        return Usage.of_steps(timeline.times, timeline.used)

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


class Timeline:
    """A step function changed in place: amounts added and taken back over intervals.

    The usage cache keeps one per pool and class over the whole look-ahead, so that a request
    slices out its window instead of rebuilding the usage from thousands of claims.
    """

    __slots__ = ("times", "used")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.used: list[int] = []

    def add(self, start: int, end: int, delta: int) -> None:
        if start >= end or delta == 0:
            return
        i = self._point(start)
        j = self._point(end)  # after start: inserting it does not move start's index
        used = self.used
        for k in range(i, j):
            used[k] += delta

    def _point(self, instant: int) -> int:
        times = self.times
        i = bisect_left(times, instant)
        if i == len(times) or times[i] != instant:
            times.insert(i, instant)
            self.used.insert(i, self.used[i - 1] if i else 0)
        return i

    def window(self, low: int, high: int) -> Usage:
        """The usage over [low, high), as an independent copy."""
        times = self.times
        i = max(bisect_right(times, low) - 1, 0)
        j = bisect_left(times, high)
        return Usage.of_steps(times[i:j], self.used[i:j])

    def compact(self, before: int) -> None:
        """Drop the steps that change nothing, and everything before ``before``."""
        times, used = [], []
        for t, u in zip(self.times, self.used, strict=True):
            if t <= before:
                if times:
                    times[-1], used[-1] = before, u
                else:
                    times.append(before)
                    used.append(u)
            elif not used or used[-1] != u:
                times.append(t)
                used.append(u)
        while used and used[0] == 0:
            del times[0], used[0]
        self.times, self.used = times, used

    def __len__(self) -> int:
        return len(self.times)


def group_steps(claims: list[Claim]) -> list[tuple[int, int, int]]:
    """What one offer set's holds count for: (start, end, amount) pieces of their envelope."""
    if _disjoint(claims):
        return [(c.start, c.end, c.amount) for c in claims]
    pieces, level, since = [], 0, 0
    for point, delta in _envelope(claims):
        if level:
            pieces.append((since, point, level))
        level += delta
        since = point
    return pieces
