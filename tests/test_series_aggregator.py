"""Recurring series end to end through real processes: two broker nodes and an aggregator
over them. The series is asked for, merged, accepted, and cancelled one occurrence at a time
and whole, all through the aggregator, which serves every occurrence under a uuid of its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine

from tests.conftest import ACCEPT, request_doc
from tests.invariants import overbookings, state_problems
from tests.nodes import start_node
from tests.test_aggregator import aggregator_config, node_config

pytestmark = pytest.mark.slow  # real processes

CANCEL = {**ACCEPT, "value": "CANCELLED"}


def test_a_series_through_the_aggregator(tmp_path: Path):
    nodes = [start_node(node_config(tmp_path, name, 8), tmp_path, name) for name in ("a", "b")]
    agg = None
    try:
        config = aggregator_config(tmp_path, "agg", [
            {"name": "a", "url": nodes[0].url}, {"name": "b", "url": nodes[1].url}])  # fmt: skip
        agg = start_node(config, tmp_path, "agg", command="aggregator")
        day = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
        doc = request_doc(cores=(2, 2), start=f"{day}T09:00:00Z", duration="PT1H", recurrence={
            "rule": "FREQ=DAILY;COUNT=3", "timezone": "Europe/Paris"})  # fmt: skip
        answer = httpx.post(f"{agg.url}/requests", json=doc, timeout=30).json()
        assert answer["result"] == "YES", answer["meta"].get("messages")
        offers = answer["offers"]
        assert {o["site"]["upstream"] for o in offers} == {"a", "b"}
        assert all(len(o["series"]["occurrences"]) == 3 for o in offers)
        chosen = offers[0]
        accepted = httpx.post(chosen["meta"]["url"], json=ACCEPT, timeout=30)
        assert accepted.status_code == 200, accepted.text
        series = accepted.json()
        assert series["meta"]["uuid"] == chosen["meta"]["uuid"]
        occurrences = series["series"]["occurrences"]
        assert all(o["url"].startswith(agg.url) for o in occurrences)
        # an occurrence through the aggregator: its own session, naming the aggregator's series
        one = httpx.get(occurrences[1]["url"], timeout=30).json()
        assert one["meta"]["uuid"] == occurrences[1]["uuid"]
        assert one["occurrence"]["series"]["uuid"] == series["meta"]["uuid"]
        assert one["site"]["upstream"] == chosen["site"]["upstream"]
        # cancel one occurrence, then the series, through the aggregator
        cancelled = httpx.post(occurrences[1]["url"], json=CANCEL, timeout=30)
        assert cancelled.status_code == 200 and cancelled.json()["phase"] == "CANCELLED"
        again = httpx.get(chosen["meta"]["url"], timeout=30).json()
        assert [o["phase"] for o in again["series"]["occurrences"]][1] == "CANCELLED"
        assert [o["uuid"] for o in again["series"]["occurrences"]] == [
            o["uuid"] for o in occurrences]  # fmt: skip
        whole = httpx.post(chosen["meta"]["url"], json=CANCEL, timeout=30)
        assert whole.status_code == 200 and whole.json()["phase"] == "CANCELLED"
        assert {o["phase"] for o in whole.json()["series"]["occurrences"]} == {"CANCELLED"}
        # the other node's series was rejected; neither node's booking table is wrong
        other = next(o for o in offers if o["site"]["upstream"] != chosen["site"]["upstream"])
        assert httpx.get(other["meta"]["url"], timeout=30).json()["phase"] == "REJECTED"
        for name in ("a", "b"):
            engine = create_engine(f"sqlite:///{tmp_path / f'{name}.db'}")
            with engine.connect() as conn:
                assert overbookings(conn) == [] and state_problems(conn) == []
            engine.dispose()
        # an unknown occurrence uuid is a 404 through the aggregator
        assert httpx.get(f"{agg.url}/sessions/{'0' * 8}-0000-0000-0000-{'0' * 12}",
                         timeout=30).status_code == 404  # fmt: skip
    finally:
        for node in [*nodes, *([agg] if agg else [])]:
            node.stop()
