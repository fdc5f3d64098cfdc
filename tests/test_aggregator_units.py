"""The aggregator's parts without a network: config, schema, merging, the breaker, the store."""

from __future__ import annotations

from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from aggregator.config import AggregatorConfig, BreakerConfig, load_aggregator_config
from aggregator.merge import Candidate, parse_offerset, rank, rewrite_session
from aggregator.store import SCHEMA, RemoteSession, Store
from aggregator.tables import metadata
from aggregator.upstreams import Breaker
from broker_core.config import ConfigError
from broker_core.db import migrate


def offer(uuid: str, start: str, cost: float | None = None) -> dict:
    doc = {
        "meta": {"uuid": uuid, "url": f"http://node/sessions/{uuid}"},
        "phase": "OFFERED",
        "schedule": {"available": {"start": start, "duration": "PT1H"}},
        "site": {"name": "x"},
    }
    if cost is not None:
        doc["costs"] = [{"min": cost}]
    return doc


def test_config_errors_name_the_key(tmp_path):
    path = tmp_path / "agg.yaml"
    path.write_text("upstreams:\n  - {name: a, url: 'not a url'}\n")
    with pytest.raises(ConfigError, match=r"upstreams\.0\.url"):
        load_aggregator_config(path)
    path.write_text("upstreams:\n  - {name: a, url: 'http://x', speed: 3}\n")
    with pytest.raises(ConfigError, match=r"upstreams\.0\.speed"):
        load_aggregator_config(path)
    path.write_text("upstreams: []\n")
    with pytest.raises(ConfigError, match="upstreams"):
        load_aggregator_config(path)
    path.write_text("upstreams:\n  - {name: a, url: 'http://x'}\n  - {name: a, url: 'http://y'}\n")
    with pytest.raises(ConfigError, match="unique"):
        load_aggregator_config(path)
    path.write_text("upstreams:\n  - {name: a, url: 'http://x', timeout: PT0S}\n")
    with pytest.raises(ConfigError, match=r"upstreams\.0\.timeout: .*must be a positive duration"):
        load_aggregator_config(path)
    path.write_text("breaker: {backoff: -PT1S}\nupstreams:\n  - {name: a, url: 'http://x'}\n")
    with pytest.raises(ConfigError, match=r"breaker\.backoff"):
        load_aggregator_config(path)


def test_the_migrations_build_exactly_the_tables_and_keep_their_own_version(database_url):
    store = Store(database_url)
    try:
        with store.engine.connect() as c:
            context = MigrationContext.configure(c, opts={"version_table": SCHEMA.version_table})
            assert compare_metadata(context, metadata) == []
        assert store.ready() is None
        assert migrate.current_revision(store.engine, SCHEMA) == migrate.head_revision(SCHEMA)
    finally:
        store.dispose()
    # a node's schema in the same database is untouched by the aggregator's
    engine = create_engine(database_url)
    try:
        assert migrate.current_revision(engine) is None
    finally:
        engine.dispose()


def test_acceptance_is_claimed_once_per_offer_set(sqlite_url):
    store = Store(sqlite_url)
    sessions = [RemoteSession(f"s{i}", "os", "a", f"r{i}", f"http://a/sessions/r{i}", i)
                for i in range(2)]  # fmt: skip
    store.save_offerset("os", created_at=0, expires_at=0, result="YES", messages=[],
                        sessions=sessions)  # fmt: skip
    assert store.claim_acceptance("os", "s0")
    assert store.claim_acceptance("os", "s0")  # the same offer again: fine
    assert not store.claim_acceptance("os", "s1")
    store.release_acceptance("os", "s0")  # its upstream refused: the set is open again
    assert store.claim_acceptance("os", "s1")
    assert [s.uuid for s in store.sessions_of("os")] == ["s0", "s1"]
    store.dispose()


