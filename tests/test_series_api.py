"""Recurring sessions through the HTTP API, on SQLite and PostgreSQL: a series offered all or
nothing (or with its missing occurrences named), accepted as one act, cancelled whole or one
occurrence at a time, and racing accepts that never overbook."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import bindparam, text
from starlette.testclient import TestClient

from broker_core.http.app import create_app
from broker_core.schedule import parse_instant
from broker_core.sessions.updates import expire_due
from tests.conftest import ACCEPT, request_doc
from tests.invariants import overbookings, state_problems

CANCEL = {**ACCEPT, "value": "CANCELLED"}
REJECT = {**ACCEPT, "value": "REJECTED"}
LONDON = ZoneInfo("Europe/London")
WEEKLY = "FREQ=WEEKLY;COUNT=6"


@pytest.fixture
def node(broker_factory, database_url):
    """A node of 16 cores that offers up to 60 days ahead."""
    broker = broker_factory(database_url, offers={"lookahead": "P60D"})
    with TestClient(create_app(broker), raise_server_exceptions=False) as client:
        yield broker, client


def local_ten(days: int = 1) -> str:
    """10:00 in London, ``days`` from now, as UTC."""
    day = datetime.now(LONDON).date() + timedelta(days=days)
    return datetime(day.year, day.month, day.day, 10, tzinfo=LONDON).astimezone(UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )


def series_doc(rule: str = WEEKLY, *, cores: tuple[int, int] = (2, 4), start: str | None = None,
               duration: str = "PT2H", **recurrence: Any) -> dict[str, Any]:  # fmt: skip
    recurrence = {"rule": rule, "timezone": "Europe/London", **recurrence}
    return request_doc(cores=cores, start=start or local_ten(), duration=duration,
                       recurrence=recurrence)  # fmt: skip


def clean(broker) -> None:
    with broker.db.writer.connect() as conn:
        assert overbookings(conn) == []
        assert state_problems(conn) == []


def booking_states(broker, uuids: list[str]) -> list[str]:
    with broker.db.writer.connect() as conn:
        rows = conn.execute(
            text("SELECT state FROM booking WHERE session_uuid IN :u").bindparams(
                bindparam("u", expanding=True)
            ),
            {"u": uuids},
        )
        return sorted(r[0] for r in rows)


def test_a_weekly_series_is_offered_held_and_accepted_as_one(node):
    broker, client = node
    answer = client.post("/requests", json=series_doc()).json()
    assert answer["result"] == "YES", answer["meta"].get("messages")
    offers = answer["offers"]
    assert 1 <= len(offers) <= 4
    first = offers[0]
    series = first["series"]
    assert series["count"] == 6 and series["missing"] == []
    assert [o["index"] for o in series["occurrences"]] == list(range(6))
    # 10:00 in London every week, whatever the offset (the schedule is the first occurrence)
    for occurrence in series["occurrences"]:
        local = parse_instant(occurrence["start"]).astimezone(LONDON)
        assert (local.hour, local.minute) == (10, 0)
        assert "uuid" not in occurrence  # no session of the client's until accepted
    assert first["schedule"]["available"]["start"].split("/")[0] == series["occurrences"][0][
        "start"]  # fmt: skip
    # the offer set shows the series only, not their occurrences
    again = client.get(f"/offersets/{answer['meta']['uuid']}").json()
    assert [o["meta"]["uuid"] for o in again["offers"]] == [o["meta"]["uuid"] for o in offers]
    listed = client.get("/sessions").json()["items"]
    assert {i["uuid"] for i in listed} == {o["meta"]["uuid"] for o in offers}
    clean(broker)

    accepted = client.post(f"/sessions/{first['meta']['uuid']}", json=ACCEPT)
    assert accepted.status_code == 200, accepted.text
    body = accepted.json()
    assert body["phase"] == "ACCEPTED"
    occurrences = body["series"]["occurrences"]
    uuids = [o["uuid"] for o in occurrences]
    assert len(set(uuids)) == 6 and {o["phase"] for o in occurrences} <= {"ACCEPTED", "WAITING"}
    assert booking_states(broker, uuids) == ["CONFIRMED"] * 6
    for o in occurrences:
        one = client.get(f"/sessions/{o['uuid']}").json()
        assert one["occurrence"]["series"]["uuid"] == first["meta"]["uuid"]
        assert one["schedule"]["available"]["start"].split("/")[0] == o["start"]
    for sibling in offers[1:]:
        assert client.get(f"/sessions/{sibling['meta']['uuid']}").json()["phase"] == "REJECTED"
    # the occurrences are the client's sessions now; accepting again is harmless
    listed = {i["uuid"] for i in client.get("/sessions?phase=ACCEPTED,WAITING").json()["items"]}
    assert set(uuids) <= listed
    assert client.post(f"/sessions/{first['meta']['uuid']}", json=ACCEPT).status_code == 200
    clean(broker)


def test_cancel_one_occurrence_then_the_series(node):
    broker, client = node
    offer = client.post("/requests", json=series_doc()).json()["offers"][0]
    uuid = offer["meta"]["uuid"]
    occurrences = client.post(f"/sessions/{uuid}", json=ACCEPT).json()["series"]["occurrences"]
    one = occurrences[2]["uuid"]
    assert client.post(f"/sessions/{one}", json=CANCEL).json()["phase"] == "CANCELLED"
    series = client.get(f"/sessions/{uuid}").json()
    assert series["phase"] == "ACCEPTED"
    phases = [o["phase"] for o in series["series"]["occurrences"]]
    assert phases[2] == "CANCELLED"
    assert set(phases[:2] + phases[3:]) <= {"ACCEPTED", "WAITING"}  # the engine took them on
    assert booking_states(broker, [one]) == ["RELEASED"]
    clean(broker)
    whole = client.post(f"/sessions/{uuid}", json=CANCEL)
    assert whole.status_code == 200 and whole.json()["phase"] == "CANCELLED"
    assert {o["phase"] for o in whole.json()["series"]["occurrences"]} == {"CANCELLED"}
    assert booking_states(broker, [o["uuid"] for o in occurrences]) == ["RELEASED"] * 6
    clean(broker)


def test_cancelling_every_occurrence_ends_the_series(node):
    broker, client = node
    offer = client.post("/requests", json=series_doc("FREQ=DAILY;COUNT=2")).json()["offers"][0]
    occurrences = client.post(f"/sessions/{offer['meta']['uuid']}", json=ACCEPT).json()[
        "series"]["occurrences"]  # fmt: skip
    for o in occurrences:
        client.post(f"/sessions/{o['uuid']}", json=CANCEL)
    series = client.get(f"/sessions/{offer['meta']['uuid']}").json()
    assert series["phase"] == "CANCELLED"
    assert "every occurrence has ended: 2 CANCELLED" in str(series["meta"]["messages"])
    clean(broker)


def test_an_occurrence_is_no_offer_and_a_series_no_window(node):
    broker, client = node
    offer = client.post("/requests", json=series_doc("FREQ=DAILY;COUNT=3")).json()["offers"][0]
    with broker.db.writer.connect() as conn:
        child = conn.execute(
            text("SELECT uuid FROM execution_session WHERE series_uuid = :s"),
            {"s": offer["meta"]["uuid"]},
        ).first()[0]
    refused = client.post(f"/sessions/{child}", json=ACCEPT)
    assert refused.status_code == 409
    assert offer["meta"]["uuid"] in refused.json()["detail"]
    accepted = client.post(f"/sessions/{offer['meta']['uuid']}", json=ACCEPT).json()
    extend = {"kind": "uri:integer-delta-update", "path": "schedule.duration", "delta": 60}
    assert client.post(f"/sessions/{offer['meta']['uuid']}", json=extend).status_code == 409
    one = accepted["series"]["occurrences"][0]["uuid"]
    assert client.post(f"/sessions/{one}", json=extend).status_code == 200
    clean(broker)


def test_rejecting_or_expiring_a_series_frees_its_occurrences(node):
    broker, client = node
    answer = client.post("/requests", json=series_doc(
        "FREQ=DAILY;COUNT=3", start=f"{local_ten()}/PT6H")).json()  # fmt: skip
    offers = answer["offers"]
    assert len(offers) > 1
    rejected = client.post(f"/sessions/{offers[0]['meta']['uuid']}", json=REJECT)
    assert rejected.status_code == 200 and rejected.json()["phase"] == "REJECTED"
    with broker.db.writer.connect() as conn:
        held = conn.execute(text(
            "SELECT s.series_uuid, b.state FROM execution_session s JOIN booking b "
            "ON b.session_uuid = s.uuid WHERE s.series_uuid IS NOT NULL"
        )).all()  # fmt: skip
    assert {state for parent, state in held if parent == offers[0]["meta"]["uuid"]} == {"RELEASED"}
    clean(broker)
    # the rest lapse with their offer set
    assert expire_due(broker, now=int(datetime.now(UTC).timestamp()) + 3600) >= 1
    with broker.db.writer.connect() as conn:
        states = {r[0] for r in conn.execute(text("SELECT state FROM booking"))}
    assert states == {"RELEASED"}
    clean(broker)


def test_an_occurrence_that_cannot_be_booked_is_named(node):
    broker, client = node
    starts = [local_ten(days) for days in (1, 8, 15)]
    # someone else takes the whole node at the second occurrence
    blocker = client.post("/requests", json=request_doc(
        cores=(16, 16), start=starts[1], duration="PT2H")).json()  # fmt: skip
    assert client.post(f"/sessions/{blocker['offers'][0]['meta']['uuid']}",
                       json=ACCEPT).status_code == 200  # fmt: skip
    doc = series_doc("FREQ=WEEKLY;COUNT=3", start=starts[0])
    refused = client.post("/requests", json=doc).json()
    assert refused["result"] == "NO"
    said = " ".join(m["message"] for m in refused["meta"]["messages"])
    assert "1 of the 3 occurrences of the series cannot be booked" in said
    assert f"occurrence 2 at {starts[1]}: at most 0 cores free then; 2 needed" in said
    assert "recurrence.partial: true" in said
    partial = client.post("/requests", json=series_doc(
        "FREQ=WEEKLY;COUNT=3", start=starts[0], partial=True)).json()  # fmt: skip
    assert partial["result"] == "YES"
    series = partial["offers"][0]["series"]
    assert [o["index"] for o in series["occurrences"]] == [0, 2]
    assert series["missing"][0]["index"] == 1 and "0 cores free" in series["missing"][0]["reason"]
    accepted = client.post(f"/sessions/{partial['offers'][0]['meta']['uuid']}", json=ACCEPT)
    assert len(accepted.json()["series"]["occurrences"]) == 2
    clean(broker)


def test_occurrences_beyond_the_look_ahead_and_overlapping_ones(node):
    broker, client = node
    beyond = client.post("/requests", json=series_doc("FREQ=WEEKLY;COUNT=12")).json()
    assert beyond["result"] == "NO"
    said = " ".join(m["message"] for m in beyond["meta"]["messages"])
    assert "beyond this node's look-ahead (offers.lookahead: P60D)" in said
    partial = client.post("/requests", json=series_doc("FREQ=WEEKLY;COUNT=12", partial=True))
    series = partial.json()["offers"][0]["series"]
    assert len(series["occurrences"]) + len(series["missing"]) == 12 and series["missing"]
    overlap = client.post("/requests", json=series_doc("FREQ=HOURLY;COUNT=3")).json()
    assert overlap["result"] == "NO"
    assert "occurrences 1 (" in overlap["meta"]["messages"][0]["message"]
    assert "overlap" in overlap["meta"]["messages"][0]["message"]
    clean(broker)


MALFORMED = [
    ({"rule": "FREQ=WEEKLY"}, "rule", "exactly one of COUNT and UNTIL"),
    ({"rule": "FREQ=WEEKLY;COUNT=1000"}, "rule", "max_occurrences"),
    ({"rule": "FREQ=SECONDLY;COUNT=3"}, "rule", "booked to the minute"),
    ({"rule": "FREQ=DAILY;COUNT=3;BYSECOND=1,2"}, "rule", "BYSECOND"),
    ({"rule": "FREQ=DAILY;COUNT=3", "timezone": "Mars/Olympus"}, "timezone", "unknown"),
    ({"rule": "FREQ=DAILY;COUNT=3", "timezone": "../../etc/passwd"}, "timezone", "IANA"),
    ({"rule": "FREQ=DAILY;UNTIL=20991231"}, "rule", "more than 100 occurrences"),
    ({"rule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30;COUNT=2"}, "rule", "never occurs"),
    ({"rule": "FREQ=DAILY;COUNT=2", "extra": 1}, "extra", "unknown field"),
]


def test_a_malformed_rule_is_a_400_pointing_at_it(node):
    broker, client = node
    for recurrence, pointer, said in MALFORMED:
        doc = request_doc(start=local_ten(), duration="PT1H", recurrence=recurrence)
        answer = client.post("/requests", json=doc)
        assert answer.status_code == 400, (recurrence, answer.text)
        errors = answer.json()["errors"]
        assert errors[0]["pointer"] == f"/schedule/requested/recurrence/{pointer}", recurrence
        assert said in errors[0]["detail"], (recurrence, errors)
    with broker.db.writer.connect() as conn:  # nothing was held for any of them
        assert conn.execute(text("SELECT count(*) FROM booking")).scalar_one() == 0


def test_a_direct_execution_takes_no_recurrence(node):
    _, client = node
    doc = request_doc(recurrence={"rule": "FREQ=DAILY;COUNT=2"})
    answer = client.post("/direct", json=doc)
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["pointer"] == "/schedule/requested/recurrence"


def test_racing_accepts_of_one_offer_set_book_one_series(node):
    broker, client = node
    offers = client.post("/requests", json=series_doc(
        "FREQ=DAILY;COUNT=5", start=f"{local_ten()}/PT6H")).json()["offers"]  # fmt: skip
    assert len(offers) >= 2
    statuses: list[int] = []
    barrier = threading.Barrier(len(offers))

    def accept(uuid: str) -> None:
        barrier.wait()
        statuses.append(client.post(f"/sessions/{uuid}", json=ACCEPT).status_code)

    threads = [threading.Thread(target=accept, args=(o["meta"]["uuid"],)) for o in offers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [409] * (len(offers) - 1)
    with broker.db.writer.connect() as conn:
        confirmed = conn.execute(text("SELECT count(*) FROM booking WHERE state = 'CONFIRMED'"))
        assert confirmed.scalar_one() == 5
    clean(broker)


@pytest.mark.slow
def test_racing_series_on_the_same_pools_never_overbook(node, broker_factory):
    broker, client = node
    start = local_ten(2)
    results: list[tuple[str, int]] = []
    barrier = threading.Barrier(6)

    def ask_and_accept(index: int) -> None:
        headers = {"X-Forwarded-For": f"10.0.0.{index}"}
        barrier.wait()
        answer = client.post("/requests", headers=headers, json=series_doc(
            "FREQ=DAILY;COUNT=4", cores=(6, 6), start=start)).json()  # fmt: skip
        for offer in answer.get("offers", []):
            status = client.post(f"/sessions/{offer['meta']['uuid']}", json=ACCEPT).status_code
            results.append((answer["result"], status))
            if status == 200:
                break

    threads = [threading.Thread(target=ask_and_accept, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    clean(broker)
    with broker.db.writer.connect() as conn:
        firm = conn.execute(text(
            "SELECT b.start_at, sum(a.amount) FROM booking b JOIN allocation a ON "
            "a.booking_id = b.id WHERE b.state = 'CONFIRMED' AND a.resource_class = 'cores' "
            "GROUP BY b.start_at"
        )).all()  # fmt: skip
    assert firm and all(total <= 16 for _, total in firm)
    assert any(status == 200 for _, status in results)


@pytest.mark.slow
def test_each_occurrence_runs_at_its_own_time(broker_factory, sqlite_url, tmp_path):
    """A series of two 3-second occurrences a minute apart, on the simulated platform: each
    is prepared and run in its own booked window, and the series completes after the last."""
    from tests.test_lifecycle import simulated, wait_for

    broker = broker_factory(
        sqlite_url, platforms=simulated(run_time="PT1S"),
        lifecycle={"workdir": str(tmp_path / "sessions"), "poll_interval": "PT1S"},
        offers={"granularity": "PT1S"},
    )  # fmt: skip
    with TestClient(create_app(broker), raise_server_exceptions=False) as client:
        doc = request_doc(cores=(1, 1), duration="PT3S",
                          recurrence={"rule": "FREQ=MINUTELY;COUNT=2"})  # fmt: skip
        answer = client.post("/requests", json=doc).json()
        assert answer["result"] == "YES", answer["meta"]
        uuid = answer["offers"][0]["meta"]["uuid"]
        occurrences = client.post(f"/sessions/{uuid}", json=ACCEPT).json()["series"][
            "occurrences"]  # fmt: skip
        first, second = (o["uuid"] for o in occurrences)
        done = wait_for(client, first, {"COMPLETED", "FAILED"}, seconds=30)
        assert done["phase"] == "COMPLETED"
        ran = parse_instant(done["schedule"]["actual"]["available"]).timestamp()
        assert ran >= parse_instant(occurrences[0]["start"]).timestamp()
        assert client.get(f"/sessions/{second}").json()["phase"] in ("ACCEPTED", "WAITING")
        assert client.get(f"/sessions/{uuid}").json()["phase"] == "ACCEPTED"
        later = wait_for(client, second, {"COMPLETED", "FAILED"}, seconds=90)
        assert later["phase"] == "COMPLETED"
        ran = parse_instant(later["schedule"]["actual"]["available"]).timestamp()
        assert ran >= parse_instant(occurrences[1]["start"]).timestamp()
        series = wait_for(client, uuid, {"COMPLETED", "FAILED", "CANCELLED"}, seconds=10)
        assert series["phase"] == "COMPLETED"
        assert [o["phase"] for o in series["series"]["occurrences"]] == ["COMPLETED"] * 2
    clean(broker)
