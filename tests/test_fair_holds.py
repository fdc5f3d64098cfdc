"""Fair holds: what one caller or project may hold in open offers, the 429s and NOs beyond the
limits, replacing an open offer set, probes (offers that hold nothing), and the greedy caller
of issue 13 who held a whole pool for the whole look-ahead."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from sqlmodel import select
from starlette.testclient import TestClient

from broker_core.broker import Broker
from broker_core.db.tables import HELD, Booking, ExecutionSession
from broker_core.offers.fairness import ProbeRate
from tests.conftest import ACCEPT, offered_start, request_doc
from tests.invariants import overbookings, state_problems
from tests.oidc_issuer import OidcIssuer

REJECT = {"kind": "uri:enum-value-update", "path": "phase", "value": "REJECTED"}
SIM_OPTIONS = {"base_preparation": "PT0S", "image_pull": "PT0S", "data_staging": "PT0S"}
# the pool of the probe of issue 13
POOL = {
    "name": "main",
    "inventories": {"cores": {"total": 64}, "memory": {"total": 4096}, "storage": {"total": 10000}},
}



@pytest.fixture
def node(
    issuer: OidcIssuer,
    broker_factory: Callable[..., Broker],
    client_factory: Callable[[Broker], TestClient],
    sqlite_url: str,
) -> Callable[..., tuple[Broker, TestClient]]:
    """A node with a 64-core pool, anonymous callers allowed, and the given ``holds``
    (the defaults when none are given)."""

    def make(database_url: str = sqlite_url, **overrides: Any) -> tuple[Broker, TestClient]:
        config: dict[str, Any] = {
            "platforms": [{"name": "sim", "type": "simulated", "options": SIM_OPTIONS,
                           "pools": [POOL]}],
            "auth": issuer.auth_config(anonymous=True),
            "holds": {},
            **overrides,
        }  # fmt: skip
        broker = broker_factory(database_url, **config)
        return broker, client_factory(broker)

    return make


def caller(issuer: OidcIssuer, sub: str, *groups: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.token(sub=sub, groups=groups)}"}


def ask(client: TestClient, doc: dict[str, Any], headers: dict[str, str] | None = None,
        **params: Any) -> Any:  # fmt: skip
    r = client.post("/requests", json=doc, headers=headers or {}, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def texts(answer: dict[str, Any]) -> str:
    return " | ".join(m["message"] for m in answer["meta"].get("messages", []))


def held_bookings(broker: Broker, owner: str | None = None) -> list[Booking]:
    with broker.db.read() as s:
        query = select(Booking).where(Booking.state == HELD)
        if owner is not None:
            query = query.join(
                ExecutionSession,
                ExecutionSession.uuid == Booking.session_uuid,  # type: ignore[arg-type]
            ).where(ExecutionSession.owner == owner)
        return list(s.exec(query).all())


def hours_from_now(offer: dict[str, Any]) -> float:
    start = datetime.fromisoformat(offered_start(offer).replace("Z", "+00:00"))
    return (start - datetime.now(UTC)).total_seconds() / 3600


# --- the findings of issue 13 ------------------------------------------------------------------


def test_one_anonymous_request_for_the_whole_pool_over_the_lookahead_holds_nothing(
    node, issuer, sqlite_url
):
    """Before: one anonymous request for all 64 cores over P7D held the whole pool, and every
    other user was refused for the whole hold. Now anonymous callers together may hold a
    quarter of the look-ahead's core-hours (and, where the site sets it, a share of a pool): a
    NO that names the limits and says what would fit."""
    broker, client = node()
    answer = ask(client, request_doc(cores=(64, 64), duration="P7D"))
    assert answer["result"] == "NO"
    said = texts(answer)
    assert "holds.anonymous" in said and "ask for at most 16 cores for P7D" in said
    assert held_bookings(broker) == []
    shared = {"anonymous": {"lookahead_share": 0.05, "pool_share": 0.25}}
    broker, client = node(sqlite_url + "-shared", holds=shared)
    said = texts(ask(client, request_doc(cores=(64, 64), duration="P7D")))
    assert "holds.anonymous.pool_share" in said and "at most 16 cores here; 64 needed" in said
    assert held_bookings(broker) == []
    other = ask(client, request_doc(cores=(64, 64), duration="PT1H"), caller(issuer, "bob"))
    assert other["result"] == "YES" and hours_from_now(other["offers"][0]) < 0.1


def test_the_greedy_caller_cannot_starve_another_user(node, issuer):
    """Before: one caller filled a 64-core pool for the whole look-ahead with 95 requests in
    1.8 s and kept it by asking again before its offers expired; 0 of 124 other requests were
    served. Now it holds at most its limits however often it asks, and another user is still
    offered the whole pool within the look-ahead."""
    broker, client = node()
    greedy = caller(issuer, "greedy")
    statuses: dict[int, int] = {}
    for _ in range(2):  # the second round asks again, before the first's offers expire
        for i in range(48):
            doc = request_doc(cores=(64, 64), duration=f"PT6H{i}M")
            r = client.post("/requests", json=doc, headers=greedy)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code == 429:
                assert int(r.headers["Retry-After"]) >= 1
                assert r.headers["content-type"] == "application/problem+json"
    assert statuses.get(429, 0) > 0 and set(statuses) <= {200, 429}
    mine = held_bookings(broker, "test:greedy")
    held_hours = sum(64 * (b.end_at - b.start_at) for b in mine) / 3600
    assert held_hours <= 0.25 * 64 * 7 * 24  # holds.caller.lookahead_share of P7D
    assert len({b.offerset_uuid for b in mine}) <= 8  # holds.caller.offer_sets

    victim = ask(client, request_doc(cores=(64, 64), duration="PT1H"), caller(issuer, "victim"))
    assert victim["result"] == "YES", texts(victim)
    assert hours_from_now(victim["offers"][0]) < 7 * 24


def test_holds_count_against_a_projects_concurrency_cap(node, issuer):
    """Before: the allocations policy counted only accepted sessions, so a project's members
    could hold any amount in open offers beside its concurrency cap. Now holds count."""
    allocations = {
        "name": "allocations",
        "type": "allocations",
        "options": {"projects": [{"name": "astro", "members": {"groups": ["astro"]},
                                  "concurrency": {"cores": 32}}]},
    }  # fmt: skip
    _, client = node(policies=[allocations])
    window = {"start": _next_hour(2) + "/PT0S", "duration": "PT1H"}
    first = ask(client, request_doc(cores=(32, 32), **window), caller(issuer, "ann", "astro"))
    assert first["result"] == "YES"
    second = ask(client, request_doc(cores=(32, 32), **window), caller(issuer, "ben", "astro"))
    assert second["result"] == "NO"
    assert "concurrency cap of project astro" in texts(second)


# --- the limits ----------------------------------------------------------------------------


def test_open_offer_sets_beyond_the_limit_are_429_with_when_the_oldest_expires(node, issuer):
    _, client = node(holds={"caller": {"offer_sets": 2}})
    alice = caller(issuer, "alice")
    first = ask(client, request_doc(duration="PT1H"), alice)
    ask(client, request_doc(duration="PT2H"), alice)
    r = client.post("/requests", json=request_doc(duration="PT3H"), headers=alice)
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["status"] == 429 and problem["limit"] == "holds.caller.offer_sets"
    assert 250 <= int(r.headers["Retry-After"]) <= 300  # offers.hold is PT5M
    assert "2 open offer sets" in problem["detail"]
    # another caller is not concerned; rejecting its offers frees one of alice's sets
    assert ask(client, request_doc(duration="PT3H"), caller(issuer, "bob"))["result"] == "YES"
    for offer in first["offers"]:
        client.post(f"/sessions/{offer['meta']['uuid']}", json=REJECT, headers=alice)
    assert ask(client, request_doc(duration="PT3H"), alice)["result"] == "YES"


def test_held_resource_hours_cut_the_offers_then_429_then_no(node, issuer):
    _, client = node(holds={"caller": {"resource_hours": {"cores": 10}}})
    alice = caller(issuer, "alice")
    first = ask(client, request_doc(cores=(4, 4), duration="PT1H"), alice)
    assert len(first["offers"]) == 2  # 4 core-hours each: two fit in 10
    r = client.post("/requests", json=request_doc(cores=(4, 4), duration="PT2H"), headers=alice)
    assert r.status_code == 429 and r.json()["limit"] == "holds.caller"
    assert "holds 8 of the 10 core-hours" in r.json()["detail"]
    # smaller offers where a range allows them
    small = ask(client, request_doc(cores=(1, 4), duration="PT1H"), alice)
    assert small["result"] == "YES" and small["offers"][0]["compute"]["cores"]["max"] == 2
    # beyond the whole limit waiting does not help: a NO saying what fits
    big = ask(client, request_doc(cores=(16, 16), duration="PT1H"), caller(issuer, "bob"))
    assert big["result"] == "NO"
    assert "ask for at most 10 cores for PT1H, or at most PT37M30S with 16" in texts(big)


def test_a_pool_share_caps_what_a_caller_holds_at_any_instant(node, issuer):
    _, client = node(holds={"caller": {"pool_share": 0.5}})
    alice = caller(issuer, "alice")
    answer = ask(client, request_doc(cores=(1, 64), duration="PT1H"), alice)
    assert {o["compute"]["cores"]["max"] for o in answer["offers"]} == {32}
    # the next offers of the same caller leave its holds' instants alone
    again = ask(client, request_doc(cores=(32, 64), duration="PT2H"), alice)
    assert again["result"] == "YES"
    refused = ask(client, request_doc(cores=(40, 64)), alice)
    assert refused["result"] == "NO"
    assert "at most 32 cores here; 40 needed" in texts(refused)


def test_callers_can_be_given_their_own_limits(node, issuer):
    """An aggregator calling with a token of its own is one caller for many users."""
    aggregators = {"name": "aggregators", "groups": ["aggregators"], "offer_sets": 3}
    holds = {"caller": {"offer_sets": 1}, "callers": [aggregators]}
    _, client = node(holds=holds)
    aggregator = caller(issuer, "national", "aggregators")
    for hours in (1, 2, 3):
        ask(client, request_doc(duration=f"PT{hours}H"), aggregator)
    r = client.post("/requests", json=request_doc(duration="PT4H"), headers=aggregator)
    assert r.status_code == 429 and r.json()["limit"] == "holds.callers[aggregators].offer_sets"


def test_anonymous_callers_may_be_given_probes_only(node):
    broker, client = node(holds={"anonymous": {"offer_sets": 0}})
    answer = ask(client, request_doc())
    assert answer["result"] == "NO" and "?probe=true" in texts(answer)
    assert ask(client, request_doc(), probe="true")["result"] == "YES"
    assert held_bookings(broker) == []


def test_no_limits_when_configured_so(node):
    _, client = node(holds={"anonymous": {}})
    for hours in range(1, 12):
        assert ask(client, request_doc(duration=f"PT{hours}H"))["result"] == "YES"


# --- replacing an open offer set -----------------------------------------------------------


def test_a_new_request_for_the_same_thing_replaces_the_open_offer_set(node, issuer):
    broker, client = node()
    alice = caller(issuer, "alice")
    doc = request_doc(cores=(64, 64), duration="PT1H")
    first = ask(client, doc, alice)
    renewed = ask(client, {**doc, "meta": {"name": "asked again"}}, alice)
    # the same slot again, since the old holds are freed with the new claim
    assert offered_start(renewed["offers"][0]) == offered_start(first["offers"][0])
    old = client.get(f"/sessions/{first['offers'][0]['meta']['uuid']}", headers=alice).json()
    assert old["phase"] == "EXPIRED"
    assert {b.offerset_uuid for b in held_bookings(broker)} == {renewed["meta"]["uuid"]}
    r = client.post(f"/sessions/{first['offers'][0]['meta']['uuid']}", json=ACCEPT, headers=alice)
    assert r.status_code == 409
    # another request, or the same one from another caller, replaces nothing
    ask(client, request_doc(cores=(64, 64), duration="PT2H"), alice)
    ask(client, doc, caller(issuer, "bob"))
    assert len({b.offerset_uuid for b in held_bookings(broker)}) == 3


def test_anonymous_callers_never_replace_each_others_offers(node):
    broker, client = node(holds={"anonymous": {"offer_sets": 4}})
    doc = request_doc(duration="PT1H")
    ask(client, doc)
    ask(client, doc)
    assert len({b.offerset_uuid for b in held_bookings(broker)}) == 2


def test_replacing_is_off_when_configured_so(node, issuer):
    broker, client = node(holds={"replace": False})
    alice = caller(issuer, "alice")
    ask(client, request_doc(duration="PT1H"), alice)
    ask(client, request_doc(duration="PT1H"), alice)
    assert len({b.offerset_uuid for b in held_bookings(broker)}) == 2


# --- probes --------------------------------------------------------------------------------


def test_a_probe_holds_nothing_and_says_so(node, issuer):
    broker, client = node()
    alice = caller(issuer, "alice")
    probe = ask(client, request_doc(cores=(64, 64), duration="PT1H"), alice, probe="true")
    assert probe["result"] == "YES" and all(o["probe"] is True for o in probe["offers"])
    assert "a probe: these offers hold nothing" in texts(probe)
    assert held_bookings(broker) == []
    # the slot is still there for anyone, and a probe counts against no hold limit
    real = ask(client, request_doc(cores=(64, 64), duration="PT1H"), caller(issuer, "bob"))
    assert offered_start(real["offers"][0]) == offered_start(probe["offers"][0])
    assert "probe" not in real["offers"][0]


def test_accepting_a_probe_claims_its_slot_afresh_or_is_a_409(node, issuer):
    broker, client = node()
    alice, bob = caller(issuer, "alice"), caller(issuer, "bob")
    doc = request_doc(cores=(64, 64), duration="PT1H")
    probe = ask(client, doc, alice, probe="true")
    chosen = probe["offers"][0]["meta"]["uuid"]
    r = client.post(f"/sessions/{chosen}", json=ACCEPT, headers=alice)
    assert r.status_code == 200 and r.json()["phase"] in ("ACCEPTED", "WAITING"), r.text
    assert "probe" not in r.json()
    with broker.db.read() as s:
        assert s.exec(select(Booking.state).where(Booking.session_uuid == chosen)).one() in (
            "CONFIRMED", "ACTIVE",
        )  # fmt: skip
    # a second probe's slot taken by a real request: the accept loses the race
    later = ask(client, doc, alice, probe="true")
    taken = ask(client, doc, bob)
    assert offered_start(taken["offers"][0]) == offered_start(later["offers"][0])
    assert client.post(f"/sessions/{taken['offers'][0]['meta']['uuid']}", json=ACCEPT,
                       headers=bob).status_code == 200  # fmt: skip
    r = client.post(f"/sessions/{later['offers'][0]['meta']['uuid']}", json=ACCEPT, headers=alice)
    assert r.status_code == 409 and r.headers["content-type"] == "application/problem+json"
    assert "taken" in r.json()["detail"] and r.json()["phase"] == "OFFERED"


def test_probes_are_bounded_per_caller(node, issuer):
    _, client = node(holds={"caller": {"probes_per_minute": 3}})
    alice = caller(issuer, "alice")
    for _ in range(3):
        ask(client, request_doc(), alice, probe="true")
    r = client.post("/requests", json=request_doc(), headers=alice, params={"probe": "true"})
    assert r.status_code == 429 and r.json()["limit"] == "holds.caller.probes_per_minute"
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert ask(client, request_doc(), caller(issuer, "bob"), probe="true")["result"] == "YES"
    assert ask(client, request_doc(), alice)["result"] == "YES"  # holding is not probing


def test_probe_rate_is_a_sliding_minute():
    rate = ProbeRate()
    assert [rate.take("a", 2, now=t) for t in (0.0, 1.0)] == [0.0, 0.0]
    assert rate.take("a", 2, now=2.0) == pytest.approx(58.0)
    assert rate.take("a", 2, now=60.5) == 0.0
    assert rate.take("b", None, now=2.0) == 0.0


# --- the booking invariant ------------------------------------------------------------------


def test_concurrent_requests_of_one_caller_never_exceed_its_limits(node, issuer, database_url):
    """Requests of one caller racing each other: the limit is checked again under the
    caller's lock, so the open offer sets never exceed it, on SQLite and PostgreSQL."""
    broker, client = node(database_url, holds={"caller": {"offer_sets": 3}})
    alice = caller(issuer, "alice")

    def one(i: int) -> int:
        doc = request_doc(duration=f"PT{i + 1}H")
        return client.post("/requests", json=doc, headers=alice).status_code

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(one, range(16)))
    assert sorted(set(codes)) == [200, 429] and codes.count(200) == 3
    assert len({b.offerset_uuid for b in held_bookings(broker, "test:alice")}) == 3


