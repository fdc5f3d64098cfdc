"""A recurring series judged whole, on SQLite and PostgreSQL: allocations count every
occurrence at offer and at accept, the policies' permitted times hold for each occurrence, a
cost limit bounds the series' summed quote, a cancel notifies each live occurrence's end, and
the list shows each occurrence with its series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from broker_core.broker import Broker
from broker_core.http.app import create_app
from broker_core.notifications import outbox
from tests import test_policies_api
from tests.conftest import ACCEPT, POOL_CONFIG, request_doc
from tests.test_notifications import SMTP
from tests.test_policies_api import ask, auth, site_config, texts

CANCEL = {**ACCEPT, "value": "CANCELLED"}
# project astro: 15 core-hours (the institute above it 20), at most 8 cores at once
accounted = test_policies_api.accounted


def tomorrow(hour: int) -> str:
    day = datetime.now(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def series(rule: str, cores: tuple[int, int], duration: str = "PT1H", hour: int = 10,
           **recurrence: Any) -> dict[str, Any]:  # fmt: skip
    return request_doc(cores=cores, start=tomorrow(hour), duration=duration,
                       recurrence={"rule": rule, **recurrence})  # fmt: skip


def test_an_allocation_refuses_a_series_whose_total_is_beyond_it(accounted, issuer):
    _, client = accounted
    astro = auth(issuer, "ann", "federation", "astro")
    # 8 x 2 cores x 1 h = 16 core-hours of astro's 15; one occurrence alone would fit
    refused = ask(client, astro, series("FREQ=DAILY;COUNT=8", (2, 2)))
    assert refused["result"] == "NO"
    said = texts(refused)
    assert "project astro has 15 core-hours left" in said
    assert "this series of 8 occurrences needs at least 16 in total (2 each)" in said
    assert ask(client, astro, request_doc(cores=(2, 2), start=tomorrow(10), duration="PT1H"))[
        "result"] == "YES"  # fmt: skip
    # 6 of them fit (12): offered
    assert ask(client, astro, series("FREQ=DAILY;COUNT=6", (2, 2)))["result"] == "YES"


def test_a_series_is_offered_at_most_what_the_hours_allow_for_all_of_it(accounted, issuer):
    _, client = accounted
    astro = auth(issuer, "ann", "federation", "astro")
    # 15 core-hours over 4 occurrences of an hour: at most 3 cores each (not 8, the cap)
    answer = ask(client, astro, series("FREQ=DAILY;COUNT=4", (1, 8)))
    assert answer["result"] == "YES", texts(answer)
    assert {o["compute"]["cores"]["max"] for o in answer["offers"]} == {3}


def test_two_series_each_within_the_allocation_cannot_both_be_accepted(accounted, issuer):
    _, client = accounted
    astro = auth(issuer, "ann", "federation", "astro")
    first = ask(client, astro, series("FREQ=DAILY;COUNT=4", (2, 2)))["offers"][0]
    second = ask(client, astro, series("FREQ=DAILY;COUNT=4", (2, 2), hour=14))["offers"][0]
    r = client.post(f"/sessions/{first['meta']['uuid']}", json=ACCEPT, headers=astro)
    assert r.status_code == 200, r.text
    r = client.post(f"/sessions/{second['meta']['uuid']}", json=ACCEPT, headers=astro)
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "the series can no longer be accepted" in detail
    assert "project astro has too few core-hours left for this series" in detail
    assert "its 4 occurrences need 8 in total; 7 left" in detail
    again = client.get(f"/sessions/{second['meta']['uuid']}", headers=astro).json()
    assert again["phase"] == "OFFERED"  # the refused accept booked none of it
    report = client.get("/projects/astro", headers=astro).json()["allocations"][0]
    assert report["committed_hours"] == 8


def test_every_occurrence_must_be_within_the_times_the_policies_permit(
    issuer, broker_factory, client_factory, database_url
):
    """The night shift may run 02:00-04:00 UTC only: a series at 02:00 and 05:00 each day
    has occurrences outside it, named as missing."""
    broker = broker_factory(database_url, **site_config(issuer))
    client = client_factory(broker)
    night = auth(issuer, "nat", "federation", "night")
    doc = series("FREQ=DAILY;BYHOUR=2,5;COUNT=4", (1, 1), hour=2)
    refused = ask(client, night, doc)
    assert refused["result"] == "NO"
    said = texts(refused)
    assert "2 of the 4 occurrences of the series cannot be booked" in said
    assert f"occurrence 2 at {tomorrow(5)}: outside the times the policies" in said
    doc["schedule"]["requested"]["recurrence"]["partial"] = True
    partial = ask(client, night, doc)
    assert partial["result"] == "YES", texts(partial)
    offered = partial["offers"][0]["series"]
    assert [o["index"] for o in offered["occurrences"]] == [0, 2]
    assert all(o["start"].endswith("T02:00:00Z") for o in offered["occurrences"])


PRICED = {"money": {"currency": "EUR", "per_hour": {"cores": 1.0}}}


@pytest.fixture
def priced(broker_factory, client_factory, database_url) -> TestClient:
    platform = {**POOL_CONFIG["platforms"][0], "pricing": PRICED}
    return client_factory(broker_factory(database_url, platforms=[platform]))


def test_a_cost_limit_bounds_the_series_total(priced):
    # 6 x 2 cores x 1 h at 1 EUR a core-hour: 12 EUR, over the 10 EUR limit (one is 2 EUR)
    doc = {**series("FREQ=DAILY;COUNT=6", (2, 2)), "costs": [{"max": 10, "units": "EUR"}]}
    refused = priced.post("/requests", json=doc).json()
    assert refused["result"] == "NO"
    said = " ".join(m["message"] for m in refused["meta"]["messages"])
    assert "every series this node could offer costs more than the limit in total" in said
    assert "the cheapest series costs 12 EUR; the limit is 10 EUR" in said
    one = {**request_doc(cores=(2, 2), start=tomorrow(10), duration="PT1H"),
           "costs": [{"max": 10, "units": "EUR"}]}  # fmt: skip
    assert priced.post("/requests", json=one).json()["result"] == "YES"
    # asking for 1 to 2 cores: the series is offered at the 1 core that keeps it within
    doc = {**series("FREQ=DAILY;COUNT=6", (1, 2)), "costs": [{"max": 10, "units": "EUR"}]}
    cheaper = priced.post("/requests", json=doc).json()
    assert cheaper["result"] == "YES", cheaper["meta"]
    for offer in cheaper["offers"]:
        assert offer["compute"]["cores"]["max"] == 1
        (money,) = offer["costs"]
        assert money["max"] == 6.0


@pytest.fixture
def mailed(issuer, broker_factory, database_url) -> tuple[Broker, TestClient, dict[str, str]]:
    broker = broker_factory(
        database_url, auth={**issuer.auth_config(), "admin_groups": ["test:admins"]},
        holds={"caller": {}, "anonymous": {}, "replace": False}, notifications={"smtp": SMTP},
        offers={"lookahead": "P30D"},
    )  # fmt: skip
    alice = {"Authorization": "Bearer " + issuer.token(sub="alice", email="alice@example.org")}
    with TestClient(create_app(broker, reaper=False, lifecycle=False)) as client:
        yield broker, client, alice


def accepted(client: TestClient, who: dict[str, str], count: int,
             notify: bool = True) -> tuple[str, list[dict[str, Any]]]:  # fmt: skip
    """A daily series of ``count`` one-core hours, accepted: its uuid and its occurrences."""
    doc = series(f"FREQ=DAILY;COUNT={count}", (1, 1))
    if notify:
        doc["notify"] = {"email": ["alice@example.org"]}
    uuid = client.post("/requests", json=doc, headers=who).json()["offers"][0]["meta"]["uuid"]
    answer = client.post(f"/sessions/{uuid}", json=ACCEPT, headers=who)
    assert answer.status_code == 200, answer.text
    return uuid, answer.json()["series"]["occurrences"]


def ended(broker: Broker, uuid: str) -> list[str]:
    with broker.db.read() as session:
        return [r.data.get("reason", "") for r in outbox.of_session(session, uuid)
                if r.event == "session.ended"]  # fmt: skip


def test_cancelling_a_series_notifies_the_end_of_each_live_occurrence(mailed):
    broker, client, alice = mailed
    uuid, occurrences = accepted(client, alice, 3)
    first, second, third = (o["uuid"] for o in occurrences)
    # one occurrence on its own: only its end is notified
    assert client.post(f"/sessions/{first}", json=CANCEL, headers=alice).status_code == 200
    assert ended(broker, first) == ["cancelled by test:alice in phase ACCEPTED"]
    assert ended(broker, second) == [] and ended(broker, uuid) == []
    # the series: its own end and each live occurrence's, not the one already ended again
    assert client.post(f"/sessions/{uuid}", json=CANCEL, headers=alice).status_code == 200
    assert ended(broker, uuid) == ["cancelled by test:alice in phase ACCEPTED"]
    for occurrence in (second, third):
        assert ended(broker, occurrence) == [
            "cancelled with its series by test:alice in phase ACCEPTED"]  # fmt: skip
    assert len(ended(broker, first)) == 1


def test_the_series_end_is_notified_when_its_last_occurrence_ends(mailed):
    broker, client, alice = mailed
    uuid, occurrences = accepted(client, alice, 2)
    client.post(f"/sessions/{occurrences[0]['uuid']}", json=CANCEL, headers=alice)
    assert ended(broker, uuid) == []
    client.post(f"/sessions/{occurrences[1]['uuid']}", json=CANCEL, headers=alice)
    assert ended(broker, uuid) == ["every occurrence has ended: 2 CANCELLED"]


def test_the_list_shows_each_occurrence_with_its_series(mailed):
    _, client, alice = mailed
    uuid, occurrences = accepted(client, alice, 3, notify=False)
    items = client.get("/sessions", headers=alice).json()["items"]
    listed = {i["uuid"]: i for i in items}
    assert "series" not in listed[uuid] and "occurrence" not in listed[uuid]
    for o in occurrences:
        assert (listed[o["uuid"]]["series"], listed[o["uuid"]]["occurrence"]) == (uuid, o["index"])
    # one found in the list is cancelled by its href
    one = listed[occurrences[1]["uuid"]]
    assert one["href"].endswith(f"/sessions/{one['uuid']}")
    cancelled = client.post(f"/sessions/{one['uuid']}", json=CANCEL, headers=alice)
    assert cancelled.json()["phase"] == "CANCELLED"


def test_a_series_accept_is_notified_once_and_each_occurrence_ahead_of_its_end(mailed):
    broker, client, alice = mailed
    uuid, occurrences = accepted(client, alice, 3)
    lead = int(broker.config.notifications.ending_soon.total_seconds())
    with broker.db.read() as session:
        assert [r.event for r in outbox.of_session(session, uuid)] == ["session.accepted"]
        for o in occurrences:
            (row,) = outbox.of_session(session, o["uuid"])
            end = int(datetime.fromisoformat(o["end"].replace("Z", "+00:00")).timestamp())
            assert (row.event, row.scheduled_at) == ("session.ending_soon", end - lead)
            assert row.data["phase"] == "ACCEPTED"
