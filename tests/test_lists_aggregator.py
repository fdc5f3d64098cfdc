"""The lists and the withdrawal through an aggregator: two real node processes behind it (each
trusting one real OIDC issuer), a dead upstream, and one the caller's token is not passed to.
Two users: each sees only their own, merged from both nodes; the dead upstream is reported,
never fatal; withdrawing a merged offer set rejects its offers on each node."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from starlette.testclient import TestClient

from aggregator.config import AggregatorConfig
from aggregator.http.app import create_aggregator_app
from tests.conftest import ACCEPT, POOL_CONFIG, request_doc
from tests.nodes import Node, free_port, start_node
from tests.oidc_issuer import OidcIssuer

pytestmark = pytest.mark.slow  # real processes or fuzzing: `-m 'not slow'` leaves it out

WITHDRAW = {**ACCEPT, "value": "REJECTED"}
PROBLEM = "application/problem+json"



@pytest.fixture(scope="module")
def nodes(issuer: OidcIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    tmp = tmp_path_factory.mktemp("lists-aggregator")
    started = []
    try:
        for name in ("a", "b"):
            config = {
                **POOL_CONFIG,
                "site": {"name": name},
                "database": {"url": f"sqlite:///{tmp / f'{name}.db'}"},
                "offers": {"max_offers": 2},
                "auth": {**issuer.auth_config(), "admin_groups": ["test:admins"]},
                "holds": {"caller": {}, "anonymous": {}, "replace": False},
                "lifecycle": {"enabled": False, "workdir": str(tmp / name)},
            }
            path = tmp / f"{name}.yaml"
            path.write_text(yaml.safe_dump(config))
            started.append(start_node(path, tmp, name))
        yield started
    finally:
        for node in started:
            node.stop()


@pytest.fixture
def aggregator(nodes: list[Node], tmp_path: Path) -> Iterator[TestClient]:
    a, b = nodes
    config = AggregatorConfig.model_validate({
        "server": {"validate_responses": True, "public_url": "http://aggregator.test"},
        "database": {"url": f"sqlite:///{tmp_path / 'agg.db'}"},
        "fanout": {"deadline": "PT5S", "max_offers": 4},
        "breaker": {"failures": 100},
        "upstreams": [
            {"name": "a", "url": a.url, "forward_token": True},
            {"name": "b", "url": b.url, "forward_token": True},
            {"name": "dead", "url": f"http://127.0.0.1:{free_port()}", "forward_token": True,
             "timeout": "PT1S"},
            # the aggregator's own token here: it would list every caller's, so it is not asked
            {"name": "private", "url": a.url},
        ],
    })  # fmt: skip
    with TestClient(create_aggregator_app(config), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(scope="module")
def users(issuer: OidcIssuer) -> dict[str, dict[str, str]]:
    def bearer(sub: str, *groups: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {issuer.token(sub=sub, groups=groups, expires_in=3600)}"}

    return {"alice": bearer("alice"), "bob": bearer("bob"), "root": bearer("root", "admins")}


def at(hours: int) -> str:
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return (base + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def ask(client: Any, who: dict[str, str], hours: int) -> dict[str, Any]:
    """Offers for an hour, starting within 4 hours from ``hours`` after the next whole hour."""
    schedule = {"start": [f"{at(hours)}/PT4H"], "duration": "PT1H"}
    r = client.post("/requests", json=request_doc(**schedule), headers=who)
    assert r.status_code == 200, r.text
    assert r.json()["result"] == "YES", r.text
    return r.json()


def walk(client: TestClient, path: str, who: dict[str, str], between: Any = None,
         **params: Any) -> list[dict[str, Any]]:  # fmt: skip
    answers, cursor = [], None
    for pages in range(1, 50):
        r = client.get(path, params={**params, **({"cursor": cursor} if cursor else {})},
                       headers=who)  # fmt: skip
        assert r.status_code == 200, r.text
        answers.append(r.json())
        cursor = r.json().get("next")
        if cursor is None:
            assert "link" not in r.headers
            return answers
        assert r.headers["link"].startswith(f"<http://aggregator.test{path}?")
        if between is not None:
            between(pages)
    raise AssertionError("the list never ended")


def texts(answer: dict[str, Any]) -> str:
    return " ".join(m["message"] for m in answer.get("messages", []))


def test_sessions_merged_from_both_nodes_with_one_upstream_down(aggregator, nodes, users):
    alice, bob = users["alice"], users["bob"]
    merged = [ask(aggregator, alice, hours) for hours in (1, 30)]
    by_aggregator = {o["meta"]["uuid"] for m in merged for o in m["offers"]}
    assert {o["site"]["name"] for m in merged for o in m["offers"]} == {"a", "b"}
    bobs = {o["meta"]["uuid"] for o in ask(aggregator, bob, 1)["offers"]}
    # one of hers made at node b itself, which the aggregator never saw
    own = ask(httpx.Client(base_url=nodes[1].url), alice, 10)
    at_node = {o["meta"]["uuid"] for o in own["offers"]}
    late: set[str] = set()

    def insert(pages: int) -> None:  # one made through the aggregator between pages
        if pages == 1:
            late.update(o["meta"]["uuid"] for o in ask(aggregator, alice, 60)["offers"])

    answers = walk(aggregator, "/sessions", alice, insert, limit=3)
    items = [i for a in answers for i in a["items"]]
    uuids = [i["uuid"] for i in items]
    assert len(uuids) == len(set(uuids)), "a session was listed twice"
    assert set(uuids) == by_aggregator | at_node | late  # hers, all of them, none of bob's
    assert not set(uuids) & bobs
    assert [i["start"] for i in items] == sorted(i["start"] for i in items)
    for i in items:
        assert i["owner"] == "test:alice" and i["upstream"] in ("a", "b")
        if i["uuid"] in at_node:  # the node's own uuid and href
            assert i["upstream"] == "b" and i["href"] == f"{nodes[1].url}/sessions/{i['uuid']}"
            assert i["offerset"] == own["meta"]["uuid"]
        else:  # the aggregator's: its other operations know it
            assert i["href"] == f"http://aggregator.test/sessions/{i['uuid']}"
            r = aggregator.get(f"/sessions/{i['uuid']}", headers=alice)
            assert r.status_code == 200 and r.json()["phase"] == i["phase"]
    for answer in answers:  # each page says what it could not list, and why
        assert "upstream dead failed" in texts(answer), answer
        assert "upstream private is not listed" in texts(answer)
    # bob sees his, and none of hers; an admin sees both
    assert {i["uuid"] for a in walk(aggregator, "/sessions", bob) for i in a["items"]} == bobs
    everyone = {i["uuid"] for a in walk(aggregator, "/sessions", users["root"]) for i in a["items"]}
    assert set(uuids) | bobs <= everyone
    # filters are passed on
    accepted = next(iter(by_aggregator))
    assert aggregator.post(f"/sessions/{accepted}", json=ACCEPT, headers=alice).status_code == 200
    only = walk(aggregator, "/sessions", alice, phase="ACCEPTED")
    assert [i["uuid"] for a in only for i in a["items"]] == [accepted]


def test_offersets_merged_and_withdrawn_on_each_node(aggregator, nodes, users):
    alice, bob = users["alice"], users["bob"]
    merged = ask(aggregator, alice, 5)
    offers = {o["meta"]["uuid"]: o["site"]["name"] for o in merged["offers"]}
    assert set(offers.values()) == {"a", "b"}
    listed = [i for a in walk(aggregator, "/offersets", alice, state="open") for i in a["items"]]
    assert {i["upstream"] for i in listed} >= {"a", "b"}
    assert all(i["owner"] == "test:alice" and i["state"] == "open" for i in listed)
    assert not [i for a in walk(aggregator, "/offersets", bob) for i in a["items"]
                if i["owner"] != "test:bob"]  # fmt: skip

    def open_at_nodes() -> dict[str, int]:
        counts = {}
        for name, node in zip("ab", nodes, strict=True):
            r = httpx.get(f"{node.url}/offersets", params={"state": "open"}, headers=alice)
            assert r.status_code == 200
            counts[name] = len(r.json()["items"])
        return counts

    before = open_at_nodes()
    uuid = merged["meta"]["uuid"]
    r = aggregator.post(f"/offersets/{uuid}", json=WITHDRAW, headers=bob)
    assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM)
    r = aggregator.post(f"/offersets/{uuid}", json=WITHDRAW, headers=alice)
    assert r.status_code == 200, r.text
    assert {o["meta"]["uuid"]: o["phase"] for o in r.json()["offers"]} == dict.fromkeys(
        offers, "REJECTED"
    )
    # on the nodes themselves, the offer set each made for it is closed now
    assert open_at_nodes() == {name: count - 1 for name, count in before.items()}
    again = aggregator.post(f"/offersets/{uuid}", json=WITHDRAW, headers=alice)
    assert again.status_code == 200
    assert {o["phase"] for o in again.json()["offers"]} == {"REJECTED"}


@pytest.mark.parametrize(
    ("params", "parameter"),
    [({"limit": 0}, "limit"), ({"phase": "DONE"}, "phase"), ({"cursor": "eA"}, "cursor"),
      ({"from": "2030-01-02T00:00:00Z", "to": "2030-01-01T00:00:00Z"}, "to")],
)  # fmt: skip
def test_bad_parameters_on_the_aggregator(aggregator, users, params, parameter):
    r = aggregator.get("/sessions", params=params, headers=users["alice"])
    assert r.status_code == 400 and r.headers["content-type"].startswith(PROBLEM)
    assert [e["parameter"] for e in r.json()["errors"]] == [parameter]


def test_naming_another_owner_is_refused_by_every_node(aggregator, users):
    r = aggregator.get("/sessions", params={"owner": "test:bob"}, headers=users["alice"])
    assert r.status_code == 403 and r.headers["content-type"].startswith(PROBLEM)
    r = aggregator.get("/sessions", params={"owner": "test:bob"}, headers=users["root"])
    assert r.status_code == 200
    assert {i["owner"] for i in r.json()["items"]} <= {"test:bob"}


def test_a_series_occurrences_are_listed_under_the_aggregators_uuids(aggregator, issuer):
    """A client finds each occurrence of a series accepted through the aggregator in its list,
    under the uuid the aggregator serves it by, and cancels one from there."""
    carol = {"Authorization": f"Bearer {issuer.token(sub='carol', expires_in=3600)}"}
    doc = request_doc(start=at(2), duration="PT1H", recurrence={"rule": "FREQ=DAILY;COUNT=3"})
    answer = aggregator.post("/requests", json=doc, headers=carol).json()
    assert answer["result"] == "YES", answer["meta"]
    uuid = answer["offers"][0]["meta"]["uuid"]
    accepted = aggregator.post(f"/sessions/{uuid}", json=ACCEPT, headers=carol)
    assert accepted.status_code == 200, accepted.text
    occurrences = accepted.json()["series"]["occurrences"]
    listed = {i["uuid"]: i for a in walk(aggregator, "/sessions", carol) for i in a["items"]}
    # the series (and the other node's, rejected) and the occurrences, all by the aggregator's
    assert set(listed) == {o["meta"]["uuid"] for o in answer["offers"]} | {
        o["uuid"] for o in occurrences}  # fmt: skip
    assert "series" not in listed[uuid]
    for o in occurrences:
        item = listed[o["uuid"]]
        assert (item["series"], item["occurrence"]) == (uuid, o["index"])
        assert item["href"] == f"http://aggregator.test/sessions/{o['uuid']}"
        assert item["offerset"] == answer["meta"]["uuid"]
    one = listed[occurrences[1]["uuid"]]
    cancelled = aggregator.post(f"/sessions/{one['uuid']}", json=ACCEPT | {"value": "CANCELLED"},
                                headers=carol)  # fmt: skip
    assert cancelled.status_code == 200 and cancelled.json()["phase"] == "CANCELLED"
    again = {i["uuid"]: i for a in walk(aggregator, "/sessions", carol) for i in a["items"]}
    assert again[one["uuid"]]["phase"] == "CANCELLED"
    series = aggregator.get(f"/sessions/{uuid}", headers=carol).json()["series"]
    assert [o["phase"] for o in series["occurrences"]][1] == "CANCELLED"


def test_a_combined_offer_set_is_listed_once_to_its_owner_alone(aggregator, nodes, users):
    """A combined request's offer set is the aggregator's: it is listed in place of its parts'
    node offer sets (which the nodes list to their owner only), once over all pages, and it
    is shown, updated and withdrawn for its owner alone."""
    alice, bob = users["alice"], users["bob"]
    schedule = {"start": [f"{at(60)}/PT4H"], "duration": "PT1H"}
    doc = {"parts": [{"name": "x", "site": "a", "request": request_doc(**schedule)},
                     {"name": "y", "site": "b", "request": request_doc(**schedule)}]}  # fmt: skip
    r = aggregator.post("/requests", json=doc, headers=alice)
    assert r.status_code == 200 and r.json()["result"] == "YES", r.text
    uuid = r.json()["meta"]["uuid"]
    session = f"/sessions/{r.json()['offers'][0]['meta']['uuid']}"
    parts = {httpx.get(p["url"], headers=alice).json()["offerset"]["uuid"]
             for o in r.json()["offers"] for p in o["parts"]}  # fmt: skip

    def listed(who: dict[str, str], **params: Any) -> list[dict[str, Any]]:
        return [i for a in walk(aggregator, "/offersets", who, limit=1, **params)
                for i in a["items"]]  # fmt: skip

    items = listed(alice)
    mine = [i for i in items if i["uuid"] == uuid]
    assert len(mine) == 1, items
    assert mine[0]["href"] == f"http://aggregator.test/offersets/{uuid}"
    assert mine[0]["upstream"] == "a+b" and mine[0]["owner"] == "test:alice"
    assert mine[0]["state"] == "open" and mine[0]["result"] == "YES"
    assert mine[0]["offers"] == {"OFFERED": len(r.json()["offers"])}
    assert not parts & {i["uuid"] for i in items}  # its parts' offer sets give way to it
    assert uuid not in {i["uuid"] for i in listed(bob)}
    assert uuid not in {i["uuid"] for i in listed(alice, state="closed")}
    assert uuid in {i["uuid"] for i in listed(alice, result="YES")}
    got = aggregator.get(f"/offersets/{uuid}", headers=alice)
    assert got.status_code == 200 and got.json()["offers"][0]["parts"], got.text
    # another user: as if there were none, whatever they try
    assert aggregator.get(f"/offersets/{uuid}", headers=bob).status_code == 404
    assert aggregator.get(session, headers=bob).status_code == 404
    assert aggregator.post(session, json=WITHDRAW, headers=bob).status_code == 404
    assert aggregator.post(f"/offersets/{uuid}", json=WITHDRAW, headers=bob).status_code == 404
    assert aggregator.get(session, headers=alice).json()["phase"] == "OFFERED"
    r = aggregator.post(f"/offersets/{uuid}", json=WITHDRAW, headers=alice)
    assert r.status_code == 200, r.text
    (closed,) = [i for i in listed(alice, state="closed") if i["uuid"] == uuid]
    assert closed["offers"] == {"REJECTED": len(r.json()["offers"])}
