"""Identity and policies through the HTTP API: a test OIDC issuer (keys made here, JWKS served
over HTTP), the 1000/500 pledge, owner-only sessions, 401s, time windows, allocations."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import select
from starlette.testclient import TestClient

from broker_core.broker import Broker
from broker_core.db.tables import Allocation, Booking, ResourcePool, UsageRecord
from broker_core.schedule import parse_duration
from policies.contract import Accepted, Decision, PolicyBase, PolicyHost, UsageQuery
from tests.conftest import ACCEPT, offered_start, request_doc
from tests.oidc_issuer import OidcIssuer, rsa_key
from tests.policy_service import PolicyService, deny, limit, slow, unused_url

SIM_OPTIONS = {"base_preparation": "PT0S", "image_pull": "PT0S", "data_staging": "PT0S"}
INVENTORY = {"memory": {"total": 100000}, "storage": {"total": 100000}}

SITE_RULES: dict[str, Any] = {
    "access": [
        {"name": "federation-pledge", "groups": ["federation"], "pools": ["cluster/federation"]},
        {"name": "national-share", "groups": ["national", "local"], "pools": ["cluster/local"]},
    ],
    "limits": [
        # the night shift may run only between 02:00 and 04:00 UTC
        {
            "name": "night-shift",
            "groups": ["night"],
            "windows": [
                {
                    "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                    "from": "02:00",
                    "to": "04:00",
                }
            ],
        },
        {"name": "banned", "subjects": ["test:mallory"], "refuse": True},
    ],
}


def site_config(issuer: OidcIssuer, *policies: dict[str, Any]) -> dict[str, Any]:
    return {
        "platforms": [
            {
                "name": "cluster",
                "type": "simulated",
                "combine_pools": True,
                "options": SIM_OPTIONS,
                "pools": [
                    {"name": "federation", "inventories": {"cores": {"total": 500}, **INVENTORY}},
                    {"name": "local", "inventories": {"cores": {"total": 500}, **INVENTORY}},
                ],
            }
        ],
        "auth": {**issuer.auth_config(), "admin_groups": ["site-admins"]},
        "offers": {"granularity": "PT1S"},  # direct sessions start at once
        "policies": [
            {"name": "site-rules", "type": "local-rules", "options": SITE_RULES},
            *policies,
        ],
    }



@pytest.fixture
def site(
    issuer: OidcIssuer,
    broker_factory: Callable[..., Broker],
    client_factory: Callable[[Broker], TestClient],
    database_url: str,
) -> tuple[Broker, TestClient]:
    broker = broker_factory(database_url, **site_config(issuer))
    return broker, client_factory(broker)


def auth(issuer: OidcIssuer, sub: str, *groups: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.token(sub=sub, groups=groups)}"}


def ask(client: TestClient, headers: dict[str, str], doc: dict[str, Any], **params: Any) -> Any:
    r = client.post("/requests", json=doc, headers=headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def texts(answer: dict[str, Any]) -> str:
    return " | ".join(m["message"] for m in answer["meta"].get("messages", []))


# --- the canonical case: 1000 cores, 500 pledged to the federation --------------------------


def test_a_federation_user_is_offered_at_most_the_pledge(site, issuer):
    _, client = site
    answer = ask(client, auth(issuer, "fed", "federation"), request_doc(cores=(100, 1000)))
    assert answer["result"] == "YES"
    assert max(o["compute"]["cores"]["max"] for o in answer["offers"]) == 500
    assert {p for o in answer["offers"] for p in o["site"]["pools"]} == {"cluster/federation"}

    refused = ask(client, auth(issuer, "fed", "federation"), request_doc(cores=(600, 1000)))
    assert refused["result"] == "NO"
    assert "at most 500 cores in any pool open to you; 600 needed" in texts(refused)


def test_a_local_user_in_the_federation_can_use_all_1000_cores_on_both_pools(site, issuer):
    broker, client = site
    headers = auth(issuer, "carol", "local", "federation")
    answer = ask(client, headers, request_doc(cores=(1000, 1000), duration="PT1H"))
    assert answer["result"] == "YES", texts(answer)
    offer = answer["offers"][0]
    assert offer["compute"]["cores"]["max"] == 1000
    assert offer["site"]["pools"] == ["cluster/federation", "cluster/local"]

    r = client.post(f"/sessions/{offer['meta']['uuid']}", json=ACCEPT, headers=headers)
    assert r.status_code == 200, r.text
    with broker.db.read() as session:
        drawn = session.exec(
            select(ResourcePool.name, Allocation.resource_class, Allocation.amount)
            .join(Booking, Booking.id == Allocation.booking_id)
            .join(ResourcePool, ResourcePool.id == Allocation.pool_id)
            .where(Booking.session_uuid == offer["meta"]["uuid"])
            .where(Allocation.resource_class == "cores")
        ).all()
    assert sorted(drawn) == [("cluster/federation", "cores", 500), ("cluster/local", "cores", 500)]

    # the whole site is booked for that hour: a federation user is offered a later slot
    other = ask(client, auth(issuer, "fed", "federation"),
                request_doc(cores=(1, 1), duration="PT1H"))  # fmt: skip
    assert other["result"] == "YES"
    booked_end = offered_start(offer)
    assert all(offered_start(o) > booked_end for o in other["offers"])


def test_a_national_user_gets_the_local_share_and_a_stranger_nothing(site, issuer):
    _, client = site
    answer = ask(client, auth(issuer, "nat", "national"), request_doc(cores=(1, 1000)))
    assert answer["result"] == "YES"
    assert {p for o in answer["offers"] for p in o["site"]["pools"]} == {"cluster/local"}
    assert max(o["compute"]["cores"]["max"] for o in answer["offers"]) == 500

    stranger = ask(client, auth(issuer, "eve", "elsewhere"), request_doc())
    assert stranger["result"] == "NO"
    assert "site-rules" in texts(stranger) and "test:eve" in texts(stranger)


def test_a_refused_subject_hears_which_rule_refused_it(site, issuer):
    _, client = site
    answer = ask(client, auth(issuer, "mallory", "federation"), request_doc())
    assert answer["result"] == "NO"
    assert "banned" in texts(answer)


def test_time_windows_keep_sessions_inside_the_permitted_hours(site, issuer):
    _, client = site
    headers = auth(issuer, "owl", "federation", "night")
    answer = ask(client, headers, request_doc(cores=(1, 1), duration="PT1H"))
    assert answer["result"] == "YES", texts(answer)
    for offer in answer["offers"]:
        start = offered_start(offer)  # e.g. 2026-11-22T02:00:00Z
        hour, minute = int(start[11:13]), int(start[14:16])
        assert (2, 0) <= (hour, minute) <= (3, 0), start

    too_long = ask(client, headers, request_doc(cores=(1, 1), duration="PT3H"))
    assert too_long["result"] == "NO"
    assert "night-shift" in texts(too_long)


# --- who may see what ------------------------------------------------------------------------


def test_only_the_owner_or_an_admin_sees_or_changes_a_session(site, issuer):
    _, client = site
    alice = auth(issuer, "alice", "federation")
    bob = auth(issuer, "bob", "federation")
    admin = auth(issuer, "root", "site-admins")
    answer = ask(client, alice, request_doc())
    uuid = answer["offers"][0]["meta"]["uuid"]
    offerset = answer["meta"]["uuid"]

    for path in (f"/sessions/{uuid}", f"/offersets/{offerset}", f"/sessions/{uuid}/logs"):
        r = client.get(path, headers=bob)
        assert r.status_code == 404, (path, r.text)
        assert "alice" not in r.text and "phase" not in r.text  # nothing of the session
        assert client.get(path, headers=alice).status_code == 200
        assert client.get(path, headers=admin).status_code == 200
    r = client.post(f"/sessions/{uuid}", json=ACCEPT, headers=bob)
    assert r.status_code == 404
    assert client.get(f"/sessions/{uuid}", headers=alice).json()["phase"] == "OFFERED"
    r = client.post(f"/sessions/{uuid}", json=ACCEPT, headers=alice)
    assert r.status_code == 200 and r.json()["phase"] in ("ACCEPTED", "WAITING")


def test_tokens_are_required_and_checked(site, issuer):
    _, client = site
    r = client.post("/requests", json=request_doc())
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["www-authenticate"].startswith("Bearer")
    expired = issuer.token(sub="alice", groups=["federation"], expires_in=-3600)
    forged = issuer.token(sub="alice", groups=["federation"], key=rsa_key())
    wrong_audience = issuer.token(sub="alice", aud="someone-else")
    for token in (expired, forged, wrong_audience, "not-a-jwt"):
        r = client.post(
            "/requests", json=request_doc(), headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 401, r.text
        assert 'error="invalid_token"' in r.headers["www-authenticate"]
    # public operations need no token
    for path in ("/health/live", "/health/ready", "/node", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_a_bad_token_is_refused_even_where_anonymous_calls_are_allowed(
    issuer, broker_factory, client_factory, sqlite_url
):
    config = site_config(issuer)
    config["auth"]["anonymous"] = True
    config["policies"] = []
    client = client_factory(broker_factory(sqlite_url, **config))
    assert ask(client, {}, request_doc())["result"] == "YES"
    forged = issuer.token(sub="alice", key=rsa_key())
    r = client.post("/requests", json=request_doc(), headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401


def test_the_usage_endpoint_names_the_caller(site, issuer):
    _, client = site
    r = client.get("/usage", headers=auth(issuer, "alice", "federation", "site-admins"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["identity"]["owner"] == "test:alice"
    assert body["identity"]["groups"] == ["federation", "site-admins"]
    assert body["identity"]["admin"] is True
    assert body["projects"] == []
    assert client.get("/usage").status_code == 401


# --- allocations -----------------------------------------------------------------------------

MONTH = {"start": "2020-01-01", "end": "2100-01-01"}
ALLOCATIONS: dict[str, Any] = {
    "name": "allocations",
    "type": "allocations",
    "options": {
        "projects": [
            {"name": "institute", "members": {"groups": ["institute-managers"]},
             "allocations": [{"resource": "cores", "hours": 20, **MONTH}]},
            {"name": "astro", "parent": "institute", "members": {"groups": ["astro"]},
             "allocations": [{"resource": "cores", "hours": 15, **MONTH}],
             "concurrency": {"cores": 8}},
            {"name": "bio", "parent": "institute", "members": {"groups": ["bio"]},
             "allocations": [{"resource": "cores", "hours": 15, **MONTH}]},
        ]
    },
}  # fmt: skip


@pytest.fixture
def accounted(
    issuer: OidcIssuer,
    broker_factory: Callable[..., Broker],
    client_factory: Callable[[Broker], TestClient],
    database_url: str,
) -> tuple[Broker, TestClient]:
    # one caller asks for the same thing many times, each offer set kept (tests/test_fair_holds.py
    # has the hold limits and the replacing of open offer sets)
    holds = {"caller": {}, "replace": False}
    broker = broker_factory(database_url, **site_config(issuer, ALLOCATIONS), holds=holds)
    return broker, client_factory(broker)


def book(client: TestClient, headers: dict[str, str], doc: dict[str, Any]) -> dict[str, Any]:
    answer = ask(client, headers, doc)
    assert answer["result"] == "YES", texts(answer)
    offer = answer["offers"][0]
    r = client.post(f"/sessions/{offer['meta']['uuid']}", json=ACCEPT, headers=headers)
    assert r.status_code == 200, r.text
    return offer


def test_offers_stay_within_the_remaining_allocation(accounted, issuer):
    _, client = accounted
    astro = auth(issuer, "ann", "federation", "astro")
    # 15 core-hours: at most 7 cores for two hours
    answer = ask(client, astro, request_doc(cores=(1, 100), duration="PT2H"))
    assert answer["result"] == "YES"
    assert max(o["compute"]["cores"]["max"] for o in answer["offers"]) <= 7
    refused = ask(client, astro, request_doc(cores=(8, 8), duration="PT2H"))
    assert refused["result"] == "NO"
    assert "project astro has 15 core-hours left" in texts(refused)
    assert "needs at least 16" in texts(refused)


def test_an_exhausted_allocation_refuses_and_the_institute_rolls_up(accounted, issuer):
    _, client = accounted
    astro = auth(issuer, "ann", "federation", "astro")
    bio = auth(issuer, "bob", "federation", "bio")
    book(client, astro, request_doc(cores=(6, 6), duration="PT2H"))  # 12 of astro's 15
    refused = ask(client, astro, request_doc(cores=(4, 4), duration="PT1H"))
    assert refused["result"] == "NO"
    assert "project astro has 3 core-hours left" in texts(refused)
    # bio has 15 of its own, but the institute only 20 - 12 = 8 left
    capped = ask(client, bio, request_doc(cores=(1, 100), duration="PT1H"))
    assert capped["result"] == "YES"
    assert max(o["compute"]["cores"]["max"] for o in capped["offers"]) == 8
    refused = ask(client, bio, request_doc(cores=(9, 9), duration="PT1H"))
    assert "project institute has 8 core-hours left" in texts(refused)

    report = client.get("/projects/institute", headers=auth(issuer, "boss", "institute-managers"))
    assert report.status_code == 200, report.text
    cores = report.json()["allocations"][0]
    assert cores["committed_hours"] == 12 and cores["remaining_hours"] == 8
    assert report.json()["children"] == ["astro", "bio"]
    # a bio member may not see astro's accounts; astro's may not see the institute's
    assert client.get("/projects/astro", headers=bio).status_code == 404
    assert client.get("/projects/institute", headers=astro).status_code == 404
    manager = auth(issuer, "boss", "institute-managers")
    assert client.get("/projects/astro", headers=manager).status_code == 200


def test_a_project_named_by_the_caller_must_be_theirs(accounted, issuer):
    _, client = accounted
    astro = auth(issuer, "ann", "federation", "astro")
    answer = ask(client, astro, request_doc(), project="bio")
    assert answer["result"] == "NO"
    assert "not a member of project bio" in texts(answer)
    assert ask(client, astro, request_doc(), project="astro")["result"] == "YES"


def window(offer: dict[str, Any]) -> tuple[float, float]:
    available = offer["schedule"]["available"]
    start = datetime.fromisoformat(offered_start(offer).replace("Z", "+00:00")).timestamp()
    return start, start + parse_duration(available["duration"]).total_seconds()


def test_the_concurrency_cap_bounds_what_a_project_holds_at_once(accounted, issuer):
    _, client = accounted
    astro = auth(issuer, "ann", "federation", "astro")
    first_start, first_end = window(book(client, astro, request_doc(cores=(6, 6), duration="PT1H")))
    answer = ask(client, astro, request_doc(cores=(4, 4), duration="PT1H"))
    assert answer["result"] == "YES", texts(answer)
    # 6 + 4 > 8: no offer may overlap the accepted session
    for offer in answer["offers"]:
        start, end = window(offer)
        assert end <= first_start or start >= first_end
    same_time = ask(client, astro, request_doc(cores=(1, 4), duration="PT1H"))
    overlapping = [o for o in same_time["offers"] if window(o)[0] < first_end]
    assert overlapping, "the remaining 2 cores should be offered beside the first session"
    assert all(o["compute"]["cores"]["max"] <= 2 for o in overlapping)


def test_usage_is_recorded_from_what_a_session_used(accounted, issuer):
    broker, client = accounted
    astro = auth(issuer, "ann", "federation", "astro")
    r = client.post("/direct", json=request_doc(cores=(4, 4), duration="PT1H"), headers=astro,
                    follow_redirects=False)  # fmt: skip
    assert r.status_code == 303, r.text
    uuid = r.json()["meta"]["uuid"]
    deadline = time.time() + 20
    while client.get(f"/sessions/{uuid}", headers=astro).json()["phase"] != "RUNNING":
        assert time.time() < deadline, "the session never started"
        time.sleep(0.2)
    time.sleep(2)
    cancel = {**ACCEPT, "value": "CANCELLED"}
    assert client.post(f"/sessions/{uuid}", json=cancel, headers=astro).status_code == 200
    deadline = time.time() + 20
    while True:
        with broker.db.read() as session:
            records = session.exec(
                select(UsageRecord).where(UsageRecord.session_uuid == uuid)
            ).all()
        if any(r.resource_class == "cores" for r in records):
            break
        assert time.time() < deadline, "no usage was recorded"
        time.sleep(0.2)
    cores = next(r for r in records if r.resource_class == "cores")
    assert cores.project == "astro" and cores.owner == "test:ann" and cores.amount == 4
    assert 2 <= cores.end_at - cores.start_at <= 30  # what it ran, not the booked hour

    mine = client.get("/usage", headers=astro).json()
    assert 0 < mine["used_hours"]["cores"] < 0.1
    project = mine["projects"][0]
    assert project["name"] == "astro"
    assert project["allocations"][0]["committed_hours"] == 0
    assert 0 < project["allocations"][0]["used_hours"] < 0.1


# --- a global policy service, asked over HTTP ------------------------------------------------


def test_a_global_policy_service_allows_denies_limits_and_times_out(
    issuer, broker_factory, client_factory, sqlite_url
):
    rules = (
        deny(subject="dave", reason="suspended by the federation"),
        limit(group="students", caps={"cores": 8}, pools=["cluster/federation"]),
        slow(subject="sloth", seconds=3),
    )
    with PolicyService(*rules) as service:
        options = {"url": service.url, "timeout": "PT0.5S", "on_failure": "deny"}
        remote = {"name": "global", "type": "remote", "options": options}
        client = client_factory(broker_factory(sqlite_url, **site_config(issuer, remote)))

        allowed = ask(
            client, auth(issuer, "alice", "federation", "local"), request_doc(cores=(1, 900))
        )
        assert allowed["result"] == "YES"
        assert max(o["compute"]["cores"]["max"] for o in allowed["offers"]) == 900
        sent = service.bodies[-1]["request"]
        assert sent["identity"]["subject"] == "alice" and sent["amounts"]["cores"]["max"] == 900

        denied = ask(client, auth(issuer, "dave", "federation"), request_doc())
        assert denied["result"] == "NO"
        assert "global policy global: suspended by the federation" in texts(denied)

        student = auth(issuer, "sam", "federation", "local", "students")
        limited = ask(client, student, request_doc(cores=(1, 900)))
        assert limited["result"] == "YES"
        assert {p for o in limited["offers"] for p in o["site"]["pools"]} == {"cluster/federation"}
        assert max(o["compute"]["cores"]["max"] for o in limited["offers"]) == 8
        too_big = ask(client, student, request_doc(cores=(16, 16)))
        assert too_big["result"] == "NO" and "global policy global" in texts(too_big)

        started = time.monotonic()
        timed_out = ask(client, auth(issuer, "sloth", "federation"), request_doc())
        assert time.monotonic() - started < 2.5
        assert timed_out["result"] == "NO"
        assert "timed out" in texts(timed_out)

        # answers are cached briefly: asking again does not reach the service
        calls = service.calls_for("alice")
        ask(client, auth(issuer, "alice", "federation", "local"), request_doc(cores=(1, 900)))
        assert service.calls_for("alice") == calls


def test_a_failing_global_policy_service_can_be_configured_to_fail_open(
    issuer, broker_factory, client_factory, sqlite_url
):
    options = {"url": unused_url(), "timeout": "PT0.5S", "on_failure": "allow"}
    remote = {"name": "global", "type": "remote", "options": options}
    client = client_factory(broker_factory(sqlite_url, **site_config(issuer, remote)))
    answer = ask(client, auth(issuer, "alice", "federation"), request_doc())
    assert answer["result"] == "YES"
    assert "allowed without asking" in texts(answer)


def test_two_offers_within_the_allocation_cannot_both_be_accepted_beyond_it(accounted, issuer):
    """Holds do not count against an allocation, so two requests may each be offered 12 of
    astro's 15 core-hours; the accept that would overdraw it is refused (409), atomically."""
    broker, client = accounted
    astro = auth(issuer, "ann", "federation", "astro")
    first = ask(client, astro, request_doc(cores=(6, 6), duration="PT2H"))["offers"][0]
    second = ask(client, astro, request_doc(cores=(6, 6), duration="PT2H"))["offers"][0]
    r = client.post(f"/sessions/{first['meta']['uuid']}", json=ACCEPT, headers=astro)
    assert r.status_code == 200, r.text
    r = client.post(f"/sessions/{second['meta']['uuid']}", json=ACCEPT, headers=astro)
    assert r.status_code == 409, r.text
    assert "project astro has too few core-hours left" in r.json()["detail"]
    # the refused accept changed nothing: the offer is still open and its hold still held
    assert (
        client.get(f"/sessions/{second['meta']['uuid']}", headers=astro).json()["phase"]
        == "OFFERED"
    )
    with broker.db.read() as session:
        state = session.exec(
            select(Booking.state).where(Booking.session_uuid == second["meta"]["uuid"])
        ).one()
    assert state == "HELD"


