"""Offers for a recurring request: each alternative is a series of occurrences, held together.

A request with ``schedule.requested.recurrence`` is answered like any other (parsed, checked,
judged by the policies and the hold limits by :func:`.service.request_offers`, the policies
counting every occurrence: ``PolicyRequest.occurrences``), then searched and stored here, with
what plain offers store (:mod:`.holding`). An occurrence the policies permit no start for is
missing, and a series whose summed quote is above a cost limit (``costs[].max``) is not
offered (at the least amounts the request allows, it may be).

An alternative is an anchor (a start in the requested window) on one pool set:
the rule expanded from the anchor's local time gives the occurrences, each evaluated at its own
start on that pool set with one amount for all of them (the most every occurrence can have).
An alternative is offered when every occurrence fits, or, with ``partial: true``, when some
do; the others are named as missing, with why.

Bookings: every occurrence has its own session (``series_uuid`` names the series) and its own
HELD booking, in the offer set of the series. The series' session books nothing itself. So the
pool rule "CONFIRMED/ACTIVE plus, per open offer set, the largest of its holds at each instant"
stays exact only if the occurrences of one alternative never overlap each other (else two of
them would be needed at once but counted as one): a rule whose occurrences, with their
preparation, overlap is refused. Alternatives overlap freely, as any offer set's do.

The search runs under the pool locks (a series is rarer and its claim larger than one slot's:
searching it on a snapshot and re-checking every occurrence after would save little).
"""

from __future__ import annotations

import time
import uuid as uuidlib
from dataclasses import dataclass, field, replace
from itertools import pairwise
from types import SimpleNamespace
from typing import Any

from sqlmodel import Session

from platforms.contract import PlatformError

from ..booking import ledger
from ..booking.pools import PoolView, Slot
from ..config import UNITS
from ..db.tables import HELD
from ..errors import DocumentInvalid, FieldError
from ..kinds.base import Message, Range, message
from ..kinds.request import ExecutionRequest
from ..observability.metrics import OFFER_SETS
from ..recurrence import WHERE, Recurrence, parse
from ..schedule import format_seconds, instant
from ..sessions import store
from ..sessions.phases import OFFERED
from ..sessions.record import (
    MissingOccurrence,
    OccurrenceOf,
    Series,
    SeriesOccurrence,
    SessionRecord,
)
from ..sessions.views import render_offerset
from . import fairness, holding
from .context import SearchContext
from .demand import Demand
from .engine import Search, distinct, evaluate

# anchors tried per requested window (each a whole series to evaluate)
ANCHORS_PER_WINDOW = 16


def recurrence_of(request: ExecutionRequest, config: Any, *, direct: bool) -> Recurrence | None:
    """The request's checked recurrence rule (None when it has none), or a 400 naming what
    is wrong with it."""
    asked = request.schedule.recurrence
    if asked is None:
        return None
    if direct:
        raise DocumentInvalid([FieldError(WHERE, (
            "a direct execution starts once, now: leave out recurrence, or POST /requests "
            "for a series"
        ))])  # fmt: skip
    return parse(asked, config.offers.recurrence.max_occurrences)


def holding_demand(demand: Demand, recurrence: Recurrence, preparation: int) -> Demand:
    """The demand as the hold limits see a series: the longest it can hold, every occurrence
    of its rule with its preparation (an estimate before the search; the offers found are
    trimmed to the limits exactly)."""
    count = min(_rule_count(recurrence), recurrence.limit)
    return replace(demand, duration=count * (demand.duration + preparation) - preparation)


def occurrence_count(recurrence: Recurrence, demand: Demand, now: int) -> int:
    """How many occurrences the policies judge the series by: the rule expanded from the
    earliest start asked for (the most it can have; the accept judges those booked)."""
    first = min((w[0] for w in demand.windows or ()), default=now)
    return max(len(recurrence.expand(max(first, now))), 1)


def _rule_count(recurrence: Recurrence) -> int:
    for part in recurrence.rule.split(";"):
        name, _, value = part.partition("=")
        if name == "COUNT":
            return int(value)
    return recurrence.limit


