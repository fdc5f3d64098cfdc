"""Price lists (platforms[].pricing, pools[].pricing), the costs and metrics every offer carries,
a request's cost limits, and the aggregator's ``order: cost``."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from aggregator.merge import Candidate, UpstreamOffer, cost_of, rank
from broker_core.config import ConfigError, parse_config
from broker_core.pricing import COST_KIND, METRIC_KIND
from tests.conftest import POOL_CONFIG, request_doc

MONEY = {"currency": "EUR", "per_hour": {"cores": 0.05}}
PRICED = {
    "money": MONEY,
    "energy": {"per_hour": {"cores": 0.01}},
    "carbon": {"per_kwh": 200},
    "metrics": [{"name": "speed", "value": 1.5, "description": "relative speed"}],
}


def pools(*specs: tuple[str, int, dict[str, Any] | None]) -> list[dict[str, Any]]:
    out = []
    for name, cores, pricing in specs:
        inventories = {"cores": {"total": cores}, "memory": {"total": 16}}
        pool: dict[str, Any] = {"name": name, "inventories": inventories}
        if pricing is not None:
            pool["pricing"] = pricing
        out.append(pool)
    return out


def platform(pricing: dict[str, Any] | None, pool_list: list[dict[str, Any]] | None = None,
             **extra: Any) -> dict[str, Any]:  # fmt: skip
    doc = copy.deepcopy(POOL_CONFIG["platforms"][0])
    if pricing is not None:
        doc["pricing"] = pricing
    if pool_list is not None:
        doc["pools"] = pool_list
    return {**doc, **extra}


@pytest.fixture
def node(broker_factory, client_factory, tmp_path):
    made: list[int] = []

    def make(*platforms: dict[str, Any]) -> TestClient:
        made.append(len(made))  # a database of its own
        url = f"sqlite:///{tmp_path / f'node-{len(made)}.db'}"
        return client_factory(broker_factory(url, platforms=list(platforms)))

    return make


def ask(client: TestClient, doc: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/requests", json=doc)
    assert r.status_code == 200, r.text
    return r.json()


def by_type(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["type"]: i for i in items}


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pricing", "where"),
    [
        ({"money": {"currency": "EUR", "per_hour": {"corse": 1}}}, r"per_hour\.corse: .*'cores'"),
        ({"money": {"currency": "EUR", "per_hour": {"cores": -1}}}, r"per_hour\.cores"),
        ({"money": {"currency": "EUR", "per_hour": {}}}, r"per_hour: give a rate"),
        ({"money": {"per_hour": {"cores": 1}}}, r"money\.currency"),
        ({"money": {"currency": "E U R", "per_hour": {"cores": 1}}}, r"money\.currency"),
        ({"energy": {"per_hour": {"cores": 0.1}}, "carbon": {"per_kwh": -3}}, r"carbon\.per_kwh"),
        ({"carbon": {"per_kwh": 200}}, r"pool 'main': pricing\.carbon needs pricing\.energy"),
        (
            {"metrics": [{"name": "speed", "value": 1}, {"name": "speed", "value": 2}]},
            r"pricing: metric names must be unique; repeated: speed",
        ),
        ({"metrics": [{"name": "speed"}]}, r"metrics\.0\.value"),
        ({"price": {}}, r"pricing\.price: unknown field"),
    ],
)
def test_bad_price_lists_are_named(pricing: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError, match=where):
        parse_config({"platforms": [platform(pricing)]})


def test_a_pool_may_give_the_energy_its_carbon_needs() -> None:
    ok = platform({"carbon": {"per_kwh": 100}}, pools(("a", 2, {"energy": PRICED["energy"]})))
    parse_config({"platforms": [ok]})
    with pytest.raises(ConfigError, match=r"pool 'b': pricing\.carbon needs pricing\.energy"):
        parse_config({"platforms": [platform(None, pools(("b", 2, {"carbon": {"per_kwh": 1}})))]})


# --- offers -------------------------------------------------------------------------------------


def test_an_offer_is_priced_for_its_amounts_and_window(node) -> None:
    client = node(platform(PRICED))
    (offer, *_) = ask(client, request_doc(cores=(2, 2), duration="PT1H"))["offers"]
    costs = by_type(offer["costs"])
    assert [t.split(":")[3] for t in costs] == ["money", "energy", "carbon"]
    assert next(iter(costs)) == "urn:ebroker:cost:money:EUR"
    money = costs["urn:ebroker:cost:money:EUR"]
    assert money["kind"] == COST_KIND and money["units"] == "EUR"
    assert money["min"] == money["max"] == pytest.approx(0.10)  # 2 cores x 1 h x 0.05
    assert costs["urn:ebroker:cost:energy:kWh"]["max"] == pytest.approx(0.02)
    assert costs["urn:ebroker:cost:carbon:gCO2e"]["max"] == pytest.approx(4.0)  # 0.02 x 200
    (metric,) = offer["metrics"]
    assert metric == {"kind": METRIC_KIND, "type": "urn:ebroker:metric:speed",
                      "description": "relative speed", "min": 1.5, "max": 1.5}  # fmt: skip


def test_preparation_is_not_charged(node) -> None:
    slow = platform({"money": MONEY}, options={"base_preparation": "PT30M"})
    (offer, *_) = ask(node(slow), request_doc(cores=(2, 2), duration="PT2H"))["offers"]
    (money,) = offer["costs"]
    assert money["max"] == pytest.approx(0.20)  # 2 cores x 2 h; the 30 minutes before are free


def test_without_a_price_list_offers_carry_no_costs(node) -> None:
    (offer, *_) = ask(node(platform(None)), request_doc())["offers"]
    assert offer["costs"] == [] and offer["metrics"] == []


def test_a_pool_price_beats_the_platform_price(node) -> None:
    fast = {"money": {"currency": "EUR", "per_hour": {"cores": 0.08}},
            "metrics": [{"name": "speed", "value": 2.0}]}  # fmt: skip
    client = node(platform(PRICED, pools(("main", 2, None), ("fast", 4, fast))))
    answer = ask(client, request_doc(cores=(2, 4), duration="PT1H"))
    seen = {}
    for offer in answer["offers"]:
        costs = by_type(offer["costs"])
        seen[offer["site"]["pools"][0]] = (
            costs["urn:ebroker:cost:money:EUR"]["max"],
            "urn:ebroker:cost:energy:kWh" in costs,  # inherited from the platform
            offer["metrics"][0]["max"],
        )
    assert seen["sim/main"] == (pytest.approx(0.10), True, 1.5)
    assert seen["sim/fast"] == (pytest.approx(0.32), True, 2.0)  # 4 cores x 0.08


def test_combined_pools_add_up(node) -> None:
    fast = {"money": {"currency": "EUR", "per_hour": {"cores": 0.08}},
            "metrics": [{"name": "speed", "value": 2.0}]}  # fmt: skip
    shared = platform(PRICED, pools(("main", 2, None), ("fast", 2, fast)), combine_pools=True)
    (offer, *_) = ask(node(shared), request_doc(cores=(4, 4), duration="PT1H"))["offers"]
    assert offer["site"]["pools"] == ["sim/fast", "sim/main"]
    costs = by_type(offer["costs"])
    assert costs["urn:ebroker:cost:money:EUR"]["max"] == pytest.approx(2 * 0.05 + 2 * 0.08)
    assert costs["urn:ebroker:cost:energy:kWh"]["max"] == pytest.approx(0.04)
    (metric,) = offer["metrics"]
    assert (metric["min"], metric["max"]) == (1.5, 2.0)


def test_a_combined_offer_is_not_priced_in_part(node) -> None:
    """One pool prices in GBP, the other in EUR: no money item (energy, priced by both, is)."""
    gbp = {"money": {"currency": "GBP", "per_hour": {"cores": 0.04}}}
    shared = platform(PRICED, pools(("main", 2, None), ("uk", 2, gbp)), combine_pools=True)
    (offer, *_) = ask(node(shared), request_doc(cores=(4, 4)))["offers"]
    assert [c["type"] for c in offer["costs"]] == [
        "urn:ebroker:cost:energy:kWh", "urn:ebroker:cost:carbon:gCO2e",
    ]  # fmt: skip


def test_an_extension_is_quoted_again(node) -> None:
    client = node(platform({"money": MONEY}))
    tomorrow = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(time.time() + 86400))
    doc = request_doc(cores=(2, 2), start=f"{tomorrow}/PT1H", duration="PT1H")
    (offer, *_) = ask(client, doc)["offers"]
    url = f"/sessions/{offer['meta']['uuid']}"
    accept = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
    assert client.post(url, json=accept).status_code == 200
    longer = {"kind": "uri:integer-delta-update", "path": "schedule.duration", "delta": 3600}
    r = client.post(url, json=longer)
    assert r.status_code == 200, r.text
    (money,) = r.json()["costs"]
    assert money["max"] == pytest.approx(0.20)  # 2 cores x 2 h
    (money,) = client.get(url).json()["costs"]
    assert money["max"] == pytest.approx(0.20)


# --- a request's cost limits --------------------------------------------------------------------


def test_offers_above_the_limit_are_not_made(node) -> None:
    fast = {"money": {"currency": "EUR", "per_hour": {"cores": 0.08}}}
    client = node(platform(PRICED, pools(("main", 2, None), ("fast", 4, fast))))
    # without a limit, main offers 2 cores (0.10 EUR) and fast 4 (0.32 EUR); fast's least, 2
    # cores, would still cost 0.16 EUR
    doc = {**request_doc(cores=(2, 4), duration="PT1H"), "costs": [{"max": 0.12, "units": "EUR"}]}
    answer = ask(client, doc)
    assert answer["result"] == "YES"
    assert {o["site"]["pools"][0] for o in answer["offers"]} == {"sim/main"}
    # the standard's typed form of the same limit
    typed = {"kind": COST_KIND, "type": "urn:ebroker:cost:money:EUR", "max": 0.12}
    client = node(platform(PRICED, pools(("main", 2, None), ("fast", 4, fast))))
    answer = ask(client, {**doc, "costs": [typed]})
    assert {o["site"]["pools"][0] for o in answer["offers"]} == {"sim/main"}


def test_a_limit_gets_the_most_within_it(node) -> None:
    doc = {**request_doc(cores=(1, 8), duration="PT1H"), "costs": [{"max": 0.16, "units": "EUR"}]}
    answer = ask(node(platform(PRICED)), doc)
    assert answer["result"] == "YES"
    for offer in answer["offers"]:  # 3 cores x 0.05 = 0.15; 4 would cost 0.20
        assert offer["compute"]["cores"] == {"min": 3, "max": 3}
        assert by_type(offer["costs"])["urn:ebroker:cost:money:EUR"]["max"] <= 0.16


def test_a_limit_gets_the_least_when_nothing_more_fits(node) -> None:
    """The cheap pool is full: the dear one's least (2 cores, 0.16 EUR) is within the limit."""
    dear = {"money": {"currency": "EUR", "per_hour": {"cores": 0.08}}}
    client = node(platform(PRICED, pools(("cheap", 2, None), ("dear", 8, dear))))
    held = ask(client, request_doc(cores=(2, 2), duration="PT2H"))
    assert {o["site"]["pools"][0] for o in held["offers"]} == {"sim/cheap"}
    doc = {**request_doc(cores=(2, 8), duration="PT1H"), "costs": [{"max": 0.2, "units": "EUR"}]}
    answer = ask(client, doc)
    assert answer["result"] == "YES"
    first = answer["offers"][0]
    assert first["site"]["pools"] == ["sim/dear"] and first["compute"]["cores"]["max"] == 2


