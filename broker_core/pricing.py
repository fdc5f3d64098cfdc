"""Price lists and quotes: what an offer costs (money, energy, carbon) and how it performs.

A site prices a platform (``platforms[].pricing``) and may override any section per pool
(``platforms[].pools[].pricing``: a section a pool gives replaces the platform's section of that
name whole; the sections it does not give are the platform's). Rates are per resource-hour of
the *available* window an offer grants (preparation is the node's cost, as in usage accounting):
money in ``currency`` per core-hour, GiB-hour of memory or storage and GPU-hour; energy in kWh per
resource-hour; carbon in gCO2e per kWh of that energy. A class a section does not price costs
nothing in it.

Every offer then carries the standard's ``SimpleMinMaxFloatCost`` items (one per priced section)
and ``SimpleMinMaxFloatMetric`` items (one per configured metric), and a request's own costs with
a ``max`` are limits: an offer above one is not made.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

KIND_PREFIX = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/"
COST_KIND = f"{KIND_PREFIX}costs/simple-minmax-float-cost.yaml"
METRIC_KIND = f"{KIND_PREFIX}metrics/simple-minmax-float-metric.yaml"
# the standard's ``type`` is a URI for what is counted; ebroker's carry the unit too
COST_TYPE = "urn:ebroker:cost:"  # + money:<currency>, energy:kWh, carbon:gCO2e
METRIC_TYPE = "urn:ebroker:metric:"  # + the metric's name
SECTIONS = ("money", "energy", "carbon")  # in the order offers list them
_AMOUNTS = {
    "cores": "cores", "memory": "GiB of memory", "storage": "GiB of storage", "gpus": "GPUs",
    "fpgas": "FPGAs",
}  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PerHour(_Strict):
    """A rate per resource-hour of each class; a class not given costs nothing."""

    cores: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    memory: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    storage: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    gpus: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    fpgas: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _some(self) -> PerHour:
        if not self.rates():
            raise ValueError("give a rate for at least one of cores, memory, storage, gpus, fpgas")
        return self

    def rates(self) -> dict[str, float]:
        return {c: v for c, v in self.model_dump().items() if v is not None}


class MoneyPricing(_Strict):
    currency: str = Field(
        pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,15}$",
        description="an ISO 4217 code (EUR, GBP) or the site's own unit (credits)",
    )
    per_hour: PerHour = Field(description="the price of one resource-hour of each class")


class EnergyPricing(_Strict):
    per_hour: PerHour = Field(description="kWh drawn by one resource-hour of each class")


class CarbonPricing(_Strict):
    per_kwh: float = Field(ge=0, allow_inf_nan=False, description="gCO2e per kWh of the energy")


class MetricConfig(_Strict):
    """A performance figure of the pool's machines, e.g. ``{name: speed, value: 1.3}``."""

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")
    value: float = Field(allow_inf_nan=False)
    type: str | None = Field(
        default=None, max_length=2048, pattern=r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$",
        description=f"a URI for what is measured; default {METRIC_TYPE}<name>",
    )  # fmt: skip
    units: str | None = Field(default=None, max_length=64)
    description: str | None = Field(default=None, max_length=1024)

    def type_uri(self) -> str:
        return self.type or f"{METRIC_TYPE}{self.name}"


class Pricing(_Strict):
    money: MoneyPricing | None = None
    energy: EnergyPricing | None = None
    carbon: CarbonPricing | None = None
    metrics: list[MetricConfig] | None = Field(default=None, max_length=32)

    @model_validator(mode="after")
    def _unique_metrics(self) -> Pricing:
        names = [m.name for m in self.metrics or []]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"metric names must be unique; repeated: {', '.join(repeated)}")
        return self

    def over(self, base: Pricing | None) -> Pricing:
        """This pool's pricing over its platform's: each section given here replaces base's."""
        if base is None:
            return self
        given = {name: getattr(self, name) for name in self.model_fields_set}
        return base.model_copy(update=given)


