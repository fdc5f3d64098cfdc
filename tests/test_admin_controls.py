"""The admin controls on a node, through its HTTP API: draining a pool, maintenance windows,
inventory changes and the audit log, for two users and an admin (tokens of a real OIDC issuer).

Most cases are rows of tables (the request, who makes it, the status and what the answer
holds), in the spirit of placement's gabbits; the races run many threads against one node on
SQLite and PostgreSQL, and check the booking table with the project's overbooking checker
(``tests/invariants.py``)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from broker_core.broker import Broker
from broker_core.http.app import create_app
from broker_core.node import build_broker, check_bookings
from tests.conftest import ACCEPT, POOL_CONFIG, make_config, request_doc
from tests.invariants import overbookings, state_problems
from tests.oidc_issuer import OidcIssuer

PROBLEM = "application/problem+json"
ROOT = "test:root"
CANCEL = {**ACCEPT, "value": "CANCELLED"}
# one platform of two pools: "main" (8 cores) and "small" (2 cores)
PLATFORMS = [
    {**POOL_CONFIG["platforms"][0], "name": "sim", "pools": [
        {"name": "main", "inventories": {"cores": {"total": 8}, "memory": {"total": 32},
                                         "storage": {"total": 100}}},
        {"name": "small", "inventories": {"cores": {"total": 2}, "memory": {"total": 8},
                                          "storage": {"total": 100}}},
    ]}
]  # fmt: skip
MAIN = "/pools/sim/main"



@pytest.fixture
def make_node(
    issuer: OidcIssuer, broker_factory: Callable[..., Broker]
) -> Iterator[Callable[..., tuple[TestClient, Broker]]]:
    clients: list[TestClient] = []

    def make(database_url: str, platforms: list[dict] = PLATFORMS) -> tuple[TestClient, Broker]:
        broker = broker_factory(
            database_url,
            platforms=platforms,
            auth={**issuer.auth_config(), "admin_groups": ["test:admins"]},
            holds={"caller": {}, "anonymous": {}, "replace": False},
        )
        client = TestClient(create_app(broker, reaper=False, lifecycle=False),
                            raise_server_exceptions=False)  # fmt: skip
        client.__enter__()
        clients.append(client)
        return client, broker

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def users(issuer: OidcIssuer) -> dict[str, dict[str, str]]:
    def bearer(sub: str, *groups: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {issuer.token(sub=sub, groups=groups)}"}

    return {"alice": bearer("alice"), "bob": bearer("bob"), "root": bearer("root", "admins"),
            "nobody": {}}  # fmt: skip


@pytest.fixture
def node(make_node: Callable[..., tuple[TestClient, Broker]], sqlite_url: str) -> Any:
    return make_node(sqlite_url)


@pytest.fixture(scope="module")
def refusing_node(issuer: OidcIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One node for the cases that change nothing (refusals), shared by them: making a node
    costs more than a case."""
    url = f"sqlite:///{tmp_path_factory.mktemp('refusals') / 'node.db'}"
    broker = build_broker(make_config(
        url, platforms=PLATFORMS, auth={**issuer.auth_config(), "admin_groups": ["test:admins"]},
    ))  # fmt: skip
    with TestClient(create_app(broker, reaper=False, lifecycle=False),
                    raise_server_exceptions=False) as client:  # fmt: skip
        yield client, broker
    broker.close()


# the hour the tests' times count from: fixed for the module, so that a test running across a
# full hour still names one instant by one name; at least an hour ahead for as long as it runs
BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)


