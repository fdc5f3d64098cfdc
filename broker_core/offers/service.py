"""From an ExecutionRequest to a stored offer set: parse, check, search, claim, render."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

from sqlmodel import Session

from platforms.contract import PlatformError

from .. import audit
from ..booking import holds, ledger
from ..booking.pools import Slot
from ..broker import Broker
from ..config import UNITS
from ..db.tables import CONFIRMED, HELD, OfferSet
from ..errors import CannotStart, NotFound
from ..identity import ANONYMOUS, ANONYMOUS_IDENTITY, Identity
from ..kinds.base import Message, Range, message
from ..kinds.registry import UnknownKind
from ..kinds.request import ExecutionRequest, parse_request
from ..notifications import outbox
from ..notifications.request import refusals as notify_refusals
from ..observability.metrics import OFFER_SETS
from ..pricing import budget_for
from ..schedule import format_seconds, instant
from ..sessions import store
from ..sessions.phases import ACCEPTED, OFFERED
from ..sessions.views import render_offerset
from ..staging.placement import Placement, place
from ..staging.rules import rules_for
from . import accelerators, checks, fairness, holding, series
from .context import Plan, SearchContext
from .demand import policy_limits, resolve, window_limits, zone_notes
from .engine import (
    Outcome,
    Search,
    find_slots,
    largest_capacity,
    select_distinct,
)
from .policy import consult

log = logging.getLogger(__name__)


def request_offers(
    broker: Broker,
    document: Any,
    *,
    direct: bool = False,
    identity: Identity = ANONYMOUS_IDENTITY,
    project: str | None = None,
    probe: bool = False,
) -> dict[str, Any]:
    """Answer an ExecutionRequest with a stored offer set (YES with offers, or NO with reasons).

    The caller's ``identity`` owns what is booked; the node's policies decide what it may be
    offered (``project`` names the project to charge, when the caller has several), and the
    hold limits how much it holds at once (a :class:`TooManyHolds` when its own open offers
    are in the way, see :mod:`.fairness`).
    With ``direct`` the single earliest slot starting now is booked and accepted at once; when
    there is none a :class:`CannotStart` (a Conflict) says why. A ``probe`` answers with offers
    that hold nothing (bounded per caller by a rate).
    """
    now = int(time.time())
    owner = identity.owner
    if probe and not direct:
        fairness.probe_allowed(broker.probe_rate, broker.config.holds, identity)
    parsed = parse_request(document, broker.registry)
    if parsed.request is None:
        reasons = _unknown_kinds(broker, parsed.unknown)
        return holding.refuse(broker, document, reasons, now, owner)
    request = parsed.request
    rules = rules_for(broker.config)
    problems = checks.problems(request, rules)
    if request.notify is not None:
        problems += notify_refusals(request.notify, identity, broker.config.notifications)
    if problems:  # well-formed but unservable: NO, every problem pointed at
        return holding.refuse(broker, document, checks.messages(problems), now, owner)
    placements = place(request.data, rules)  # where identified data lands, and how long
    demand = resolve(request, broker.config.offers)
    recurrence = series.recurrence_of(request, broker.config, direct=direct)  # or a 400
    reasons = policy_limits(demand, broker.config.offers)
    # a direct booking starts now, whatever start was asked for
    notes = [] if direct else zone_notes(request.schedule.start)
    notes += [n for p in placements if p is not None and (n := p.note()) is not None]
    if not direct:
        reasons += window_limits(demand, broker.config.offers, now)
    plans, refusals = _plans(broker, request, placements)
    if reasons or not plans:
        return holding.refuse(broker, document, notes + reasons + refusals, now, owner)
    holds_offers = not direct and not probe
    fair: fairness.Claimant | None = None
    if holds_offers:  # what the caller holds now, and the offer set this request replaces
        with broker.db.snapshot() as session:
            fair, capacity = fairness.claimant(broker, session, identity, document, project, now)
    verdict = consult(
        broker, identity, request, demand, project=project, direct=direct, now=now,
        replaces=fair.replaced if fair else (),
        occurrences=series.occurrence_count(recurrence, demand, now) if recurrence else 1,
    )  # fmt: skip
    if verdict.refusals:
        return holding.refuse(broker, document, notes + verdict.refusals, now, owner, "policy")
    demand = verdict.demand
    verdict.notes = notes + verdict.notes
    preparation = min(p.preparation for p in plans)
    if fair is not None:
        with broker.db.snapshot() as session:
            lookahead = int(broker.config.offers.lookahead.total_seconds())
            fair.add_project(
                session, broker.config.holds, verdict.project, capacity, lookahead, now
            )
        held = series.holding_demand(demand, recurrence, preparation) if recurrence else demand
        hold_refusals = fair.refuse_or_raise(held, preparation, now)  # or a 429
        if hold_refusals:
            return holding.refuse(broker, document, notes + hold_refusals, now, owner, "holds")
        verdict.limits = verdict.limits + fair.limits(demand)
        verdict.pool_caps = fair.pool_caps()
        verdict.discount = fair.discount
    if probe:
        verdict.notes.append(message(PROBE_NOTE, level="INFO"))
    context = SearchContext(
        broker=broker, request=request, document=document, demand=demand, plans=plans,
        verdict=verdict, now=now, owner=owner, notes=notes, direct=direct, probe=probe, fair=fair,
        budget=budget_for(broker.config, request.all_costs(), request.all_metrics()),
        data_staging=tuple(p.seconds if p is not None else None for p in placements),
    )  # fmt: skip
    if recurrence is not None:  # a series of occurrences held together
        return series.offer_series(context, recurrence)

    names = [p.platform.name for p in plans]
    # Search on a read snapshot, holding no lock while the table is swept ...
    with broker.db.snapshot() as session:
        outcome, searches = _search_within(replace(context, now=int(time.time())), session)
    if fair is not None:
        outcome.slots = fair.trim(outcome.slots)
    if probe:  # nothing is claimed: the offers are stored, holding nothing
        with broker.db.write(durable=False) as session:
            stored = replace(context, direct=False)
            return _answer(stored, session, outcome, searches, generations={})[0]
    # ... then claim, as placement does: lock the pools and compare their generations with the
    # snapshot's. Pools claimed on since then are read again and the chosen slots that still
    # fit are kept; only when every slot was lost is the search run again, under the lock.
    claims: ledger.Claims = {}
    # holds need not wait for the disk; a direct booking is confirmed, so it must
    with broker.db.write(durable=direct) as session:
        lost = False
        if fair is not None:
            lost = holding.lock_claimant(context, session, fair)
        generations = ledger.lock_pools(session, names)
        now = int(time.time())  # after the lock: time spent waiting must not shorten the offers
        context = replace(context, now=now)
        if fair is not None and not {p for p, _ in fair.discount} <= generations.keys():
            fair.read(session, now, replace=holds.Held())  # on a pool not searched: keep it
            verdict.discount = {}
            lost = True
        slots = (
            [] if lost else _still_fitting(context, session, searches, outcome.slots, generations)
        )
        if fair is not None:
            slots = fair.trim(slots)
        if (outcome.slots or lost) and not slots:
            outcome, searches = _search_within(context, session)
            slots = fair.trim(outcome.slots) if fair is not None else outcome.slots
        outcome = Outcome(slots, outcome.best, outcome.candidates, outcome.notes)
        answer, claims = _answer(context, session, outcome, searches, generations)
    # committed: this process's cache takes the claims as they are, instead of reading them back
    for pool_id, rows in claims.items():
        broker.usage_cache.advance(pool_id, generations[pool_id], rows)
    return answer


PROBE_NOTE = (
    "a probe: these offers hold nothing, so another request may take their slots; accepting "
    "one claims its slot afresh, and is a 409 when it was taken meanwhile"
)


def _answer(
    context: SearchContext,
    session: Session,
    outcome: Outcome,
    searches: list[Search],
    generations: dict[int, int],
) -> tuple[dict[str, Any], ledger.Claims]:
    """Store the offer set of the slots found (claiming them unless a probe), or the NO saying
    why there are none; the answer and the claims made."""
    broker, budget, notes = context.broker, context.budget, context.notes
    if outcome.slots:
        context.verdict.notes += [message(t, level="WARN", **v) for t, v in budget.notes()]
        OFFER_SETS.labels("YES", "").inc()
        return _store(context, session, outcome, generations)
    reasons = _explain(context, outcome, searches)
    if budget.turned_away:  # there was room, but only outside the client's limits
        reasons = [message(t, level="WARN", **v) for t, v in budget.reasons()]
    if context.direct:  # capacity, not the request, is the problem: the client may retry
        raise CannotStart(
            "nothing can be started now: " + "; ".join(m.message for m in reasons),
            messages=[m.message for m in reasons],
            reasons=[m.model_dump(exclude_none=True) for m in notes + reasons],
        )
    refused = notes + reasons
    OFFER_SETS.labels("NO", "budget" if budget.turned_away else "capacity").inc()
    offerset = holding.store_refusal(session, context.document, refused, context.now, context.owner)
    return render_offerset(offerset, [], broker.base_url), {}


def _still_fitting(
    context: SearchContext,
    session: Session,
    searches: list[Search],
    slots: list[Slot],
    generations: dict[int, int],
) -> list[Slot]:
    """The slots that still fit the locked pools. A pool claimed on since the search is read
    again as it is now: from the usage cache, which its claimers have usually brought up to date
    already, so this costs no more than the pool rows (without the holds a replaced offer set
    frees in this transaction)."""
    if not slots:
        return []
    broker, now = context.broker, context.now
    views = {p.id: p for s in searches for pool_set in s.pool_sets for p in pool_set}
    changed = {i for i, p in views.items() if i in generations and generations[i] != p.generation}
    if changed:
        window = (min(s.prepare_at for s in slots), max(s.end_at for s in slots))
        current = ledger.load_pools(
            session,
            sorted({views[i].platform for i in changed}),
            window,
            {c for slot in slots for _, c, _ in slot.allocations},
            cache=broker.usage_cache,
            now=now,
        )
        fairness.discount(current, context.verdict.discount)
        for view in current:
            if view.id in changed:
                view.add_external(views[view.id].external)
                views[view.id] = view
    late = now - int(broker.config.offers.granularity.total_seconds())

    def fits(slot: Slot) -> bool:
        if slot.prepare_at < late:
            return False
        for pool_id, c, amount in slot.allocations:
            if pool_id not in generations:  # the pool was disabled meanwhile
                return False
            if views[pool_id].free(c, slot.prepare_at, slot.end_at) < amount:
                return False
        return True

    return [slot for slot in slots if fits(slot)]


def _unknown_kinds(broker: Broker, unknown: list[UnknownKind]) -> list[Message]:
    """One message per distinct unknown kind, naming where it was used."""
    places: dict[tuple[str, str], list[str]] = {}
    for u in unknown:
        places.setdefault((u.category, u.kind), []).append(u.where)
    return [
        message(
            "unknown {category} kind {kind} at {where}; this node accepts: {accepted}",
            level="WARN",
            category=category,
            kind=kind[:256],
            where=", ".join(where[:5]) + (f" and {len(where) - 5} more" if len(where) > 5 else ""),
            accepted=", ".join(broker.registry.kinds(category)),
        )
        for (category, kind), where in list(places.items())[:32]
    ]


def _plans(
    broker: Broker, request: ExecutionRequest, placements: Sequence[Placement | None] = ()
) -> tuple[list[Plan], list[Message]]:
    """The platforms that can serve the request, each with its preparation time: a mapped
    resource's measured staging time replaces the platform's flat one. A platform that stages
    data cannot serve data the node cannot place; the answer then says why, per resource."""
    plans, refusals = [], []
    unplaced = [problem for p in placements if p is not None for problem in p.problems]
    measured = [p.seconds for p in placements if p is not None and p.seconds is not None]
    refused_for_data = False
    for platform in broker.platforms:
        problems = platform.validate(request) + platform.data_refusals(placements)
        if problems:
            refusals.extend(problems)
            continue
        if unplaced and platform.stages_data():
            refused_for_data = True
            continue
        flat = platform.data_staging_estimate().total_seconds() * len(measured)
        estimate = platform.preparation_estimate(request).total_seconds() - flat + sum(measured)
        plans.append(Plan(platform, max(0, int(estimate))))
    if refused_for_data:
        refusals = [problem.message() for problem in unplaced] + refusals
    return plans, refusals


def _search(context: SearchContext, session: Session) -> tuple[Outcome, list[Search]]:
    """Search the requested windows; "as soon as possible" looks at the next day first and
    only sweeps the whole look-ahead when that did not give enough offers."""
    offers = context.broker.config.offers
    lookahead = int(offers.lookahead.total_seconds())
    demand, now = context.demand, context.now
    if demand.windows is None and not context.direct:
        near = max(ASAP_FIRST_LOOK, demand.duration * offers.max_offers * 2)
        if near < lookahead:
            nearby = replace(demand, windows=[(now, now + near)])
            outcome, searches = _search_windows(replace(context, demand=nearby), session)
            if len(outcome.slots) >= offers.max_offers:
                return outcome, searches
    return _search_windows(context, session)


def _search_within(context: SearchContext, session: Session) -> tuple[Outcome, list[Search]]:
    """The search, keeping only slots within the request's cost limits; when some were above
    them and the request allows less, the least it allows is searched too (cheaper offers)."""
    outcome, searches = _search(context, session)
    demand, budget, wanted = context.demand, context.budget, context.max_offers
    if not budget.refused or len(outcome.slots) >= wanted:
        return outcome, searches
    ranges = {c: (r.min, r.max) for c, r in demand.amounts.items()}
    most = budget.most_within(ranges, demand.duration)
    narrower = [{c: Range(r.min, r.min) for c, r in demand.amounts.items()}]  # the least
    if most is not None:  # first the most that a price list keeps within the limits
        narrower.insert(0, {c: Range(r.min, most[c]) for c, r in demand.amounts.items()})
    for amounts in narrower:
        if all(r.min == r.max == demand.amounts[c].max for c, r in amounts.items()):
            continue  # the request as it was
        more, more_searches = _search(
            replace(context, demand=replace(demand, amounts=amounts)), session
        )
        slots = select_distinct(
            sorted(outcome.slots + more.slots, key=lambda s: s.start_at), searches[0].max_offers
        )
        best = {c: max(outcome.best.get(c, 0), more.best.get(c, 0)) for c in demand.amounts}
        outcome = Outcome(slots, best, outcome.candidates + more.candidates, outcome.notes)
        searches = searches + more_searches
        if len(outcome.slots) >= wanted:
            break
    return outcome, searches


ASAP_FIRST_LOOK = 24 * 3600


def _search_windows(context: SearchContext, session: Session) -> tuple[Outcome, list[Search]]:
    """One sweep of the context's windows on every platform's pools."""
    broker, demand, now, verdict = context.broker, context.demand, context.now, context.verdict
    plans = context.plans
    offers = broker.config.offers
    granularity = int(offers.granularity.total_seconds())
    horizon = now + int(offers.lookahead.total_seconds())
    longest_prep = max(p.preparation for p in plans)
    windows = demand.windows or [(now, horizon)]
    first = max(min(w[0] for w in windows) - longest_prep, now)
    last = min(max(w[1] for w in windows), horizon) + demand.duration + granularity
    pools = ledger.load_pools(
        session,
        [p.platform.name for p in plans],
        (now, now) if first > last else (first, last),
        demand.amounts,
        cache=broker.usage_cache,
        now=now,
    )
    fairness.discount(pools, verdict.discount)  # the holds this request replaces
    searches = []
    slots: list[Slot] = []
    best: dict[str, int] = {}
    candidates = 0
    notes: list[Message] = []
    open_to_caller = [p for p in pools if verdict.pools is None or p.name in verdict.pools]
    notes += holding.drained_notes(open_to_caller)
    for plan in plans:
        mine = [p for p in open_to_caller if p.platform == plan.platform.name and p.drain is None]
        try:
            holding.add_external_claims(plan.platform, mine, first, last)
        except PlatformError as exc:
            log.warning("platform %s left out of this search: %s", plan.platform.name, exc)
            notes.append(message("platform {platform} is unavailable: {error}", level="WARN",
                                 platform=plan.platform.name, error=str(exc)[:500]))  # fmt: skip
            mine = []
        search_demand = demand
        if context.direct:
            earliest = -(-(now + plan.preparation) // granularity) * granularity
            starts = [(earliest, earliest)]
            if verdict.permitted is not None and not any(
                a <= earliest <= b for a, b in verdict.permitted
            ):
                starts = []
                notes.append(message(
                    "the policies of this node permit no session of {duration} starting now",
                    level="WARN", duration=format_seconds(demand.duration),
                ))  # fmt: skip
            search_demand = replace(demand, windows=starts)
        search = Search(
            demand=search_demand,
            pool_sets=[
                pool_set
                for pool_set in holding.pool_sets(broker, plan.platform, mine)
                if context.budget.suits([p.name for p in pool_set])
                and accelerators.pool_set_serves(pool_set, demand.accelerators)
            ],
            now=now,
            preparation=plan.preparation,
            horizon=horizon,
            granularity=granularity,
            max_offers=context.max_offers,
            limits=verdict.limits,
            pool_caps=verdict.pool_caps,
        )
        searches.append(search)
        outcome = find_slots(search)
        slots.extend(outcome.slots)
        candidates += outcome.candidates
        for c, v in outcome.best.items():
            best[c] = max(best.get(c, 0), v)
    if demand.accelerators and not any(s.pool_sets for s in searches):
        searched = [p for p in open_to_caller if p.drain is None]
        notes += accelerators.unmatched(demand.accelerators, searched)
    slots = context.budget.affordable(slots)
    chosen = select_distinct(sorted(slots, key=lambda s: s.start_at), searches[0].max_offers)
    return Outcome(chosen, best, candidates, notes), searches


def _explain(context: SearchContext, outcome: Outcome, searches: list[Search]) -> list[Message]:
    """Why the searches found no slot, and what would work."""
    demand, verdict, now = context.demand, context.verdict, context.now
    if outcome.notes and not any(p for s in searches for p in s.pool_sets):
        return list(outcome.notes)  # no platform could be searched at all
    reasons: list[Message] = list(outcome.notes)
    capacity: dict[str, int] = {}
    for search in searches:
        for c, v in largest_capacity(search).items():
            capacity[c] = max(capacity.get(c, 0), v)
    # defaults for classes no pool tracks were never asked of any pool: they are no reason
    needed = {
        c: wanted
        for c, wanted in demand.amounts.items()
        if capacity.get(c, 0) or c not in demand.defaulted
    }
    for c, wanted in needed.items():
        if capacity.get(c, 0) < wanted.min:
            reasons.append(message(
                "this node has at most {capacity} {unit} in any pool"
                + (" open to you" if verdict.pools is not None else "") + "; {needed} needed",
                level="WARN", capacity=capacity.get(c, 0), unit=UNITS.get(c, c), needed=wanted.min,
            ))  # fmt: skip
    if reasons:
        return reasons
    if outcome.candidates == 0:
        search = searches[0]
        earliest = instant(now + search.preparation)
        return [message(
            "no requested start fits between the earliest possible start {earliest} "
            "(preparation takes {preparation}) and the look-ahead limit {horizon}",
            level="WARN", earliest=earliest,
            preparation=format_seconds(search.preparation),
            horizon=instant(search.horizon),
        )]  # fmt: skip
    for c, wanted in needed.items():
        if outcome.best.get(c, 0) < wanted.min:
            # caps that vary over time (a concurrency cap, a hold limit) may be why
            rules = sorted({limit.rule for limit in verdict.limits if limit.resource_class == c}
                           | {cap.rule for cap in verdict.pool_caps})  # fmt: skip
            reasons.append(message(
                "at most {free} {unit} free in the requested window"
                + (" within {rules}" if rules else "") + "; {needed} needed",
                level="WARN", free=outcome.best.get(c, 0), unit=UNITS.get(c, c),
                needed=wanted.min, **({"rules": ", ".join(rules)} if rules else {}),
            ))  # fmt: skip
    limited = sorted({limit.rule for limit in verdict.limits} | {c.rule for c in verdict.pool_caps})
    if limited and not reasons:
        reasons.append(message(
            "{rules} left too little room in the requested window",
            level="WARN", rules=", ".join(limited),
        ))  # fmt: skip
    if not reasons:
        reasons.append(message(
            "no single time in the requested window has {wanted} free at once",
            level="WARN", wanted=demand.describe(),
        ))  # fmt: skip
    return reasons


def _store(
    context: SearchContext, session: Session, outcome: Outcome, generations: dict[int, int]
) -> tuple[dict[str, Any], ledger.Claims]:
    """Insert the offer set, its sessions and their bookings in bulk, and free the holds of
    the offer set it replaces; the rendered offer set and the claims made. A probe's sessions
    keep their slots' allocations (for a fresh claim when one is accepted) and hold nothing."""
    broker, now = context.broker, context.now
    offerset, expires = holding.yes_offerset_row(context)
    components = holding.components(context.request)
    records = [holding.session_record(context, components, slot) for slot in outcome.slots]
    rows = [
        holding.session_row(context, offerset, expires, slot, record,
                            phase=ACCEPTED if context.direct else OFFERED,
                            due_at=now if context.direct else None)
        for slot, record in zip(outcome.slots, records, strict=True)
    ]
    # Core inserts of plain rows: no ORM objects or unit of work on the hot path
    connection = session.connection()
    connection.execute(holding.INSERT_OFFERSET, [offerset.model_dump()])
    store.insert_many(session, rows)
    sessions = [SimpleNamespace(**row) for row in rows]  # what render_session reads
    rendered = render_offerset(offerset, sessions, broker.base_url, records)
    if context.probe:
        return rendered, {}
    claims = ledger.insert_bookings(
        session,
        [(slot, row.uuid) for slot, row in zip(outcome.slots, sessions, strict=True)],
        offerset_uuid=offerset.uuid,
        state=CONFIRMED if context.direct else HELD,
        expires_at=None if context.direct else expires,
        now=now,
        generations=generations,
    )
    ledger.record_claims(session, outcome.slots, now)
    if context.direct:
        for row, record in zip(sessions, records, strict=True):
            outbox.emit_accepted(session, broker.config.notifications,
                                 outbox.SessionFacts.of(row), record, now)  # fmt: skip
            pools = ", ".join(f"{row.platform}/{name}" for name in record.pools)
            audit.record(session, context.owner or ANONYMOUS, audit.DIRECT,
                         audit.session_subject(row.uuid),
                         f"booked and accepted at once on {pools}", now)  # fmt: skip
    holding.release_replaced(context, session, outcome.slots, generations, claims)
    return rendered, claims


def get_offerset(
    broker: Broker, offerset_uuid: str, identity: Identity = ANONYMOUS_IDENTITY
) -> dict[str, Any]:
    with broker.db.read() as session:
        row = session.get(OfferSet, offerset_uuid)
        if row is None or not broker.may_see(identity, row.owner):
            raise NotFound("offer set", offerset_uuid)
        sessions = store.of_offerset(session, offerset_uuid)
    return render_offerset(row, sessions, broker.base_url)
