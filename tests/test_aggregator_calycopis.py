"""The aggregator over nodes of either implementation: a real ebroker node and fake nodes of
the other implementation (Calycopis-broker, ``tests/calycopis_fake.py``), whose answers are the
standard's own forms (303 See Other, empty 404s, no ``/node``, no ``site``). The aggregator
validates its own answers against its spec (``validate_responses``), so every answer checked
here also conforms to it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from aggregator.service import DIRECT_SEE_OTHER
from tests.calycopis_fake import CalycopisFake
from tests.conftest import ACCEPT, offered_start, request_doc
from tests.nodes import Node, start_node
from tests.test_aggregator import aggregator_config, node_config

pytestmark = pytest.mark.slow  # real node and aggregator processes


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("mixed")
    processes: list[Node] = []
    with CalycopisFake() as caly, CalycopisFake(requests="303", direct="400") as caly303:
        try:
            node = start_node(node_config(tmp, "eb", 8), tmp, "eb")
            processes.append(node)
            config = aggregator_config(tmp, "agg", [
                {"name": "eb", "url": node.url},
                {"name": "caly", "url": caly.url, "weight": 3},
                {"name": "caly303", "url": caly303.url, "weight": 2},
            ])  # fmt: skip
            agg = start_node(config, tmp, "agg", command="aggregator")
            processes.append(agg)
            yield {"agg": agg.url, "node": node.url, "caly": caly, "caly303": caly303}
        finally:
            for process in processes:
                process.stop()


def ask(url: str) -> dict[str, Any]:
    r = httpx.post(f"{url}/requests", json=request_doc(duration="PT1H"), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def texts(doc: dict[str, Any]) -> str:
    return " | ".join(m.get("message") or m["template"] for m in doc["meta"].get("messages", []))


def test_offers_of_both_implementations_are_merged(mixed):
    answer = ask(mixed["agg"])
    assert answer["result"] == "YES"
    by_upstream: dict[str, list[dict]] = {}
    for offer in answer["offers"]:
        by_upstream.setdefault(offer["site"]["upstream"], []).append(offer)
        assert offer["meta"]["url"] == f"{mixed['agg']}/sessions/{offer['meta']['uuid']}"
        assert offer["offerset"]["uuid"] == answer["meta"]["uuid"]
    assert set(by_upstream) == {"eb", "caly", "caly303"}
    # ranked by start: a simple-execution-session (no schedule) by its components' schedule
    starts = [offered_start(o if o["schedule"] else o["compute"]) for o in answer["offers"]]
    assert starts == sorted(starts)
    # the other implementation's offers keep their kinds and components, in our message form
    kinds = {o["kind"] for o in by_upstream["caly"]}
    assert any(k.endswith("simple-execution-session.yaml") for k in kinds)
    for offer in by_upstream["caly"]:
        assert offer["executable"]["phase"] == "WAITING"
        for m in offer["meta"]["messages"]:
            assert "kind" not in m and m["level"] in ("DEBUG", "INFO", "WARN", "ERROR")
            assert all(isinstance(v, str) for v in m.get("values", {}).values())
    # what the aggregator could not know is said
    why = texts(answer)
    assert "upstream caly does not describe itself" in why
    assert "upstream caly names no site" in why
    # JSON was asked for
    assert all("application/json" in accept for _, _, accept in mixed["caly"].seen)


def test_a_see_other_on_requests_is_followed(mixed):
    answer = ask(mixed["agg"])
    assert any(o["site"]["upstream"] == "caly303" for o in answer["offers"])
    gets = [path for method, path, _ in mixed["caly303"].seen if method == "GET"]
    assert any(path.startswith("/offersets/") for path in gets)


def test_accepting_an_offer_of_the_other_implementation(mixed):
    agg, caly = mixed["agg"], mixed["caly"]
    answer = ask(agg)
    chosen = next(o for o in answer["offers"] if o["site"]["upstream"] == "caly")
    local = chosen["meta"]["uuid"]
    r = httpx.post(f"{agg}/sessions/{local}", json=ACCEPT, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["phase"] == "WAITING"
    assert r.json()["meta"]["url"] == f"{agg}/sessions/{local}"
    # the update reached the fake at its own session's path
    accepted = [u for u in caly.updates if u.document.get("value") == "ACCEPTED"]
    assert accepted and accepted[-1].document["path"] == "phase"
    remote = accepted[-1].path.rsplit("/", 1)[-1]
    assert (
        accepted[-1].path == f"/sessions/{remote}" and caly.sessions[remote]["phase"] == "WAITING"
    )
    # the session is followed through the aggregator
    session = httpx.get(f"{agg}/sessions/{local}", timeout=30)
    assert session.status_code == 200, session.text
    assert session.json()["site"]["upstream"] == "caly"
    assert session.json()["phase"] == "WAITING"
    # every sibling was rejected, on the ebroker node and on the fakes
    offerset = httpx.get(f"{agg}/offersets/{answer['meta']['uuid']}", timeout=30).json()
    others = {o["phase"] for o in offerset["offers"] if o["meta"]["uuid"] != local}
    assert others == {"REJECTED"}, others
    # a second accept is the aggregator's own 409
    other = next(o["meta"]["uuid"] for o in offerset["offers"] if o["meta"]["uuid"] != local)
    again = httpx.post(f"{agg}/sessions/{other}", json=ACCEPT, timeout=30)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


def test_a_probe_passes_on_only_offers_that_hold_nothing(mixed):
    """``?probe=true`` reaches the ebroker node, whose offers hold nothing and say so; a node of
    the other implementation knows no probes and made real offers: they are withdrawn at once
    (held slots no client will see) and the answer says so."""
    agg, caly = mixed["agg"], mixed["caly"]
    before = len(caly.updates)
    r = httpx.post(f"{agg}/requests?probe=true", json=request_doc(duration="PT1H"), timeout=30)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["result"] == "YES"
    assert {o["site"]["upstream"] for o in answer["offers"]} == {"eb"}
    assert all(o.get("probe") is True for o in answer["offers"])
    assert "upstream caly does not answer probes" in texts(answer)
    for _ in range(50):  # the withdrawals run in the background
        rejected = [u for u in caly.updates[before:] if u.document.get("value") == "REJECTED"]
        if rejected:
            break
        time.sleep(0.1)
    assert rejected, "the other implementation's offers were not withdrawn"


def test_refused_updates_with_bodies_that_are_not_json(mixed):
    agg = mixed["agg"]
    answer = ask(agg)
    chosen = next(o for o in answer["offers"] if o["site"]["upstream"] == "caly")
    update = {"kind": "uri:string-value-update", "path": "meta.name", "value": "x"}
    r = httpx.post(f"{agg}/sessions/{chosen['meta']['uuid']}", json=update, timeout=30)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "caly" in r.json()["detail"] or "caly" in str(r.json().get("errors"))


def test_an_empty_404_becomes_our_own_404_problem(mixed):
    agg, caly = mixed["agg"], mixed["caly"]
    answer = ask(agg)
    chosen = next(o for o in answer["offers"] if o["site"]["upstream"] == "caly")
    # the fake forgets the sessions of its latest offer set (this one): it answers empty 404s
    for uuid in list(caly.offersets.values())[-1]:
        caly.sessions.pop(uuid, None)
    r = httpx.get(f"{agg}/sessions/{chosen['meta']['uuid']}", timeout=30)
    assert r.status_code == 404, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == 404
    # the empty 404s did not count against the fake's breaker
    health = httpx.get(f"{agg}/health/ready", timeout=30).json()
    assert health["checks"]["upstream caly"] == "ok"


def test_direct_through_a_node_that_answers_see_other(mixed):
    agg, caly = mixed["agg"], mixed["caly"]
    caly.direct = "303"
    r = httpx.post(f"{agg}/direct", json=request_doc(), timeout=30, follow_redirects=False)
    if DIRECT_SEE_OTHER:
        assert r.status_code == 303, r.text
        session = r.json()
        assert r.headers["location"] == session["meta"]["url"]
    else:
        assert r.status_code == 201, r.text
        (session,) = r.json()["offers"]
    assert session["site"]["upstream"] == "caly" and session["phase"] == "WAITING"
    # the 303 was followed: the fake was asked for the session it started
    assert any(m == "GET" and p.startswith("/sessions/") for m, p, _ in caly.seen)
    again = httpx.get(f"{agg}/sessions/{session['meta']['uuid']}", timeout=30)
    assert again.status_code == 200 and again.json()["phase"] == "WAITING"


def test_direct_falls_through_failed_sessions_to_an_ebroker_node(mixed):
    agg, caly = mixed["agg"], mixed["caly"]
    caly.direct = "400"
    r = httpx.post(f"{agg}/direct", json=request_doc(), timeout=30, follow_redirects=False)
    if DIRECT_SEE_OTHER:
        assert r.status_code == 303, r.text
        session = r.json()
    else:
        assert r.status_code == 201, r.text
        (session,) = r.json()["offers"]
        session["meta"]["messages"] += r.json()["meta"]["messages"]
    assert session["site"]["upstream"] == "eb"
    why = texts(session)
    assert "upstream caly cannot start it: No resources available now" in why
    assert "upstream caly303 cannot start it" in why
    got = httpx.get(f"{agg}/sessions/{session['meta']['uuid']}", timeout=30)
    assert got.status_code == 200 and got.json()["site"]["upstream"] == "eb"


def test_direct_that_no_upstream_can_start_says_why_from_each(mixed):
    agg, caly = mixed["agg"], mixed["caly"]
    caly.direct = "400"
    doc = request_doc(cores=(1000, 1000))  # more than the ebroker node has
    r = httpx.post(f"{agg}/direct", json=doc, timeout=30, follow_redirects=False)
    if DIRECT_SEE_OTHER:
        assert r.status_code == 400, r.text
        assert r.json()["phase"] == "FAILED"
    else:
        assert r.status_code == 200 and r.json()["result"] == "NO", r.text
    why = texts(r.json())
    assert "upstream caly cannot start it: No resources available now" in why
    assert "upstream eb cannot start it" in why
    if DIRECT_SEE_OTHER:  # a FAILED session an upstream kept: GET finds it through us
        got = httpx.get(f"{agg}/sessions/{r.json()['meta']['uuid']}", timeout=30)
        assert got.status_code == 200, got.text
        assert got.json()["phase"] == "FAILED"
        assert got.json()["site"]["upstream"] == r.json()["site"]["upstream"]
