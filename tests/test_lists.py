"""GET /sessions, GET /offersets and POST /offersets/{uuid} (the withdrawal) on a node, through
its HTTP API: two users and an admin (tokens of a real OIDC issuer), filters, pages across
inserts, bad parameters, and a withdrawal's holds released. Most cases are rows of tables:
the request, who makes it, the status and what the answer holds."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from broker_core.broker import Broker
from broker_core.db.tables import Booking
from broker_core.http.app import SPEC_DOCUMENT, create_app
from broker_core.node import build_broker
from broker_core.offers.listing import OfferSetFilters, offersets_query
from broker_core.pages import MAX_LIMIT
from broker_core.sessions.listing import SessionFilters, sessions_query
from tests.conftest import ACCEPT, POOL_CONFIG, make_config, request_doc
from tests.oidc_issuer import OidcIssuer

REJECT = {**ACCEPT, "value": "REJECTED"}
WITHDRAW = REJECT  # an offer set takes the update that rejects one offer
PROBLEM = "application/problem+json"
ALICE, BOB, ROOT = "test:alice", "test:bob", "test:root"
# two platforms of one pool each, so that offers (and the pool filter) differ by pool
PLATFORMS = [
    {**POOL_CONFIG["platforms"][0], "name": name, "pools": [{"name": "main", "inventories": {
        "cores": {"total": 8}, "memory": {"total": 32}, "storage": {"total": 100}}}]}
    for name in ("east", "west")
]  # fmt: skip



def node_settings(issuer: OidcIssuer) -> dict[str, Any]:
    return {
        "platforms": PLATFORMS,
        "auth": {**issuer.auth_config(), "admin_groups": ["test:admins"]},
        # the tests hold as much as they like, and asking twice makes two offer sets
        "holds": {"caller": {}, "anonymous": {}, "replace": False},
    }


def serve(broker: Broker) -> TestClient:
    client = TestClient(create_app(broker, reaper=False, lifecycle=False),
                        raise_server_exceptions=False)  # fmt: skip
    client.__enter__()
    return client


@pytest.fixture
def make_node(
    issuer: OidcIssuer, broker_factory: Callable[..., Broker]
) -> Iterator[Callable[[str], tuple[TestClient, Broker]]]:
    clients: list[TestClient] = []

    def make(database_url: str) -> tuple[TestClient, Broker]:
        broker = broker_factory(database_url, **node_settings(issuer))
        clients.append(serve(broker))
        return clients[-1], broker

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def users(issuer: OidcIssuer) -> dict[str, dict[str, str]]:
    def bearer(sub: str, *groups: str) -> dict[str, str]:
        token = issuer.token(sub=sub, groups=groups, expires_in=3600)
        return {"Authorization": f"Bearer {token}"}

    return {"alice": bearer("alice"), "bob": bearer("bob"), "root": bearer("root", "admins")}


@pytest.fixture(scope="module")
def shared(
    issuer: OidcIssuer, users: dict[str, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    """One node for the cases that only read (each a row of a table): bob has an offer set."""
    url = f"sqlite:///{tmp_path_factory.mktemp('lists') / 'shared.db'}"
    broker = build_broker(make_config(url, **node_settings(issuer)))
    client = serve(broker)
    ask(client, users["bob"])
    yield client
    client.__exit__(None, None, None)
    broker.close()


@pytest.fixture
def node(make_node: Callable[[str], tuple[TestClient, Broker]], sqlite_url: str) -> Any:
    return make_node(sqlite_url)


def at(hours: float) -> str:
    """An instant ``hours`` from the next whole hour, as a request's start names it."""
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return (base + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


def ask(client: TestClient, who: dict[str, str], hours: float | None = None,
        cores: int = 1, within: int = 0) -> dict[str, Any]:  # fmt: skip
    """An offer set for ``cores`` for an hour, starting ``hours`` from the next whole hour (or
    up to ``within`` hours later; None: as soon as possible)."""
    schedule = ({} if hours is None else
                {"start": [f"{at(hours)}/PT{within}H"], "duration": "PT1H"})  # fmt: skip
    r = client.post("/requests", json=request_doc(cores=(cores, cores), **schedule), headers=who)
    assert r.status_code == 200, r.text
    return r.json()


def listed(client: TestClient, path: str, who: dict[str, str], **params: Any) -> dict[str, Any]:
    r = client.get(path, params=params, headers=who)
    assert r.status_code == 200, r.text
    return r.json()


def every(client: TestClient, path: str, who: dict[str, str], **params: Any) -> list[dict]:
    """Every item of a list, page by page, following its ``Link`` header."""
    r = client.get(path, params=params, headers=who)
    items = []
    for _ in range(100):
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        if "next" not in r.json():
            assert "link" not in r.headers
            return items
        url = r.headers["link"].removeprefix("<").split(">;")[0]
        assert parse_qs(urlsplit(url).query)["cursor"] == [r.json()["next"]]
        r = client.get(f"{urlsplit(url).path}?{urlsplit(url).query}", headers=who)
    raise AssertionError("more than 100 pages")


def uuids(items: list[dict[str, Any]]) -> list[str]:
    return [i["uuid"] for i in items]


def order_key(item: dict[str, Any], field: str = "start") -> tuple[str, str]:
    return item[field], item["uuid"]


# --- who sees what ------------------------------------------------------------------------------


def test_users_see_only_their_own_and_admins_see_everyone(node, users) -> None:
    client, _ = node
    mine = ask(client, users["alice"])
    theirs = ask(client, users["bob"])
    alice_offers = {o["meta"]["uuid"] for o in mine["offers"]}
    bob_offers = {o["meta"]["uuid"] for o in theirs["offers"]}

    alice = every(client, "/sessions", users["alice"])
    assert set(uuids(alice)) == alice_offers and {i["owner"] for i in alice} == {ALICE}
    assert set(uuids(every(client, "/sessions", users["bob"]))) == bob_offers
    assert set(uuids(every(client, "/sessions", users["root"]))) == alice_offers | bob_offers
    only_bob = every(client, "/sessions", users["root"], owner=BOB)
    assert set(uuids(only_bob)) == bob_offers
    # offer sets likewise
    assert uuids(every(client, "/offersets", users["alice"])) == [mine["meta"]["uuid"]]
    assert uuids(every(client, "/offersets", users["bob"])) == [theirs["meta"]["uuid"]]
    assert len(every(client, "/offersets", users["root"])) == 2
    assert uuids(every(client, "/offersets", users["root"], owner=ALICE)) == [mine["meta"]["uuid"]]


@pytest.mark.parametrize(
    ("path", "who", "owner", "status"),
    [
        ("/sessions", "alice", BOB, 403),  # another's: refused, not quietly answered with hers
        ("/offersets", "alice", BOB, 403),
        ("/sessions", "alice", ALICE, 200),  # naming herself is fine
        ("/offersets", "bob", BOB, 200),
        ("/sessions", "root", ALICE, 200),  # admins name anyone
        ("/sessions", "root", "test:nobody", 200),
        ("/sessions", None, None, 401),  # no token: no list
        ("/offersets", None, None, 401),
    ],
)  # fmt: skip
def test_owner_filter_permissions(shared, users, path, who, owner, status) -> None:
    client = shared
    params = {"owner": owner} if owner else {}
    r = client.get(path, params=params, headers=users[who] if who else {})
    assert r.status_code == status, r.text
    if status >= 400:
        assert r.headers["content-type"].startswith(PROBLEM)
        assert r.json()["status"] == status
    elif who != "root":
        assert r.json()["items"] == [] or {i["owner"] for i in r.json()["items"]} == {owner}


def test_a_list_never_shows_others_even_by_filters(node, users) -> None:
    client, _ = node
    ask(client, users["bob"])
    bob_set = ask(client, users["bob"], hours=3)
    for params in ({}, {"phase": "OFFERED"}, {"pool": "east/main,west/main"},
                   {"from": at(-2), "to": at(48)}, {"limit": MAX_LIMIT}):  # fmt: skip
        assert listed(client, "/sessions", users["alice"], **params)["items"] == []
    for params in ({}, {"state": "open"}, {"from": at(-2), "to": at(48)}):
        assert listed(client, "/offersets", users["alice"], **params)["items"] == []
    # nor may she withdraw bob's offer set, which stays as it was
    r = client.post(f"/offersets/{bob_set['meta']['uuid']}", json=WITHDRAW,
                    headers=users["alice"])  # fmt: skip
    assert r.status_code == 404 and r.headers["content-type"].startswith(PROBLEM)
    again = client.get(f"/offersets/{bob_set['meta']['uuid']}", headers=users["bob"]).json()
    assert {o["phase"] for o in again["offers"]} == {"OFFERED"}


# --- filters ---------------------------------------------------------------------------------


def test_session_filters(make_node, database_url, users) -> None:
    client, _ = make_node(database_url)
    alice = users["alice"]
    whole = ask(client, alice, hours=2, cores=8)  # the first platform's pool, at 2 h
    early = ask(client, alice, hours=2, within=4)  # at 2 h on the other, later on either
    late = ask(client, alice, hours=30, within=4)
    assert len(whole["offers"]) == 1 and len(early["offers"]) > 1
    accepted = early["offers"][0]["meta"]["uuid"]
    assert client.post(f"/sessions/{accepted}", json=ACCEPT, headers=alice).status_code == 200
    rejected = late["offers"][0]["meta"]["uuid"]
    assert client.post(f"/sessions/{rejected}", json=REJECT, headers=alice).status_code == 200
    everything = every(client, "/sessions", alice)
    assert everything == sorted(everything, key=order_key)
    phases = {i["uuid"]: i["phase"] for i in everything}

    def only(**params: Any) -> list[str]:
        return uuids(every(client, "/sessions", alice, **params))

    # phase: repeated, or a comma list; any of them
    assert only(phase="ACCEPTED") == [accepted]
    # accepting one offer rejected its siblings
    rejections = {u for u, p in phases.items() if p == "REJECTED"}
    assert rejected in rejections and len(rejections) == len(early["offers"])
    assert set(only(phase=["ACCEPTED", "REJECTED"])) == {accepted} | rejections
    assert only(phase="ACCEPTED,REJECTED") == only(phase=["REJECTED", "ACCEPTED"])
    assert set(only(phase="OFFERED")) == {u for u, p in phases.items() if p == "OFFERED"}
    # the window: booked windows overlapping [from, to)
    for start, end in [(at(0), at(10)), (at(20), at(60)), (at(2.5), at(2.6))]:
        expected = [i["uuid"] for i in everything if i["start"] < end and i["end"] > start]
        assert only(**{"from": start, "to": end}) == expected
    assert set(only(**{"from": at(20)})) == {i["uuid"] for i in everything if i["end"] > at(20)}
    assert set(only(to=at(3))) == {i["uuid"] for i in everything if i["start"] < at(3)}
    # a window that ends where a session starts does not overlap it ([start, end) is half open)
    first = everything[0]
    touching = {"from": at(-24), "to": first["start"]}
    assert first["uuid"] not in only(**touching)
    # pool: any of them, by the name sessions give it
    by_pool = {p: {i["uuid"] for i in everything if p in i["pools"]}
               for p in ("east/main", "west/main")}  # fmt: skip
    assert all(by_pool.values())  # the offers are spread over both platforms
    assert set(only(pool="east/main")) == by_pool["east/main"]
    assert set(only(pool=["east/main", "west/main"])) == by_pool["east/main"] | by_pool["west/main"]
    assert only(pool="north/main") == []
    # filters combine
    assert set(only(phase="OFFERED", pool="west/main", **{"from": at(20)})) == {
        i["uuid"] for i in everything if i["phase"] == "OFFERED" and "west/main" in i["pools"]
        and i["end"] > at(20)
    }  # fmt: skip


def test_a_session_summary(node, users) -> None:
    client, _ = node
    offerset = ask(client, users["alice"], hours=5)
    offer = offerset["offers"][0]
    (item,) = [i for i in every(client, "/sessions", users["alice"])
               if i["uuid"] == offer["meta"]["uuid"]]  # fmt: skip
    assert item["href"] == offer["meta"]["url"]
    assert item["offerset"] == offerset["meta"]["uuid"]
    assert item["phase"] == "OFFERED" and item["expires"] == offer["expires"]
    assert item["start"] == offer["schedule"]["available"]["start"].split("/")[0]
    assert item["start"] == at(5) and item["end"] == at(6)
    assert item["pools"] == offer["site"]["pools"]
    assert item["owner"] == ALICE
    assert set(item) <= set(SPEC_DOCUMENT["components"]["schemas"]["SessionSummary"]["properties"])
    assert "upstream" not in item  # only an aggregator's items name one


def test_offerset_filters(make_node, database_url, users) -> None:
    client, _ = make_node(database_url)
    alice = users["alice"]
    open_set = ask(client, alice, hours=2)
    withdrawn = ask(client, alice, hours=4)
    refused = ask(client, alice, cores=64)  # more than any pool has: NO
    assert refused["result"] == "NO"
    r = client.post(f"/offersets/{withdrawn['meta']['uuid']}", json=WITHDRAW, headers=alice)
    assert r.status_code == 200

    def only(**params: Any) -> list[str]:
        return uuids(every(client, "/offersets", alice, **params))

    ids = [s["meta"]["uuid"] for s in (open_set, withdrawn, refused)]
    assert set(only()) == set(ids)
    assert only(state="open") == [ids[0]]
    assert set(only(state="closed")) == {ids[1], ids[2]}
    assert only(result="NO") == [ids[2]]
    assert set(only(result="YES")) == {ids[0], ids[1]}
    assert only(result="YES", state="closed") == [ids[1]]
    items = {i["uuid"]: i for i in every(client, "/offersets", alice)}
    assert items[ids[0]]["offers"] == {"OFFERED": len(open_set["offers"])}
    assert items[ids[1]]["offers"] == {"REJECTED": len(withdrawn["offers"])}
    assert items[ids[2]]["offers"] == {} and items[ids[2]]["result"] == "NO"
    # created in [from, to): all of them now, none tomorrow
    created = sorted(i["created"] for i in items.values())
    assert set(only(**{"from": created[0]})) == set(ids)
    assert only(**{"from": at(24)}) == [] and only(to=created[0]) == []


# --- pages ---------------------------------------------------------------------------------


def test_pages_neither_repeat_nor_skip_across_inserts(make_node, database_url, users) -> None:
    """Pages of 3 while new offer sets are made between pages, some sorting before the
    cursor and some after: every session there at the start is listed once, in order, and
    each made after the cursor is listed too."""
    client, _ = make_node(database_url)
    alice = users["alice"]
    for hours in (10, 20, 30):
        ask(client, alice, hours=hours, within=6)
    before = {i["uuid"] for i in every(client, "/sessions", alice)}
    assert len(before) >= 9
    seen: list[dict[str, Any]] = []
    later: set[str] = set()
    r = client.get("/sessions", params={"limit": 3}, headers=alice)
    pages = 0
    while True:
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= 3 and page["limit"] == 3
        seen += page["items"]
        pages += 1
        if "next" not in page:
            break
        if pages <= 3:  # between pages: one that sorts before the cursor, one far after
            ask(client, alice, hours=0, within=2)
            made = ask(client, alice, hours=200 + pages, within=2)
            later |= {o["meta"]["uuid"] for o in made["offers"]}
        r = client.get("/sessions", params={"limit": 3, "cursor": page["next"]}, headers=alice)
    listed_ids = uuids(seen)
    assert len(listed_ids) == len(set(listed_ids)), "a session was listed twice"
    assert before <= set(listed_ids), "a session was skipped"
    assert later <= set(listed_ids), "a session made after the cursor was not listed"
    assert seen == sorted(seen, key=order_key)


def test_offerset_pages(node, users) -> None:
    client, _ = node
    made = [ask(client, users["alice"], hours=h)["meta"]["uuid"] for h in range(5)]
    first = listed(client, "/offersets", users["alice"], limit=2)
    assert len(first["items"]) == 2 and "next" in first
    rest = every(client, "/offersets", users["alice"], limit=2, cursor=first["next"])
    items = first["items"] + rest
    assert sorted(uuids(items)) == sorted(made)  # each once
    # oldest first (to the second: those made in one second go by uuid)
    assert items == sorted(items, key=lambda i: order_key(i, "created"))


# --- bad parameters ---------------------------------------------------------------------------

BAD = [
    ("/sessions", {"limit": 0}, "limit"),
    ("/sessions", {"limit": MAX_LIMIT + 1}, "limit"),
    ("/sessions", {"limit": "ten"}, "limit"),
    ("/sessions", {"phase": "RUNING"}, "phase"),
    ("/sessions", {"phase": "OFFERED,nope"}, "phase"),
    ("/sessions", {"phase": ["OFFERED"] * 13}, "phase"),
    ("/sessions", {"from": "yesterday"}, "from"),
    ("/sessions", {"from": "2026-12-01T10:00:00"}, "from"),  # no zone
    ("/sessions", {"from": "2026-12-02T10:00:00Z", "to": "2026-12-01T10:00:00Z"}, "to"),
    ("/sessions", {"from": "2026-12-02T10:00:00Z", "to": "2026-12-02T10:00:00Z"}, "to"),
    ("/sessions", {"to": "x" * 65}, "to"),
    ("/sessions", {"pool": "main"}, "pool"),
    ("/sessions", {"pool": [f"p/{n}" for n in range(17)]}, "pool"),
    ("/sessions", {"owner": "o" * 256}, "owner"),
    ("/sessions", {"cursor": "not a cursor!"}, "cursor"),
    ("/sessions", {"cursor": "bm9wZQ"}, "cursor"),
    ("/sessions", {"cursor": "x" * 8193}, "cursor"),
    ("/sessions", {"sort": "start"}, "sort"),
    ("/offersets", {"state": "pending"}, "state"),
    ("/offersets", {"result": "MAYBE"}, "result"),
    ("/offersets", {"limit": -1}, "limit"),
    ("/offersets", {"to": "2026-13-01T00:00:00Z"}, "to"),
    ("/offersets", {"phase": "OFFERED"}, "phase"),  # a sessions filter
]


@pytest.mark.parametrize(("path", "params", "parameter"), BAD)
def test_bad_parameters_are_a_400_naming_the_parameter(shared, users, path, params, parameter):
    client = shared
    r = client.get(path, params=params, headers=users["alice"])
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    problem = r.json()
    assert [e["parameter"] for e in problem["errors"]] == [parameter], problem
    assert parameter in problem["detail"]


def test_a_cursor_is_valid_with_its_own_filters_only(node, users) -> None:
    client, _ = node
    for hours in (1, 2):
        ask(client, users["alice"], hours=hours)
    page = listed(client, "/sessions", users["alice"], limit=1, phase="OFFERED")
    r = client.get("/sessions", params={"limit": 1, "cursor": page["next"]}, headers=users["alice"])
    assert r.status_code == 400 and r.json()["errors"][0]["parameter"] == "cursor"
    assert "other filters" in r.json()["detail"]
    # the limit may change from page to page
    r = client.get("/sessions", params={"limit": 5, "phase": "OFFERED", "cursor": page["next"]},
                   headers=users["alice"])  # fmt: skip
    assert r.status_code == 200
    # another user's cursor shows them nothing of hers: it is made for her owner
    r = client.get("/sessions", params={"limit": 1, "phase": "OFFERED", "cursor": page["next"]},
                   headers=users["bob"])  # fmt: skip
    assert r.status_code == 400 and r.json()["errors"][0]["parameter"] == "cursor"


# --- withdrawing an offer set ------------------------------------------------------------------


def booking_states(broker: Broker, session_uuids: list[str]) -> dict[str, str]:
    with broker.db.read() as session:
        rows = session.exec(
            select(Booking.session_uuid, Booking.state).where(
                Booking.session_uuid.in_(session_uuids)  # type: ignore[attr-defined]
            )
        ).all()
    return dict(rows)


def test_withdrawing_rejects_every_open_offer_and_frees_the_holds(make_node, database_url,
                                                                  users) -> None:  # fmt: skip
    client, broker = make_node(database_url)
    alice, bob = users["alice"], users["bob"]
    # all 8 cores of each pool (two offer sets), over one hour: nobody else fits beside them
    mine = ask(client, alice, hours=3, cores=8)
    ask(client, alice, hours=3, cores=8)
    offers = [o["meta"]["uuid"] for o in mine["offers"]]
    assert set(booking_states(broker, offers).values()) == {"HELD"}
    blocked = ask(client, bob, hours=3, cores=8)
    assert all(o["schedule"]["available"]["start"] != f"{at(3)}/PT0S" for o in blocked["offers"])

    r = client.post(f"/offersets/{mine['meta']['uuid']}", json=WITHDRAW, headers=alice)
    assert r.status_code == 200, r.text
    withdrawn = r.json()
    assert withdrawn["meta"]["uuid"] == mine["meta"]["uuid"]
    assert {o["phase"] for o in withdrawn["offers"]} == {"REJECTED"}
    assert set(booking_states(broker, offers).values()) == {"RELEASED"}
    # the slot is free again: bob is offered it now
    again = ask(client, bob, hours=3, cores=8)
    assert f"{at(3)}/PT0S" in {o["schedule"]["available"]["start"] for o in again["offers"]}
    # a rejected offer cannot be accepted
    r = client.post(f"/sessions/{offers[0]}", json=ACCEPT, headers=alice)
    assert r.status_code == 409 and r.json()["phase"] == "REJECTED"
    # withdrawing again is harmless: the same offer set
    r = client.post(f"/offersets/{mine['meta']['uuid']}", json=WITHDRAW, headers=alice)
    assert r.status_code == 200 and r.json() == withdrawn
    # bob may not withdraw hers, nor anyone an offer set there is none of
    r = client.post(f"/offersets/{again['meta']['uuid']}", json=WITHDRAW, headers=alice)
    assert r.status_code == 404
    r = client.post(f"/offersets/{'0' * 8}-0000-4000-8000-{'0' * 12}", json=WITHDRAW,
                    headers=alice)  # fmt: skip
    assert r.status_code == 404
    assert {o["phase"] for o in client.get(f"/offersets/{again['meta']['uuid']}",
                                          headers=bob).json()["offers"]} == {"OFFERED"}  # fmt: skip


def test_withdrawing_leaves_the_accepted_offer(node, users) -> None:
    client, broker = node
    alice = users["alice"]
    offerset = ask(client, alice, hours=2, within=4)
    first, *others = [o["meta"]["uuid"] for o in offerset["offers"]]
    assert others
    assert client.post(f"/sessions/{first}", json=ACCEPT, headers=alice).status_code == 200
    r = client.post(f"/offersets/{offerset['meta']['uuid']}", json=WITHDRAW, headers=alice)
    assert r.status_code == 200
    phases = {o["meta"]["uuid"]: o["phase"] for o in r.json()["offers"]}
    assert phases[first] == "ACCEPTED" and {phases[o] for o in others} == {"REJECTED"}
    assert booking_states(broker, [first]) == {first: "CONFIRMED"}


def test_an_admin_may_withdraw_anyones(node, users) -> None:
    client, _ = node
    offerset = ask(client, users["bob"])
    r = client.post(f"/offersets/{offerset['meta']['uuid']}", json=WITHDRAW,
                    headers=users["root"])  # fmt: skip
    assert r.status_code == 200 and {o["phase"] for o in r.json()["offers"]} == {"REJECTED"}


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({**WITHDRAW, "value": "ACCEPTED"}, "/value"),
        ({**WITHDRAW, "value": "CANCELLED"}, "/value"),
        ({**WITHDRAW, "path": "schedule.duration"}, "/path"),
        ({"kind": "uri:integer-delta-update", "path": "phase", "value": "REJECTED"}, "/kind"),
        ({"kind": "uri:enum-value-update", "path": "phase"}, "/value"),
        ({**WITHDRAW, "extra": 1}, "/extra"),
    ],
)
def test_an_offer_set_takes_only_the_withdrawal(node, users, body, pointer) -> None:
    client, _ = node
    offerset = ask(client, users["alice"])
    r = client.post(f"/offersets/{offerset['meta']['uuid']}", json=body, headers=users["alice"])
    assert r.status_code == 400 and r.headers["content-type"].startswith(PROBLEM)
    assert pointer in [e["pointer"] for e in r.json()["errors"]], r.json()
    after = client.get(f"/offersets/{offerset['meta']['uuid']}", headers=users["alice"]).json()
    assert {o["phase"] for o in after["offers"]} == {"OFFERED"}


