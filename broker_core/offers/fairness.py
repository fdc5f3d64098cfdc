"""Fair holds: what one caller, or one project, may hold at once in open offers.

An offer holds capacity until it expires, so one caller asking again and again (and asking
anew before its offers expire) could hold a whole pool for the whole look-ahead. The limits of
``holds`` (see :class:`broker_core.config.HoldsConfig`) bound every caller and every project:

- **open offer sets** at once. Beyond it: 429 with ``Retry-After`` (when the oldest expires);
- **resource-hours held** at once, per class (``resource_hours``, ``lookahead_share`` of the
  node's capacity over the look-ahead). A request that needs more than the whole limit is a NO
  saying what would fit; one that would fit once the caller's own holds expire is a 429;
  otherwise the offers' amounts and number are cut to what the limit leaves;
- **share of a pool** held at any instant (``pool_share``): a cap per pool, as the concurrency
  cap of a project is one over time; a request for more than any pool's share is a NO.

The rule for 429 or NO: a 429 when waiting helps (the caller's own open offers are in the way,
and they expire), a NO when it never would (the request alone is beyond the limit).

A caller's new request for the same thing (the same document, bar its ``meta``, for the same
project) replaces its open offer set, in the transaction that makes the new one, as a placement
consumer's allocations are replaced by its next claim: asking again before the offers expire
renews them, and never holds twice. Anonymous callers share one budget and never replace each
other's offers (two anonymous users asking for the same thing are two users).

Probes (``?probe=true``) hold nothing and count against no hold limit, but are bounded per
caller by ``probes_per_minute`` (429 beyond it).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlmodel import Session

from ..booking import holds
from ..booking.holds import Held, Pieces
from ..booking.pools import PoolView, Slot
from ..booking.timeline import Claim, Usage, group_steps
from ..config import UNITS, HoldLimits, HoldsConfig
from ..db.tables import Inventory, ResourcePool
from ..errors import TooManyHolds
from ..identity import Identity
from ..kinds.base import Message, message
from ..schedule import format_seconds, instant
from .demand import Demand

HOUR_UNITS = {"cores": "core-hours", "memory": "GiB-hours of memory",
              "storage": "GiB-hours of storage", "gpus": "GPU-hours",
              "fpgas": "FPGA-hours"}  # fmt: skip


def request_key(document: Any, project: str | None) -> str:
    """What a request asks for, as a digest: its document without the top-level ``meta``
    (names and descriptions do not change what is booked), and the project charged."""
    body = {k: v for k, v in document.items() if k != "meta"} if isinstance(document, dict) else {}
    text = json.dumps([body, project], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def caller_limits(config: HoldsConfig, identity: Identity) -> tuple[str, str, HoldLimits]:
    """The hold limits that apply to a caller: (who, for messages; config key; limits)."""
    if identity.anonymous:
        return "anonymous callers together", "holds.anonymous", config.anonymous
    for entry in config.callers:
        if identity.owner in entry.subjects or identity.in_any(entry.groups):
            return identity.owner, f"holds.callers[{entry.name}]", entry
    return identity.owner, "holds.caller", config.caller


@dataclass
class Capacity:
    """The node's enabled pools: each one's capacity per class, and the total per class."""

    pools: dict[int, dict[str, int]] = field(default_factory=dict)
    platforms: dict[int, str] = field(default_factory=dict)

    @classmethod
    def read(cls, session: Session) -> Capacity:
        rows = session.connection().execute(
            select(  # type: ignore[call-overload]
                Inventory.pool_id, ResourcePool.platform, Inventory.resource_class,
                Inventory.total, Inventory.reserved, Inventory.allocation_ratio,
            )
            .join(ResourcePool, ResourcePool.id == Inventory.pool_id)
            .where(ResourcePool.enabled)
        )  # fmt: skip
        capacity = cls()
        for pool_id, platform, resource_class, total, reserved, ratio in rows:
            capacity.pools.setdefault(pool_id, {})[resource_class] = int((total - reserved) * ratio)
            capacity.platforms[pool_id] = platform
        return capacity

    def total(self, resource_class: str) -> int:
        return sum(p.get(resource_class, 0) for p in self.pools.values())


@dataclass
class Scope:
    """One set of hold limits (a caller's, or a project's) and what is held against it."""

    who: str  # "egi:alice", "anonymous callers together", "project astro"
    key: str  # the configuration key, "holds.caller"
    limits: HoldLimits
    held: Held
    capacity: Capacity
    lookahead: int
    _seconds: dict[str, int] = field(default_factory=dict)

    def limit_seconds(self, resource_class: str) -> float | None:
        """The most resource-seconds of a class this scope may hold at once, if limited."""
        found = []
        if resource_class in self.limits.resource_hours:
            found.append(self.limits.resource_hours[resource_class] * 3600)
        total = self.capacity.total(resource_class) * self.lookahead
        if self.limits.lookahead_share is not None and total > 0:  # classes no pool tracks: none
            found.append(self.limits.lookahead_share * total)
        return min(found) if found else None

    def held_seconds(self, resource_class: str) -> int:
        if resource_class not in self._seconds:
            self._seconds[resource_class] = self.held.seconds(resource_class)
        return self._seconds[resource_class]

    def remaining(self, resource_class: str) -> float | None:
        limit = self.limit_seconds(resource_class)
        return None if limit is None else limit - self.held_seconds(resource_class)

    def hold(self, held: Held) -> None:
        self.held, self._seconds = held, {}

    @property
    def holds(self) -> str:
        """The scope's name with "hold" or "holds", in agreement."""
        return f"{self.who} {'hold' if self.who.endswith('together') else 'holds'}"