def test_malformed_upstream_answers_are_named():
    with pytest.raises(ValueError, match="result"):
        parse_offerset({"result": "MAYBE"})
    with pytest.raises(ValueError, match="YES without offers"):
        parse_offerset({"result": "YES", "offers": []})
    with pytest.raises(ValueError, match="url"):
        parse_offerset({"result": "YES", "offers": [{"meta": {"uuid": "u", "url": "ftp://x"},
                                                     "phase": "OFFERED"}]})  # fmt: skip
    assert parse_offerset({"result": "NO"}).offers == []


def test_merge_orders_earliest_first_then_by_weight_or_by_cost():
    answer = parse_offerset({"result": "YES", "offers": [
        offer("late", "2026-11-22T12:00:00Z", cost=1.0),
        offer("early", "2026-11-22T09:00:00Z", cost=5.0),
    ]})  # fmt: skip
    other = parse_offerset({"result": "YES", "offers": [offer("tie", "2026-11-22T09:00:00Z")]})
    candidates = [Candidate("a", 1.0, o) for o in answer.offers] + [
        Candidate("b", 2.0, other.offers[0])
    ]
    earliest = [c.offer.meta.uuid for c in rank(candidates, "earliest", 10)]
    assert earliest == ["tie", "early", "late"]  # b weighs more among equal starts
    assert rank(candidates, "cost", 10)[0].offer.meta.uuid == "late"
    assert len(rank(candidates, "earliest", 2)) == 2


def test_merge_reads_instant_and_interval_starts_of_nodes_of_either_form():
    """Nodes of the standard's form give ``available.start`` as an interval, older nodes as an
    instant: the aggregator federates both and orders them on one time line."""
    answer = parse_offerset({"result": "YES", "offers": [
        offer("interval-late", "2026-11-22T12:00:00Z/PT0S"),
        offer("instant-mid", "2026-11-22T10:00:00Z"),
        offer("interval-early", "2026-11-22T09:00:00Z/2026-11-22T09:30:00Z"),
        offer("duration-end", "PT1H/2026-11-22T10:30:00Z"),  # from 09:30
        offer("garbage", "not a time"),
    ]})  # fmt: skip
    candidates = [Candidate("a", 1.0, o) for o in answer.offers]
    assert [c.offer.meta.uuid for c in rank(candidates, "earliest", 10)] == [
        "interval-early", "duration-end", "instant-mid", "interval-late", "garbage",
    ]  # fmt: skip


def test_sessions_of_older_nodes_are_served_in_the_standards_form():
    old = offer("r1", "2026-11-22T09:00:00Z")
    old["kind"] = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/session/execution-session.yaml"
    old["meta"]["messages"] = [{"template": "{n} cores", "values": {"n": 4}, "message": "4 cores"}]
    doc = rewrite_session(old, local_uuid="l1", offerset_uuid="os", upstream="a",
                          base_url="http://agg")  # fmt: skip
    assert doc["kind"].endswith("/session/scheduled-execution-session.yaml")
    assert doc["schedule"]["available"]["start"] == "2026-11-22T09:00:00Z/PT0S"
    assert doc["meta"]["messages"][0]["values"] == {"n": "4"}


def test_rewritten_sessions_point_at_the_aggregator_and_name_their_path():
    below = offer("r1", "2026-11-22T09:00:00Z")
    below["site"]["upstream"] = "site-a"  # it came through another aggregator
    doc = rewrite_session(below, local_uuid="l1", offerset_uuid="os", upstream="national",
                          base_url="http://agg")  # fmt: skip
    assert doc["meta"]["uuid"] == "l1" and doc["meta"]["url"] == "http://agg/sessions/l1"
    assert doc["offerset"] == {"uuid": "os", "url": "http://agg/offersets/os"}
    assert doc["site"]["upstream"] == "national/site-a"


