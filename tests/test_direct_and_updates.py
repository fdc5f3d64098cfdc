"""The standard's updates and direct execution (issue "speak the standard exactly", parts 5, 6).

- ``CANCELLED`` on an ``OFFERED`` session withdraws that one offer and frees its hold; its
  siblings stay ``OFFERED``.
- A refused update keeps its 4xx, and its problem carries the session as it is now
  (``session``): an expired offer (409, EXPIRED), a client setting ``FAILED`` (409), a value
  that is no phase (400).
- ``POST /direct`` (and ``POST /sessions``) answers ``303 See Other`` with ``Location`` and the
  session; one that cannot start answers 400 with a stored ``FAILED`` session saying why.
"""

from __future__ import annotations

import time

import yaml
from sqlmodel import select

from broker_core.db.tables import Booking, ExecutionSession
from tests.conftest import ACCEPT, request_doc

BASE = "http://127.0.0.1:8080"
PROBLEM = "application/problem+json"


def phase(value: object) -> dict:
    return {**ACCEPT, "value": value}


def bookings(broker, offerset_uuid: str) -> dict[str, str]:
    with broker.db.read() as s:
        rows = s.exec(select(Booking).where(Booking.offerset_uuid == offerset_uuid)).all()
        return {b.session_uuid: b.state for b in rows}


def ask(client, doc=None) -> dict:
    r = client.post("/requests", json=doc or request_doc((16, 16)))
    assert r.status_code == 200 and r.json()["result"] == "YES", r.text
    return r.json()


def options(session: dict) -> list:
    return [o["values"] for o in session["meta"]["options"] if o["path"] == "phase"]


def path_of(url: str) -> str:
    assert url.startswith(BASE), url
    return url[len(BASE) :]


# --- withdrawing an offer ------------------------------------------------------------------------


def test_an_offer_lists_cancelled_among_its_options(client):
    offer = ask(client)["offers"][0]
    assert options(offer) == [["ACCEPTED", "REJECTED", "CANCELLED"]]


def test_cancelling_an_offer_withdraws_it_and_frees_its_hold(client, broker):
    offerset = ask(client)
    first, second, *others = offerset["offers"]
    assert others, "the node offers more than two slots"
    withdrawn = first["meta"]["uuid"]
    # while it is held, nobody else is offered that slot
    assert all(o["schedule"] != first["schedule"] for o in ask(client)["offers"])

    r = client.post(f"/sessions/{withdrawn}", json=phase("CANCELLED"))
    assert r.status_code == 200, r.text
    assert r.json()["phase"] == "CANCELLED" and r.json()["meta"]["options"] == []
    states = bookings(broker, offerset["meta"]["uuid"])
    assert states.pop(withdrawn) == "RELEASED"
    assert set(states.values()) == {"HELD"}  # the siblings are still held for the client
    siblings = client.get(path_of(offerset["meta"]["url"])).json()
    assert siblings["result"] == "YES"
    by_uuid = {o["meta"]["uuid"]: o for o in siblings["offers"]}
    assert by_uuid.pop(withdrawn)["phase"] == "CANCELLED"
    assert {o["phase"] for o in by_uuid.values()} == {"OFFERED"}
    assert all(options(o) == [["ACCEPTED", "REJECTED", "CANCELLED"]] for o in by_uuid.values())

    # the freed capacity goes to the next request: the withdrawn slot is offered again
    assert ask(client)["offers"][0]["schedule"] == first["schedule"]
    # repeating the withdrawal is harmless
    again = client.post(f"/sessions/{withdrawn}", json=phase("CANCELLED"))
    assert again.status_code == 200 and again.json()["phase"] == "CANCELLED"

    # a sibling can still be accepted, which rejects the rest as before ...
    r = client.post(f"/sessions/{second['meta']['uuid']}", json=ACCEPT)
    assert r.status_code == 200 and r.json()["phase"] in ("ACCEPTED", "WAITING", "PREPARING")
    phases = {o["meta"]["uuid"]: o["phase"]
              for o in client.get(path_of(offerset["meta"]["url"])).json()["offers"]}  # fmt: skip
    assert phases.pop(withdrawn) == "CANCELLED"
    phases.pop(second["meta"]["uuid"])
    assert set(phases.values()) == {"REJECTED"}
    # ... and accepting another sibling now is the 409 it always was, the session alongside
    r = client.post(f"/sessions/{others[0]['meta']['uuid']}", json=ACCEPT)
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM
    assert r.json()["phase"] == "REJECTED"
    assert r.json()["session"]["phase"] == "REJECTED"
    assert r.json()["session"]["meta"]["uuid"] == others[0]["meta"]["uuid"]