@dataclass
class Alternative:
    """One series on one pool set: its booked occurrences (index, slot) and the missing ones."""

    anchor: int
    count: int
    booked: list[tuple[int, Slot]] = field(default_factory=list)
    missing: list[MissingOccurrence] = field(default_factory=list)

    @property
    def slots(self) -> list[Slot]:
        return [slot for _, slot in self.booked]


def offer_series(context: SearchContext, recurrence: Recurrence) -> dict[str, Any]:
    """Search, claim and store the offer set of a recurring request; the answer."""
    broker = context.broker
    if context.probe:
        return _refused(context, [message(
            "a probe holds nothing, and a series is only worth offering held: ask without "
            "?probe=true", level="WARN",
        )])  # fmt: skip
    fair = context.fair
    names = [p.platform.name for p in context.plans]
    with broker.db.write(durable=False) as session:
        if fair is not None:
            holding.lock_claimant(context, session, fair)
        generations = ledger.lock_pools(session, names)
        context = replace(context, now=int(time.time()))
        alternatives, reasons = _search(context, session, recurrence)
        if fair is not None:
            alternatives = _trim(fair, alternatives)
            if not alternatives and not reasons:
                reasons = [message(
                    "holding the series would go beyond your hold limits ({limits}); ask for "
                    "fewer occurrences or less", level="WARN", limits=fair_keys(fair),
                )]  # fmt: skip
        if not alternatives:
            OFFER_SETS.labels("NO", "capacity").inc()
            offerset = holding.store_refusal(
                session, context.document, context.notes + reasons, context.now, context.owner
            )
            return render_offerset(offerset, [], broker.base_url)
        OFFER_SETS.labels("YES", "").inc()
        context.verdict.notes += [
            message(t, level="WARN", **v) for t, v in context.budget.notes()
        ]
        answer, claims = _store(context, session, recurrence, alternatives, generations)
    for pool_id, rows in claims.items():
        broker.usage_cache.advance(pool_id, generations[pool_id], rows)
    return answer


def fair_keys(fair: fairness.Claimant) -> str:
    return ", ".join(sorted({scope.key for scope in fair.scopes})) or "holds"


def _refused(context: SearchContext, reasons: list[Message]) -> dict[str, Any]:
    return holding.refuse(context.broker, context.document, context.notes + reasons, context.now,
                   context.owner)  # fmt: skip


def _trim(fair: fairness.Claimant, alternatives: list[Alternative]) -> list[Alternative]:
    """The alternatives, in order, that together stay within the caller's hold limits."""
    kept: list[Alternative] = []
    for alternative in alternatives:
        if fair.fits([s for k in kept for s in k.slots], alternative.slots):
            kept.append(alternative)
    return kept


