"""Resolve a request into what must be booked: amounts per resource class, duration, windows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from ..config import OfferConfig
from ..errors import DocumentInvalid, FieldError
from ..kinds.base import Message, MinMax, Range, message
from ..kinds.request import ExecutionRequest
from ..schedule import (
    Interval,
    ScheduleError,
    format_duration,
    format_instant,
    format_seconds,
    instant,
    instants_without_zone,
    parse_duration,
    parse_instant,
    parse_interval,
    parse_intervals,
)
from .accelerators import CLASSES, AcceleratorNeed, needs_of


@dataclass
class Demand:
    amounts: dict[str, Range]
    duration: int  # seconds the session is available for
    windows: list[tuple[int, int]] | None  # allowed available-start instants; None = ASAP
    storage_sizes: list[Range] = field(default_factory=list)  # one per storage resource
    # classes whose amounts are the node's defaults: a pool that does not track them (a QPU
    # with no memory inventory, say) may still serve the request
    defaulted: frozenset[str] = frozenset()
    # the compute resource's accelerators: a pool serves their classes only with their traits
    accelerators: tuple[AcceleratorNeed, ...] = ()

    def on(self, tracked: set[str]) -> dict[str, Range] | None:
        """The amounts to book on pools tracking these classes; None when they cannot serve."""
        amounts = {c: r for c, r in self.amounts.items() if c in tracked or c not in self.defaulted}
        if any(c not in tracked and r.max for c, r in amounts.items()):
            return None
        return amounts

    def describe(self) -> str:
        parts = [f"{r.min}..{r.max} {name}" for name, r in self.amounts.items()]
        return ", ".join(parts)


def _range(value: MinMax | None, default: Range, where: str) -> Range:
    if value is None or (value.min is None and value.max is None):
        return default
    low = value.min if value.min is not None else min(default.min, value.max or default.min)
    high = value.max if value.max is not None else max(low, default.max)
    if low > high:
        raise DocumentInvalid([FieldError(where, f"min ({low}) is greater than max ({high})")])
    return Range(low, high)


def resolve(request: ExecutionRequest, config: OfferConfig) -> Demand:
    defaults = config.defaults
    compute = request.compute
    cores = _range(
        getattr(compute, "cores", None),
        Range(defaults.cores.min, defaults.cores.max),
        "/compute/cores",
    )
    memory = _range(
        getattr(compute, "memory", None),
        Range(defaults.memory.min, defaults.memory.max),
        "/compute/memory",
    )
    amounts = {"cores": cores, "memory": memory}
    defaulted = frozenset(
        name
        for name, value in (("cores", getattr(compute, "cores", None)),
                            ("memory", getattr(compute, "memory", None)))
        if value is None or (value.min is None and value.max is None)
    )  # fmt: skip
    sizes = [
        _range(
            getattr(s, "size", None),
            Range(defaults.storage.min, defaults.storage.max),
            f"/storage/{i}/size",
        )
        for i, s in enumerate(request.storage)
    ]
    if sizes:
        amounts["storage"] = Range(sum(r.min for r in sizes), sum(r.max for r in sizes))
    counts = {
        item.type: _range(item.count, Range(1, 1), f"/compute/accelerators/{i}/count")
        for i, item in enumerate(getattr(compute, "accelerators", None) or [])
        if item.type in CLASSES
    }
    amounts.update({CLASSES[t]: count for t, count in counts.items()})

    schedule = request.schedule
    try:
        duration = (
            parse_duration(schedule.duration) if schedule.duration else config.default_duration
        )
    except ScheduleError as exc:
        raise DocumentInvalid([FieldError("/schedule/requested/duration", str(exc))]) from None
    if duration <= timedelta(0):
        raise DocumentInvalid(
            [FieldError("/schedule/requested/duration", "duration must be positive")]
        )
    windows: list[tuple[int, int]] | None = None
    if schedule.start is not None:
        where = "/schedule/requested/start"
        if isinstance(schedule.start, list):
            for index, item in enumerate(schedule.start):
                try:
                    parse_interval(item)
                except ScheduleError as exc:
                    raise DocumentInvalid([FieldError(f"{where}/{index}", str(exc))]) from None
        try:
            intervals: list[Interval] = parse_intervals(schedule.start)
        except ScheduleError as exc:
            raise DocumentInvalid([FieldError(where, str(exc))]) from None
        windows = [(int(i.start.timestamp()), int(i.end.timestamp())) for i in intervals]
    accelerators = needs_of(compute, counts)
    return Demand(amounts, int(duration.total_seconds()), windows, sizes, defaulted, accelerators)


def policy_limits(demand: Demand, config: OfferConfig) -> list[Message]:
    """Reasons a well-formed demand is beyond what this node ever offers."""
    reasons = []
    if demand.duration > config.max_duration.total_seconds():
        reasons.append(
            message(
                "requested duration {requested} is longer than this node's maximum {maximum}",
                level="WARN",
                requested=format_seconds(demand.duration),
                maximum=format_seconds(int(config.max_duration.total_seconds())),
            )
        )
    return reasons


def _window(window: tuple[int, int]) -> str:
    start, end = window
    return instant(start) if start == end else f"{instant(start)}/{instant(end)}"


def window_limits(demand: Demand, config: OfferConfig, now: int) -> list[Message]:
    """Why no requested start window can be served at all: each ended before now, or begins
    beyond the look-ahead. A window partly in the past or beyond is clipped, silently."""
    if demand.windows is None:
        return []
    horizon = now + int(config.lookahead.total_seconds())
    if any(start <= horizon and end >= now for start, end in demand.windows):
        return []
    past = [w for w in demand.windows if w[1] < now]
    beyond = [w for w in demand.windows if w[0] > horizon]
    reasons = []
    if past:
        reasons.append(
            message(
                "the requested start window {window} ended at {end}, before now ({now}); "
                "ask for a start window after now, or leave out schedule.requested.start "
                "to start as soon as possible",
                level="WARN",
                window=", ".join(_window(w) for w in past[:5]),
                end=instant(max(end for _, end in past)),
                now=instant(now),
            )
        )
    if beyond:
        reasons.append(
            message(
                "the requested start window {window} begins at {start}, beyond this node's "
                "look-ahead (offers.lookahead: {lookahead}); the latest start it serves is "
                "{latest}",
                level="WARN",
                window=", ".join(_window(w) for w in beyond[:5]),
                start=instant(min(start for start, _ in beyond)),
                lookahead=format_duration(config.lookahead),
                latest=instant(horizon),
            )
        )
    return reasons


def zone_notes(start: str | list[str] | None) -> list[Message]:
    """A time written without a zone is taken as UTC: the answer says so."""
    if start is None:
        return []
    return [
        message(
            "start {text} has no time zone: taken as UTC ({utc}); add Z or an offset "
            "such as +01:00 to say which zone is meant",
            level="WARN",
            text=text,
            utc=format_instant(parse_instant(text)),
        )
        for text in dict.fromkeys(instants_without_zone(start))
    ][:8]
