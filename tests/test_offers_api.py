"""POST /requests: defaults, windows, NO answers with reasons."""

from __future__ import annotations

import calendar
import time
from dataclasses import FrozenInstanceError, replace
from datetime import UTC, datetime, timedelta

import pytest

from broker_core.kinds.request import parse_request
from broker_core.offers import service
from broker_core.offers.context import SearchContext
from broker_core.offers.demand import resolve
from broker_core.offers.policy import Verdict
from broker_core.offers.service import request_offers
from broker_core.pricing import budget_for
from tests.conftest import ACCEPT, offered_start, request_doc


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def offers_of(client, doc):
    r = client.post("/requests", json=doc)
    assert r.status_code == 200, r.text
    return r.json()


def test_defaults_when_nothing_is_said(client):
    doc = request_doc()
    del doc["compute"]
    answer = offers_of(client, doc)
    assert answer["result"] == "YES"
    offer = answer["offers"][0]
    assert offer["compute"]["cores"] == {"min": 1, "max": 1}
    assert offer["schedule"]["available"]["duration"] == "PT1H"  # the default duration
    start = parse(offered_start(offer))
    assert start - datetime.now(UTC) < timedelta(minutes=2)  # as soon as possible
    assert offer["meta"]["options"] == [
        {
            "kind": "uri:enum-value-option",
            "path": "phase",
            "values": ["ACCEPTED", "REJECTED", "CANCELLED"],
        }
    ]
    assert parse(offer["expires"]) > datetime.now(UTC)


def test_offers_lie_inside_the_requested_intervals(client):
    tomorrow = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(1)
    day = [tomorrow + timedelta(days=d) for d in range(3)]
    windows = [f"{iso(d + timedelta(hours=9))}/{iso(d + timedelta(hours=12))}" for d in day]
    answer = offers_of(client, request_doc((1, 2), duration="PT4H", start=windows))
    starts = [parse(offered_start(o)) for o in answer["offers"]]
    assert len(starts) == 3
    for day, start in enumerate(starts):
        assert tomorrow + timedelta(days=day, hours=9) <= start
        assert start <= tomorrow + timedelta(days=day, hours=12)
    assert all(o["schedule"]["available"]["duration"] == "PT4H" for o in answer["offers"])


def test_start_duration_and_duration_end_intervals(client):
    base = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    for start in (f"{iso(base)}/PT2H", f"PT2H/{iso(base + timedelta(hours=2))}"):
        answer = offers_of(client, request_doc(start=start))
        first = parse(offered_start(answer["offers"][0]))
        assert base <= first <= base + timedelta(hours=2)


def test_offers_are_distinct_alternatives_earliest_first(client):
    answer = offers_of(client, request_doc((2, 4)))
    starts = [offered_start(o) for o in answer["offers"]]
    assert starts == sorted(starts) and len(set(starts)) == len(starts) == 4


def test_no_with_a_reason_when_capacity_is_short(client):
    week = "P1D"  # 10 of 16 cores busy for a day
    answer = offers_of(client, request_doc((10, 10), duration=week))
    session = answer["offers"][0]["meta"]["uuid"]
    assert client.post(f"/sessions/{session}", json=ACCEPT).status_code == 200
    answer = offers_of(client, request_doc((8, 8), start=f"{iso(datetime.now(UTC))}/PT6H"))
    assert answer["result"] == "NO" and answer["offers"] == []
    messages = [m["message"] for m in answer["meta"]["messages"]]
    assert "at most 6 cores free in the requested window; 8 needed" in messages


def test_no_when_more_is_asked_than_the_node_has(client):
    answer = offers_of(client, request_doc((64, 64)))
    assert answer["result"] == "NO"
    assert "this node has at most 16 cores in any pool; 64 needed" in [
        m["message"] for m in answer["meta"]["messages"]
    ]


def test_no_when_the_window_is_beyond_the_lookahead(client):
    far = datetime.now(UTC) + timedelta(days=30)
    answer = offers_of(client, request_doc(start=f"{iso(far)}/PT1H"))
    assert answer["result"] == "NO"
    assert "look-ahead" in answer["meta"]["messages"][0]["message"]