def _search(
    context: SearchContext, session: Session, recurrence: Recurrence
) -> tuple[list[Alternative], list[Message]]:
    """The alternatives to offer (at most ``max_offers``), or the reasons there are none."""
    broker, demand, now, verdict = context.broker, context.demand, context.now, context.verdict
    offers = broker.config.offers
    granularity = int(offers.granularity.total_seconds())
    lookahead = int(offers.lookahead.total_seconds())
    horizon = now + lookahead
    longest_prep = max(p.preparation for p in context.plans)
    earliest = _ceil(now + min(p.preparation for p in context.plans), granularity)
    anchors = _anchors(demand, earliest, horizon, granularity)
    if not anchors:
        return [], [message(
            "no requested start of the series' first occurrence is between the earliest "
            "possible start {earliest} and the look-ahead limit {horizon}",
            level="WARN", earliest=instant(earliest), horizon=instant(horizon),
        )]  # fmt: skip
    expansions = {anchor: recurrence.expand(anchor) for anchor in anchors}
    overlap = _overlap(expansions[anchors[0]], demand.duration, longest_prep)
    if overlap:
        return [], overlap
    last = max((starts[-1] for starts in expansions.values() if starts), default=horizon)
    window = (max(min(anchors) - longest_prep, now), min(last, horizon) + demand.duration + 1)
    names = [p.platform.name for p in context.plans]
    pools = ledger.load_pools(
        session, names, window, demand.amounts, cache=broker.usage_cache, now=now
    )
    fairness.discount(pools, verdict.discount)
    open_to_caller = [p for p in pools if verdict.pools is None or p.name in verdict.pools]
    notes = holding.drained_notes(open_to_caller)
    searches: list[tuple[Search, list[list[PoolView]]]] = []
    for plan in context.plans:
        mine = [p for p in open_to_caller if p.platform == plan.platform.name and p.drain is None]
        try:
            holding.add_external_claims(plan.platform, mine, *window)
        except PlatformError as exc:
            notes.append(message("platform {platform} is unavailable: {error}", level="WARN",
                                 platform=plan.platform.name, error=str(exc)[:500]))  # fmt: skip
            continue
        pool_sets = [
            ps for ps in holding.pool_sets(broker, plan.platform, mine)
            if context.budget.suits([p.name for p in ps])
        ]  # fmt: skip
        search = Search(
            demand=demand, pool_sets=pool_sets, now=now, preparation=plan.preparation,
            horizon=horizon, granularity=granularity, max_offers=context.max_offers,
            limits=verdict.limits, pool_caps=verdict.pool_caps,
        )  # fmt: skip
        searches.append((search, pool_sets))
    chosen: list[Alternative] = []
    best: Alternative | None = None
    for anchor in anchors:
        for search, pool_sets in searches:
            for pool_set in pool_sets:
                wanted = demand.on({c for p in pool_set for c in p.inventories})
                if wanted is None:
                    continue
                starts = expansions[anchor]
                alternative = _evaluate(search, pool_set, wanted, starts, anchor, lookahead,
                                        verdict.permitted)  # fmt: skip
                if best is None or len(alternative.booked) > len(best.booked):
                    best = alternative
                complete = not alternative.missing
                if not (complete or (recurrence.partial and alternative.booked)):
                    continue
                if not context.budget.within_series(alternative.slots):
                    # over a cost limit: the least the request allows may be within it
                    least = {c: Range(r.min, r.min) for c, r in wanted.items()}
                    if least == wanted:
                        continue
                    cheaper = _evaluate(search, pool_set, least, starts, anchor, lookahead,
                                        verdict.permitted)  # fmt: skip
                    if len(cheaper.booked) < len(alternative.booked) or not (
                        context.budget.within_series(cheaper.slots)
                    ):
                        continue
                    alternative = cheaper
                first = alternative.booked[0][1]
                if distinct(first, [c.booked[0][1] for c in chosen]):
                    chosen.append(alternative)
                if len(chosen) >= context.max_offers:
                    return chosen, []
    if chosen:
        return chosen, []
    budget = context.budget
    if budget.turned_away:  # there were series, but only above the client's cost limits
        return [], notes + [message(t, level="WARN", **v) for t, v in budget.reasons()]
    return [], notes + _missing_reasons(best, recurrence)


def _anchors(demand: Demand, earliest: int, horizon: int, granularity: int) -> list[int]:
    """Where the first occurrence may be put: each requested window's start, then back to
    back (one duration apart) through it; as soon as possible when no start was asked."""
    windows = demand.windows if demand.windows is not None else [(earliest, horizon)]
    step = max(_ceil(demand.duration, granularity), granularity)
    found: set[int] = set()
    for start, end in windows:
        low, high = max(_ceil(start, granularity), earliest), min(end, horizon)
        if low <= high:
            found.update(range(low, high + 1, step)[:ANCHORS_PER_WINDOW])
    return sorted(found)[: ANCHORS_PER_WINDOW * 4]


def _overlap(starts: list[int], duration: int, preparation: int) -> list[Message]:
    """Why a rule cannot be offered when its occurrences overlap each other."""
    for index, (one, two) in enumerate(pairwise(starts)):
        if one + duration > two - preparation:
            return [message(
                "occurrences {first} ({one}) and {second} ({two}) of the series overlap: each "
                "occurrence of {duration} (with {preparation} of preparation in front) must end "
                "before the next begins; ask for a shorter duration or a sparser rule",
                level="WARN", first=index + 1, second=index + 2, one=instant(one),
                two=instant(two), duration=format_seconds(duration),
                preparation=format_seconds(preparation),
            )]  # fmt: skip
    return []


