"""The aggregator end to end: real node processes (different capacities and accepted kinds),
real aggregator processes (two levels), and misbehaving upstreams (dead, slow, malformed)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web

from tests.conftest import ACCEPT, offered_start, request_doc
from tests.nodes import Node, free_port, start_node

pytestmark = pytest.mark.slow  # real processes or fuzzing: `-m 'not slow'` leaves it out

SINGULARITY = (
    "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/executable/"
    "singularity-container.yaml"
)
DEADLINE = 3.0
REJECT = {**ACCEPT, "value": "REJECTED"}


def node_config(tmp: Path, name: str, cores: int, kinds: list[str] | None = None) -> Path:
    options: dict[str, Any] = {"base_preparation": "PT0S", "image_pull": "PT0S"}
    if kinds:
        options["kinds"] = kinds
    config = {
        "site": {"name": name},
        "database": {"url": f"sqlite:///{tmp / f'{name}.db'}"},
        "offers": {"max_offers": 2},
        "platforms": [{"name": "sim", "type": "simulated", "options": options, "pools": [
            {"name": "main", "inventories": {"cores": {"total": cores}, "memory": {"total": 64}}}
        ]}],
    }  # fmt: skip
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def aggregator_config(tmp: Path, name: str, upstreams: list[dict[str, Any]]) -> Path:
    config = {
        "site": {"name": name},
        "server": {"validate_responses": True},
        "database": {"url": f"sqlite:///{tmp / f'{name}.db'}"},
        "fanout": {"deadline": f"PT{DEADLINE}S", "max_offers": 8},
        "breaker": {"failures": 2, "backoff": "PT30S"},
        "upstreams": upstreams,
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class FakeUpstreams:
    """Misbehaving upstreams on one aiohttp server in a thread: a slow one, a malformed one,
    and one that records the Authorization header it is sent."""

    def __init__(self) -> None:
        self.port = free_port()
        self.seen_tokens: list[str | None] = []
        self.seen_queries: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = threading.Event()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/slow/requests", self._slow)
        app.router.add_get("/slow/node", self._slow)
        app.router.add_post("/bad/requests", self._malformed)
        app.router.add_get("/bad/node", self._error)
        app.router.add_post("/token/requests", self._token)
        app.router.add_get("/token/node", self._node)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self.started.set()
        self.loop.run_forever()

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({})

    async def _malformed(self, request: web.Request) -> web.Response:
        return web.json_response({"result": "MAYBE", "offers": "none"})

    async def _error(self, request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async def _node(self, request: web.Request) -> web.Response:
        return web.Response(status=404)  # an upstream that does not describe itself

    async def _token(self, request: web.Request) -> web.Response:
        self.seen_tokens.append(request.headers.get("Authorization"))
        self.seen_queries.append(request.query_string)
        return web.json_response(
            {"result": "NO", "offers": [], "meta": {"messages": [{"message": "nothing here"}]}}
        )

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> FakeUpstreams:
        self.thread.start()
        self.started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def federation(tmp_path_factory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("federation")
    nodes: dict[str, Node] = {}
    with FakeUpstreams() as fakes:
        try:
            nodes["a"] = start_node(node_config(tmp, "a", 8), tmp, "a")
            nodes["b"] = start_node(node_config(tmp, "b", 16), tmp, "b")
            nodes["c"] = start_node(
                node_config(tmp, "c", 4, kinds=["docker-container", "simple-compute-resource"]),
                tmp, "c",
            )  # fmt: skip
            nodes["d"] = start_node(node_config(tmp, "d", 8), tmp, "d")
            dead = f"http://127.0.0.1:{free_port()}"
            l1 = aggregator_config(tmp, "national", [
                {"name": "a", "url": nodes["a"].url},
                {"name": "b", "url": nodes["b"].url, "weight": 2},
                {"name": "c", "url": nodes["c"].url},
                {"name": "dead", "url": dead, "timeout": "PT1S"},
                {"name": "slow", "url": fakes.url("slow"), "timeout": "PT1S"},
                {"name": "bad", "url": fakes.url("bad")},
                {"name": "token", "url": fakes.url("token"), "forward_token": True},
            ])  # fmt: skip
            nodes["national"] = start_node(l1, tmp, "national", command="aggregator")
            l2 = aggregator_config(tmp, "global", [
                {"name": "national", "url": nodes["national"].url, "timeout": "PT5S"},
                {"name": "d", "url": nodes["d"].url},
            ])  # fmt: skip
            nodes["global"] = start_node(l2, tmp, "global", command="aggregator")
            yield {"nodes": nodes, "fakes": fakes, "tmp": tmp, "l1": l1}
        finally:
            for node in nodes.values():
                node.stop()


def ask(url: str, doc: dict[str, Any] | None = None, **headers: str) -> tuple[dict, float]:
    started = time.monotonic()
    r = httpx.post(f"{url}/requests", json=doc or request_doc(duration="PT1H"), headers=headers,
                   timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    return r.json(), time.monotonic() - started


def release(url: str, answer: dict[str, Any]) -> None:
    """Reject a test's unused offers through the aggregator, as a client done with them does:
    the nodes limit what anonymous callers hold at once (holds.anonymous)."""
    for offer in answer["offers"]:
        r = httpx.post(f"{url}/sessions/{offer['meta']['uuid']}", json=REJECT, timeout=30)
        assert r.status_code == 200, r.text


def texts(doc: dict[str, Any]) -> str:
    return " | ".join(m["message"] for m in doc["meta"].get("messages", []))


def test_offers_are_merged_from_every_node_and_failures_named(federation):
    national = federation["nodes"]["national"]
    answer, took = ask(national.url, Authorization="Bearer user-token-1")
    assert answer["result"] == "YES"
    assert took < DEADLINE + 1.5, f"the slow upstream held the answer for {took:.1f} s"
    sites = {o["site"]["upstream"] for o in answer["offers"]}
    assert sites == {"a", "b", "c"}
    for offer in answer["offers"]:
        assert offer["meta"]["url"] == f"{national.url}/sessions/{offer['meta']['uuid']}"
        assert offer["offerset"]["uuid"] == answer["meta"]["uuid"]
    starts = [offered_start(o) for o in answer["offers"]]
    assert starts == sorted(starts)
    why = texts(answer)
    assert "upstream dead failed: cannot reach it" in why
    assert "upstream slow" in why and ("no answer within" in why or "timed out" in why)
    assert "upstream bad failed: malformed offer set" in why
    assert "upstream token answered NO: nothing here" in why
    # the caller's token reached the upstream configured to forward it
    assert "Bearer user-token-1" in federation["fakes"].seen_tokens
    release(national.url, answer)


def test_the_project_to_charge_is_passed_on_to_the_nodes(federation):
    national = federation["nodes"]["national"]
    r = httpx.post(f"{national.url}/requests", params={"project": "astro"},
                   json=request_doc(duration="PT1H"), timeout=30)  # fmt: skip
    assert r.status_code == 200, r.text
    assert "project=astro" in federation["fakes"].seen_queries
    release(national.url, r.json())


def test_upstreams_that_cannot_accept_the_kinds_are_skipped(federation):
    doc = request_doc(duration="PT1H")
    doc["executable"] = {"kind": SINGULARITY, "image": {"locations": ["library/busybox"]}}
    answer, _ = ask(federation["nodes"]["national"].url, doc)
    assert "c" not in {o["site"]["upstream"] for o in answer["offers"]}
    assert "upstream c skipped: it does not accept" in texts(answer)
    release(federation["nodes"]["national"].url, answer)


def test_accepting_one_merged_offer_rejects_the_others_on_every_node(federation):
    national = federation["nodes"]["national"].url
    answer, _ = ask(national)
    chosen = next(o for o in answer["offers"] if o["site"]["upstream"] == "b")
    r = httpx.post(f"{national}/sessions/{chosen['meta']['uuid']}", json=ACCEPT, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["phase"] in ("ACCEPTED", "WAITING")
    assert r.json()["meta"]["url"] == f"{national}/sessions/{chosen['meta']['uuid']}"
    offerset = httpx.get(f"{national}/offersets/{answer['meta']['uuid']}", timeout=30).json()
    phases = {o["meta"]["uuid"]: o["phase"] for o in offerset["offers"]}
    assert phases.pop(chosen["meta"]["uuid"]) in ("ACCEPTED", "WAITING")
    assert set(phases.values()) == {"REJECTED"}, phases
    # another offer of the set cannot be accepted any more
    other = next(uuid for uuid in phases)
    again = httpx.post(f"{national}/sessions/{other}", json=ACCEPT, timeout=30)
    assert again.status_code == 409
    # the session is followed through the aggregator
    session = httpx.get(f"{national}/sessions/{chosen['meta']['uuid']}", timeout=30).json()
    assert session["site"]["upstream"] == "b"
    assert (
        httpx.get(f"{national}/sessions/{chosen['meta']['uuid']}/logs", timeout=30).status_code
        == 200
    )


def test_two_levels_of_aggregators(federation):
    top = federation["nodes"]["global"].url
    answer, _ = ask(top)
    sites = {o["site"]["upstream"] for o in answer["offers"]}
    assert sites >= {"d"} and any(s.startswith("national/") for s in sites), sites
    chosen = next(o for o in answer["offers"] if o["site"]["upstream"].startswith("national/"))
    r = httpx.post(f"{top}/sessions/{chosen['meta']['uuid']}", json=ACCEPT, timeout=30)
    assert r.status_code == 200, r.text
    offerset = httpx.get(f"{top}/offersets/{answer['meta']['uuid']}", timeout=30).json()
    others = [o["phase"] for o in offerset["offers"] if o["meta"]["uuid"] != chosen["meta"]["uuid"]]
    assert others and set(others) == {"REJECTED"}, others


def test_failing_upstreams_are_backed_off_and_shown_on_health(federation):
    national = federation["nodes"]["national"].url
    for _ in range(2):
        release(national, ask(national)[0])
    health = httpx.get(f"{national}/health/ready", timeout=30).json()
    assert health["status"] == "ok"
    assert health["checks"]["upstream a"] == "ok"
    assert health["checks"]["upstream dead"].startswith("open: backing off")
    answer, _ = ask(national)
    assert "backing off" in texts(answer)
    release(national, answer)
    description = httpx.get(f"{national}/node", timeout=30).json()
    states = {u["name"]: u["state"] for u in description["upstreams"]}
    assert states["dead"].startswith("open")


def test_a_restarted_aggregator_keeps_its_offers(federation, tmp_path):
    l1 = federation["l1"]
    first = start_node(l1, tmp_path, "again", command="aggregator")
    try:
        answer, _ = ask(first.url)
        assert answer["offers"], texts(answer)
        uuid = answer["offers"][0]["meta"]["uuid"]
    finally:
        first.kill()
    second = start_node(l1, tmp_path, "again-2", command="aggregator")
    try:
        r = httpx.get(f"{second.url}/sessions/{uuid}", timeout=30)
        assert r.status_code == 200 and r.json()["phase"] == "OFFERED"
        assert r.json()["meta"]["url"].endswith(f"/sessions/{uuid}")
        release(second.url, answer)
    finally:
        second.stop()


def test_siblings_that_cannot_be_rejected_are_reported(tmp_path):
    a = start_node(node_config(tmp_path, "a", 8), tmp_path, "a")
    b = start_node(node_config(tmp_path, "b", 8), tmp_path, "b")
    agg = None
    try:
        config = aggregator_config(tmp_path, "agg", [
            {"name": "a", "url": a.url, "weight": 2}, {"name": "b", "url": b.url},
        ])  # fmt: skip
        agg = start_node(config, tmp_path, "agg", command="aggregator")
        answer, _ = ask(agg.url)
        assert {o["site"]["upstream"] for o in answer["offers"]} == {"a", "b"}
        b.kill()  # node b goes away after it offered
        chosen = next(o for o in answer["offers"] if o["site"]["upstream"] == "a")
        r = httpx.post(f"{agg.url}/sessions/{chosen['meta']['uuid']}", json=ACCEPT, timeout=30)
        assert r.status_code == 200, r.text
        assert "could not reject offer" in texts(r.json()) and "upstream b" in texts(r.json())
        # and a session of the vanished node is a 502, not a 500
        lost = next(o for o in answer["offers"] if o["site"]["upstream"] == "b")
        gone = httpx.get(f"{agg.url}/sessions/{lost['meta']['uuid']}", timeout=30)
        assert gone.status_code in (502, 504)
        assert gone.headers["content-type"] == "application/problem+json"
    finally:
        for process in (agg, a, b):
            if process is not None:
                process.stop()