def test_a_request_over_its_limit_is_no_with_the_cheapest_cost(node) -> None:
    doc = {**request_doc(cores=(4, 8), duration="PT1H"), "costs": [{"max": 0.1, "units": "eur"}]}
    answer = ask(node(platform(PRICED)), doc)
    assert answer["result"] == "NO" and answer["offers"] == []
    (reason,) = answer["meta"]["messages"]
    assert reason["level"] == "WARN"
    assert reason["values"] == {"cheapest": "0.2 eur", "limit": "0.1 eur"}  # 4 cores x 0.05


def test_a_limit_in_other_units_is_noted_not_applied(node) -> None:
    doc = {**request_doc(), "costs": [{"max": 0.01, "units": "USD"}, {"max": 3}]}
    answer = ask(node(platform(PRICED)), doc)
    assert answer["result"] == "YES"
    limits = [m["values"]["limit"] for m in answer["meta"]["messages"]]
    assert limits == ["0.01 USD", "3"]


def test_a_direct_booking_keeps_to_the_limit(node) -> None:
    client = node(platform(PRICED))
    doc = {**request_doc(cores=(4, 4)), "costs": [{"max": 0.01, "units": "EUR"}]}
    r = client.post("/direct", json=doc)
    assert r.status_code >= 400 and "0.01 EUR" in r.text  # refused, naming the limit
    doc["costs"] = [{"max": 1, "units": "EUR"}]
    assert client.post("/direct", json=doc).status_code < 300