def effective(platform: Any, pool: Any) -> Pricing | None:
    """A pool's price list: its own sections over its platform's."""
    pool_pricing = getattr(pool, "pricing", None)
    if pool_pricing is None:
        return platform.pricing
    return pool_pricing.over(platform.pricing)


def check_platform(platform: Any) -> None:
    """Carbon is counted from energy: every pool priced for carbon must be priced for energy."""
    pools = platform.pools or [None]
    for pool in pools:
        prices = effective(platform, pool)
        if prices and prices.carbon and not prices.energy:
            where = f"pool {pool.name!r}" if pool is not None else f"platform {platform.name!r}"
            raise ValueError(
                f"{where}: pricing.carbon needs pricing.energy (carbon is gCO2e per kWh of the "
                "energy an offer uses)"
            )


def price_lists(config: Any) -> dict[str, Pricing]:
    """Each priced pool's price list by its ``platform/pool`` key; ``platform/*`` for the
    platform's own (its pools found on the platform rather than configured)."""
    lists: dict[str, Pricing] = {}
    for platform in config.platforms:
        if platform.pricing is not None:
            lists[f"{platform.name}/*"] = platform.pricing
        for pool in platform.pools:
            prices = effective(platform, pool)
            if prices is not None:
                lists[f"{platform.name}/{pool.name}"] = prices
    return lists


def _lookup(lists: dict[str, Pricing], pool_key: str) -> Pricing | None:
    if pool_key in lists:
        return lists[pool_key]
    return lists.get(pool_key.split("/", 1)[0] + "/*")


# --- quotes -------------------------------------------------------------------------------------


def _round(value: float) -> float:
    return float(f"{value:.6g}") if value else 0.0


def _describe(allocations: dict[str, int], hours: float) -> str:
    granted = ", ".join(f"{v} {_AMOUNTS.get(c, c)}" for c, v in allocations.items())
    return f"{granted} for {hours:g} h"


@dataclass
class Quote:
    """An offer's costs (min == max: the granted amounts for the booked window) and metrics."""

    costs: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def money(self) -> dict[str, Any] | None:
        return next((c for c in self.costs if c["type"].startswith(COST_TYPE + "money:")), None)


def quote(
    lists: dict[str, Pricing],
    allocations: Iterable[tuple[str, str, int]],
    seconds: int,
) -> Quote:
    """The quote for ``allocations`` (``platform/pool`` key, resource class, amount) held for
    ``seconds``. A section is quoted only when every pool drawn on prices it (and, for money,
    in one currency): a partial figure would mislead."""
    hours = seconds / 3600
    by_pool: dict[str, dict[str, int]] = {}
    for key, c, amount in allocations:
        by_pool.setdefault(key, {})
        by_pool[key][c] = by_pool[key].get(c, 0) + amount
    prices = {key: _lookup(lists, key) for key in by_pool}
    if not by_pool or any(p is None for p in prices.values()):
        return Quote()
    totals: dict[str, int] = {}
    for amounts in by_pool.values():
        for c, v in amounts.items():
            totals[c] = totals.get(c, 0) + v
    what = _describe(totals, hours)
    result = Quote()

    def item(section: str, unit: str, value: float, text: str) -> None:
        value = _round(value)
        result.costs.append({
            "kind": COST_KIND, "type": f"{COST_TYPE}{section}:{unit}",
            "description": text, "min": value, "max": value, "units": unit,
        })  # fmt: skip

    def hourly(rates: PerHour, amounts: dict[str, int]) -> float:
        return sum(rate * amounts.get(c, 0) * hours for c, rate in rates.rates().items())

    lists_used = [p for p in prices.values() if p is not None]
    if all(p.money for p in lists_used):
        currencies = {p.money.currency for p in lists_used if p.money}
        if len(currencies) == 1:
            (currency,) = currencies
            total = sum(
                hourly(p.money.per_hour, by_pool[k]) for k, p in prices.items() if p and p.money
            )
            item("money", currency, total, f"the price of {what}, in {currency}")
    if all(p.energy for p in lists_used):
        energy = {
            k: hourly(p.energy.per_hour, by_pool[k]) for k, p in prices.items() if p and p.energy
        }
        item("energy", "kWh", sum(energy.values()), f"the energy {what} uses, in kWh")
        if all(p.carbon for p in lists_used):
            carbon = sum(energy[k] * p.carbon.per_kwh for k, p in prices.items() if p and p.carbon)
            item("carbon", "gCO2e", carbon, f"the carbon emitted for {what}, in gCO2e")
    metrics: dict[str, tuple[MetricConfig, list[float]]] = {}
    for p in lists_used:
        for m in p.metrics or []:
            metrics.setdefault(m.name, (m, []))[1].append(m.value)
    for m, values in metrics.values():
        doc: dict[str, Any] = {"kind": METRIC_KIND, "type": m.type_uri()}
        if m.description:
            doc["description"] = m.description
        doc.update(min=min(values), max=max(values))
        if m.units:
            doc["units"] = m.units
        result.metrics.append(doc)
    return result