def test_withdrawing_every_offer_leaves_a_yes_offer_set_with_nothing_open(client, broker):
    offerset = ask(client, request_doc((1, 1)))
    for offer in offerset["offers"]:
        r = client.post(f"/sessions/{offer['meta']['uuid']}", json=phase("CANCELLED"))
        assert r.status_code == 200 and r.json()["phase"] == "CANCELLED"
    after = client.get(path_of(offerset["meta"]["url"])).json()
    assert after["result"] == "YES"  # what was answered; no offer of it is open any more
    assert {o["phase"] for o in after["offers"]} == {"CANCELLED"}
    assert all(o["meta"]["options"] == [] for o in after["offers"])
    assert set(bookings(broker, offerset["meta"]["uuid"]).values()) == {"RELEASED"}


# --- refused updates carry the session -----------------------------------------------------------


def test_accepting_an_expired_offer_is_a_409_showing_it_expired(broker_factory, client_factory,
                                                               sqlite_url):  # fmt: skip
    broker = broker_factory(sqlite_url)
    client = client_factory(broker)
    offerset = ask(client, request_doc((2, 2)))
    chosen = offerset["offers"][0]["meta"]["uuid"]
    with broker.db.write() as s:  # let the offer run out without waiting for the clock
        row = s.get(ExecutionSession, chosen)
        row.expires_at = int(time.time()) - 1
        s.add(row)
    r = client.post(f"/sessions/{chosen}", json=ACCEPT)
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["phase"] == "EXPIRED"
    assert body["session"]["phase"] == "EXPIRED"
    assert body["session"]["meta"]["uuid"] == chosen
    assert body["session"]["meta"]["options"] == []
    assert bookings(broker, offerset["meta"]["uuid"])[chosen] == "RELEASED"
    # once expired, accepting it again says the same
    r = client.post(f"/sessions/{chosen}", json=ACCEPT)
    assert r.status_code == 409 and r.json()["session"]["phase"] == "EXPIRED"


def test_a_client_setting_failed_is_a_409_with_the_session(client):
    chosen = ask(client)["offers"][0]["meta"]["uuid"]
    r = client.post(f"/sessions/{chosen}", json=phase("FAILED"))
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM
    assert r.json()["phase"] == "OFFERED"
    assert r.json()["session"]["phase"] == "OFFERED"
    assert options(r.json()["session"]) == [["ACCEPTED", "REJECTED", "CANCELLED"]]
    assert client.get(f"/sessions/{chosen}").json()["phase"] == "OFFERED"


def test_a_value_that_is_no_phase_is_a_400_with_the_session(client):
    chosen = ask(client)["offers"][0]["meta"]["uuid"]
    for value in ("BANANA", 7):
        r = client.post(f"/sessions/{chosen}", json=phase(value))
        assert r.status_code == 400 and r.headers["content-type"] == PROBLEM
        assert r.json()["errors"][0]["pointer"] == "/value"
        assert r.json()["session"]["phase"] == "OFFERED"
        assert r.json()["session"]["meta"]["uuid"] == chosen
    assert client.post(f"/sessions/{chosen}", json=ACCEPT).status_code == 200


def test_a_refusal_for_no_session_is_a_404_without_one(client):
    r = client.post("/sessions/00000000-0000-4000-8000-000000000000", json=phase("BANANA"))
    assert r.status_code == 404 and "session" not in r.json()


# --- direct execution ----------------------------------------------------------------------------


def direct(client, doc, path="/direct", **kwargs):
    return client.post(path, json=doc, follow_redirects=False, **kwargs)


def test_direct_is_a_303_to_the_session_with_the_session_as_body(client, broker):
    for path in ("/direct", "/sessions"):  # the older alias answers the same
        r = direct(client, request_doc((4, 4), duration="PT1H"), path)
        assert r.status_code == 303, r.text
        assert r.headers["content-type"] == "application/json"
        session = r.json()
        assert session["kind"].endswith("/session/scheduled-execution-session.yaml")
        assert session["phase"] == "ACCEPTED"
        assert session["compute"]["cores"] == {"min": 4, "max": 4}
        uuid = session["meta"]["uuid"]
        # an absolute URL (the standard's format: url), the session's own
        assert r.headers["location"] == f"{BASE}/sessions/{uuid}" == session["meta"]["url"]
        assert options(session) == [["CANCELLED"]]
        booked = set(bookings(broker, session["offerset"]["uuid"]).values())
        assert booked <= {"CONFIRMED", "ACTIVE"}
        followed = client.get(path_of(r.headers["location"]))
        assert followed.status_code == 200 and followed.json()["meta"]["uuid"] == uuid