# --- a request's metric needs ------------------------------------------------------------------

SPEED = "urn:ebroker:metric:speed"
FAST = {"money": {"currency": "EUR", "per_hour": {"cores": 0.08}},
        "metrics": [{"name": "speed", "value": 2.0}]}  # fmt: skip


def test_offers_short_of_a_metric_are_not_made(node) -> None:
    """main's speed is 1.5, fast's 2.0: a need of at least 1.8 leaves only fast's offers."""
    client = node(platform(PRICED, pools(("main", 4, None), ("fast", 4, FAST))))
    need = {"kind": METRIC_KIND, "type": SPEED, "min": 1.8}
    answer = ask(client, {**request_doc(cores=(2, 2)), "metrics": [need]})
    assert answer["result"] == "YES"
    assert {o["site"]["pools"][0] for o in answer["offers"]} == {"sim/fast"}
    for offer in answer["offers"]:
        assert by_type(offer["metrics"])[SPEED]["min"] >= 1.8
    # a metric's max bounds it from above: at most 1.6 leaves main
    capped = {"type": SPEED, "max": 1.6}
    client = node(platform(PRICED, pools(("main", 4, None), ("fast", 4, FAST))))
    answer = ask(client, {**request_doc(cores=(2, 2)), "metrics": [capped]})
    assert {o["site"]["pools"][0] for o in answer["offers"]} == {"sim/main"}