def test_renewals_racing_accepts_never_overbook(node, issuer, database_url):
    """A caller renewing its request while it accepts offers of the one it renews: every
    replaced hold is freed exactly once, and the pool is never overbooked."""
    broker, client = node(database_url)
    alice = caller(issuer, "alice")
    doc = request_doc(cores=(64, 64), duration="PT1H")

    def renew(_: int) -> None:
        answer = client.post("/requests", json=doc, headers=alice).json()
        for offer in answer.get("offers", [])[:1]:
            client.post(f"/sessions/{offer['meta']['uuid']}", json=ACCEPT, headers=alice)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(renew, range(24)))
    with broker.db.reader.connect() as conn:
        assert overbookings(conn) == []
        assert state_problems(conn) == []


def _next_hour(hours: int) -> str:
    start = (int(time.time()) // 3600 + hours) * 3600
    return datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_probe_answers_conform_to_the_standard(node, issuer, request):
    """A probe's offer set and offers validate against the standard's schema (``probe`` sits
    where it allows additions), in JSON, YAML and XML."""
    from tests.test_conformance import OFFERSET, conforms, load_standard, posted_in_yaml_and_xml

    standard = next(load_standard(request))
    _, client = node()
    doc = request_doc(cores=(1, 4), duration="PT1H")
    answer = conforms(standard, client, "POST", "/requests?probe=true", OFFERSET, json=doc)
    assert answer["offers"] and all(o["probe"] is True for o in answer["offers"])
    posted_in_yaml_and_xml(standard, client, "/requests?probe=true", yaml.safe_dump(doc).encode())


def test_a_429_in_xml_keeps_its_retry_after(node):
    _, client = node(holds={"anonymous": {"offer_sets": 1}})
    ask(client, request_doc(duration="PT1H"))
    r = client.post(
        "/requests", json=request_doc(duration="PT2H"), headers={"Accept": "application/xml"}
    )
    assert r.status_code == 429 and r.headers["content-type"].startswith("application/problem+xml")
    assert int(r.headers["Retry-After"]) >= 1


def test_a_class_no_pool_tracks_is_no_hold_limit(node, issuer):
    """A request's default memory is booked only where a pool tracks memory: a node without
    any sets no hold limit on it (its share of nothing would be a limit of zero)."""
    pool = {"name": "qpu", "inventories": {"cores": {"total": 64}}}
    platform = {"name": "sim", "type": "simulated", "options": SIM_OPTIONS, "pools": [pool]}
    _, client = node(platforms=[platform])
    doc = request_doc()
    del doc["compute"]["memory"]
    assert ask(client, doc, caller(issuer, "alice"))["result"] == "YES"
