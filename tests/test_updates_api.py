"""POST /sessions/{uuid}: accept, reject, cancel, expiry, and POST /direct."""

from __future__ import annotations

import time

from sqlalchemy import update as sql_update
from sqlmodel import select
from starlette.testclient import TestClient

from broker_core.db.tables import Booking, ExecutionSession
from broker_core.http.app import create_app
from broker_core.sessions.updates import expire_due
from tests.conftest import ACCEPT, request_doc
from tests.invariants import WAITING_PHASES


def update(value: str) -> dict:
    return {**ACCEPT, "value": value}


def bookings(broker, offerset_uuid):
    with broker.db.read() as s:
        rows = s.exec(select(Booking).where(Booking.offerset_uuid == offerset_uuid)).all()
        return {b.session_uuid: b.state for b in rows}


def ask(client, doc=None):
    r = client.post("/requests", json=doc or request_doc((2, 4)))
    assert r.status_code == 200 and r.json()["result"] == "YES", r.text
    return r.json()


def test_accept_confirms_and_rejects_the_siblings(client, broker):
    offerset = ask(client)
    chosen = offerset["offers"][1]["meta"]["uuid"]
    r = client.post(f"/sessions/{chosen}", json=ACCEPT)
    assert r.status_code == 200 and r.json()["phase"] == "ACCEPTED"
    assert r.json()["meta"]["options"] == [
        {"kind": "uri:enum-value-option", "path": "phase", "values": ["CANCELLED"]},
        {"kind": "uri:integer-delta-option", "path": "schedule.duration", "units": "seconds",
         "min": 1},
    ]  # fmt: skip
    states = bookings(broker, offerset["meta"]["uuid"])
    assert states.pop(chosen) == "CONFIRMED"
    assert set(states.values()) == {"RELEASED"}
    phases = [
        o["phase"]
        for o in client.get(offerset["meta"]["url"][len("http://127.0.0.1:8080") :]).json()[
            "offers"
        ]
    ]
    # the lifecycle engine may already have moved the accepted one on to WAITING
    accepted = ["ACCEPTED" if p in WAITING_PHASES else p for p in phases]
    assert sorted(accepted) == ["ACCEPTED", "REJECTED", "REJECTED", "REJECTED"]


def test_accepting_a_rejected_sibling_is_a_409_naming_the_phase(client):
    offerset = ask(client)
    first, second = (o["meta"]["uuid"] for o in offerset["offers"][:2])
    assert client.post(f"/sessions/{first}", json=ACCEPT).status_code == 200
    r = client.post(f"/sessions/{second}", json=ACCEPT)
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["phase"] == "REJECTED" and "REJECTED" in r.json()["detail"]


def test_reject_frees_the_hold(client, broker):
    offerset = ask(client)
    chosen = offerset["offers"][0]["meta"]["uuid"]
    r = client.post(f"/sessions/{chosen}", json=update("REJECTED"))
    assert r.status_code == 200 and r.json()["phase"] == "REJECTED"
    assert bookings(broker, offerset["meta"]["uuid"])[chosen] == "RELEASED"
    assert r.json()["meta"]["options"] == []


def test_cancel_frees_the_booking(client, broker):
    offerset = ask(client, request_doc((16, 16)))
    chosen = offerset["offers"][0]["meta"]["uuid"]
    client.post(f"/sessions/{chosen}", json=ACCEPT)
    # the whole pool is booked now, so the same slot is not offered again
    again = ask(client, request_doc((16, 16)))
    assert all(o["schedule"] != offerset["offers"][0]["schedule"] for o in again["offers"])
    r = client.post(f"/sessions/{chosen}", json=update("CANCELLED"))
    assert r.status_code == 200 and r.json()["phase"] == "CANCELLED"
    # freed by the cancel itself, or, when the lifecycle engine had already made the work on
    # the platform (PREPARING: the booking ACTIVE), by the engine once it has removed the work
    deadline = time.monotonic() + 10
    while bookings(broker, offerset["meta"]["uuid"])[chosen] != "RELEASED":
        assert time.monotonic() < deadline, bookings(broker, offerset["meta"]["uuid"])
        time.sleep(0.05)


def test_impossible_transitions_are_409(client):
    offerset = ask(client)
    chosen = offerset["offers"][0]["meta"]["uuid"]
    r = client.post(f"/sessions/{chosen}", json=update("RUNNING"))
    assert r.status_code == 409 and r.json()["phase"] == "OFFERED"
    assert r.json()["session"]["phase"] == "OFFERED"
    client.post(f"/sessions/{chosen}", json=update("REJECTED"))
    r = client.post(f"/sessions/{chosen}", json=ACCEPT)
    assert r.status_code == 409 and r.json()["phase"] == "REJECTED"


def test_repeating_an_update_is_harmless(broker):
    # without the lifecycle engine, which would move the accepted session on to WAITING
    with TestClient(create_app(broker, lifecycle=False)) as client:
        chosen = ask(client)["offers"][0]["meta"]["uuid"]
        assert client.post(f"/sessions/{chosen}", json=ACCEPT).status_code == 200
        r = client.post(f"/sessions/{chosen}", json=ACCEPT)
        assert r.status_code == 200 and r.json()["phase"] == "ACCEPTED"


def test_unsupported_updates_are_refused(client):
    chosen = ask(client)["offers"][0]["meta"]["uuid"]
    r = client.post(
        f"/sessions/{chosen}",
        json={"kind": "uri:string-value-update", "path": "name", "value": "x"},
    )
    assert r.status_code == 409
    r = client.post(
        f"/sessions/{chosen}", json={"kind": "uri:bogus", "path": "phase", "value": "x"}
    )
    assert r.status_code == 400


