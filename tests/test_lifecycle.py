"""The lifecycle engine, through the HTTP API, on the simulated platform (timers, no work)."""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from broker_core.db.tables import Booking, ExecutionSession
from broker_core.http.app import create_app
from broker_core.lifecycle.engine import Lifecycle
from broker_core.lifecycle.reconcile import reconcile
from broker_core.offers.service import request_offers
from broker_core.sessions.record import SessionRecord
from broker_core.sessions.updates import update_session
from platforms.contract import work_name
from tests.conftest import ACCEPT, POOL_CONFIG, request_doc

CANCEL = {**ACCEPT, "value": "CANCELLED"}


def simulated(**options: Any) -> list[dict[str, Any]]:
    platform = POOL_CONFIG["platforms"][0]
    return [{**platform, "options": {**platform["options"], **options}}]


@pytest.fixture
def node(broker_factory, sqlite_url, tmp_path):
    """A node whose simulated work runs for ``run_time`` and exits with ``exit_code``."""
    clients = []

    def make(**options: Any) -> tuple[Any, TestClient]:
        broker = broker_factory(
            sqlite_url,
            platforms=simulated(**options),
            lifecycle={"workdir": str(tmp_path / "sessions"), "poll_interval": "PT1S"},
            offers={"granularity": "PT1S"},
        )
        client = TestClient(create_app(broker), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return broker, client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def wait_for(client: TestClient, uuid: str, phases: set[str], seconds: float = 15) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        doc = client.get(f"/sessions/{uuid}").json()
        if doc["phase"] in phases:
            return doc
        assert time.monotonic() < deadline, f"still {doc['phase']}: {doc['meta'].get('messages')}"
        time.sleep(0.1)


def direct(client: TestClient, duration: str = "PT1M") -> str:
    r = client.post("/direct", json=request_doc(cores=(2, 2), duration=duration),
                    follow_redirects=False)  # fmt: skip
    assert r.status_code == 303, r.text
    return r.json()["meta"]["uuid"]


def booking_state(broker, uuid: str) -> str:
    with broker.db.read() as session:
        return session.exec(select(Booking.state).where(Booking.session_uuid == uuid)).one()


def texts(doc: dict) -> str:
    return " | ".join(m["message"] for m in doc["meta"]["messages"])


def test_a_direct_session_walks_through_every_phase_to_completed(node):
    broker, client = node(run_time="PT1S")
    uuid = direct(client)
    doc = wait_for(client, uuid, {"COMPLETED", "FAILED"})
    assert doc["phase"] == "COMPLETED", texts(doc)
    assert set(doc["schedule"]["actual"]) >= {
        "waiting", "preparing", "available", "running", "finished", "completed",
    }  # fmt: skip
    assert [c["phase"] for c in doc["components"]] == ["AVAILABLE"]
    assert "simulated: nothing is executed" in texts(doc)
    assert "lifecycle" not in doc  # the engine's own notes stay inside
    assert booking_state(broker, uuid) == "RELEASED"
    assert doc["meta"]["options"] == []


def test_a_failing_executable_ends_failed_with_its_exit_code(node):
    _, client = node(run_time="PT1S", exit_code=3)
    doc = wait_for(client, direct(client), {"COMPLETED", "FAILED"})
    assert doc["phase"] == "FAILED"
    assert "exited with 3" in texts(doc)


def test_the_end_of_the_booked_window_stops_the_work(node):
    broker, client = node(run_time="PT1H")
    uuid = direct(client, duration="PT3S")
    doc = wait_for(client, uuid, {"COMPLETED", "FAILED"})
    assert doc["phase"] == "FAILED"
    assert "booked window ended" in texts(doc)
    assert booking_state(broker, uuid) == "RELEASED"


def test_cancel_while_running_stops_the_work_and_frees_the_booking(node):
    broker, client = node(run_time="PT1H")
    uuid = direct(client)
    wait_for(client, uuid, {"RUNNING"})
    assert booking_state(broker, uuid) == "ACTIVE"
    r = client.post(f"/sessions/{uuid}", json=CANCEL)
    assert r.status_code == 200 and r.json()["phase"] == "CANCELLED"
    deadline = time.monotonic() + 10
    while booking_state(broker, uuid) != "RELEASED":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    doc = client.get(f"/sessions/{uuid}").json()
    assert "stopped and removed" in texts(doc)
    with broker.db.read() as session:
        row = session.get(ExecutionSession, uuid)
    assert row.due_at is None and "stopped" in SessionRecord.of(row.record).platform_state


def test_an_accepted_future_offer_waits_for_its_preparing_start(node):
    broker, client = node()
    start = time.time() + 3600
    window = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(start))}/PT1H"
    offer = client.post("/requests", json=request_doc(start=window, duration="PT1H")).json()
    uuid = offer["offers"][0]["meta"]["uuid"]
    assert client.post(f"/sessions/{uuid}", json=ACCEPT).status_code == 200
    doc = wait_for(client, uuid, {"WAITING"})
    with broker.db.read() as session:
        row = session.get(ExecutionSession, uuid)
    assert row.due_at == row.prepare_at
    assert booking_state(broker, uuid) == "CONFIRMED"
    assert {"kind": "uri:enum-value-option", "path": "phase", "values": ["CANCELLED"]} in doc[
        "meta"
    ]["options"]
    # cancelled before anything was made on the platform: freed at once
    assert client.post(f"/sessions/{uuid}", json=CANCEL).json()["phase"] == "CANCELLED"
    assert booking_state(broker, uuid) == "RELEASED"


