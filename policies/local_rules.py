"""Local rules: the site admin's own policy, written in the node's YAML config.

Access rules say which pools a caller may draw on (the union over the rules matching it); limit
rules cap what one session may take, how long it may last and when it may run, or refuse a caller
outright. Every restriction names its rule, so a caller who is turned down learns which rule did
it rather than a vague "no capacity".

The plugin is pure (no database, no I/O): options are parsed once when the node starts, and the
weekly windows are materialised per day-aligned range through a small shared cache, because
``evaluate`` runs for every request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from broker_core.config import UNITS, Model, PositiveDuration, ResourceClass
from broker_core.kinds.base import Message, message
from broker_core.schedule import format_seconds
from policies.contract import (
    Decision,
    Identity,
    Limit,
    PolicyBase,
    PolicyHost,
    PolicyRequest,
    intersect_windows,
)

DAY = 86_400
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
# as the offer service words them, so a cap reads like the node's own capacity messages
_TIME = re.compile(r"^(\d{2}):(\d{2})$")
_POOL = re.compile(r"^[^/\s]+(/[^/\s]+)?$")


# --- options ---------------------------------------------------------------------------------


class Match(Model):
    """Whom a rule applies to: any of the listed groups or owners, anonymous callers, or all."""

    name: str = Field(min_length=1, max_length=64)
    groups: list[str] = Field(default_factory=list)
    subjects: list[str] = Field(
        default_factory=list, description="owner strings '<issuer>:<subject>', or 'anonymous'"
    )
    anonymous: bool = False
    everyone: bool = False

    @model_validator(mode="after")
    def _matches_someone(self) -> Match:
        # a rule with no selector would silently apply to nobody: almost certainly a mistake
        if not (self.groups or self.subjects or self.anonymous or self.everyone):
            raise ValueError(
                f"rule {self.name!r} matches nobody: give groups, subjects, "
                "anonymous: true or everyone: true"
            )
        return self

    def matches(self, identity: Identity) -> bool:
        return (
            self.everyone
            or (self.anonymous and identity.anonymous)
            or identity.in_any(self.groups)
            or identity.owner in self.subjects
        )


class AccessRule(Match):
    pools: list[str] = Field(min_length=1, description="'platform/pool' or 'pool' (any platform)")

    @field_validator("pools")
    @classmethod
    def _pool_names(cls, pools: list[str]) -> list[str]:
        for pool in pools:
            if not _POOL.match(pool):
                raise ValueError(f"{pool!r} is not a pool name: write 'platform/pool' or 'pool'")
        return pools


def _minutes(value: Any, allow_end_of_day: bool) -> int:
    """'HH:MM' as minutes since midnight; '24:00' only where it can end a day."""
    if not isinstance(value, str):
        # YAML 1.1 reads an unquoted 20:00 as the sexagesimal number 1200
        raise ValueError(f"write times as quoted 'HH:MM' strings, not {value!r}")
    found = _TIME.match(value)
    if not found:
        raise ValueError(f"{value!r} is not a time 'HH:MM'")
    hours, minutes = int(found[1]), int(found[2])
    if hours == 24 and minutes == 0 and allow_end_of_day:
        return 24 * 60
    if hours > 23 or minutes > 59:
        latest = "24:00" if allow_end_of_day else "23:59"
        raise ValueError(f"{value!r} is not a time of day (00:00 to {latest})")
    return hours * 60 + minutes


class WeeklyWindow(Model):
    """A weekly recurring window, starting on each listed day at ``from`` local time.

    ``to`` at or before ``from`` ends on the next day (an overnight window), and ``24:00`` ends
    at the next midnight; the days are the days the window *starts* on.
    """

    days: list[Day] = Field(min_length=1)
    from_: str = Field(alias="from")
    to: str
    timezone: str = "UTC"

    @field_validator("days", mode="before")
    @classmethod
    def _lower_days(cls, days: Any) -> Any:
        if isinstance(days, list):
            return [d.lower() if isinstance(d, str) else d for d in days]
        return days

    @field_validator("from_", mode="before")
    @classmethod
    def _from_time(cls, value: Any) -> str:
        _minutes(value, allow_end_of_day=False)
        return value

    @field_validator("to", mode="before")
    @classmethod
    def _to_time(cls, value: Any) -> str:
        _minutes(value, allow_end_of_day=True)
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name)") from None
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> WeeklyWindow:
        if self.from_ == self.to:
            raise ValueError(
                f"window from {self.from_} to {self.to} is empty; use 00:00 to 24:00 for a day"
            )
        return self

    def describe(self) -> str:
        return f"{', '.join(self.days)} {self.from_}\N{EN DASH}{self.to} {self.timezone}"


class LimitRule(Match):
    caps: dict[ResourceClass, int] = Field(
        default_factory=dict, description="per session, at most this much of a class"
    )
    max_duration: PositiveDuration | None = None
    windows: list[WeeklyWindow] | None = Field(default=None, min_length=1)
    refuse: bool = False

    @field_validator("caps")
    @classmethod
    def _caps_non_negative(cls, caps: dict[str, int]) -> dict[str, int]:
        for resource_class, cap in caps.items():
            if cap < 0:
                raise ValueError(f"cap on {resource_class} must not be negative")
        return caps

    @model_validator(mode="after")
    def _limits_something(self) -> LimitRule:
        if not (self.caps or self.max_duration or self.windows or self.refuse):
            raise ValueError(
                f"limit {self.name!r} limits nothing: give caps, max_duration, windows "
                "or refuse: true"
            )
        return self


class LocalRulesOptions(Model):
    access: list[AccessRule] = Field(default_factory=list)
    unmatched: Literal["deny", "allow"] = Field(
        default="deny", description="callers no access rule matches: refused, or all pools"
    )
    limits: list[LimitRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> LocalRulesOptions:
        # messages name rules, so two rules with one name would make them ambiguous
        names = [r.name for r in self.access] + [r.name for r in self.limits]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique: {duplicates}")
        return self


# --- weekly windows as absolute intervals ----------------------------------------------------


@dataclass(frozen=True)
class _Weekly:
    """A parsed :class:`WeeklyWindow`: hashable, so materialisations can be cached."""

    days: frozenset[int]  # 0 = Monday
    start: int  # minutes after the start day's midnight
    end: int  # minutes after the start day's midnight; beyond 1440 ends on the next day
    zone: ZoneInfo

    @classmethod
    def parse(cls, window: WeeklyWindow) -> _Weekly:
        start = _minutes(window.from_, allow_end_of_day=False)
        end = _minutes(window.to, allow_end_of_day=True)
        if end <= start:
            end += 24 * 60
        days = frozenset(DAYS.index(d) for d in window.days)
        return cls(days, start, end, ZoneInfo(window.timezone))

    def instant(self, day: date, minutes: int) -> int:
        """Epoch seconds of local wall-clock ``minutes`` after ``day``'s midnight.

        Wall-clock arithmetic on an aware datetime, so a DST change moves the UTC instant; a
        time skipped by a spring-forward gap resolves like the clock before the change.
        """
        extra_days, minutes = divmod(minutes, 24 * 60)
        local = datetime.combine(day + timedelta(days=extra_days), datetime.min.time())
        local = local.replace(hour=minutes // 60, minute=minutes % 60, tzinfo=self.zone)
        return int(local.timestamp())


def merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, with overlapping and touching [from, to) intervals joined."""
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(intervals):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