def test_a_metric_on_a_component_is_a_need_of_the_offer(node) -> None:
    """The standard's AbstractComponent carries costs and metrics: on the compute resource
    they apply as the request's own do."""
    client = node(platform(PRICED, pools(("main", 4, None), ("fast", 4, FAST))))
    doc = request_doc(cores=(2, 2))
    doc["compute"]["metrics"] = [{"kind": METRIC_KIND, "type": SPEED, "min": 1.8}]
    doc["compute"]["costs"] = [{"kind": COST_KIND, "type": "urn:ebroker:cost:money:EUR",
                                "max": 10}]  # fmt: skip
    answer = ask(client, doc)
    assert {o["site"]["pools"][0] for o in answer["offers"]} == {"sim/fast"}
    doc["compute"]["costs"][0]["max"] = 0.01  # the component's cost limit applies too
    answer = ask(node(platform(PRICED, pools(("main", 4, None), ("fast", 4, FAST)))), doc)
    assert answer["result"] == "NO"


def test_a_need_no_pool_meets_is_no_with_the_closest(node) -> None:
    client = node(platform(PRICED, pools(("main", 4, None), ("fast", 4, FAST))))
    doc = {**request_doc(cores=(2, 2)), "metrics": [{"type": SPEED, "min": 3}]}
    answer = ask(client, doc)
    assert answer["result"] == "NO" and answer["offers"] == []
    (reason,) = answer["meta"]["messages"]
    assert reason["level"] == "WARN"
    assert reason["values"] == {
        "need": f"{SPEED} at least 3", "metric": SPEED, "low": "2", "high": "2",
    }  # fmt: skip


