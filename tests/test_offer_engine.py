"""The offer engine on in-memory pools: windows, spreading, amounts and reasons."""

from __future__ import annotations

from broker_core.booking.pools import InventoryView, PoolView
from broker_core.booking.timeline import Claim, Usage
from broker_core.kinds.base import Range
from broker_core.offers.demand import Demand
from broker_core.offers.engine import Search, find_slots

H = 3600
NOW = 1_800_000_000 - (1_800_000_000 % H)  # an hour boundary


def pool(cores: int = 8, claims: list[Claim] = (), pool_id: int = 1) -> PoolView:
    view = PoolView(pool_id, f"p/{pool_id}", "p", {"cores": InventoryView(cores)})
    view.usage = {"cores": Usage(claims)}
    return view


def search(demand: Demand, pools: list[PoolView], *, prep: int = 0, max_offers: int = 4) -> Search:
    return Search(
        demand=demand,
        pool_sets=[[p] for p in pools],
        now=NOW,
        preparation=prep,
        horizon=NOW + 7 * 24 * H,
        granularity=60,
        max_offers=max_offers,
    )


def demand(low: int, high: int, duration: int = H, windows=None) -> Demand:
    return Demand({"cores": Range(low, high)}, duration, windows)


def test_asap_in_an_empty_pool_gives_back_to_back_alternatives():
    outcome = find_slots(search(demand(2, 4), [pool()]))
    starts = [s.start_at for s in outcome.slots]
    assert starts == [NOW, NOW + H, NOW + 2 * H, NOW + 3 * H]
    assert all(s.totals["cores"] == 4 for s in outcome.slots)


def test_preparation_goes_in_front_of_the_available_start():
    outcome = find_slots(search(demand(1, 1), [pool()], prep=300))
    first = outcome.slots[0]
    assert first.start_at == NOW + 300 and first.prepare_at == NOW
    # a claim blocking [NOW+H, NOW+2H) must also block the preparation of a slot after it
    busy = pool(claims=[Claim(NOW, NOW + 2 * H, 8)])
    later = find_slots(search(demand(1, 1), [busy], prep=600)).slots[0]
    assert later.prepare_at == NOW + 2 * H and later.start_at == NOW + 2 * H + 600


def test_offers_the_most_that_fits_never_above_max_nor_below_min():
    busy = pool(claims=[Claim(NOW, NOW + 2 * H, 5)])  # 3 of 8 free for two hours
    outcome = find_slots(search(demand(2, 6), [busy]))
    first = outcome.slots[0]
    assert first.start_at == NOW and first.totals["cores"] == 3
    # when the pool frees up, a bigger alternative is offered even though it overlaps nothing
    assert any(s.totals["cores"] == 6 and s.start_at == NOW + 2 * H for s in outcome.slots)
    assert all(2 <= s.totals["cores"] <= 6 for s in outcome.slots)


def test_a_bigger_slot_overlapping_a_smaller_one_is_a_real_alternative():
    busy = pool(claims=[Claim(NOW, NOW + 30 * 60, 6)])  # 2 free for 30 minutes, then 8
    outcome = find_slots(search(demand(1, 8, duration=2 * H), [busy]))
    totals = [(s.start_at - NOW, s.totals["cores"]) for s in outcome.slots]
    assert totals[0] == (0, 2)
    assert (30 * 60, 8) in totals


def test_windows_on_three_days_give_one_offer_a_day():
    day = 24 * H
    windows = [(NOW + d * day + 9 * H, NOW + d * day + 12 * H) for d in (1, 2, 3)]
    outcome = find_slots(search(demand(1, 1, duration=4 * H, windows=windows), [pool()]))
    assert [s.start_at for s in outcome.slots] == [w[0] for w in windows]


def test_no_fit_reports_the_most_seen_free():
    busy = pool(claims=[Claim(NOW, NOW + 30 * 24 * H, 2)])
    outcome = find_slots(search(demand(8, 8), [busy]))
    assert outcome.slots == [] and outcome.best["cores"] == 6


def test_alternative_holds_of_one_offer_set_count_once():
    holds = [Claim(NOW, NOW + H, 4, "set-a"), Claim(NOW, NOW + H, 4, "set-a")]
    outcome = find_slots(search(demand(4, 4), [pool(claims=holds)]))
    assert outcome.slots[0].start_at == NOW  # 8 - max(4, 4) = 4 free, not 8 - 8 = 0