@lru_cache(maxsize=512)
def _materialise(
    windows: tuple[_Weekly, ...], first_day: int, last_day: int
) -> tuple[tuple[int, int], ...]:
    """The windows' occurrences overlapping UTC epoch days [first_day, last_day], merged."""
    lo, hi = first_day * DAY, (last_day + 1) * DAY
    intervals = []
    for window in windows:
        # local dates: one day early for windows that started the day before and wrap
        day = datetime.fromtimestamp(lo, window.zone).date() - timedelta(days=1)
        last = datetime.fromtimestamp(hi, window.zone).date()
        while day <= last:
            if day.weekday() in window.days:
                start, end = window.instant(day, window.start), window.instant(day, window.end)
                if start < hi and end > lo and start < end:
                    intervals.append((start, end))
            day += timedelta(days=1)
    return tuple(merge(intervals))


def materialise(windows: tuple[_Weekly, ...], lo: int, hi: int) -> list[tuple[int, int]]:
    """Absolute [from, to) intervals of the weekly windows covering at least [lo, hi].

    The range is widened to whole UTC days so that requests in the same day share a cached
    result.
    """
    return list(_materialise(windows, lo // DAY, hi // DAY))


def fits(windows: list[tuple[int, int]], starts: list[tuple[int, int]], duration: int) -> bool:
    """Whether some start in ``starts`` (inclusive intervals) lets [start, start + duration)
    lie inside one of ``windows``."""
    for a, b in starts:
        for w0, w1 in windows:
            if max(a, w0) <= min(b, w1 - duration):
                return True
    return False


# --- the plugin ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Limit:
    rule: LimitRule
    windows: tuple[_Weekly, ...] | None
    max_duration: int | None

    @property
    def label(self) -> str:
        return f"rule {self.rule.name}"

    def describe_windows(self) -> str:
        return "; ".join(w.describe() for w in self.rule.windows or [])


class LocalRules(PolicyBase):
    """The site's own access rules and limits; see the module docstring and the options."""

    options_model = LocalRulesOptions  # names the known keys in config errors

    def __init__(self, name: str, options: dict[str, Any], host: PolicyHost | None):
        super().__init__(name, options, host)
        self.options = LocalRulesOptions.model_validate(options)
        self._access = [
            (rule, [tuple(p.split("/", 1)) if "/" in p else (None, p) for p in rule.pools])
            for rule in self.options.access
        ]
        self._limits = [
            _Limit(
                rule,
                tuple(_Weekly.parse(w) for w in rule.windows) if rule.windows else None,
                int(rule.max_duration.total_seconds()) if rule.max_duration else None,
            )
            for rule in self.options.limits
        ]

    def evaluate(self, request: PolicyRequest) -> Decision:
        decision = Decision()
        self._decide_access(request, decision)
        self._decide_limits(request, decision)
        return decision

    # access

    def _decide_access(self, request: PolicyRequest, decision: Decision) -> None:
        if not self._access:
            return
        identity = request.identity
        matched = [(rule, pools) for rule, pools in self._access if rule.matches(identity)]
        if not matched:
            if self.options.unmatched == "deny":
                self._refuse(
                    decision,
                    "no access rule of {policy} lets {owner} use this node (groups: {groups})",
                    policy=self.name,
                    owner=identity.owner,
                    groups=", ".join(sorted(identity.groups)) or "none",
                )
            return
        wanted = {p for _, pools in matched for p in pools}
        decision.pools = frozenset(
            p for p in request.pools if (p.platform, p.pool) in wanted or (None, p.pool) in wanted
        )
        if not decision.pools:
            # the names are kept (platform config may change), but say why nothing is left
            self._refuse(
                decision,
                "access by {rules} of {policy}: {owner} may use {pools}, "
                "none of which this node has",
                rules=", ".join(f"rule {rule.name}" for rule, _ in matched),
                policy=self.name,
                owner=identity.owner,
                pools=", ".join(sorted({p for rule, _ in matched for p in rule.pools})),
            )

    # limits

    def _decide_limits(self, request: PolicyRequest, decision: Decision) -> None:
        identity = request.identity
        matched = [limit for limit in self._limits if limit.rule.matches(identity)]
        windowed: list[tuple[_Limit, tuple[_Weekly, ...]]] = []
        for limit in matched:
            rule = limit.rule
            if rule.refuse:
                self._refuse(
                    decision,
                    "rule {rule} of {policy} refuses requests from {owner}",
                    rule=rule.name,
                    policy=self.name,
                    owner=identity.owner,
                )
            for resource_class, cap in rule.caps.items():
                decision.limits.append(Limit(resource_class, cap, rule=limit.label))
                amount = request.amounts.get(resource_class)
                if amount is not None and amount.min > cap:
                    self._refuse(
                        decision,
                        "rule {rule}: at most {cap} {unit} per session; {needed} needed",
                        rule=rule.name,
                        cap=cap,
                        unit=UNITS.get(resource_class, resource_class),
                        needed=amount.min,
                    )
            if limit.max_duration is not None:
                if decision.max_duration is None or limit.max_duration < decision.max_duration:
                    decision.max_duration = limit.max_duration
                if request.duration > limit.max_duration:
                    self._refuse(
                        decision,
                        "rule {rule}: sessions may last at most {maximum}; {requested} requested",
                        rule=rule.name,
                        maximum=format_seconds(limit.max_duration),
                        requested=format_seconds(request.duration),
                    )
            if limit.windows is not None:
                windowed.append((limit, limit.windows))
        if windowed:
            self._decide_windows(request, decision, windowed)

    def _decide_windows(
        self,
        request: PolicyRequest,
        decision: Decision,
        limits: list[tuple[_Limit, tuple[_Weekly, ...]]],
    ) -> None:
        now, horizon, duration = request.now, request.now + request.lookahead, request.duration
        lo, hi = now - DAY, horizon + duration + DAY
        # the starts the node could offer: the requested ones, clipped as the offer engine does
        starts = [
            (max(a, now), min(b, horizon))
            for a, b in (request.windows or [(now, horizon)])
            if max(a, now) <= min(b, horizon)
        ]
        where = (
            "in the requested window"
            if request.windows
            else f"in the next {format_seconds(request.lookahead)}"
        )
        combined: list[tuple[int, int]] | None = None
        refused = False
        for limit, weekly in limits:
            mine = materialise(weekly, lo, hi)
            combined = intersect_windows(combined, mine)
            # no start within the look-ahead at all is the node's to explain, not this rule's
            if starts and not fits(mine, starts, duration):
                refused = True
                self._refuse(
                    decision,
                    "rule {rule}: sessions may only run within its weekly windows ({windows}); "
                    "none fits {duration} {where}",
                    rule=limit.rule.name,
                    windows=limit.describe_windows(),
                    duration=format_seconds(duration),
                    where=where,
                )
        # each rule's windows have room, but maybe not where they overlap
        if (
            starts
            and not refused
            and len(limits) > 1
            and not fits(combined or [], starts, duration)
        ):
            self._refuse(
                decision,
                "{rules} together: sessions may only run where all their weekly windows "
                "overlap ({windows}); none fits {duration} {where}",
                rules="rules " + ", ".join(limit.rule.name for limit, _ in limits),
                windows=" AND ".join(
                    f"{limit.rule.name}: {limit.describe_windows()}" for limit, _ in limits
                ),
                duration=format_seconds(duration),
                where=where,
            )
        decision.windows = combined

    @staticmethod
    def _refuse(decision: Decision, template: str, **values: Any) -> None:
        decision.allowed = False
        decision.messages.append(_warn(template, **values))


def _warn(template: str, **values: Any) -> Message:
    return message(template, level="WARN", **values)