def test_a_withdrawal_racing_an_accept_leaves_one_consistent_outcome(make_node, database_url,
                                                                     users) -> None:  # fmt: skip
    """The withdrawal and an accept of one of its offers, at once, many times: either the
    accept came first (it stays accepted, the rest REJECTED) or the withdrawal did (all
    REJECTED, the accept a 409); never an accepted offer beside an open one."""
    client, broker = make_node(database_url)
    alice = users["alice"]
    for round_ in range(6):
        offerset = ask(client, alice, hours=round_ * 5, within=3)
        offers = [o["meta"]["uuid"] for o in offerset["offers"]]
        assert len(offers) > 1
        calls = {
            "accept": (f"/sessions/{offers[-1]}", ACCEPT),
            "withdraw": (f"/offersets/{offerset['meta']['uuid']}", WITHDRAW),
        }
        answers: dict[str, int] = {}

        def call(name: str, path: str, body: dict[str, Any], answers: dict = answers) -> None:
            answers[name] = client.post(path, json=body, headers=alice).status_code

        threads = [threading.Thread(target=call, args=(n, *c)) for n, c in calls.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert answers["withdraw"] == 200 and answers["accept"] in (200, 409), answers
        final = client.get(f"/offersets/{offerset['meta']['uuid']}", headers=alice).json()
        phases = {o["meta"]["uuid"]: o["phase"] for o in final["offers"]}
        states = booking_states(broker, offers)
        if answers["accept"] == 200:
            assert phases.pop(offers[-1]) == "ACCEPTED" and states.pop(offers[-1]) == "CONFIRMED"
        assert set(phases.values()) == {"REJECTED"} and set(states.values()) == {"RELEASED"}


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"kind: uri:enum-value-update\npath: phase\nvalue: REJECTED\n", "application/yaml"),
        (b'{"update": {"kind": "uri:enum-value-update", "path": "phase", "value": "REJECTED"}}',
         "application/json"),  # the older wrapped form, as for a session's update
        (b"<update><kind>uri:enum-value-update</kind><path>phase</path><value>REJECTED</value>"
         b"</update>", "application/xml"),
    ],
)  # fmt: skip
def test_a_withdrawal_in_every_form_a_session_update_takes(node, users, content, content_type):
    client, _ = node
    offerset = ask(client, users["alice"])
    r = client.post(f"/offersets/{offerset['meta']['uuid']}", content=content,
                    headers={**users["alice"], "Content-Type": content_type})  # fmt: skip
    assert r.status_code == 200, r.text
    assert {o["phase"] for o in r.json()["offers"]} == {"REJECTED"}