@dataclass
class HoursLimit:
    """A per-session cap from a scope's resource-hours left: the amount that fits the
    remaining hours over a slot's whole booking (its preparation included)."""

    scope: Scope
    resource_class: str
    rule: str

    def room(self, start: int, end: int) -> int:
        remaining = self.scope.remaining(self.resource_class)
        if remaining is None:
            return 10**18
        return max(int(remaining // max(end - start, 1)), 0)


@dataclass
class PoolShareCap:
    """At every instant, a scope's holds on a pool, with the new offer, stay within its share
    of the pool's capacity."""

    scope: Scope
    share: float
    rule: str
    _usage: dict[tuple[int, str], Usage] = field(default_factory=dict)

    def cap(self, pool_id: int, capacity: int) -> int:
        return math.floor(self.share * capacity)

    def room(self, pool: PoolView, resource_class: str, start: int, end: int) -> int | None:
        inventory = pool.inventories.get(resource_class)
        if inventory is None:
            return None
        key = (pool.id, resource_class)
        if key not in self._usage:
            self._usage[key] = self.scope.held.usage(pool.id, resource_class)
        return self.cap(pool.id, inventory.capacity) - self._usage[key].peak(start, end)

    def forget(self) -> None:
        self._usage = {}


def slot_pieces(slots: Iterable[Slot], group: str = "new") -> Pieces:
    """What a new offer set's slots would hold, per pool and class (their envelope)."""
    claims: dict[tuple[int, str], list[Claim]] = defaultdict(list)
    for slot in slots:
        for pool_id, c, amount in slot.allocations:
            claims[(pool_id, c)].append(Claim(slot.prepare_at, slot.end_at, amount, group))
    return {key: group_steps(members) for key, members in claims.items()}


def _seconds_of(pieces: Pieces, resource_class: str) -> int:
    return sum(
        amount * (end - start)
        for (_, c), steps in pieces.items()
        if c == resource_class
        for start, end, amount in steps
    )


@dataclass
class Claimant:
    """Who asks, with every hold limit that applies to them and what they hold now; and the
    open offer set a request for the same thing replaces."""

    scopes: list[Scope]
    request_key: str | None  # None: this caller never replaces (anonymous callers)
    replaced: list[str] = field(default_factory=list)
    replacing: Held = field(default_factory=Held)  # the replaced offer sets' holds
    discount: Pieces = field(default_factory=dict)  # what the replaced holds count for
    owner: str | None = None
    project: str | None = None
    caps: list[PoolShareCap] = field(default_factory=list)

    @property
    def lock_keys(self) -> list[str]:
        keys = [f"owner:{self.owner}"]
        if self.project is not None:
            keys.append(f"project:{self.project}")
        return keys

    # -- reading what is held --------------------------------------------------------------

    def read(self, session: Session, now: int, *, replace: Held | None = None) -> None:
        """Read what every scope holds now, and (again) the offer set to replace."""
        held = holds.held_by_owner(session, self.owner or "", now)
        if replace is None:
            replaced = held.same_request(self.request_key) if self.request_key else []
            replace = holds.held_of(session, replaced)
        self.replacing = replace
        self.replaced = sorted(replace.offer_sets())
        self.discount = replace.pieces() if self.replaced else {}
        for scope in self.scopes:
            if scope.key.startswith("holds.project"):
                project_held = holds.held_by_project(session, self.project or "", now)
                scope.hold(project_held.without(self.replaced))
            else:
                scope.hold(held.without(self.replaced))
        for cap in self.caps:
            cap.forget()

    def add_project(self, session: Session, config: HoldsConfig, project: str | None,
                    capacity: Capacity, lookahead: int, now: int) -> None:  # fmt: skip
        """The project's limits, once the policies have said which project is charged."""
        if project is None or not config.project.limits_holds():
            return
        self.project = project
        held = holds.held_by_project(session, project, now).without(self.replaced)
        self.scopes.append(
            Scope(f"project {project}", "holds.project", config.project, held, capacity, lookahead)
        )

    # -- deciding ----------------------------------------------------------------------------

    def refuse_or_raise(self, demand: Demand, preparation: int, now: int) -> list[Message]:
        """NO reasons when the request alone is beyond a limit (waiting would not help); a
        :class:`TooManyHolds` (429) when the caller's own open offers are in the way."""
        reasons: list[Message] = []
        span = demand.duration + preparation  # a hold covers the preparation too
        for scope in self.scopes:
            reasons += self._refusals(scope, demand, span)
        if reasons:
            return reasons
        for scope in self.scopes:
            self._raise_if_full(scope, demand, span, now)
        return []

    def _refusals(self, scope: Scope, demand: Demand, span: int) -> list[Message]:
        limits, reasons = scope.limits, []
        if limits.offer_sets == 0:
            reasons.append(message(
                "{who} may hold no offers on this node ({key}.offer_sets: 0); ask with "
                "?probe=true to see when you could start, which holds nothing",
                level="WARN", who=scope.who, key=scope.key,
            ))  # fmt: skip
        for c, wanted in demand.amounts.items():
            limit = scope.limit_seconds(c)
            if limit is None or wanted.min == 0 or wanted.min * span <= limit:
                continue
            most_amount = int(limit // span)
            most_time = int(limit // wanted.min) - (span - demand.duration)
            reasons.append(message(
                "{who} may hold at most {limit} {unit} at once ({key}); this request holds at "
                "least {needed} ({amount} {what} for {span}); ask for at most {most_amount} "
                "{what} for {duration}" + (", or at most {most_time} with {amount}"
                                           if most_time > 0 else ""),
                level="WARN", who=scope.who, key=scope.key, limit=_hours(limit),
                unit=HOUR_UNITS.get(c, c), needed=_hours(wanted.min * span), amount=wanted.min,
                what=UNITS.get(c, c), span=format_seconds(span), most_amount=most_amount,
                duration=format_seconds(demand.duration),
                most_time=format_seconds(max(most_time, 0)),
            ))  # fmt: skip
        if limits.pool_share is not None:
            for c, wanted in demand.amounts.items():
                most = self._most_of_a_share(scope, c, limits.pool_share)
                if most is not None and wanted.min > most:
                    reasons.append(message(
                        "{who} may hold at most {share} of a pool at any instant "
                        "({key}.pool_share), so at most {most} {unit} here; {needed} needed",
                        level="WARN", who=scope.who, key=scope.key,
                        share=f"{limits.pool_share:.0%}", most=most, unit=UNITS.get(c, c),
                        needed=wanted.min,
                    ))  # fmt: skip
        return reasons

    @staticmethod
    def _most_of_a_share(scope: Scope, resource_class: str, share: float) -> int | None:
        """The most of a class one session could hold on any pool (or, summed, on the pools
        of one platform, which may combine them) under a pool share."""
        by_platform: dict[str, list[int]] = defaultdict(list)
        for pool_id, classes in scope.capacity.pools.items():
            if resource_class in classes:
                by_platform[scope.capacity.platforms[pool_id]].append(
                    math.floor(share * classes[resource_class])
                )
        if not by_platform:
            return None
        return max(sum(caps) for caps in by_platform.values())

    def _raise_if_full(self, scope: Scope, demand: Demand, span: int, now: int) -> None:
        limits = scope.limits
        expiries = scope.held.expiries()
        if limits.offer_sets is not None and len(expiries) >= limits.offer_sets:
            oldest = expiries[0][0] if expiries else now + 1
            raise TooManyHolds(
                f"{scope.holds} {len(expiries)} open offer sets, the most allowed "
                f"({scope.key}.offer_sets: {limits.offer_sets}); the oldest expires at "
                f"{instant(oldest)}: accept or reject offers (POST /sessions/{{uuid}}) to free "
                "one sooner",
                retry_after=max(oldest - now, 1),
                limit=f"{scope.key}.offer_sets",
            )
        for c, wanted in demand.amounts.items():
            remaining = scope.remaining(c)
            needed = wanted.min * span
            if remaining is None or needed <= remaining:
                continue
            # when enough of the caller's own holds will have expired
            freed, at = 0, now + 1
            for expires, offerset in expiries:
                freed += Held([h for h in scope.held.claims if h.offerset == offerset]).seconds(c)
                at = expires
                if remaining + freed >= needed:
                    break
            raise TooManyHolds(
                f"{scope.holds} {_hours(scope.held_seconds(c))} of the "
                f"{_hours(scope.limit_seconds(c) or 0)} {HOUR_UNITS.get(c, c)} allowed at once "
                f"({scope.key}); this request holds at least {_hours(needed)}; enough of the "
                f"open offers expire at {instant(at)}: accept or reject some to free it sooner",
                retry_after=max(at - now, 1),
                limit=scope.key,
            )

    def limits(self, demand: Demand) -> list[HoursLimit]:
        """The per-session caps the remaining resource-hours set, for the offer engine."""
        return [
            HoursLimit(scope, c, rule=f"the hold limit of {scope.who} ({scope.key})")
            for scope in self.scopes
            for c in demand.amounts
            if scope.limit_seconds(c) is not None
        ]

    def pool_caps(self) -> list[PoolShareCap]:
        self.caps = [
            PoolShareCap(scope, scope.limits.pool_share,
                         rule=f"the pool share of {scope.who} ({scope.key}.pool_share)")
            for scope in self.scopes
            if scope.limits.pool_share is not None
        ]  # fmt: skip
        return self.caps

    def trim(self, slots: Sequence[Slot]) -> list[Slot]:
        """The slots, earliest first, that together stay within every hold limit: each
        alternative the set holds costs resource-hours, so fewer are offered near a limit."""
        kept: list[Slot] = []
        for slot in slots:
            if self._fits([*kept, slot]):
                kept.append(slot)
        return kept

    def fits(self, kept: Sequence[Slot], added: Sequence[Slot]) -> bool:
        """Whether the slots of one more alternative (a recurring series' occurrences, which
        are all held together) fit beside ``kept`` within every hold limit."""
        return bool(added) and self._fits([*kept, *added]) and all(
            self._fits([*kept, slot]) for slot in added
        )

    def _fits(self, slots: list[Slot]) -> bool:
        pieces = slot_pieces(slots)
        for scope in self.scopes:
            for c in {c for _, c in pieces}:
                remaining = scope.remaining(c)
                if remaining is not None and _seconds_of(pieces, c) > remaining:
                    return False
        last = slots[-1]
        for cap in self.caps:
            view = {p.id: p for p in last.pools}
            for pool_id, c, amount in last.allocations:
                room = cap.room(view[pool_id], c, last.prepare_at, last.end_at)
                if room is not None and amount > room:
                    return False
        return True


def discount(views: Iterable[PoolView], pieces: Pieces) -> None:
    """Take the holds of a replaced offer set out of the pools' usage: they are freed in the
    transaction that claims the new offers, so the new request may have their slots again."""
    if not pieces:
        return
    for view in views:
        for c in list(view.usage):
            steps = pieces.get((view.id, c))
            if steps:
                view.usage[c] = view.usage[c].plus((s, e, -a) for s, e, a in steps)


def claimant(broker: Any, session: Session, identity: Identity, document: Any,
             project: str | None, now: int) -> tuple[Claimant, Capacity]:  # fmt: skip
    """The caller's hold limits and what it holds, read in ``session``."""
    config: HoldsConfig = broker.config.holds
    who, key, limits = caller_limits(config, identity)
    capacity = Capacity.read(session)
    lookahead = int(broker.config.offers.lookahead.total_seconds())
    replaces = config.replace and not identity.anonymous
    found = Claimant(
        scopes=[Scope(who, key, limits, Held(), capacity, lookahead)] if limits.limits_holds()
        else [],
        request_key=request_key(document, project) if replaces else None,
        owner=identity.owner,
    )  # fmt: skip
    if found.scopes or found.request_key:
        found.read(session, now)
    return found, capacity


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.6g}"


class ProbeRate:
    """Probe answers per caller and minute, in this process (a sliding one-minute window)."""

    WINDOW = 60.0

    def __init__(self) -> None:
        self._seen: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str, per_minute: int | None, now: float | None = None) -> float:
        """0 when a probe may be answered now (and it is counted), else seconds to wait."""
        if per_minute is None:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [t for t in self._seen.get(key, ()) if t > now - self.WINDOW]
            if len(recent) >= per_minute:
                self._seen[key] = recent
                return recent[0] + self.WINDOW - now if recent else self.WINDOW
            recent.append(now)
            self._seen[key] = recent
            if len(self._seen) > 10_000:  # forget callers who stopped probing
                self._seen = {k: v for k, v in self._seen.items() if v and v[-1] > now - 60}
            return 0.0


def probe_allowed(rate: ProbeRate, config: HoldsConfig, identity: Identity) -> None:
    """Count a probe against the caller's rate; a 429 beyond it."""
    who, key, limits = caller_limits(config, identity)
    wait = rate.take("anonymous" if identity.anonymous else identity.owner,
                     limits.probes_per_minute)  # fmt: skip
    if wait > 0:
        raise TooManyHolds(
            f"{who} may probe at most {limits.probes_per_minute} times a minute "
            f"({key}.probes_per_minute); try again in {math.ceil(wait)} s",
            retry_after=max(math.ceil(wait), 1),
            limit=f"{key}.probes_per_minute",
        )