# --- a request's limits ---------------------------------------------------------------------------


def _fmt(value: float, unit: str) -> str:
    return f"{value:.6g} {unit}"


@dataclass
class Limit:
    """A request's cost item with a ``max``: what the client will pay at most."""

    max: float
    type: str | None
    units: str | None

    def matches(self, cost: dict[str, Any]) -> bool:
        units_match = self.units is None or self.units.lower() == str(cost.get("units")).lower()
        if self.type:
            kind = str(cost.get("type"))
            within = kind.startswith(self.type.rstrip(":") + ":")  # urn:ebroker:cost:money
            return kind == self.type or (within and units_match)
        return self.units is not None and units_match

    def unit(self) -> str | None:
        if self.units:
            return self.units
        if self.type and self.type.startswith(COST_TYPE) and self.type.count(":") >= 4:
            return self.type.rsplit(":", 1)[-1]  # urn:ebroker:cost:money:EUR
        return None

    def text(self) -> str:
        unit = self.unit()
        return _fmt(self.max, unit) if unit else f"{self.max:.6g} ({self.type})"


def limits_of(costs: Sequence[Any]) -> tuple[list[Limit], list[str]]:
    """The limits among a request's cost items, and those given no way to compare."""
    limits, vague = [], []
    for c in costs:
        if c.max is None or not math.isfinite(c.max):
            continue
        if not c.type and not c.units:
            vague.append(f"{c.max:g}")
            continue
        limits.append(Limit(c.max, c.type, c.units))
    return limits, vague


@dataclass
class Need:
    """A request's metric with a ``min`` or ``max``: the performance the client needs."""

    type: str
    min: float | None
    max: float | None
    units: str | None

    def matches(self, metric: dict[str, Any]) -> bool:
        return metric.get("type") == self.type

    def met_by(self, metric: dict[str, Any]) -> bool:
        """Every pool the offer draws on is within the need: the worst of them counts."""
        low_ok = self.min is None or metric["min"] >= self.min
        return low_ok and (self.max is None or metric["max"] <= self.max)

    def text(self) -> str:
        unit = f" {self.units}" if self.units else ""
        bounds = [f"at least {self.min:.6g}{unit}"] if self.min is not None else []
        bounds += [f"at most {self.max:.6g}{unit}"] if self.max is not None else []
        return f"{self.type} {' and '.join(bounds)}"