def test_holds_of_different_offer_sets_add_up():
    holds = [Claim(NOW, NOW + H, 4, "set-a"), Claim(NOW, NOW + H, 4, "set-b")]
    outcome = find_slots(search(demand(4, 4), [pool(claims=holds)]))
    assert outcome.slots[0].start_at == NOW + H


def test_lookahead_bounds_the_search():
    windows = [(NOW + 8 * 24 * H, NOW + 9 * 24 * H)]
    outcome = find_slots(search(demand(1, 1, windows=windows), [pool()]))
    assert outcome.slots == [] and outcome.candidates == 0


def test_max_offers_caps_the_answer():
    assert len(find_slots(search(demand(1, 1), [pool()], max_offers=2)).slots) == 2


def test_step_size_and_units_are_honoured():
    view = PoolView(
        1, "p/1", "p", {"cores": InventoryView(16, min_unit=2, max_unit=8, step_size=2)}
    )
    view.usage = {"cores": Usage([Claim(NOW, NOW + H, 9)])}  # 7 free
    slot = find_slots(search(demand(1, 16), [view])).slots[0]
    assert slot.totals["cores"] == 6  # rounded down to the step
    later = [s for s in find_slots(search(demand(1, 16), [view])).slots if s.start_at >= NOW + H]
    assert later[0].totals["cores"] == 8  # max_unit


def test_a_booking_may_draw_on_several_pools():
    a, b = pool(cores=4, pool_id=1), pool(cores=4, pool_id=2)
    s = Search(
        demand=demand(6, 8),
        pool_sets=[[a, b]],
        now=NOW,
        preparation=0,
        horizon=NOW + 24 * H,
        granularity=60,
        max_offers=1,
    )
    slot = find_slots(s).slots[0]
    assert slot.totals["cores"] == 8
    assert sorted(slot.allocations) == [(1, "cores", 4), (2, "cores", 4)]


def test_usage_envelope_of_alternatives():
    u = Usage([Claim(0, 10, 4), Claim(5, 15, 2, "a"), Claim(0, 20, 1, "a"), Claim(10, 12, 3)])
    assert [u.at(t) for t in (0, 5, 10, 12, 15, 20)] == [5, 6, 5, 2, 1, 0]
    assert u.peak(0, 5) == 5 and u.peak(5, 10) == 6 and u.peak(15, 30) == 1


def test_skipping_candidates_an_offer_already_covers_changes_no_answer(monkeypatch):
    """find_slots skips candidates overlapping an offer that already has the most a slot could
    get; on random busy pools (combined sets, limits, windows) it must choose exactly the slots
    that evaluating every candidate chooses, and evaluate fewer of them."""
    import random

    from broker_core.offers import engine

    class Room:  # a concurrency cap that varies over time
        resource_class = "cores"

        def room(self, start: int, end: int) -> int:
            return 6 if (start // H) % 3 else 3

    evaluated = {"count": 0}
    real_evaluate = engine.evaluate

    def counting(*args, **kwargs):
        evaluated["count"] += 1
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", counting)
    rng = random.Random(7)
    skipped_some = 0
    for _ in range(300):
        pools = []
        for pool_id in (1, 2):
            claims = [
                Claim(start, start + rng.randint(1, 6) * 900, rng.randint(1, 8))
                for start in (NOW + rng.randint(0, 48) * 900 for _ in range(rng.randint(0, 40)))
            ]
            pools.append(pool(cores=rng.choice([8, 16]), claims=claims, pool_id=pool_id))
        low = rng.randint(1, 6)
        start = NOW + rng.randint(0, 24) * 900
        windows = rng.choice([None, [(start, start + rng.randint(1, 8) * 900)]])
        wanted = demand(low, low + rng.choice([0, 0, 4]), rng.randint(1, 8) * 900, windows)
        trial = search(wanted, pools, max_offers=rng.randint(1, 5))
        trial.pool_sets.append(pools)  # one booking may span both
        if rng.random() < 0.3:
            trial.limits = [Room()]

        evaluated["count"] = 0
        fast = find_slots(trial)
        fast_count = evaluated["count"]
        with monkeypatch.context() as m:
            m.setattr(engine, "_outdone", lambda *args: False)
            evaluated["count"] = 0
            full = find_slots(trial)
        assert _summary(fast) == _summary(full)
        if not full.slots:
            assert fast.best == full.best  # the NO messages read it
        assert fast_count <= evaluated["count"]
        skipped_some += fast_count < evaluated["count"]
    assert skipped_some > 100


def _summary(outcome) -> list:
    return [(s.prepare_at, s.start_at, s.end_at, s.totals, s.allocations) for s in outcome.slots]
