"""What a node and an aggregator say about themselves: Prometheus metrics at ``/metrics``,
one request id per request (``X-Request-ID``) in the answer and in every log line from the
aggregator to the node, JSON or plain log lines, and upstream failures logged once per change
of state."""

from __future__ import annotations

import json
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select

from aggregator.config import BreakerConfig
from aggregator.upstreams import Breaker
from broker_core.db.tables import ExecutionSession
from broker_core.observability import logs, request_ids
from broker_core.sessions.updates import expire_due
from tests.conftest import ACCEPT, request_doc
from tests.nodes import start_node
from tests.test_aggregator import aggregator_config, node_config


def scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics``, by name and labels."""
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_count_a_known_sequence_of_calls(client, broker):
    before = scrape(client)
    offers = client.post("/requests", json=request_doc(cores=(2, 2))).json()
    assert offers["result"] == "YES" and len(offers["offers"]) >= 2
    too_big = client.post("/requests", json=request_doc(cores=(10**6, 10**6))).json()
    assert too_big["result"] == "NO"
    first, second = (o["meta"]["uuid"] for o in offers["offers"][:2])
    assert client.post(f"/sessions/{first}", json=ACCEPT).status_code == 200
    assert client.post(f"/sessions/{second}", json=ACCEPT).status_code == 409  # a sibling
    expiring = client.post("/requests", json=request_doc(cores=(1, 1))).json()
    expired = len(expiring["offers"])
    with broker.db.write() as session:
        for row in session.exec(select(ExecutionSession).where(
                ExecutionSession.offerset_uuid == expiring["meta"]["uuid"])):  # fmt: skip
            row.expires_at = 0
            session.add(row)
    assert expire_due(broker) == expired
    after = scrape(client)

    assert delta(before, after, "ebroker_offer_sets_total", result="YES", reason="") == 2
    assert delta(before, after, "ebroker_offer_sets_total", result="NO", reason="capacity") == 1
    assert delta(before, after, "ebroker_accepts_total", outcome="accepted") == 1
    assert delta(before, after, "ebroker_accepts_total", outcome="conflict") == 1
    assert delta(before, after, "ebroker_offers_expired_total") == expired
    assert delta(before, after, "ebroker_http_requests_total",
                 operation="requestOffers", status="200") == 3  # fmt: skip
    assert delta(before, after, "ebroker_http_requests_total",
                 operation="updateSession", status="409") == 1  # fmt: skip
    timed = delta(before, after, "ebroker_http_request_seconds_count", operation="updateSession")
    assert timed == 2
    # read from the booking table when scraped
    with broker.db.read() as session:
        phases = [row.phase for row in session.exec(select(ExecutionSession))]
    for phase in set(phases):
        assert after[("ebroker_sessions", (("phase", phase),))] == phases.count(phase)
    assert after[("ebroker_pool_capacity", (("pool", "sim/main"), ("resource_class", "cores")))]
    booked = ("ebroker_pool_booked_next_hour", (("pool", "sim/main"), ("resource_class", "cores")))
    assert after[booked] >= 2
    assert ("ebroker_holds_open", ()) in after


def test_every_answer_carries_its_request_id(client):
    given = client.get("/node", headers={"X-Request-ID": "trace-42.a:b"})
    assert given.headers["x-request-id"] == "trace-42.a:b"
    made = client.get("/node").headers["x-request-id"]
    assert len(made) == 32 and int(made, 16) >= 0
    for bad in ("x" * 200, "a b", "line\\nbreak"):
        answer = client.get("/node", headers={"X-Request-ID": bad})
        assert answer.headers["x-request-id"] != bad and len(answer.headers["x-request-id"]) == 32
    problem = client.get("/sessions/" + "0" * 8 + "-0000-4000-8000-" + "0" * 12,
                          headers={"X-Request-ID": "trace-404"})  # fmt: skip
    assert problem.status_code == 404 and problem.headers["x-request-id"] == "trace-404"


def test_log_lines_are_json_or_plain_with_time_level_and_request_id(capsys):
    logs.configure("INFO", "json")
    token = request_ids.current.set("trace-7")
    try:
        logging.getLogger("ebroker.test").warning("hello %s", "there")
    finally:
        request_ids.current.reset(token)
    logging.getLogger("ebroker.test").info("outside a request")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["message"] == "hello there" and lines[0]["level"] == "WARNING"
    assert lines[0]["request_id"] == "trace-7" and lines[0]["logger"] == "ebroker.test"
    assert lines[0]["time"].endswith("Z") and "T" in lines[0]["time"]
    assert lines[1]["request_id"] == "-"
    logs.configure("INFO", "plain")
    logging.getLogger("ebroker.test").warning("plain now")
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("WARNING ebroker.test [-]: plain now") and line[:4].isdigit()


def test_an_upstream_failure_is_logged_once_per_change_of_state(caplog):
    breaker = Breaker(BreakerConfig(failures=3, backoff=timedelta(seconds=10)), name="site-a")
    with caplog.at_level(logging.INFO, logger="aggregator.upstreams"):
        for second in range(6):  # six failed calls: failing, then open (and re-opened)
            breaker.failure(float(second * 20), "cannot reach it")
        breaker.success()
        breaker.success()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 3, said
    assert said[0] == "upstream site-a failing: cannot reach it"
    assert said[1].startswith("upstream site-a skipped for 10 s after 3 failed calls")
    assert said[2] == "upstream site-a answers again, after 6 failed calls"
    assert Breaker(BreakerConfig()).state_code(0) == 0


@pytest.mark.slow
def test_one_request_id_from_the_aggregator_to_the_node_and_the_aggregators_metrics(
    tmp_path: Path,
):
    json_logs = {"EBROKER_SERVER__LOG_FORMAT": "json"}
    node = start_node(node_config(tmp_path, "a", 8), tmp_path, "a", log_level="INFO",
                      env=json_logs)  # fmt: skip
    aggregator = None
    try:
        upstreams = [{"name": "a", "url": node.url}, {"name": "gone", "url": "http://127.0.0.1:9"}]
        aggregator = start_node(
            aggregator_config(tmp_path, "agg", upstreams), tmp_path, "agg",
            command="aggregator", log_level="INFO", env=json_logs,
        )  # fmt: skip
        answer = httpx.post(f"{aggregator.url}/requests", json=request_doc(), timeout=30,
                            headers={"X-Request-ID": "federated-trace-1"})  # fmt: skip
        assert answer.status_code == 200 and answer.json()["result"] == "YES", answer.text
        assert answer.headers["x-request-id"] == "federated-trace-1"
        deadline = time.monotonic() + 10
        while True:
            node_lines = [json.loads(line) for line in node.output().splitlines()
                          if line.startswith("{")]  # fmt: skip
            carried = [line for line in node_lines if line["request_id"] == "federated-trace-1"]
            if carried or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert carried, node.output()[-2000:]
        assert any("POST /requests" in line["message"] for line in carried)
        agg_lines = [json.loads(line) for line in aggregator.output().splitlines()
                     if line.startswith("{")]  # fmt: skip
        failing = [line for line in agg_lines if "upstream gone failing" in line["message"]]
        assert len(failing) == 1 and failing[0]["level"] == "WARNING"
        metrics = httpx.get(f"{aggregator.url}/metrics", timeout=10)
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(metrics.text)
            for s in family.samples
        }
        assert samples[("ebroker_upstream_failures", (("upstream", "gone"),))] >= 1
        assert samples[("ebroker_upstream_breaker_state", (("upstream", "a"),))] == 0
        ok = ("ebroker_upstream_call_seconds_count", (("outcome", "ok"), ("upstream", "a")))
        assert samples[ok] >= 1
        key = ("ebroker_http_requests_total", (("operation", "requestOffers"), ("status", "200")))
        assert samples[key] == 1
    finally:
        if aggregator is not None:
            aggregator.stop()
        node.stop()