def test_direct_execution_outside_the_permitted_times_is_refused(
    issuer, broker_factory, client_factory, sqlite_url
):
    later = (datetime.now(UTC).hour + 3) % 24
    rules = {
        "limits": [{"name": "later-only", "everyone": True, "windows": [
            {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
             "from": f"{later:02d}:00", "to": f"{(later + 2) % 24:02d}:00"}]}],
    }  # fmt: skip
    config = site_config(issuer)
    config["policies"] = [{"name": "site-rules", "type": "local-rules", "options": rules}]
    client = client_factory(broker_factory(sqlite_url, **config))
    headers = auth(issuer, "alice", "federation")
    r = client.post("/direct", json=request_doc(duration="PT1H"), headers=headers)
    assert r.status_code == 400 and r.json()["phase"] == "FAILED", r.text
    assert "permit no session of PT1H starting now" in r.text
    # offers are still made, inside the permitted hours
    answer = ask(client, headers, request_doc(duration="PT1H"))
    assert answer["result"] == "YES"
    for offer in answer["offers"]:
        start = offered_start(offer)[11:16]  # "HH:MM", the session lasts 1 h
        assert start[:2] == f"{later:02d}" or start == f"{(later + 1) % 24:02d}:00", start


def test_racing_accepts_never_overdraw_an_allocation(accounted, issuer):
    """Twelve offers of 4 core-hours each (2 cores, 2 hours, all at once: within astro's
    concurrency cap of 8) against its 15: whatever the interleaving of the twelve concurrent
    accepts, three win and the rest are 409s."""
    _, client = accounted
    astro = auth(issuer, "ann", "federation", "astro")
    offers = [
        ask(client, astro, request_doc(cores=(2, 2), duration="PT2H"))["offers"][0]["meta"]["uuid"]
        for _ in range(12)
    ]
    barrier = threading.Barrier(len(offers))

    def accept(uuid: str) -> int:
        barrier.wait()
        return client.post(f"/sessions/{uuid}", json=ACCEPT, headers=astro).status_code

    with ThreadPoolExecutor(len(offers)) as pool:
        statuses = list(pool.map(accept, offers))
    assert sorted(set(statuses)) == [200, 409], statuses
    assert statuses.count(200) == 3
    report = client.get("/projects/astro", headers=astro).json()["allocations"][0]
    assert report["committed_hours"] == 12 and report["remaining_hours"] == 3