def _evaluate(
    search: Search,
    pools: list[PoolView],
    wanted: dict[str, Range],
    starts: list[int],
    anchor: int,
    lookahead: int,
    permitted: list[tuple[int, int]] | None = None,
) -> Alternative:
    """The series from ``anchor`` on these pools: every occurrence at its own start, then all
    of them at one amount, the least any got. An occurrence is missing where it starts
    beyond the look-ahead or outside the starts the policies ``permitted``."""
    alternative = Alternative(anchor, len(starts))
    duration = search.demand.duration
    found: list[tuple[int, Slot]] = []
    for index, start in enumerate(starts):
        if start > search.horizon:
            alternative.missing.append(MissingOccurrence(
                index=index, start_at=start, end_at=start + duration,
                reason=f"beyond this node's look-ahead (offers.lookahead: "
                       f"{format_seconds(lookahead)}); the latest start it serves is "
                       f"{instant(search.horizon)}",
            ))  # fmt: skip
            continue
        if permitted is not None and not any(a <= start <= b for a, b in permitted):
            alternative.missing.append(MissingOccurrence(
                index=index, start_at=start, end_at=start + duration,
                reason="outside the times the policies of this node permit a session of "
                       f"{format_seconds(duration)}",
            ))  # fmt: skip
            continue
        slot, totals = evaluate(search, pools, start, wanted)
        if slot is None:
            alternative.missing.append(MissingOccurrence(
                index=index, start_at=start, end_at=start + duration,
                reason=_short(totals, wanted),
            ))  # fmt: skip
            continue
        found.append((index, slot))
    if not found:
        return alternative
    common = {c: min(slot.totals.get(c, 0) for _, slot in found) for c in wanted}
    exact = {c: Range(common[c], common[c]) for c in wanted}
    for index, slot in found:
        if any(slot.totals.get(c, 0) != common[c] for c in wanted):
            again, totals = evaluate(search, pools, slot.start_at, exact)
            if again is None:
                alternative.missing.append(MissingOccurrence(
                    index=index, start_at=slot.start_at, end_at=slot.end_at,
                    reason=_short(totals, exact),
                ))  # fmt: skip
                continue
            slot = again
        alternative.booked.append((index, slot))
    alternative.missing.sort(key=lambda m: m.index)
    return alternative


def _short(totals: dict[str, int], wanted: dict[str, Range]) -> str:
    short = [
        f"at most {totals.get(c, 0)} {UNITS.get(c, c)} free then; {r.min} needed"
        for c, r in wanted.items()
        if totals.get(c, 0) < r.min
    ]
    return "; ".join(short) or "a limit of this node left too little room then"


def _missing_reasons(best: Alternative | None, recurrence: Recurrence) -> list[Message]:
    """The NO of a series: the occurrences that cannot be booked, and why (of the
    alternative that came closest)."""
    if best is None:
        return [message("no pool of this node open to you can serve this request", level="WARN")]
    reasons = [message(
        "{missing} of the {count} occurrences of the series cannot be booked"
        + ("" if recurrence.partial else
           "; with recurrence.partial: true the others would be offered"),
        level="WARN", missing=len(best.missing), count=best.count,
    )]  # fmt: skip
    for missing in best.missing[:20]:
        reasons.append(message(
            "occurrence {index} at {start}: {reason}", level="WARN",
            index=missing.index + 1, start=instant(missing.start_at), reason=missing.reason,
        ))  # fmt: skip
    if len(best.missing) > 20:
        reasons.append(message("and {more} more", level="WARN", more=len(best.missing) - 20))
    return reasons