# --- the queries walk their indexes ------------------------------------------------------------

PLANS = [
    ("sessions", SessionFilters(owner=ALICE), "ix_session_owner_start"),
    ("sessions", SessionFilters(owner=ALICE, phases=("OFFERED", "ACCEPTED"), start=1, end=10**10),
     "ix_session_owner_start"),
    # everyone's (an admin's); with a phase as well, the planner may rather read that phase's
    # sessions by ix_session_phase_expires and sort them, when it knows them to be few
    ("sessions", SessionFilters(owner=None, start=1), "ix_session_start"),
    ("offersets", OfferSetFilters(owner=ALICE), "ix_offer_set_owner_created"),
    ("offersets", OfferSetFilters(owner=ALICE, state="open", result="YES", start=1),
     "ix_offer_set_owner_created"),
    ("offersets", OfferSetFilters(owner=None, result="NO"), "ix_offer_set_created"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "filters", "index"), PLANS)
def test_a_page_walks_its_index_in_order(broker_factory, database_url, what, filters, index):
    """Each page's query reads its index in the list's order, from the cursor on, and sorts
    nothing: its cost is the page, not the table."""
    broker = broker_factory(database_url)
    after = (1_800_000_000, "8" * 36)
    if what == "sessions":
        query = sessions_query(filters, after, 50)
    else:
        query = offersets_query(filters, after, 50, 1_800_000_000)
    with broker.db.read() as session:
        connection = session.connection()
        sql = str(query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
        if connection.dialect.name == "sqlite":
            plan = " | ".join(row[-1] for row in connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {sql}"))  # fmt: skip
            assert "TEMP B-TREE" not in plan, plan
        else:
            # empty tables are read whole, or sorted, at no cost: with those plans priced out,
            # a plan without a sort is one where the index serves the order
            for option in ("enable_seqscan", "enable_bitmapscan", "enable_sort"):
                connection.exec_driver_sql(f"SET LOCAL {option} = off")
            plan = " | ".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {sql}"))
            assert "Sort" not in plan, plan
    assert index in plan, plan
