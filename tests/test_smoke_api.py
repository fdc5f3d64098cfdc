import threading
import time

from tests.conftest import ACCEPT, request_doc
from tests.invariants import WAITING_PHASES


def test_request_and_accept(client):
    r = client.post("/requests", json=request_doc((2, 4)))
    assert r.status_code == 200, r.text
    offers = r.json()["offers"]
    assert r.json()["result"] == "YES" and len(offers) == 4
    r = client.post(f"/sessions/{offers[0]['meta']['uuid']}", json=ACCEPT)
    assert r.status_code == 200, r.text
    assert r.json()["phase"] == "ACCEPTED"
    r = client.get(f"/offersets/{r.json()['offerset']['uuid']}")
    phases = [o["phase"] for o in r.json()["offers"]]
    # the lifecycle engine may already have moved the accepted session on to WAITING
    assert phases[0] in WAITING_PHASES and phases[1:] == ["REJECTED"] * 3



def test_liveness_answers_while_every_handler_thread_is_busy(
    broker_factory, client_factory, sqlite_url, monkeypatch
) -> None:
    """/health/live runs on the event loop: with the node's one handler thread held by a slow
    readiness check (a database that hangs), liveness still answers at once."""
    from broker_core.http.handlers import health

    release = threading.Event()
    ready = health.database_ready

    def hanging(broker):  # type: ignore[no-untyped-def]
        release.wait(10)
        return ready(broker)

    monkeypatch.setattr(health, "database_ready", hanging)
    client = client_factory(broker_factory(sqlite_url, server={"threads": 1}))
    held = threading.Thread(target=client.get, args=("/health/ready",))
    held.start()
    try:
        time.sleep(0.3)  # the one handler thread is now held
        started = time.monotonic()
        assert client.get("/health/live").status_code == 200
        took = time.monotonic() - started
    finally:
        release.set()
        held.join(10)
    assert took < 2, f"liveness waited {took:.1f} s for a handler thread"
