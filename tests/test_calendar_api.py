"""The calendar's data in the API: GET /pools/{platform}/{pool}/usage (step functions by state,
who sees which booking in full) and the iCalendar feed GET /sessions.ics with its feed tokens
(POST /feed-tokens), on a node with two users and an admin holding tokens of a real OIDC
issuer, on SQLite and PostgreSQL. The feed is parsed with the ``icalendar`` library, as a
calendar app would read it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from urllib.parse import urlsplit

import icalendar
import pytest
from starlette.testclient import TestClient

from broker_core.auth import feeds
from broker_core.booking import occupancy
from broker_core.booking.ledger import PoolClaim
from broker_core.booking.occupancy import Step, Window, steps
from broker_core.broker import Broker
from broker_core.config import parse_config
from broker_core.errors import Unauthenticated
from broker_core.http.app import create_app
from broker_core.identity import Identity
from broker_core.node import build_broker
from tests.conftest import ACCEPT, POOL_CONFIG, make_config, request_doc
from tests.oidc_issuer import OidcIssuer

CANCEL = {**ACCEPT, "value": "CANCELLED"}
SECRET = "calendar-feed-test-secret-0123456789abcdef"
PROBLEM = "application/problem+json"



@pytest.fixture(scope="module")
def users(issuer: OidcIssuer) -> dict[str, dict[str, str]]:
    def bearer(sub: str, *groups: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {issuer.token(sub=sub, groups=groups, expires_in=3600)}"}

    return {"alice": bearer("alice"), "bob": bearer("bob"), "root": bearer("root", "admins")}


def settings(issuer: OidcIssuer, **auth: Any) -> dict[str, Any]:
    return {
        "auth": {**issuer.auth_config(), "admin_groups": ["test:admins"],
                 "feeds": {"secret": SECRET}, **auth},
        "holds": {"caller": {}, "anonymous": {}, "replace": False},
        "lifecycle": {"enabled": False, "workdir": POOL_CONFIG["lifecycle"]["workdir"]},
    }  # fmt: skip


@pytest.fixture
def node(issuer: OidcIssuer, database_url: str) -> Iterator[tuple[TestClient, Broker]]:
    """A node of its own, on SQLite and on PostgreSQL."""
    broker = build_broker(make_config(database_url, **settings(issuer)))
    with TestClient(create_app(broker, reaper=False, lifecycle=False),
                    raise_server_exceptions=False) as client:  # fmt: skip
        yield client, broker
    broker.close()


@pytest.fixture(scope="module")
def shared(
    issuer: OidcIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, Broker]]:
    """One node for the cases that only read (each a row of a table)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('calendar') / 'shared.db'}"
    broker = build_broker(make_config(url, **settings(issuer)))
    with TestClient(create_app(broker, reaper=False, lifecycle=False),
                    raise_server_exceptions=False) as client:  # fmt: skip
        yield client, broker
    broker.close()


# the next whole hour when the module was loaded: one origin for every fixture and test, even
# when the clock passes an hour meanwhile
BASE = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)


def at(hours: float) -> datetime:
    """``hours`` after ``BASE`` (UTC)."""
    return BASE + timedelta(hours=hours)


def text(instant: datetime) -> str:
    return instant.isoformat().replace("+00:00", "Z")


def ask(client: TestClient, who: dict[str, str], hours: float, cores: int) -> dict[str, Any]:
    """Offers of ``cores`` for an hour starting exactly ``hours`` after the next whole hour."""
    doc = request_doc(cores=(cores, cores), start=[f"{text(at(hours))}/PT0S"], duration="PT1H")
    r = client.post("/requests", json=doc, headers=who)
    assert r.status_code == 200 and r.json()["result"] == "YES", r.text
    return r.json()


def usage(client: TestClient, who: dict[str, str], **params: str) -> dict[str, Any]:
    params = {"from": text(at(0)), "to": text(at(6)), **params}
    r = client.get("/pools/sim/main/usage", params=params, headers=who)
    assert r.status_code == 200, r.text
    return r.json()


def resource(document: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in document["resources"] if r["resource_class"] == name)


def level(document: dict[str, Any], name: str, instant: datetime) -> dict[str, int]:
    """The step of a class in force at ``instant``."""
    for step in resource(document, name)["steps"]:
        if datetime.fromisoformat(step["start"]) <= instant < datetime.fromisoformat(step["end"]):
            return step
    raise AssertionError(f"no step at {instant}")