def test_a_client_following_the_redirect_gets_the_session(client):
    r = client.post("/direct", json=request_doc((1, 1)))  # the test client follows 303s
    assert r.status_code == 200 and r.json()["phase"] in ("ACCEPTED", "WAITING", "PREPARING")
    assert r.history and r.history[0].status_code == 303


def test_direct_answers_yaml_too(client):
    r = direct(client, request_doc((1, 1)), headers={"Accept": "application/yaml"})
    assert r.status_code == 303 and r.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(r.text)["meta"]["url"] == r.headers["location"]


def test_a_direct_that_cannot_start_is_a_400_with_a_stored_failed_session(client, broker):
    assert direct(client, request_doc((16, 16))).status_code == 303  # the node is full now
    r = direct(client, request_doc((2, 2)))
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    failed = r.json()
    assert failed["phase"] == "FAILED" and failed["meta"]["options"] == []
    texts = [m["message"] for m in failed["meta"]["messages"]]
    assert any("at most 0 cores free" in t for t in texts), texts
    assert failed["executable"]["kind"].endswith("/executable/docker-container.yaml")
    # it is kept: GET finds it, as the standard's clients may ask; nothing is booked for it
    got = client.get(path_of(failed["meta"]["url"]))
    assert got.status_code == 200 and got.json()["phase"] == "FAILED"
    assert got.json()["meta"]["messages"] == failed["meta"]["messages"]
    assert bookings(broker, failed["offerset"]["uuid"]) == {}
    offerset = client.get(path_of(failed["offerset"]["url"])).json()
    assert offerset["result"] == "NO"
    assert [o["meta"]["uuid"] for o in offerset["offers"]] == [failed["meta"]["uuid"]]
    # a FAILED session takes no update but harmless repeats
    r = client.post(path_of(failed["meta"]["url"]), json=phase("CANCELLED"))
    assert r.status_code == 409 and r.json()["session"]["phase"] == "FAILED"


def test_a_direct_execution_the_node_cannot_serve_is_a_failed_session_saying_why(client):
    cases = {
        "unknown executable kind": {**request_doc(), "executable": {
            "kind": "https://example.org/kinds/executable/quantum.yaml"}},
        "cores": request_doc(cores=(4096, 4096)),  # more than the node has at all
    }  # fmt: skip
    for said, doc in cases.items():
        r = direct(client, doc)
        assert r.status_code == 400, r.text
        failed = r.json()
        assert failed["phase"] == "FAILED"
        texts = " ".join(m["message"] for m in failed["meta"]["messages"])
        assert said in texts, texts
        assert client.get(path_of(failed["meta"]["url"])).json()["phase"] == "FAILED"
    # the unknown executable is shown as it was sent, with the session's phase
    r = direct(client, cases["unknown executable kind"])
    assert r.json()["executable"]["kind"] == "https://example.org/kinds/executable/quantum.yaml"
    assert r.json()["executable"]["phase"] == "FAILED"


def test_a_malformed_direct_request_is_still_a_problem(client):
    r = direct(client, {"executable": {"kind": 7}})
    assert r.status_code == 400 and r.headers["content-type"] == PROBLEM
    assert r.json()["errors"]


def test_refusals_and_direct_answers_in_xml(client):
    chosen = ask(client, request_doc((1, 1)))["offers"][0]["meta"]["uuid"]
    xml = {"Accept": "application/xml"}
    r = client.post(f"/sessions/{chosen}", json=phase("FAILED"), headers=xml)
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+xml")
    assert chosen.encode() in r.content  # the session is in the problem
    r = direct(client, request_doc((1, 1)), headers=xml)
    assert r.status_code == 303 and r.headers["content-type"].startswith("application/xml")
    r = direct(client, request_doc((4096, 4096)), headers=xml)
    assert r.status_code == 400 and r.headers["content-type"].startswith("application/xml")
    assert b"FAILED" in r.content