def test_no_when_the_duration_is_too_long(client):
    answer = offers_of(client, request_doc(duration="P30D"))
    assert answer["result"] == "NO"
    assert "longer than this node's maximum" in answer["meta"]["messages"][0]["message"]


def test_no_offer_sets_can_be_read_back(client):
    answer = offers_of(client, request_doc((64, 64)))
    again = client.get(f"/offersets/{answer['meta']['uuid']}")
    assert again.status_code == 200 and again.json()["result"] == "NO"


def test_storage_is_booked_and_split_over_the_storage_resources(client):
    doc = request_doc()
    storage = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/storage/simple-storage-resource.yaml"
    doc["storage"] = [
        {"kind": storage, "meta": {"name": "a"}, "size": {"min": 10, "max": 20}},
        {"kind": storage, "meta": {"name": "b"}, "size": {"min": 5, "max": 5}},
    ]
    offer = offers_of(client, doc)["offers"][0]
    assert [s["size"] for s in offer["storage"]] == [{"min": 20, "max": 20}, {"min": 5, "max": 5}]
    doc["storage"][0]["size"] = {"min": 2000, "max": 2000}
    answer = offers_of(client, doc)
    assert answer["result"] == "NO"
    assert any("GiB of storage" in m["message"] for m in answer["meta"]["messages"])


def test_the_legacy_offersets_path_is_an_alias(client):
    r = client.post("/offersets", json=request_doc())
    assert r.status_code == 200 and r.json()["result"] == "YES"


def test_offers_avoid_capacity_the_platform_gave_away_outside_the_broker(broker):
    """A platform's own reservations and maintenance windows (``external_claims``)."""
    from platforms.contract import ExternalClaim, PlatformError

    now = int(time.time())
    platform = broker.platforms[0]
    busy_until = now + 7200
    platform.external_claims = lambda start, end: [  # type: ignore[method-assign]
        ExternalClaim("main", "cores", 16, now - 60, busy_until, "maintenance")
    ]
    answer = request_offers(broker, request_doc(cores=(1, 1), duration="PT1H"))
    assert answer["result"] == "YES"
    for offer in answer["offers"]:
        starts = offer["schedule"]["preparing"]["start"]
        assert calendar.timegm(time.strptime(starts, "%Y-%m-%dT%H:%M:%SZ")) >= busy_until

    def unreachable(start: int, end: int) -> list:
        raise PlatformError("the cluster does not answer")

    platform.external_claims = unreachable  # type: ignore[method-assign]
    answer = request_offers(broker, request_doc(cores=(1, 1), duration="PT1H"))
    assert answer["result"] == "NO"  # the platform is left out of the search, not a 500
    assert "platform sim is unavailable: the cluster does not answer" in [
        m["message"] for m in answer["meta"]["messages"]
    ]


def test_one_search_context_carries_a_request_through_search_and_explanation(broker):
    """The search steps take one frozen context instead of the same seven values each; a step
    that searches later works on a copy with another ``now``, sharing the verdict."""
    request = parse_request(request_doc((500, 500)), broker.registry).request
    demand = resolve(request, broker.config.offers)
    plans, _ = service._plans(broker, request)
    context = SearchContext(
        broker=broker, request=request, document={}, demand=demand, plans=plans,
        verdict=Verdict(demand), budget=budget_for(broker.config, []), now=int(time.time()),
    )  # fmt: skip
    with broker.db.snapshot() as session:
        outcome, searches = service._search_within(context, session)
    assert outcome.slots == [] and searches
    (reason,) = service._explain(context, outcome, searches)
    assert reason.template.startswith("this node has at most {capacity}")
    assert reason.values["needed"] == 500
    later = replace(context, now=context.now + 60)
    assert later.verdict is context.verdict and later.max_offers == broker.config.offers.max_offers
    assert replace(context, direct=True).max_offers == 1
    with pytest.raises(FrozenInstanceError):
        context.now = 0  # type: ignore[misc]