def accepted_session(broker) -> str:
    answer = request_offers(broker, request_doc(duration="PT1H"), direct=True)
    return answer["offers"][0]["meta"]["uuid"]


def test_a_cancel_that_lands_while_a_step_makes_the_work_still_has_it_removed(broker):
    """The interleaving behind a cancelled session's booking found ACTIVE: the engine's step
    is making the work on the platform when the cancel commits. The cancel saw no work, so it
    freed the booking at once; the step's write then loses to the cancel's generation. The
    engine must keep what the platform made and come back to remove it, in the same pass."""
    uuid = accepted_session(broker)
    with broker.db.write() as session:  # its window starts now, not at the next whole minute
        row = session.get(ExecutionSession, uuid)
        row.prepare_at = row.start_at = row.due_at = int(time.time()) - 1
        session.add(row)
    engine = Lifecycle(broker)
    platform = engine.platforms["sim"]
    made = platform.start
    seen: dict[str, Any] = {}

    def start_then_cancel(execution):
        made(execution)  # the work exists on the platform now; the step has not written yet
        seen["booking"] = booking_state(broker, uuid)
        answer = update_session(broker, uuid, CANCEL)
        seen["phase"], seen["released"] = answer["phase"], booking_state(broker, uuid)

    platform.start = start_then_cancel
    assert engine.acquire(uuid)
    engine.advance(uuid)
    assert seen == {"booking": "ACTIVE", "phase": "CANCELLED", "released": "RELEASED"}
    with broker.db.read() as session:
        row = session.get(ExecutionSession, uuid)
    state = SessionRecord.of(row.record).platform_state
    assert row.phase == "CANCELLED" and row.due_at is None
    assert "started_at" in state and "stopped" in state  # kept, then stopped and removed
    assert booking_state(broker, uuid) == "RELEASED"


def test_only_one_process_holds_a_session(broker):
    uuid = accepted_session(broker)
    first, second = Lifecycle(broker, owner="a:1:1"), Lifecycle(broker, owner="b:2:2")
    assert uuid in first.due(10) and first.acquire(uuid)
    assert uuid not in second.due(10) and not second.acquire(uuid)
    # a lease runs out: then the other process may take the session over
    with broker.db.write() as session:
        row = session.get(ExecutionSession, uuid)
        row.lease_until = int(time.time()) - 1
        session.add(row)
    assert second.acquire(uuid) and not first.acquire(uuid)


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(broker):
    uuid = accepted_session(broker)
    dead = Lifecycle(broker, owner=f"{socket.gethostname()}:{2**22 + 17}:1")  # no such pid
    parent = Lifecycle(broker, owner=f"{socket.gethostname()}:{os.getppid()}:1")
    mine = Lifecycle(broker)
    assert dead.acquire(uuid)
    assert mine.acquire(uuid)  # its holder's process does not run
    assert not parent.acquire(uuid)  # this process runs: its lease holds
    mine.let_go(uuid)
    assert parent.acquire(uuid)
    assert not mine.acquire(uuid)  # a live holder on this host keeps it


def test_reconciliation_removes_work_of_finished_sessions_and_reports_drift(
    broker_factory, sqlite_url
):
    broker = broker_factory(sqlite_url, offers={"granularity": "PT1S"})
    uuid = accepted_session(broker)
    engine = Lifecycle(broker)
    engine.acquire(uuid)
    engine.advance(uuid)  # WAITING, PREPARING, component, AVAILABLE ... RUNNING
    with broker.db.read() as session:
        assert session.get(ExecutionSession, uuid).phase in ("AVAILABLE", "RUNNING")

    platform = engine.platforms["sim"]
    removed: list[str] = []
    listed = {work_name(uuid), work_name("not-ours")}
    platform.list_work = lambda: set(listed)  # type: ignore[method-assign]
    platform.remove_work = removed.append  # type: ignore[method-assign]
    assert reconcile(engine) == {"removed": [], "unknown": [work_name("not-ours")], "missing": []}

    listed.discard(work_name(uuid))  # the work vanished from the platform
    assert reconcile(engine)["missing"] == [work_name(uuid)]
    engine.advance(uuid)
    with broker.db.read() as session:
        row = session.get(ExecutionSession, uuid)
    assert row.phase in ("AVAILABLE", "RUNNING")  # simulated poll still sees it running

    # the session ends; its work is still listed: it is removed and the session says so
    with broker.db.write() as session:
        row = session.get(ExecutionSession, uuid)
        row.phase, row.due_at = "COMPLETED", None
        session.add(row)
    listed.add(work_name(uuid))
    assert reconcile(engine)["removed"] == [work_name(uuid)] and removed == [work_name(uuid)]
    with broker.db.read() as session:
        messages = SessionRecord.of(session.get(ExecutionSession, uuid).record).messages
    assert any("reconciliation removed stray work" in m.message for m in messages)