def test_the_breaker_opens_after_repeated_failures_and_backs_off_more_each_time():
    breaker = Breaker(BreakerConfig(failures=2, backoff=timedelta(seconds=10),
                                    max_backoff=timedelta(seconds=25)))  # fmt: skip
    breaker.failure(0)
    assert breaker.allows(0)
    breaker.failure(0)
    assert not breaker.allows(5) and breaker.allows(10)
    assert breaker.state(5).startswith("open")
    breaker.failure(10)  # the probe failed too: twice as long, capped
    assert not breaker.allows(29) and breaker.allows(30)
    breaker.success()
    assert breaker.allows(30) and breaker.state(30) == "ok"


def test_defaults_are_sane():
    config = AggregatorConfig.model_validate({"upstreams": [{"name": "a", "url": "http://x/"}]})
    assert config.upstreams[0].base == "http://x"
    assert config.fanout.deadline > config.upstreams[0].timeout


def test_the_example_config_is_valid():
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "aggregator.yaml"
    config = load_aggregator_config(example)
    assert [u.name for u in config.upstreams] == ["site-a", "site-b"]


def test_the_store_is_written_off_the_event_loop(sqlite_url):
    """The event loop serves every request at once: a slow commit of the offer mapping must
    not stop it (other requests' fan-outs go on meanwhile)."""
    import asyncio
    import time

    from aggregator.service import Aggregator
    from aggregator.upstreams import Upstreams
    from tests.nodes import free_port

    class SlowStore(Store):
        def save_offerset(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            time.sleep(0.3)  # a commit stuck behind a slow disk
            return super().save_offerset(*args, **kwargs)

    config = AggregatorConfig.model_validate(
        {"upstreams": [{"name": "gone", "url": f"http://127.0.0.1:{free_port()}/"}]}
    )
    store = SlowStore(sqlite_url)

    async def main() -> tuple[dict, int]:
        upstreams = Upstreams(config)
        service = Aggregator(config, store, upstreams)
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        running = asyncio.create_task(ticker())
        try:
            answer = await service.request_offers({"executable": {}}, None)
        finally:
            running.cancel()
            await upstreams.close()
        return answer, ticks

    try:
        answer, ticks = asyncio.run(main())
    finally:
        store.dispose()
    assert answer["result"] == "NO" and "gone" in str(answer["meta"]["messages"])
    assert ticks >= 15, f"the event loop stood still while the store was written ({ticks} ticks)"


def test_a_listed_occurrence_takes_the_aggregators_uuid(database_url):
    """A node's list names each occurrence's series: of a series the aggregator offered, the
    occurrence is listed under the aggregator's uuid (the one the series shows), saved so
    that GET and cancel on it reach the node; of any other, under the node's own."""
    from types import SimpleNamespace

    from aggregator import series
    from aggregator.listing import SESSIONS, rewrite

    store = Store(database_url)
    store.save_offerset("agg-os", created_at=0, expires_at=1, result="YES", messages=[],
                        sessions=[RemoteSession("agg-series", "agg-os", "a", "node-series",
                                                "http://a/sessions/node-series", 0)])  # fmt: skip
    service = SimpleNamespace(store=store, base_url="http://agg")
    theirs = {"uuid": "node-occ", "href": "http://a/sessions/node-occ", "offerset": "node-os",
              "series": "node-series", "occurrence": 1}  # fmt: skip
    stranger = {**theirs, "uuid": "other-occ", "series": "other-series"}
    shown, kept = rewrite(service, SESSIONS, [("a", theirs), ("a", stranger)])
    ours = series.local_uuid("agg-series", "node-occ")
    assert shown == {**theirs, "uuid": ours, "href": f"http://agg/sessions/{ours}",
                     "offerset": "agg-os", "series": "agg-series", "upstream": "a"}  # fmt: skip
    assert kept == {**stranger, "upstream": "a"}
    found = store.session(ours)
    assert found is not None and found.remote_url == "http://a/sessions/node-occ"
    assert store.series_of(ours) == "agg-series"
    # listed again (or shown by the series first): the same uuid, nothing saved twice
    assert rewrite(service, SESSIONS, [("a", theirs)])[0]["uuid"] == ours
    store.dispose()