def needs_of(metrics: Sequence[Any]) -> tuple[list[Need], list[str]]:
    """The needs among a request's metric items, and those given no way to compare (no
    type: a metric is only comparable with one that measures the same thing)."""
    needs, vague = [], []
    for m in metrics:
        low, high = (v if v is not None and math.isfinite(v) else None for v in (m.min, m.max))
        if low is None and high is None:
            continue
        if not m.type:
            vague.append("/".join(f"{v:g}" for v in (low, high) if v is not None))
            continue
        needs.append(Need(m.type, low, high, m.units))
    return needs, vague


@dataclass
class Budget:
    """A request's cost limits and metric needs, applied to candidate slots; remembers what it
    turned away."""

    limits: list[Limit]
    lists: dict[str, Pricing]
    vague: list[str] = field(default_factory=list)
    cheapest: dict[int, float] = field(default_factory=dict)  # limit index -> least refused
    refused: int = 0  # slots over a cost limit (a smaller slot may be cheaper)
    unapplied: set[int] = field(default_factory=set)
    needs: list[Need] = field(default_factory=list)
    vague_needs: list[str] = field(default_factory=list)
    closest: dict[int, dict[str, Any]] = field(default_factory=dict)  # need index -> best refused
    unmet: set[int] = field(default_factory=set)  # needs no offer's metrics could answer
    series: bool = False  # the limits were applied to series, their occurrences' quotes summed

    def within(self, slot: Any) -> bool:
        if not self.limits:
            return True
        q = quote_slot(self.lists, slot)
        ok = True
        for i, limit in enumerate(self.limits):
            cost = next((c for c in q.costs if limit.matches(c)), None)
            if cost is None:
                self.unapplied.add(i)
            elif cost["max"] > limit.max:
                self.cheapest[i] = min(self.cheapest.get(i, math.inf), cost["max"])
                ok = False
        if not ok:
            self.refused += 1
        return ok

    def within_series(self, slots: Sequence[Any]) -> bool:
        """Whether a recurring series of these slots (its occurrences) is within every limit:
        a request's ``costs[].max`` is what the whole series may cost, its occurrences' quotes
        added up (as the series' own ``costs`` show them)."""
        self.series = True
        if not self.limits:
            return True
        quotes = [quote_slot(self.lists, slot) for slot in slots]
        ok = True
        for i, limit in enumerate(self.limits):
            costs = [next((c for c in q.costs if limit.matches(c)), None) for q in quotes]
            if not costs or any(c is None for c in costs):
                self.unapplied.add(i)
                continue
            total = round(sum(c["max"] for c in costs if c is not None), 6)
            if total > limit.max:
                self.cheapest[i] = min(self.cheapest.get(i, math.inf), total)
                ok = False
        if not ok:
            self.refused += 1
        return ok

    def suits(self, pool_keys: Sequence[str]) -> bool:
        """Whether an offer drawing on these pools (``platform/pool`` keys) meets every need:
        metrics belong to the machines, so pools are chosen before any slot is searched."""
        if not self.needs:
            return True
        metrics = quote(self.lists, [(key, "cores", 1) for key in pool_keys], 3600).metrics
        ok = True
        for i, need in enumerate(self.needs):
            metric = next((m for m in metrics if need.matches(m)), None)
            if metric is None:
                self.unmet.add(i)
            elif not need.met_by(metric):
                self.closest[i] = _closer(need, self.closest.get(i), metric)
                ok = False
        return ok

    @property
    def turned_away(self) -> bool:
        """Whether there was room, but only outside the client's limits or needs."""
        return bool(self.cheapest or self.closest)

    def affordable(self, slots: Sequence[Any]) -> list[Any]:
        return [s for s in slots if self.within(s)]

    def most_within(
        self, ranges: dict[str, tuple[int, int]], seconds: int
    ) -> dict[str, int] | None:
        """The most of ``ranges`` (class -> (min, max), every class the same fraction of the
        way from its min to its max) that some price list keeps within every limit; None when
        that is no more than the mins. An estimate for one pool: the search still checks."""

        def amounts(t: float) -> dict[str, int]:
            return {c: low + int(t * (high - low)) for c, (low, high) in ranges.items()}

        def fits(key: str, t: float) -> bool:
            q = quote(self.lists, [(key, c, a) for c, a in amounts(t).items()], seconds)
            return all(
                c["max"] <= limit.max for limit in self.limits for c in q.costs if limit.matches(c)
            )

        best = 0.0
        for key in self.lists:
            if not fits(key, 0.0):
                continue
            low, high = 0.0, 1.0
            if fits(key, 1.0):
                return None  # the whole range fits there: nothing to narrow
            for _ in range(30):
                mid = (low + high) / 2
                low, high = (mid, high) if fits(key, mid) else (low, mid)
            best = max(best, low)
        most = amounts(best)
        return most if any(most[c] > ranges[c][0] for c in ranges) else None

    def reasons(self) -> list[tuple[str, dict[str, str]]]:
        """Why offers were not made: per limit, the cheapest refused and the limit; per need,
        the closest refused and the need."""
        template = (
            "every series this node could offer costs more than the limit in total (its "
            "occurrences' quotes added up): the cheapest series costs {cheapest}; the limit "
            "is {limit}"
            if self.series
            else "every offer this node could make costs more than the limit: the cheapest "
            "costs {cheapest}; the limit is {limit}"
        )
        found = [
            (
                template,
                {"cheapest": _fmt(v, self.limits[i].unit() or ""), "limit": self.limits[i].text()},
            )
            for i, v in sorted(self.cheapest.items())
        ]
        for i, metric in sorted(self.closest.items()):
            need = self.needs[i]
            found.append((
                "no offer this node could make meets the metric {need}: the closest has "
                "{metric} from {low} to {high}",
                {"need": need.text(), "metric": need.type, "low": f"{metric['min']:.6g}",
                 "high": f"{metric['max']:.6g}"},
            ))  # fmt: skip
        return found

    def notes(self) -> list[tuple[str, dict[str, str]]]:
        """Limits that could not be applied (the node does not price in their units)."""
        notes = [
            ("the cost limit {limit} is not applied: offers here are not priced in its units",
             {"limit": self.limits[i].text()})
            for i in sorted(self.unapplied - set(self.cheapest))
        ]  # fmt: skip
        notes += [
            ("the cost limit {limit} is not applied: it names neither a type nor units",
             {"limit": v})
            for v in self.vague
        ]  # fmt: skip
        notes += [
            ("the metric {need} is not applied: this node publishes no such metric",
             {"need": self.needs[i].text()})
            for i in sorted(self.unmet - set(self.closest))
        ]  # fmt: skip
        notes += [
            ("the metric {need} is not applied: it names no type (a URI for what is measured)",
             {"need": v})
            for v in self.vague_needs
        ]  # fmt: skip
        return notes


def quote_slot(lists: dict[str, Pricing], slot: Any) -> Quote:
    """The quote for an offered slot: its allocations for its available window."""
    names = {p.id: p.name for p in slot.pools}
    allocations = [(names.get(pool_id, ""), c, amount) for pool_id, c, amount in slot.allocations]
    return quote(lists, allocations, slot.end_at - slot.start_at)


def _closer(need: Need, best: dict[str, Any] | None, metric: dict[str, Any]) -> dict[str, Any]:
    """Of two metrics that miss a need, the one that misses it by less."""

    def miss(m: dict[str, Any]) -> float:
        short = max(0.0, need.min - m["min"]) if need.min is not None else 0.0
        over = max(0.0, m["max"] - need.max) if need.max is not None else 0.0
        return short + over

    return metric if best is None or miss(metric) < miss(best) else best


def budget_for(config: Any, costs: Sequence[Any], metrics: Sequence[Any] = ()) -> Budget:
    limits, vague = limits_of(costs)
    needs, vague_needs = needs_of(metrics)
    return Budget(limits, price_lists(config), vague, needs=needs, vague_needs=vague_needs)