def test_a_failing_policy_refuses_the_request_instead_of_failing_it(
    issuer, broker_factory, client_factory, sqlite_url
):
    class Broken(PolicyBase):
        def evaluate(self, request: Any) -> Any:
            raise RuntimeError("secret internals")

    broker = broker_factory(sqlite_url, **site_config(issuer))
    broker.policies.append(Broken("broken", {}, None))
    client = client_factory(broker)
    answer = ask(client, auth(issuer, "alice", "federation"), request_doc())
    assert answer["result"] == "NO"
    assert "policy broken could not decide" in texts(answer)
    assert "secret internals" not in texts(answer)


def test_a_policy_failing_at_accept_refuses_the_accept(
    issuer, broker_factory, client_factory, sqlite_url
):
    class BrokenAtAccept(PolicyBase):
        def evaluate(self, request: Any) -> Any:
            return Decision()

        def admit(self, accepted: Accepted, usage: UsageQuery, now: int) -> list:
            raise RuntimeError("secret internals")

    broker = broker_factory(sqlite_url, **site_config(issuer))
    broker.policies.append(BrokenAtAccept("picky", {}, None))
    client = client_factory(broker)
    alice = auth(issuer, "alice", "federation")
    uuid = ask(client, alice, request_doc())["offers"][0]["meta"]["uuid"]
    r = client.post(f"/sessions/{uuid}", json=ACCEPT, headers=alice)
    assert r.status_code == 409, r.text
    assert "policy picky could not check the accept" in r.text and "secret" not in r.text
    assert client.get(f"/sessions/{uuid}", headers=alice).json()["phase"] == "OFFERED"