def at(hours: float) -> str:
    """An instant ``hours`` after BASE."""
    return (BASE + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def ask(client: TestClient, who: dict[str, str], hours: float, cores: int = 1,
        duration: int = 1) -> dict[str, Any]:  # fmt: skip
    """An offer set for ``cores`` for ``duration`` hours starting exactly ``hours`` from the
    next whole hour."""
    schedule = {"start": [f"{at(hours)}/PT0S"], "duration": f"PT{duration}H"}
    r = client.post("/requests", json=request_doc(cores=(cores, cores), **schedule), headers=who)
    assert r.status_code == 200, r.text
    return r.json()


def book(client: TestClient, who: dict[str, str], hours: float, cores: int = 1,
         duration: int = 1) -> str:  # fmt: skip
    """An accepted session; its uuid."""
    offers = ask(client, who, hours, cores, duration)
    assert offers["result"] == "YES", offers
    uuid = offers["offers"][0]["meta"]["uuid"]
    r = client.post(f"/sessions/{uuid}", json=ACCEPT, headers=who)
    assert r.status_code == 200, r.text
    return uuid


def pools_of(offerset: dict[str, Any]) -> set[str]:
    return {p for o in offerset["offers"] for p in o["site"]["pools"]}


def messages(answer: dict[str, Any]) -> str:
    return " | ".join(m["message"] for m in answer["meta"]["messages"])


def pool_on_node(client: TestClient, name: str) -> dict[str, Any]:
    node = client.get("/node").json()
    return next(p for pl in node["platforms"] for p in pl["pools"] if p["name"] == name)


# --- who may, and what a bad request gets --------------------------------------------------

WINDOW = {"start": at(30), "end": at(32), "reason": "kernel upgrade"}
INVENTORY = {"inventories": {"cores": {"total": 4}}}
# (method, path, body): every admin operation
OPERATIONS = [
    ("PUT", f"{MAIN}/drain", {"reason": "disk swap"}),
    ("DELETE", f"{MAIN}/drain", None),
    ("GET", f"{MAIN}/maintenance", None),
    ("POST", f"{MAIN}/maintenance", WINDOW),
    ("DELETE", f"{MAIN}/maintenance/00000000-0000-4000-8000-000000000000", None),
    ("PATCH", f"{MAIN}/inventory", {**INVENTORY, "dry_run": True}),
    ("GET", "/audit", None),
]


def call(client: TestClient, method: str, path: str, who: dict[str, str],
         body: Any = None) -> Any:  # fmt: skip
    return client.request(method, path, json=body, headers=who)


@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS)
@pytest.mark.parametrize(("who", "status"), [("alice", 403), ("nobody", 401)])
def test_only_admins_may(refusing_node, users, who, status, method, path, body) -> None:
    client, _ = refusing_node
    r = call(client, method, path, users[who], body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM and r.json()["status"] == status


@pytest.mark.parametrize(("method", "path", "body"), [
    (m, p.replace("/pools/sim/main", "/pools/sim/nope"), b)
    for m, p, b in OPERATIONS if p.startswith("/pools")
] + [
    (m, p.replace("/pools/sim/main", "/pools/other/main"), b)
    for m, p, b in OPERATIONS[:1]
] + [("DELETE", f"{MAIN}/maintenance/00000000-0000-4000-8000-000000000000", None)])  # fmt: skip
def test_an_unknown_pool_or_window_is_a_404(refusing_node, users, method, path, body) -> None:
    client, _ = refusing_node
    r = call(client, method, path, users["root"], body)
    assert r.status_code == 404, r.text
    assert r.headers["content-type"] == PROBLEM


BAD_BODIES = [
    # (method, path, body, the pointer or parameter named)
    ("PUT", f"{MAIN}/drain", {}, ""),
    ("PUT", f"{MAIN}/drain", {"reason": ""}, "/reason"),
    ("PUT", f"{MAIN}/drain", {"reason": "x", "until": "later"}, "/until"),
    ("POST", f"{MAIN}/maintenance", {**WINDOW, "start": "tomorrow"}, "/start"),
    ("POST", f"{MAIN}/maintenance", {**WINDOW, "end": WINDOW["start"]}, "/end"),
    ("POST", f"{MAIN}/maintenance", {**WINDOW, "start": at(-30), "end": at(-29)}, "/end"),
    ("POST", f"{MAIN}/maintenance", {**WINDOW, "amounts": {"gpus": 1}}, "/amounts/gpus"),
    ("POST", f"{MAIN}/maintenance", {**WINDOW, "amounts": {"cores": 9}}, "/amounts/cores"),
    ("POST", f"{MAIN}/maintenance", {**WINDOW, "amounts": {"cores": -1}}, "/amounts/cores"),
    ("PATCH", f"{MAIN}/inventory", {"inventories": {}}, "/inventories"),
    ("PATCH", f"{MAIN}/inventory", {"inventories": {"cores": {"total": -1}}},
     "/inventories/cores/total"),
    ("PATCH", f"{MAIN}/inventory", {"inventories": {"cores": {"reserved": 9}}},
     "/inventories/cores"),
    ("PATCH", f"{MAIN}/inventory", {"inventories": {"gpus": {"total": 2}}}, "/inventories/gpus"),
    ("GET", "/audit?action=explode", None, "action"),
    ("GET", "/audit?from=yesterday", None, "from"),
    ("GET", "/audit?cursor=bm90LWEtY3Vyc29y", None, "cursor"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "body", "where"), BAD_BODIES)
def test_bad_bodies_and_parameters_are_400s_naming_the_field(refusing_node, users, method, path,
                                                             body, where) -> None:  # fmt: skip
    client, _ = refusing_node
    r = call(client, method, path, users["root"], body)
    assert r.status_code == 400, r.text
    errors = r.json()["errors"]
    named = [e.get("pointer", e.get("parameter")) for e in errors]
    assert any(n == where or (where and n.startswith(where)) for n in named), errors


# --- drain ---------------------------------------------------------------------------------


def test_a_drained_pool_gives_no_offers_and_says_why(node, users) -> None:
    client, _ = node
    alice, root = users["alice"], users["root"]
    kept = book(client, alice, hours=2, cores=4)  # on main: small has 2 cores
    r = client.put(f"{MAIN}/drain", json={"reason": "disk swap"}, headers=root)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "drained" and r.json()["drain"]["reason"] == "disk swap"
    assert r.json()["drain"]["by"] == ROOT
    # everyone sees it
    seen = pool_on_node(client, "sim/main")
    assert seen["state"] == "drained" and seen["drain"]["reason"] == "disk swap"
    assert pool_on_node(client, "sim/small")["state"] == "open"
    # only main could serve 4 cores: NO, naming the drain and what else there is
    refused = ask(client, alice, hours=5, cores=4)
    assert refused["result"] == "NO"
    said = messages(refused)
    assert "pool sim/main is drained since" in said and "(disk swap)" in said
    assert "other pools open to you: sim/small" in said
    assert "at most 2 cores" in said  # what the other pool could do
    # what small can serve is offered there, never on main
    small = ask(client, alice, hours=5, cores=1)
    assert small["result"] == "YES" and pools_of(small) == {"sim/small"}
    # the booked session stays: it is not cancelled, and it may be cancelled by its owner
    assert client.get(f"/sessions/{kept}", headers=alice).json()["phase"] == "ACCEPTED"
    extended = client.post(f"/sessions/{kept}", headers=alice, json={
        "kind": "uri:integer-delta-update", "path": "schedule.duration", "delta": 10,
        "units": "minutes"})  # fmt: skip
    assert extended.status_code == 409 and "drained" in extended.json()["detail"]
    # undrained: offers again
    r = client.delete(f"{MAIN}/drain", headers=root)
    assert r.status_code == 200 and r.json()["state"] == "open" and "drain" not in r.json()
    again = ask(client, alice, hours=5, cores=4)
    assert again["result"] == "YES" and pools_of(again) == {"sim/main"}


def test_a_probe_offer_on_a_pool_drained_since_cannot_be_accepted(node, users) -> None:
    client, _ = node
    schedule = {"start": [f"{at(3)}/PT0S"], "duration": "PT1H"}
    r = client.post("/requests?probe=true", json=request_doc(cores=(4, 4), **schedule),
                    headers=users["alice"])  # fmt: skip
    probe = r.json()["offers"][0]["meta"]["uuid"]
    client.put(f"{MAIN}/drain", json={"reason": "cooling"}, headers=users["root"])
    r = client.post(f"/sessions/{probe}", json=ACCEPT, headers=users["alice"])
    assert r.status_code == 409 and "sim/main is drained" in r.json()["detail"], r.text
    assert "(cooling)" in r.json()["detail"]


def test_a_node_whose_only_pool_is_drained_says_to_ask_again(make_node, sqlite_url,
                                                             users) -> None:  # fmt: skip
    client, _ = make_node(sqlite_url, platforms=[
        {**PLATFORMS[0], "pools": PLATFORMS[0]["pools"][:1]}])  # fmt: skip
    client.put(f"{MAIN}/drain", json={"reason": "rack move"}, headers=users["root"])
    refused = ask(client, users["alice"], hours=3)
    assert refused["result"] == "NO"
    said = messages(refused)
    assert "pool sim/main is drained" in said and "(rack move)" in said
    assert "no other pool of this node is open to you" in said
    r = client.post("/direct", json=request_doc(), headers=users["alice"])
    assert r.status_code == 400 and "drained" in str(r.json()["meta"]["messages"])


# --- maintenance ---------------------------------------------------------------------------


def test_maintenance_is_avoided_by_offers_and_lists_what_it_overlaps(node, users) -> None:
    client, broker = node
    alice, bob, root = users["alice"], users["bob"], users["root"]
    early = book(client, alice, hours=4, cores=3)  # overlaps the window's first hour
    r = client.post(f"{MAIN}/maintenance", headers=root, json={
        "start": at(4), "end": at(6), "reason": "firmware"})  # fmt: skip
    assert r.status_code == 201, r.text
    window = r.json()
    assert r.headers["location"].endswith(f"{MAIN}/maintenance/{window['uuid']}")
    assert [s["session"] for s in window["overlapping"]] == [early]
    assert window["overlapping"][0]["amounts"]["cores"] == 3
    assert window["overlapping"][0]["owner"] == "test:alice"
    # it took what the session left in the first hour, everything in the second
    assert [(p["start"], p["end"], p["amounts"]["cores"]) for p in window["taken"]] == [
        (at(4), at(5), 5), (at(5), at(6), 8)]  # fmt: skip
    assert window["complete"] is False and window["short"] == ["cores", "memory"]
    # the session stays, and no overbooking was made
    assert client.get(f"/sessions/{early}", headers=alice).json()["phase"] == "ACCEPTED"
    with broker.db.writer.connect() as conn:
        assert overbookings(conn) == [] and state_problems(conn) == []
    # offers avoid the window: 1 core in [4, 6) goes to small, never main
    inside = ask(client, bob, hours=4.5, cores=1)
    assert inside["result"] == "YES" and pools_of(inside) == {"sim/small"}
    # 4 cores (only main has them) inside the window: NO
    assert ask(client, bob, hours=5, cores=4)["result"] == "NO"
    # after it, main again
    assert pools_of(ask(client, bob, hours=6, cores=4)) == {"sim/main"}
    # everyone sees the window on the node; admins list it with its overlaps
    assert [w["uuid"] for w in pool_on_node(client, "sim/main")["maintenance"]] == [window["uuid"]]
    listed = client.get(f"{MAIN}/maintenance", headers=root).json()["items"]
    assert [w["uuid"] for w in listed] == [window["uuid"]]
    assert listed[0]["taken"] == window["taken"]
    # deleted: its capacity is free again
    r = client.delete(f"{MAIN}/maintenance/{window['uuid']}", headers=root)
    assert r.status_code == 200 and "deleted" in r.json()
    assert pools_of(ask(client, bob, hours=5, cores=4)) == {"sim/main"}
    assert client.get(f"{MAIN}/maintenance", headers=root).json()["items"] == []
    assert client.delete(f"{MAIN}/maintenance/{window['uuid']}", headers=root).status_code == 404


def test_what_an_overlapping_session_frees_goes_to_the_window(node, users) -> None:
    """A session the window could not take is cancelled: the window takes what it frees, in
    the cancel's transaction, so nothing new is offered there."""
    client, broker = node
    alice, root = users["alice"], users["root"]
    early = book(client, alice, hours=3, cores=6)
    window = client.post(f"{MAIN}/maintenance", headers=root, json={
        "start": at(3), "end": at(4), "reason": "top-up"}).json()  # fmt: skip
    assert window["taken"][0]["amounts"]["cores"] == 2 and window["complete"] is False
    r = client.post(f"/sessions/{early}", headers=alice, json=CANCEL)
    assert r.status_code == 200 and r.json()["phase"] == "CANCELLED"
    [now] = client.get(f"{MAIN}/maintenance", headers=root).json()["items"]
    assert now["complete"] is True and now["overlapping"] == [], (
        now["taken"],
        now["short"],
        now["overlapping"],
    )
    assert {p["amounts"]["cores"] for p in now["taken"]} == {8}
    assert "sim/main" not in pools_of(ask(client, users["bob"], hours=3, cores=1))
    with broker.db.writer.connect() as conn:
        assert overbookings(conn) == [] and state_problems(conn) == []


def test_maintenance_of_some_amounts_leaves_the_rest(node, users) -> None:
    client, _ = node
    body = {"start": at(2), "end": at(3), "reason": "half the rack", "amounts": {"cores": 6}}
    r = client.post(f"{MAIN}/maintenance", headers=users["root"], json=body)
    assert r.status_code == 201 and r.json()["complete"] is True
    assert r.json()["taken"] == [{"start": at(2), "end": at(3), "amounts": {"cores": 6}}]
    assert ask(client, users["bob"], hours=2, cores=2)["result"] == "YES"
    assert ask(client, users["bob"], hours=2, cores=3)["result"] == "NO"  # 2 left on each


@pytest.mark.slow
def test_accepts_and_requests_racing_maintenance_never_overbook(make_node, database_url,
                                                                users) -> None:  # fmt: skip
    """Offers held in a window, accepted while an admin books maintenance over it and others
    ask for the same window, many threads at once: whatever the order, the table is never
    overbooked (the project's checker), and what the window did not take is what sessions hold."""
    client, broker = make_node(database_url)
    who = [users["alice"], users["bob"]]
    held = [ask(client, who[i % 2], hours=8, cores=2, duration=2) for i in range(4)]
    offers = [(o["offers"][0]["meta"]["uuid"], who[i % 2]) for i, o in enumerate(held)]
    answers: dict[str, int] = {}

    def run(name: str, method: str, path: str, headers: dict, body: Any) -> None:
        answers[name] = client.request(method, path, json=body, headers=headers).status_code

    calls = [(f"accept {i}", "POST", f"/sessions/{u}", h, ACCEPT) for i, (u, h) in
             enumerate(offers)]  # fmt: skip
    calls.append(("maintenance", "POST", f"{MAIN}/maintenance", users["root"],
                  {"start": at(8), "end": at(10), "reason": "race"}))  # fmt: skip
    schedule = {"start": [f"{at(8)}/PT1H"], "duration": "PT1H"}
    calls += [(f"request {i}", "POST", "/requests", who[i % 2],
               request_doc(cores=(2, 2), **schedule)) for i in range(3)]  # fmt: skip
    threads = [threading.Thread(target=run, args=c) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert answers["maintenance"] == 201, answers
    assert all(answers[f"accept {i}"] == 200 for i in range(4)), answers
    with broker.db.writer.connect() as conn:
        assert overbookings(conn) == []
        assert state_problems(conn) == []
    window = client.get(f"{MAIN}/maintenance", headers=users["root"]).json()["items"][0]
    accepted = {s["session"] for s in window["overlapping"] if s["phase"] == "ACCEPTED"}
    assert {u for u, _ in offers} <= accepted
    # sessions and window fill main: nothing new is offered on it in the window
    late = ask(client, users["bob"], hours=8.5, cores=1, duration=1)
    assert "sim/main" not in pools_of(late)


# --- inventory -----------------------------------------------------------------------------


def test_an_inventory_change_is_checked_against_what_is_booked(node, users, make_node,
                                                               sqlite_url) -> None:  # fmt: skip
    client, _ = node
    alice, root = users["alice"], users["root"]
    first = book(client, alice, hours=2, cores=4)
    second = book(client, alice, hours=2.5, cores=3)  # both in [2.5, 3)
    change = {"inventories": {"cores": {"total": 5}}, "reason": "two DIMMs out"}
    dry = client.patch(f"{MAIN}/inventory", headers=root, json={**change, "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert dry.json()["applied"] is False and dry.json()["inventories"]["cores"]["capacity"] == 5
    [conflict] = dry.json()["conflicts"]
    assert (conflict["from"], conflict["to"], conflict["needed"]) == (at(2.5), at(3), 7)
    assert [s["session"] for s in conflict["sessions"]] == [first, second]
    assert pool_on_node(client, "sim/main")["inventories"]["cores"]["total"] == 8  # unchanged
    refused = client.patch(f"{MAIN}/inventory", headers=root, json=change)
    assert refused.status_code == 409 and refused.headers["content-type"] == PROBLEM
    assert refused.json()["conflicts"] == dry.json()["conflicts"]
    assert pool_on_node(client, "sim/main")["inventories"]["cores"]["total"] == 8
    # a change that fits applies without force, and is kept over a restart
    fits = client.patch(f"{MAIN}/inventory", headers=root, json={
        "inventories": {"cores": {"total": 7}, "memory": {"reserved": 2}}})  # fmt: skip
    assert fits.status_code == 200 and fits.json()["applied"] is True, fits.text
    assert fits.json()["conflicts"] == []
    overridden = {"cores": {"total": 7}, "memory": {"reserved": 2}}
    assert fits.json()["override"]["inventories"] == overridden
    restarted, _ = make_node(sqlite_url)
    seen = pool_on_node(restarted, "sim/main")
    assert seen["inventories"]["cores"]["total"] == 7 and seen["override"]["by"] == ROOT
    assert seen["inventories"]["memory"]["capacity"] == 30
    # forced: applied, the list comes with it, the bookings stand
    forced = client.patch(f"{MAIN}/inventory", headers=root, json={**change, "force": True})
    assert forced.status_code == 200 and forced.json()["applied"] is True
    assert [s["session"] for s in forced.json()["conflicts"][0]["sessions"]] == [first, second]
    assert client.get(f"/sessions/{second}", headers=alice).json()["phase"] == "ACCEPTED"
    # start-up and check-config judge the bookings by the pool as overridden
    _, again = make_node(sqlite_url)
    assert any("sim/main has 5 cores" in w for w in again.capacity_warnings), (
        again.capacity_warnings
    )
    checked = check_bookings(again.config, again.platforms)
    assert any("sim/main has 5 cores" in line for line in checked), checked
    # null: back to the platform's values (memory keeps its override)
    reset = client.patch(f"{MAIN}/inventory", headers=root, json={"inventories": {"cores": None}})
    assert reset.status_code == 200, reset.text
    assert reset.json()["inventories"]["cores"]["total"] == 8
    assert reset.json()["override"]["inventories"] == {"memory": {"reserved": 2}}


def test_an_inventory_change_refits_maintenance(node, users) -> None:
    client, broker = node
    root = users["root"]
    r = client.post(f"{MAIN}/maintenance", headers=root, json={
        "start": at(3), "end": at(4), "reason": "all of it"})  # fmt: skip
    assert r.json()["taken"][0]["amounts"]["cores"] == 8
    client.patch(f"{MAIN}/inventory", headers=root, json={"inventories": {"cores": {"total": 6}}})
    [window] = client.get(f"{MAIN}/maintenance", headers=root).json()["items"]
    assert window["taken"][0]["amounts"]["cores"] == 6 and window["complete"] is True
    with broker.db.writer.connect() as conn:
        assert overbookings(conn) == []


# --- audit ---------------------------------------------------------------------------------


def test_every_act_is_in_the_audit_log_with_who_did_it(node, users) -> None:
    client, _ = node
    alice, bob, root = users["alice"], users["bob"], users["root"]
    accepted = book(client, alice, hours=2)
    client.post(f"/sessions/{accepted}", headers=alice, json={
        "kind": "uri:integer-delta-update", "path": "schedule.duration", "delta": 30,
        "units": "minutes"})  # fmt: skip
    client.post(f"/sessions/{accepted}", headers=alice, json=CANCEL)
    offered = ask(client, bob, hours=3)
    rejected = offered["offers"][0]["meta"]["uuid"]
    client.post(f"/sessions/{rejected}", headers=bob, json={**ACCEPT, "value": "REJECTED"})
    withdrawn = ask(client, bob, hours=4)["meta"]["uuid"]
    client.post(f"/offersets/{withdrawn}", headers=bob, json={**ACCEPT, "value": "REJECTED"})
    direct = client.post("/direct", json=request_doc(), headers=bob, follow_redirects=False)
    assert direct.status_code == 303, direct.text
    client.put(f"{MAIN}/drain", headers=root, json={"reason": "r1"})
    client.delete(f"{MAIN}/drain", headers=root)
    window = client.post(f"{MAIN}/maintenance", headers=root, json=WINDOW).json()
    client.delete(f"{MAIN}/maintenance/{window['uuid']}", headers=root)
    client.patch(f"{MAIN}/inventory", headers=root, json=INVENTORY)
    client.patch(f"{MAIN}/inventory", headers=root, json={**INVENTORY, "dry_run": True})
    refused = client.post(f"/sessions/{accepted}", headers=alice, json=ACCEPT)  # 409: no event
    assert refused.status_code == 409

    log = client.get("/audit", headers=root).json()["items"]
    expected = [  # (actor, action, subject)
        ("test:alice", "accept", f"session:{accepted}"),
        ("test:alice", "extend", f"session:{accepted}"),
        ("test:alice", "cancel", f"session:{accepted}"),
        ("test:bob", "reject", f"session:{rejected}"),
        ("test:bob", "withdraw", f"offerset:{withdrawn}"),
        ("test:bob", "direct", f"session:{direct.json()['meta']['uuid']}"),
        (ROOT, "drain", "pool:sim/main"),
        (ROOT, "undrain", "pool:sim/main"),
        (ROOT, "book-maintenance", "pool:sim/main"),
        (ROOT, "delete-maintenance", "pool:sim/main"),
        (ROOT, "change-inventory", "pool:sim/main"),
    ]
    assert [(e["actor"], e["action"], e["subject"]) for e in log] == expected
    details = {e["action"]: e.get("detail", "") for e in log}
    assert details["accept"] == "OFFERED -> ACCEPTED" and details["drain"] == "r1"
    assert window["uuid"] in details["book-maintenance"]
    assert "cores: total=4" in details["change-inventory"]

    # filters
    def actions(**params: Any) -> list[str]:
        r = client.get("/audit", params=params, headers=root)
        assert r.status_code == 200, r.text
        return [e["action"] for e in r.json()["items"]]

    assert actions(actor="test:bob") == ["reject", "withdraw", "direct"]
    assert actions(action=["drain", "undrain"]) == ["drain", "undrain"]
    assert actions(action="accept,cancel") == ["accept", "cancel"]
    assert actions(subject=f"session:{accepted}") == ["accept", "extend", "cancel"]
    assert actions(**{"from": at(-3)}) == [a for _, a, _ in expected]
    assert actions(**{"to": at(-3)}) == []

    # pages: every event once, in order, following the Link header
    seen: list[int] = []
    r = client.get("/audit", params={"limit": 4}, headers=root)
    while True:
        assert r.status_code == 200, r.text
        seen += [e["id"] for e in r.json()["items"]]
        if "next" not in r.json():
            assert "link" not in r.headers
            break
        link = r.headers["link"].removeprefix("<").split(">;")[0]
        r = client.get(link.removeprefix("http://testserver"), headers=root)
    assert seen == [e["id"] for e in log]
    # a cursor is valid with its own filters only
    page = client.get("/audit", params={"limit": 2}, headers=root).json()
    other = client.get("/audit", params={"limit": 2, "actor": ROOT, "cursor": page["next"]},
                       headers=root)  # fmt: skip
    assert other.status_code == 400 and other.json()["errors"][0]["parameter"] == "cursor"
    # only admins read it
    assert client.get("/audit", headers=alice).status_code == 403


# --- forms and the aggregator --------------------------------------------------------------


def test_admin_documents_come_as_json_or_yaml(refusing_node, users) -> None:
    client, _ = refusing_node
    yaml_body = f"start: '{at(40)}'\nend: '{at(41)}'\nreason: in YAML\namounts: {{cores: 1}}\n"
    r = client.post(f"{MAIN}/maintenance", content=yaml_body.encode(),
                    headers={**users["root"], "Content-Type": "application/yaml"})  # fmt: skip
    assert r.status_code == 201, r.text
    assert r.json()["reason"] == "in YAML" and r.json()["amounts"] == {"cores": 1}
    r = client.delete(f"{MAIN}/maintenance/{r.json()['uuid']}",
                      headers={**users["root"], "Accept": "application/yaml"})  # fmt: skip
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/yaml")
    r = client.put(f"{MAIN}/drain", content=b"<drain><reason>x</reason></drain>",
                   headers={**users["root"], "Content-Type": "application/xml"})  # fmt: skip
    assert r.status_code == 415, r.text


def test_an_aggregator_has_no_pools_nor_audit_log(tmp_path) -> None:
    """The admin operations of an aggregator are 404s saying to ask the node, as for its other
    node-only operations (accounting)."""
    from aggregator.config import AggregatorConfig
    from aggregator.http.app import create_aggregator_app

    config = AggregatorConfig.model_validate({
        "database": {"url": f"sqlite:///{tmp_path / 'agg.db'}"},
        "upstreams": [{"name": "node", "url": "http://127.0.0.1:9"}],
    })  # fmt: skip
    with TestClient(create_aggregator_app(config), raise_server_exceptions=False) as client:
        for method, path, body in OPERATIONS:
            r = client.request(method, path, json=body)
            assert r.status_code == 404, (method, path, r.text)
            assert r.headers["content-type"] == PROBLEM
            assert "ask the node" in r.json()["detail"] or "broker nodes" in r.json()["detail"]


def test_migration_0009_goes_down_and_up_again(database_url) -> None:
    """Down to 0008 a maintenance window's bookings go (they have no session), the sessions'
    stay; up again, the schema is the models' (tests/test_migrations.py checks that)."""
    from alembic import command
    from sqlalchemy import create_engine, text

    from broker_core.db import migrate

    migrate.upgrade(database_url)
    engine = create_engine(database_url)
    try:
        with engine.begin() as c:
            c.execute(
                text(
                    "INSERT INTO resource_pool (id, name, platform, generation, longest_booking, "
                    "enabled, updated_at) VALUES (1, 'sim/main', 'sim', 0, 0, true, 0)"
                )
            )
            c.execute(
                text(
                    "INSERT INTO offer_set (uuid, result, created_at, expires_at, "
                    "document) VALUES ('os', 'YES', 0, 10, '{}')"
                )
            )
            c.execute(
                text(
                    "INSERT INTO execution_session (uuid, offerset_uuid, phase, platform, "
                    "created_at, modified_at, expires_at, prepare_at, start_at, end_at, "
                    "generation) "
                    "VALUES ('s', 'os', 'ACCEPTED', 'sim', 0, 0, 10, 100, 100, 3700, 1)"
                )
            )
            c.execute(
                text(
                    "INSERT INTO maintenance_window (uuid, pool_id, start_at, end_at, reason, "
                    "created_by, created_at) VALUES ('m', 1, 100, 200, 'r', 'root', 0)"
                )
            )
            for booking, session, window in ((1, "'s'", "NULL"), (2, "NULL", "'m'")):
                c.execute(
                    text(
                        "INSERT INTO booking (id, session_uuid, offerset_uuid, maintenance_uuid, "
                        f"state, start_at, end_at, created_at, modified_at) VALUES ({booking}, "
                        f"{session}, 'os', {window}, 'CONFIRMED', 100, 200, 0, 0)"
                    )
                )
                c.execute(
                    text(
                        "INSERT INTO allocation (booking_id, pool_id, resource_class, amount, "
                        f"generation) VALUES ({booking}, 1, 'cores', 2, 0)"
                    )
                )
        with engine.begin() as connection:
            config = migrate.alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "0008")
        with engine.connect() as c:
            assert c.execute(text("SELECT id, session_uuid FROM booking")).all() == [(1, "s")]
            assert c.execute(text("SELECT booking_id FROM allocation")).all() == [(1,)]
        migrate.upgrade(database_url)
        assert migrate.current_revision(engine) == migrate.head_revision()
    finally:
        engine.dispose()
