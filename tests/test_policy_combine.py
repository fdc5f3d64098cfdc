"""How the policies' answers combine, and how the combined answer narrows a search."""

from __future__ import annotations

import typing
from dataclasses import replace

import policies.contract as contract
from broker_core.booking.timeline import Claim, Usage
from broker_core.kinds.base import Range
from broker_core.offers.engine import find_slots
from broker_core.offers.policy import apply
from policies.contract import Decision, Limit, PoolRef, combine
from tests.test_offer_engine import NOW, H, demand, pool, search

A, B, C = PoolRef("p", "a"), PoolRef("p", "b"), PoolRef("p", "c")


def test_all_must_allow_and_the_narrowest_restriction_wins():
    combined = combine([
        Decision(pools=frozenset({A, B}), max_duration=4 * H, windows=[(0, 100)],
                 limits=[Limit("cores", 64, "rule x")]),
        Decision(pools=frozenset({B, C}), max_duration=2 * H, windows=[(50, 200)],
                 project="astro"),
        Decision(),
    ])  # fmt: skip
    assert combined.allowed
    assert combined.pools == {B}
    assert combined.max_duration == 2 * H
    assert combined.windows == [(50, 100)]
    assert [limit.cap for limit in combined.limits] == [64]
    assert combined.project == "astro"
    refused = combine([Decision(), Decision.deny("rule {rule} says no", rule="y")])
    assert not refused.allowed
    assert [m.message for m in refused.messages] == ["rule y says no"]


def test_a_static_cap_lowers_the_max_and_refuses_a_min_above_it():
    wanted = demand(2, 100)
    verdict = apply(Decision(limits=[Limit("cores", 16, "rule students")]), wanted, NOW, 7 * 24 * H)
    assert not verdict.refusals
    assert verdict.demand.amounts["cores"].max == 16 and verdict.demand.amounts["cores"].min == 2
    verdict = apply(Decision(limits=[Limit("cores", 1, "rule students")]), wanted, NOW, 7 * 24 * H)
    assert [m.message for m in verdict.refusals] == [
        "rule students allows at most 1 cores per session; 2 needed"
    ]


def test_permitted_times_become_the_starts_that_keep_the_whole_session_inside():
    wanted = demand(1, 1, duration=H)
    allowed = [(NOW + 2 * H, NOW + 4 * H), (NOW + 10 * H, NOW + 10 * H + 1800)]
    verdict = apply(Decision(windows=allowed), wanted, NOW, 7 * 24 * H)
    # the half-hour interval is too short for an hour; the two-hour one allows starts in its
    # first hour, inclusive
    assert verdict.demand.windows == [(NOW + 2 * H, NOW + 3 * H)]
    outcome = find_slots(search(verdict.demand, [pool()]))
    assert outcome.slots
    assert all(s.start_at >= NOW + 2 * H and s.end_at <= NOW + 4 * H for s in outcome.slots)
    # a requested window outside the permitted times: refused, saying so
    late = replace(wanted, windows=[(NOW + 5 * H, NOW + 6 * H)])
    verdict = apply(Decision(windows=allowed), late, NOW, 7 * 24 * H)
    assert verdict.refusals and "times they permit" in verdict.refusals[0].message


def test_a_cap_that_varies_over_time_is_honoured_slot_by_slot():
    # the project already holds 6 of its 8 cores during the first two hours
    held = Usage([Claim(NOW, NOW + 2 * H, 6)])
    verdict = apply(Decision(limits=[Limit("cores", 8, "concurrency", usage=held)]),
                    demand(1, 4), NOW, 7 * 24 * H)  # fmt: skip
    assert verdict.limits and verdict.demand.amounts["cores"].max == 4
    s = replace(search(verdict.demand, [pool(cores=100)]), limits=verdict.limits)
    slots = find_slots(s).slots
    assert slots
    for slot in slots:
        overlapping = slot.start_at < NOW + 2 * H
        assert slot.totals["cores"] == (2 if overlapping else 4)
    # needing 3 at least: nothing may overlap the held hours
    at_least_3 = replace(verdict.demand, amounts={"cores": Range(3, 4)})
    s = replace(search(at_least_3, [pool(cores=100)]), limits=verdict.limits)
    slots = find_slots(s).slots
    assert slots and all(slot.start_at >= NOW + 2 * H for slot in slots)


def test_no_open_pool_refuses():
    verdict = apply(Decision(pools=frozenset()), demand(1, 1), NOW, 7 * 24 * H)
    assert [m.message for m in verdict.refusals] == ["no pool of this node is open to you"]


def test_policies_are_asked_in_the_ranges_the_demand_resolved_to():
    """One resolved min/max for the search and the policies (policies.contract.Amount was the
    same two ints under another name, copied from each Range; the name stays, for plugins)."""
    assert typing.get_type_hints(contract.PolicyRequest)["amounts"] == dict[str, Range]
    assert contract.Amount is Range