def test_simulated_work_fills_its_window_and_completes_by_default(node):
    broker, client = node()
    uuid = direct(client, duration="PT3S")
    doc = wait_for(client, uuid, {"COMPLETED", "FAILED"})
    assert doc["phase"] == "COMPLETED", texts(doc)
    assert booking_state(broker, uuid) == "RELEASED"


EXTEND = {"kind": "uri:integer-delta-update", "path": "schedule.duration"}


def future_session(client: TestClient, cores: int = 4, hours_ahead: float = 2) -> str:
    start = time.time() + hours_ahead * 3600
    window = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(start))}/PT1M"
    doc = request_doc(cores=(cores, cores), start=window, duration="PT1H")
    uuid = client.post("/requests", json=doc).json()["offers"][0]["meta"]["uuid"]
    assert client.post(f"/sessions/{uuid}", json=ACCEPT).status_code == 200
    return uuid


def booking_end(broker, uuid: str) -> int:
    with broker.db.read() as session:
        return session.exec(select(Booking.end_at).where(Booking.session_uuid == uuid)).one()


def test_a_session_is_extended_when_capacity_allows(node):
    broker, client = node()
    uuid = future_session(client)
    doc = client.get(f"/sessions/{uuid}").json()
    assert {"kind": "uri:integer-delta-option", "path": "schedule.duration", "units": "seconds",
            "min": 1} in doc["meta"]["options"]  # fmt: skip
    end = booking_end(broker, uuid)
    r = client.post(f"/sessions/{uuid}", json={**EXTEND, "delta": 30, "units": "minutes"})
    assert r.status_code == 200, r.text
    assert r.json()["schedule"]["available"]["duration"] == "PT1H30M"
    assert booking_end(broker, uuid) == end + 1800


def test_an_extension_that_would_overbook_is_a_conflict(node):
    broker, client = node()
    uuid = future_session(client, cores=10)
    # someone else takes 10 of the 16 cores right after the session's window
    end = booking_end(broker, uuid)
    after = f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(end))}/PT1S"
    other = client.post(
        "/requests", json=request_doc(cores=(10, 10), start=after, duration="PT1H")
    ).json()
    assert other["result"] == "YES", other
    assert (
        client.post(f"/sessions/{other['offers'][0]['meta']['uuid']}", json=ACCEPT).status_code
        == 200
    )
    r = client.post(f"/sessions/{uuid}", json={**EXTEND, "delta": 600})
    assert r.status_code == 409, r.text
    assert "6 cores free" in r.json()["detail"] and r.json()["phase"] in ("ACCEPTED", "WAITING")
    assert booking_end(broker, uuid) == end  # nothing moved


@pytest.mark.parametrize(
    ("update", "why"),
    [
        ({**EXTEND, "delta": 0}, "positive integer"),
        ({**EXTEND, "delta": 60, "units": "fortnights"}, "unknown units"),
        ({**EXTEND, "delta": 30 * 86400}, "at most"),
        ({**EXTEND, "path": "schedule.start", "delta": 60}, "apply to schedule.duration"),
    ],
)
def test_extensions_the_node_cannot_make_say_why(node, update, why):
    _, client = node()
    uuid = future_session(client)
    r = client.post(f"/sessions/{uuid}", json=update)
    assert r.status_code == 409 and why in r.json()["detail"], r.text


def test_a_finished_session_cannot_be_extended(node):
    _, client = node(run_time="PT1S")
    uuid = direct(client)
    wait_for(client, uuid, {"COMPLETED"})
    r = client.post(f"/sessions/{uuid}", json={**EXTEND, "delta": 60})
    assert r.status_code == 409 and r.json()["phase"] == "COMPLETED"