def test_unknown_sessions_are_404(client):
    r = client.post("/sessions/00000000-0000-4000-8000-000000000000", json=ACCEPT)
    assert r.status_code == 404
    assert client.get("/sessions/00000000-0000-4000-8000-000000000000").status_code == 404
    assert client.get("/offersets/00000000-0000-4000-8000-000000000000").status_code == 404


def test_accept_after_expiry_is_409(broker_factory, client_factory, sqlite_url):
    broker = broker_factory(sqlite_url)
    client = client_factory(broker)
    chosen = ask(client)["offers"][0]["meta"]["uuid"]
    from broker_core.db.tables import ExecutionSession

    with broker.db.write() as s:  # let the offer run out without waiting for the clock
        row = s.get(ExecutionSession, chosen)
        row.expires_at = int(time.time()) - 1
        s.add(row)
    r = client.post(f"/sessions/{chosen}", json=ACCEPT)
    assert r.status_code == 409 and r.json()["phase"] == "EXPIRED"
    assert client.get(f"/sessions/{chosen}").json()["phase"] == "EXPIRED"


def test_expired_offers_free_their_holds_without_polling(
    broker_factory, client_factory, sqlite_url
):
    broker = broker_factory(sqlite_url, offers={"hold": "PT1S", "max_offers": 1})
    client = client_factory(broker)  # runs the app's lifespan, and with it the reaper
    full = ask(client, request_doc((16, 16)))
    offerset_uuid = full["meta"]["uuid"]
    deadline = time.time() + 10
    while time.time() < deadline and set(bookings(broker, offerset_uuid).values()) != {"RELEASED"}:
        time.sleep(0.1)
    assert set(bookings(broker, offerset_uuid).values()) == {"RELEASED"}
    with broker.db.read() as s:
        from broker_core.db.tables import ExecutionSession

        assert s.get(ExecutionSession, full["offers"][0]["meta"]["uuid"]).phase == "EXPIRED"
    # the capacity is free again: the same slot is offered to the next client
    again = ask(client, request_doc((16, 16)))
    assert again["offers"][0]["schedule"]["available"] == full["offers"][0]["schedule"]["available"]


def test_expire_due_is_idempotent(broker, client):
    ask(client)
    assert expire_due(broker, now=int(time.time()) + 3600) == 4
    assert expire_due(broker, now=int(time.time()) + 3600) == 0


def test_many_offer_sets_expire_together_in_a_few_statements(database_url, broker_factory):
    """Under load as many offer sets expire as are made: a batch of them is expired in a
    bounded number of statements, and only what is due."""
    from sqlalchemy import event

    from broker_core.offers.service import request_offers
    from broker_core.sessions.updates import update_session

    broker = broker_factory(database_url)
    made = [request_offers(broker, request_doc((1, 1))) for _ in range(30)]
    accepted = made[0]["offers"][0]["meta"]["uuid"]
    update_session(broker, accepted, ACCEPT)
    later = request_offers(broker, request_doc((1, 1)))  # due after the expiry run below
    with broker.db.write() as session:
        session.exec(  # type: ignore[call-overload]
            sql_update(ExecutionSession)
            .where(ExecutionSession.offerset_uuid == later["meta"]["uuid"])
            .values(expires_at=ExecutionSession.expires_at + 7200)
        )
    statements = []
    event.listen(broker.db.writer, "before_cursor_execute", lambda *a: statements.append(a[2]))
    assert (
        expire_due(broker, now=int(time.time()) + 3600) == 29 * 4
    )  # (siblings of the accepted one were rejected)
    assert len(statements) < 20, f"{len(statements)} statements for 30 offer sets"
    for answer in made:
        states = set(bookings(broker, answer["meta"]["uuid"]).values())
        assert states == ({"CONFIRMED", "RELEASED"} if answer is made[0] else {"RELEASED"})
    assert set(bookings(broker, later["meta"]["uuid"]).values()) == {"HELD"}
    with broker.db.read() as session:
        assert session.get(ExecutionSession, accepted).phase in WAITING_PHASES


def test_direct_books_and_accepts_a_slot_starting_now(client, broker):
    r = client.post("/direct", json=request_doc((16, 16)), follow_redirects=False)
    assert r.status_code == 303, r.text
    session = r.json()
    assert session["phase"] == "ACCEPTED"
    assert r.headers["location"] == session["meta"]["url"]
    # (ACTIVE once the lifecycle engine starts preparing it, at the next minute at the latest)
    assert set(bookings(broker, session["offerset"]["uuid"]).values()) <= {"CONFIRMED", "ACTIVE"}
    # nothing is left for a second direct request now: a FAILED session with the reason
    r = client.post("/sessions", json=request_doc((1, 1)))  # the older alias
    assert r.status_code == 400
    assert r.json()["phase"] == "FAILED"
    assert "at most 0 cores free" in r.json()["meta"]["messages"][0]["message"]


def test_direct_with_an_unknown_kind_is_a_failed_session(client):
    doc = request_doc()
    doc["executable"]["kind"] = "https://example.org/kinds/executable/quantum.yaml"
    doc["executable"].pop("image")
    r = client.post("/direct", json=doc)
    assert r.status_code == 400 and r.json()["phase"] == "FAILED"
    assert "unknown executable kind" in r.json()["meta"]["messages"][0]["message"]