def test_a_need_this_node_cannot_judge_is_noted_not_applied(node) -> None:
    needs = [{"type": "urn:example:metric:io", "min": 5}, {"min": 2}, {"type": SPEED}]
    answer = ask(node(platform(PRICED)), {**request_doc(), "metrics": needs})
    assert answer["result"] == "YES"
    noted = [m["values"]["need"] for m in answer["meta"]["messages"]]
    assert noted == ["urn:example:metric:io at least 5", "2"]  # the one with no bound is none


# --- the aggregator's order: cost ---------------------------------------------------------------


def upstream_offer(uuid: str, start: str, *costs: dict[str, Any]) -> UpstreamOffer:
    return UpstreamOffer.model_validate({
        "meta": {"uuid": uuid, "url": f"http://node/sessions/{uuid}"},
        "phase": "OFFERED",
        "schedule": {"available": {"start": f"{start}/PT0S", "duration": "PT1H"}},
        "costs": list(costs),
    })  # fmt: skip


def money(value: float, currency: str = "EUR") -> dict[str, Any]:
    return {"kind": COST_KIND, "type": f"urn:ebroker:cost:money:{currency}", "min": value,
            "max": value, "units": currency}  # fmt: skip


ENERGY = {"kind": COST_KIND, "type": "urn:ebroker:cost:energy:kWh", "min": 0.001, "max": 0.001}


def test_cost_of_reads_the_money_item() -> None:
    assert cost_of(upstream_offer("a", "2027-01-01T10:00:00Z", ENERGY, money(0.3))) == ("EUR", 0.3)
    assert cost_of(upstream_offer("a", "2027-01-01T10:00:00Z", ENERGY)) is None
    assert cost_of(upstream_offer("a", "2027-01-01T10:00:00Z", {"min": 2.0})) == ("", 2.0)


def test_order_cost_compares_like_with_like() -> None:
    offers = [
        upstream_offer("eur-dear", "2027-01-01T09:00:00Z", ENERGY, money(0.5)),
        upstream_offer("free-of-price", "2027-01-01T08:00:00Z", ENERGY),
        upstream_offer("gbp-cheap", "2027-01-01T09:00:00Z", money(0.01, "GBP")),
        upstream_offer("eur-cheap-late", "2027-01-01T12:00:00Z", money(0.2)),
        upstream_offer("eur-cheap-early", "2027-01-01T10:00:00Z", money(0.2)),
    ]
    candidates = [Candidate("site", 1.0, o) for o in offers]
    order = [c.offer.meta.uuid for c in rank(candidates, "cost", 10)]
    # EUR, the most common currency, first and cheapest first (earlier first among equals);
    # then GBP; then the offer with no price
    assert order == ["eur-cheap-early", "eur-cheap-late", "eur-dear", "gbp-cheap", "free-of-price"]
    # earliest first; among offers starting together, the cheaper first (the main currency's
    # before others')
    assert [c.offer.meta.uuid for c in rank(candidates, "earliest", 3)] == [
        "free-of-price", "eur-dear", "gbp-cheap",
    ]  # fmt: skip