def test_two_replicas_on_one_postgres_database_never_run_a_session_twice(broker_factory, pg_url):
    import threading
    from collections import Counter

    settings = {"offers": {"granularity": "PT1S"}, "platforms": simulated(run_time="PT0S")}
    replicas = [broker_factory(pg_url, **settings) for _ in range(3)]
    uuids = [accepted_session(replicas[0]) for _ in range(10)]
    calls: Counter[tuple[str, str]] = Counter()
    lock = threading.Lock()
    engines = []
    for index, replica in enumerate(replicas):
        engine = Lifecycle(replica, owner=f"replica-{index}:1:1")
        platform = engine.platforms["sim"]
        for step in ("reserve", "start", "release"):
            original = getattr(platform, step)

            def counted(execution, *args, _original=original, _step=step):
                with lock:
                    calls[(execution.session, _step)] += 1
                return _original(execution, *args)

            setattr(platform, step, counted)
        engines.append(engine)

    def work(engine: Lifecycle, stop: threading.Event) -> None:
        while not stop.is_set():
            for uuid in engine.due(20):
                if engine.acquire(uuid):
                    engine.advance(uuid)
            time.sleep(0.05)

    stop = threading.Event()
    # one worker per replica, as each node process's runner works on a session once at a time
    threads = [threading.Thread(target=work, args=(e, stop)) for e in engines]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    try:
        while True:
            with replicas[0].db.read() as session:
                rows = session.exec(
                    select(ExecutionSession.phase).where(ExecutionSession.uuid.in_(uuids))
                ).all()
            if set(rows) == {"COMPLETED"}:
                break
            assert time.monotonic() < deadline, Counter(rows)
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    for uuid in uuids:
        for step in ("reserve", "start", "release"):
            assert calls[(uuid, step)] == 1, (uuid, step, calls[(uuid, step)])


def test_logs_are_served_as_text_and_unknown_sessions_are_404(node):
    import uuid as uuidlib

    _, client = node(run_time="PT1S")
    uuid = direct(client)
    wait_for(client, uuid, {"COMPLETED"})
    r = client.get(f"/sessions/{uuid}/logs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.text == ""  # the simulated platform runs nothing, so it has no output
    missing = client.get(f"/sessions/{uuidlib.uuid4()}/logs")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"


def test_a_session_whose_kind_is_gone_fails_and_its_work_is_still_removed(node):
    """A component whose kind's plugin is no longer installed cannot be given to the platform:
    the session fails with a message saying so (it is not retried on every tick), and the
    release still runs, on the session without its components."""
    broker, client = node()
    offer = client.post("/requests", json=request_doc()).json()["offers"][0]
    uuid = offer["meta"]["uuid"]
    with broker.db.write() as session:
        row = session.get(ExecutionSession, uuid)
        record = SessionRecord.of(row.record)
        assert record.components.executable is not None
        record.components.executable["kind"] = "urn:a-kind-whose-plugin-is-gone"
        row.record = record.stored()
        session.add(row)
    assert client.post(f"/sessions/{uuid}", json=ACCEPT).status_code == 200
    deadline = time.monotonic() + 20
    while (doc := client.get(f"/sessions/{uuid}").json())["phase"] not in ("FAILED",):
        assert time.monotonic() < deadline, doc["phase"]
        time.sleep(0.1)
    said = [m["message"] for m in doc["meta"]["messages"]]
    assert sum("cannot be read" in m for m in said) == 1, said
    with broker.db.read() as session:
        booking = session.exec(select(Booking).where(Booking.session_uuid == uuid)).one()
    assert booking.state == "RELEASED"


NOTEBOOK = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/executable/jupyter-notebook.yaml"


def test_a_notebook_whose_window_ends_is_completed_not_failed(node):
    """A person works in a notebook until the booked window ends: that is its normal end,
    whereas batch work still running then did not finish (the test above)."""
    broker, client = node(run_time="PT1H")
    doc = request_doc(cores=(1, 1), duration="PT3S")
    doc["executable"] = {"kind": NOTEBOOK, "location": "https://notebooks.example.org/a.ipynb"}
    r = client.post("/direct", json=doc, follow_redirects=False)
    assert r.status_code == 303, r.text
    uuid = r.json()["meta"]["uuid"]
    done = wait_for(client, uuid, {"COMPLETED", "FAILED"})
    assert done["phase"] == "COMPLETED", texts(done)
    assert "booked window ended" in texts(done) and "stopped" not in texts(done)
    assert booking_state(broker, uuid) == "RELEASED"


def test_a_notebook_location_staging_would_refuse_is_a_no_at_request_time(client):
    for location in ("file:///etc/passwd", "http://127.0.0.1:8080/a.ipynb",
                     "http://10.0.0.7/a.ipynb"):  # fmt: skip
        doc = request_doc()
        doc["executable"] = {"kind": NOTEBOOK, "location": location}
        answer = client.post("/requests", json=doc).json()
        assert answer["result"] == "NO", location
        pointers = [m["values"].get("pointer") for m in answer["meta"]["messages"]]
        assert "/executable/location" in pointers, answer["meta"]["messages"]