@pytest.fixture
def booked(node, users) -> dict[str, Any]:
    """alice confirmed 2 cores at +1h; bob holds an offer set of 3 cores at +1h."""
    client, _ = node
    alice = ask(client, users["alice"], 1, 2)["offers"][0]
    r = client.post(f"/sessions/{alice['meta']['uuid']}", json=ACCEPT, headers=users["alice"])
    assert r.status_code == 200, r.text
    bob = ask(client, users["bob"], 1, 3)
    return {"alice": alice["meta"]["uuid"], "bob": [o["meta"]["uuid"] for o in bob["offers"]]}


def test_steps_by_state_and_free(node, users, booked):
    client, _ = node
    document = usage(client, users["alice"])
    assert document["pool"] == "sim/main" and document["platform"] == "sim"
    cores = resource(document, "cores")
    assert cores["capacity"] == 16 and cores["unit"] == "cores"
    assert level(document, "cores", at(0)) == {"start": text(at(0)), "end": text(at(1)),
        "held": 0, "confirmed": 0, "active": 0, "maintenance": 0, "free": 16}  # fmt: skip
    during = level(document, "cores", at(1.5))
    assert (during["confirmed"], during["held"], during["free"]) == (2, 3, 11)
    assert level(document, "cores", at(3))["free"] == 16
    # the steps cover the window exactly, each ending where the next starts, all different
    for name in ("cores", "memory", "storage"):
        found = resource(document, name)["steps"]
        assert found[0]["start"] == document["from"] and found[-1]["end"] == document["to"]
        for a, b in pairwise(found):
            assert a["end"] == b["start"]
            assert {k: v for k, v in a.items() if k not in ("start", "end")} != {
                k: v for k, v in b.items() if k not in ("start", "end")}  # fmt: skip


def test_a_user_sees_their_own_bookings_in_full_and_others_anonymous(node, users, booked):
    client, _ = node
    bookings = usage(client, users["alice"])["bookings"]
    own = [b for b in bookings if b.get("own")]
    assert [b["session"] for b in own] == [booked["alice"]]
    assert own[0]["phase"] == "ACCEPTED" and own[0]["state"] == "confirmed"
    assert own[0]["href"].endswith(f"/sessions/{booked['alice']}")
    assert own[0]["amounts"]["cores"] == 2
    assert (own[0]["start"], own[0]["end"]) == (text(at(1)), text(at(2)))
    others = [b for b in bookings if not b.get("own")]
    assert others and all(b["state"] == "held" for b in others)
    for other in others:  # amounts and a window, nothing that names the session or its owner
        assert set(other) == {"state", "start", "end", "amounts"}
    assert not any(uuid in str(bookings) for uuid in booked["bob"])
    assert "bob" not in str(bookings)

    seen_by_bob = usage(client, users["bob"])["bookings"]
    assert sorted(b["session"] for b in seen_by_bob if b.get("own")) == sorted(booked["bob"])
    assert booked["alice"] not in str(seen_by_bob) and "alice" not in str(seen_by_bob)


def test_an_admin_sees_every_booking_in_full(node, users, booked):
    client, _ = node
    bookings = usage(client, users["root"])["bookings"]
    assert {b["session"] for b in bookings} == {booked["alice"], *booked["bob"]}
    owners = {b["session"]: b["owner"] for b in bookings}
    assert owners[booked["alice"]] == "test:alice"
    assert {owners[u] for u in booked["bob"]} == {"test:bob"}
    assert not any(b["own"] for b in bookings)


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"from": "tomorrow"}, "from"),
        ({"from": "2026-12-03T08:00:00"}, "from"),  # no zone
        ({"to": "2026-12-03"}, "to"),
        ({"from": "2026-12-03T08:00:00Z", "to": "2026-12-03T08:00:00Z"}, "to"),
        ({"from": "2026-12-03T08:00:00Z", "to": "2026-12-01T08:00:00Z"}, "to"),
        ({"from": "2026-12-01T00:00:00Z", "to": "2027-01-02T00:00:00Z"}, "to"),  # > 31 days
    ],
)
def test_a_bad_window_is_a_400_naming_the_parameter(shared, users, params, parameter):
    client, _ = shared
    r = client.get("/pools/sim/main/usage", params=params, headers=users["alice"])
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert [e.get("parameter") for e in r.json()["errors"]] == [parameter]