def _ceil(value: int, step: int) -> int:
    return -(-value // step) * step


def _store(
    context: SearchContext,
    session: Session,
    recurrence: Recurrence,
    alternatives: list[Alternative],
    generations: dict[int, int],
) -> tuple[dict[str, Any], ledger.Claims]:
    """Insert the offer set, one series session per alternative and one session and HELD
    booking per booked occurrence; free the holds of the offer set it replaces."""
    broker, now = context.broker, context.now
    offerset, expires = holding.yes_offerset_row(context)
    components = holding.components(context.request)
    parents: list[dict[str, Any]] = []
    parent_records: list[SessionRecord] = []
    children: list[dict[str, Any]] = []
    booked: list[tuple[Slot, str]] = []

    def row(uuid: str, slot: Slot, record: SessionRecord, series: str | None) -> dict[str, Any]:
        return holding.session_row(context, offerset, expires, slot, record, phase=OFFERED,
                                   uuid=uuid, series_uuid=series)  # fmt: skip

    for alternative in alternatives:
        parent_uuid = str(uuidlib.uuid4())
        occurrences = []
        records = []
        for index, slot in alternative.booked:
            record = holding.session_record(context, components, slot)
            record.occurrence = OccurrenceOf(
                series=parent_uuid, index=index, count=alternative.count
            )
            child_uuid = str(uuidlib.uuid4())
            children.append(row(child_uuid, slot, record, parent_uuid))
            booked.append((slot, child_uuid))
            records.append(record)
            occurrences.append(SeriesOccurrence(
                index=index, session=child_uuid, prepare_at=slot.prepare_at,
                start_at=slot.start_at, end_at=slot.end_at,
                pools=sorted(p.name for p in slot.pools
                             if any(a[0] == p.id for a in slot.allocations)),
            ))  # fmt: skip
        first_slot = alternative.booked[0][1]
        parent = _series_record(records, recurrence, alternative, occurrences)
        parents.append(row(parent_uuid, first_slot, parent, None))
        parent_records.append(parent)
    connection = session.connection()
    connection.execute(holding.INSERT_OFFERSET, [offerset.model_dump()])
    store.insert_many(session, parents + children)
    claims = ledger.insert_bookings(
        session, booked, offerset_uuid=offerset.uuid, state=HELD, expires_at=expires, now=now,
        generations=generations,
    )  # fmt: skip
    slots = [slot for slot, _ in booked]
    ledger.record_claims(session, slots, now)
    holding.release_replaced(context, session, slots, generations, claims)
    rows = [SimpleNamespace(**p) for p in parents]
    return render_offerset(offerset, rows, broker.base_url, parent_records), claims


def _series_record(
    records: list[SessionRecord],
    recurrence: Recurrence,
    alternative: Alternative,
    occurrences: list[SeriesOccurrence],
) -> SessionRecord:
    """The series' own record: the first occurrence's components and grant (it books nothing
    itself), the costs of all its occurrences together, its occurrences, and where its own
    events (its end) are notified."""
    first = records[0]
    pools = sorted({name for r in records for name in r.pools})
    parent = SessionRecord(
        name=first.name, site=first.site, components=first.components, granted=first.granted,
        pools=pools, costs=_sum_costs([r.costs for r in records]), metrics=first.metrics,
        notify=first.notify,
        series=Series(rule=recurrence.rule, timezone=recurrence.zone, partial=recurrence.partial,
                      count=alternative.count, occurrences=occurrences,
                      missing=alternative.missing),
    )  # fmt: skip
    parent.messages.append(message(
        "a series of {booked} of the rule's {count} occurrences ({rule} in {zone}), each "
        "{granted}; accept it to book them all", booked=len(occurrences), count=alternative.count,
        rule=recurrence.rule, zone=recurrence.zone,
        granted=", ".join(f"{v} {UNITS.get(c, c)}" for c, v in first.granted.items() if v),
    ))  # fmt: skip
    if alternative.missing:
        parent.messages.append(message(
            "occurrences not booked: {which}", level="WARN",
            which="; ".join(f"{m.index + 1} at {instant(m.start_at)} ({m.reason})"
                            for m in alternative.missing[:10]),
        ))  # fmt: skip
    return parent


def _sum_costs(costs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The occurrences' quotes added up, per kind of cost that every one of them has."""
    if not costs or any(not c for c in costs):
        return []
    total: dict[tuple[Any, ...], dict[str, Any]] = {}
    for quoted in costs:
        for cost in quoted:
            key = (cost.get("kind"), cost.get("type"), cost.get("units"))
            if key not in total:
                total[key] = {**cost, "min": 0.0, "max": 0.0, "_n": 0}
            for bound in ("min", "max"):
                if isinstance(cost.get(bound), int | float):
                    total[key][bound] = round(total[key][bound] + cost[bound], 6)
            total[key]["_n"] += 1
    return [
        {k: v for k, v in cost.items() if k != "_n"}
        for cost in total.values()
        if cost["_n"] == len(costs)
    ]