def test_a_policy_reads_the_node_through_its_host_and_is_asked_about_accepts_in_typed_values(
    issuer, broker_factory, client_factory, sqlite_url
):
    """A plugin is built with the node's ``PolicyHost`` (its config, clock and a usage query),
    not the node; ``admit`` gets the accepted offer and a usage query of the accepting
    transaction, which already counts the accept."""
    seen: list[tuple[Accepted, list]] = []

    class Watching(PolicyBase):
        def evaluate(self, request: Any) -> Any:
            return Decision(project="astro")

        def admit(self, accepted: Accepted, usage: UsageQuery, now: int) -> list:
            seen.append((accepted, usage.committed(["astro"])))
            return []

    broker = broker_factory(sqlite_url, **site_config(issuer, ALLOCATIONS))
    host: PolicyHost = next(p for p in broker.policies if p.name == "allocations").host
    assert host.config is broker.config and not hasattr(host, "authenticator")
    assert abs(host.now() - time.time()) < 5
    with host.usage() as usage:
        assert usage.committed(["astro"]) == []
    broker.policies.append(Watching("watching", {}, host))
    client = client_factory(broker)
    astro = auth(issuer, "ann", "federation", "astro")
    offer = book(client, astro, request_doc(cores=(2, 2), duration="PT1H"))
    [(accepted, committed)] = seen
    assert accepted.uuid == offer["meta"]["uuid"] and accepted.project == "astro"
    assert accepted.owner == "test:ann" and accepted.amounts["cores"] == 2
    assert accepted.end_at - accepted.start_at == 3600 and accepted.prepare_at <= accepted.start_at
    assert {(c.resource_class, c.amount) for c in committed} >= {("cores", 2)}
    with host.usage() as usage:
        assert [c.amount for c in usage.committed(["astro"]) if c.resource_class == "cores"] == [2]