def test_the_window_defaults_to_a_week_from_now(shared, users):
    client, _ = shared
    r = client.get("/pools/sim/main/usage", headers=users["alice"])
    assert r.status_code == 200, r.text
    start, end = (datetime.fromisoformat(r.json()[k]) for k in ("from", "to"))
    assert end - start == timedelta(days=7)
    assert abs(start - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.mark.parametrize("path", ["/pools/sim/nope/usage", "/pools/east/main/usage"])
def test_an_unknown_pool_is_a_404(shared, users, path):
    client, _ = shared
    r = client.get(path, headers=users["alice"])
    assert r.status_code == 404, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    assert "pool" in r.json()["detail"]


def test_the_usage_needs_credentials_where_the_node_wants_them(shared):
    client, _ = shared
    assert client.get("/pools/sim/main/usage").status_code == 401


def claim(state: str, start: int, end: int, amount: int, offerset: str = "o",
          maintenance: str | None = None) -> PoolClaim:  # fmt: skip
    return PoolClaim("cores", amount, start, end, state, offerset, None if maintenance else "s",
                     None, None, maintenance)  # fmt: skip


def test_the_steps_of_holds_count_an_offer_set_once_and_free_never_goes_below_zero():
    """Two overlapping holds of one offer set count as their largest; a maintenance window
    is its own state; more booked than the capacity leaves nothing free, not less."""
    claims = [
        claim("HELD", 10, 30, 4, "a"), claim("HELD", 20, 40, 6, "a"),  # alternatives
        claim("CONFIRMED", 0, 50, 2), claim("ACTIVE", 5, 15, 1),
        claim("CONFIRMED", 35, 60, 9, "m", maintenance="m"),
    ]  # fmt: skip
    found = steps(claims, "cores", 10, Window(0, 60))
    assert found == [
        Step(0, 5, {"held": 0, "confirmed": 2, "active": 0, "maintenance": 0}, 8),
        Step(5, 10, {"held": 0, "confirmed": 2, "active": 1, "maintenance": 0}, 7),
        Step(10, 15, {"held": 4, "confirmed": 2, "active": 1, "maintenance": 0}, 3),
        Step(15, 20, {"held": 4, "confirmed": 2, "active": 0, "maintenance": 0}, 4),
        Step(20, 35, {"held": 6, "confirmed": 2, "active": 0, "maintenance": 0}, 2),
        Step(35, 40, {"held": 6, "confirmed": 2, "active": 0, "maintenance": 9}, 0),
        Step(40, 50, {"held": 0, "confirmed": 2, "active": 0, "maintenance": 9}, 0),
        Step(50, 60, {"held": 0, "confirmed": 0, "active": 0, "maintenance": 9}, 1),
    ]
    # a window inside the claims starts with the level in force, and ends at its end
    assert steps(claims, "cores", 10, Window(12, 18)) == [
        Step(12, 15, {"held": 4, "confirmed": 2, "active": 1, "maintenance": 0}, 3),
        Step(15, 18, {"held": 4, "confirmed": 2, "active": 0, "maintenance": 0}, 4),
    ]


# --- the feed ----------------------------------------------------------------------------


def parse(body: str) -> list[icalendar.Event]:
    calendar = icalendar.Calendar.from_ical(body)
    assert calendar["VERSION"] == "2.0" and calendar["PRODID"]
    return list(calendar.walk("VEVENT"))


def feed(client: TestClient, **kwargs: Any) -> list[icalendar.Event]:
    r = client.get("/sessions.ics", **kwargs)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/calendar"
    return parse(r.text)


def test_the_feed_has_one_event_per_booked_session_of_the_caller(node, users, booked):
    client, broker = node
    events = feed(client, headers=users["alice"])
    assert len(events) == 1  # bob's open offers are his, and no bookings of anyone's yet
    event = events[0]
    assert str(event["UID"]) == f"{booked['alice']}@127.0.0.1"
    assert event.decoded("DTSTART") == at(1) and event.decoded("DTEND") == at(2)
    assert event.decoded("DTSTART").tzinfo is not None  # UTC, written with Z
    assert str(event["STATUS"]) == "CONFIRMED"
    assert str(event["URL"]) == f"{broker.base_url}/sessions/{booked['alice']}"
    assert "accepted" in str(event["SUMMARY"]) and "sim/main" in str(event["SUMMARY"])
    assert abs(event.decoded("LAST-MODIFIED") - datetime.now(UTC)) < timedelta(minutes=1)
    assert feed(client, headers=users["bob"]) == []  # offers are no bookings

    r = client.post(f"/sessions/{booked['alice']}", json=CANCEL, headers=users["alice"])
    assert r.status_code == 200, r.text
    (cancelled,) = feed(client, headers=users["alice"])
    assert str(cancelled["STATUS"]) == "CANCELLED"
    assert cancelled["SEQUENCE"] > event["SEQUENCE"]


def feed_url(client: TestClient, who: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """A feed token of ``who``, and the feed URL's path and query as the test client asks."""
    r = client.post("/feed-tokens", headers=who)
    assert r.status_code == 201, r.text
    made = r.json()
    url = urlsplit(made["url"])
    assert url.path == "/sessions.ics" and url.query == f"token={made['token']}"
    return f"{url.path}?{url.query}", made


def test_a_feed_token_reads_the_feed_without_a_header(node, users, booked):
    client, _ = node
    path, made = feed_url(client, users["alice"])
    assert made["scope"] == "sessions.ics" and made["owner"] == "test:alice"
    expires = datetime.fromisoformat(made["expires"])
    assert timedelta(days=179) < expires - datetime.now(UTC) <= timedelta(days=180)
    events = parse(client.get(path).text)
    assert [str(e["UID"]).split("@")[0] for e in events] == [booked["alice"]]
    bob_path, _ = feed_url(client, users["bob"])
    assert parse(client.get(bob_path).text) == []


def test_a_feed_token_reads_the_feed_and_nothing_else(node, users, booked):
    client, _ = node
    _, made = feed_url(client, users["alice"])
    token = made["token"]
    # as a bearer token it is no token at all
    r = client.get("/sessions", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    r = client.get(f"/sessions/{booked['alice']}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    # in a query it opens nothing but the feed
    assert client.get(f"/sessions/{booked['alice']}", params={"token": token}).status_code in (
        400, 401)  # fmt: skip
    assert client.get("/pools/sim/main/usage", params={"token": token}).status_code in (400, 401)
    assert client.post("/feed-tokens", params={"token": token}).status_code in (400, 401)


@pytest.mark.parametrize("spoil", ["signature", "payload", "prefix", "empty", "twice"])
def test_a_spoilt_feed_token_is_a_401(node, users, spoil):
    client, _ = node
    _, made = feed_url(client, users["alice"])
    prefix, payload, signature = made["token"].split(".")
    query = {
        "signature": f"token={prefix}.{payload}.{signature[:-2]}AA",
        "payload": f"token={prefix}.{payload[:-2]}AA.{signature}",
        "prefix": f"token=ebf2.{payload}.{signature}",
        "empty": "token=",
        "twice": f"token={made['token']}&token={made['token']}",
    }[spoil]
    r = client.get(f"/sessions.ics?{query}")
    assert r.status_code in (400, 401), r.text
    assert "BEGIN:VCALENDAR" not in r.text


def test_feed_tokens_expire_and_die_with_their_secret_and_their_issuer(issuer):
    config = parse_config(settings(issuer))
    auth = config.auth
    made = feeds.make_token(auth, identity_of("alice"), now=1_000)
    assert feeds.read_token(auth, made.token, now=1_001).owner == "test:alice"
    assert feeds.read_token(auth, made.token, now=1_001).groups == frozenset()  # never admin
    lifetime = int(auth.feeds.lifetime.total_seconds())
    with pytest.raises(Unauthenticated, match="expired"):
        feeds.read_token(auth, made.token, now=1_000 + lifetime)
    rotated = parse_config(settings(issuer, feeds={"secret": SECRET[::-1]})).auth
    with pytest.raises(Unauthenticated, match="not valid"):
        feeds.read_token(rotated, made.token, now=1_001)
    other_issuer = parse_config(
        {**settings(issuer), "auth": {**issuer.auth_config(name="other"),
                                      "feeds": {"secret": SECRET}}}
    ).auth  # fmt: skip
    with pytest.raises(Unauthenticated, match="not valid"):
        feeds.read_token(other_issuer, made.token, now=1_001)


def identity_of(subject: str) -> Identity:
    return Identity(subject=subject, issuer="test")


def test_no_feed_token_for_the_anonymous_caller_nor_without_a_secret(issuer, tmp_path, users):
    config = settings(issuer, anonymous=True, feeds={})
    broker = build_broker(make_config(f"sqlite:///{tmp_path / 'n.db'}", **config))
    try:
        with TestClient(create_app(broker, reaper=False, lifecycle=False),
                        raise_server_exceptions=False) as client:  # fmt: skip
            r = client.post("/feed-tokens")
            assert r.status_code == 403 and "anonymous" in r.json()["detail"]
            r = client.post("/feed-tokens", headers=users["alice"])
            assert r.status_code == 409 and "auth.feeds.secret" in r.json()["detail"]
            # anonymous callers still read their feed, and a bad token is never ignored
            assert client.get("/sessions.ics").status_code == 200
            assert client.get("/sessions.ics", params={"token": "ebf1.a.b"}).status_code == 401
    finally:
        broker.close()


def test_the_feed_settings_are_checked():
    with pytest.raises(Exception, match=r"auth\.feeds\.secret"):
        parse_config({"auth": {"feeds": {"secret": "short"}}})
    with pytest.raises(Exception, match=r"auth\.feeds\.lifetime"):
        parse_config({"auth": {"feeds": {"secret": SECRET, "lifetime": "P2Y"}}})


# --- the page ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "media_type"),
    [("/calendar", "text/html"), ("/calendar/calendar.js", "text/javascript"),
     ("/calendar/calendar.css", "text/css")],
)  # fmt: skip
def test_the_calendar_is_static_files_of_the_package_needing_no_token(shared, path, media_type):
    client, _ = shared
    r = client.get(path)  # the node wants a token for its API, not for the page
    assert r.status_code == 200 and r.headers["content-type"].startswith(media_type)
    policy = r.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "http" not in r.text.replace("http://www.w3.org/2000/svg", "").replace(
        "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/", "")  # fmt: skip
    head = client.head(path)
    assert head.status_code == 200 and head.content == b""


def test_the_calendar_has_one_address(shared):
    client, _ = shared
    r = client.get("/calendar/", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "../calendar"
    assert client.get("/calendar/other.js").status_code == 404
    assert client.post("/calendar").status_code in (404, 405)


def test_feed_tokens_are_masked_in_the_access_log():
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", "/sessions.ics?token=ebf1.eyJv.c2ln", "1.1",
                                200), None)  # fmt: skip
    assert feeds.MaskFeedTokens().filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "GET /sessions.ics?token=ebf1.*** HTTP/1.1" 200'


def test_maintenance_and_a_drain_are_shown_to_everyone(node, users, booked):
    """An admin's maintenance window is its own state in the steps and a booking everyone sees
    (it is public, as in GET /node); a drained pool says so."""
    client, _ = node
    window = {"start": text(at(4)), "end": text(at(5)), "reason": "firmware",
              "amounts": {"cores": 6}}  # fmt: skip
    r = client.post("/pools/sim/main/maintenance", json=window, headers=users["root"])
    assert r.status_code == 201, r.text
    document = usage(client, users["alice"])
    step = level(document, "cores", at(4.5))
    assert (step["maintenance"], step["free"]) == (6, 10)
    (maintenance,) = [b for b in document["bookings"] if b["state"] == "maintenance"]
    assert maintenance["maintenance"] == r.json()["uuid"]
    assert (maintenance["start"], maintenance["end"]) == (text(at(4)), text(at(5)))
    assert maintenance["amounts"] == {"cores": 6} and "session" not in maintenance
    assert document["state"] == "open"
    r = client.put("/pools/sim/main/drain", json={"reason": "moving racks"}, headers=users["root"])
    assert r.status_code == 200, r.text
    assert usage(client, users["alice"])["state"] == "drained"


def test_a_window_with_too_many_changes_is_refused(node, users, booked, monkeypatch):
    """The answer is bounded: past ``MAX_STEPS`` steps in a class, a shorter window is asked."""
    client, _ = node
    monkeypatch.setattr(occupancy, "MAX_STEPS", 2)  # 3 in cores and memory here
    r = client.get("/pools/sim/main/usage", params={"from": text(at(0)), "to": text(at(6))},
                   headers=users["alice"])  # fmt: skip
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["parameter"] == "to" and "shorter" in r.json()["detail"]
    assert usage(client, users["alice"], to=text(at(1)))["from"] == text(at(0))
