"""The aggregator over a real network's delivery: upstream answers arrive in many small reads,
late, chunked, too large or cut short. A shim (a TCP proxy in the test) passes each upstream
answer on in small pieces with a pause between them, as a WAN does, not in the one read that
loopback often gives. Also: every upstream offer not passed on is rejected on its upstream at
once (without delaying the answer), and the deadline bounds the work after the fan-out too."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import socket
import threading
import time
import uuid as uuidlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web

from aggregator.budget import AfterFanout
from aggregator.config import AggregatorConfig
from aggregator.http.app import create_aggregator_app
from aggregator.service import Aggregator
from aggregator.store import Store
from aggregator.upstreams import UpstreamError, Upstreams
from tests.conftest import ACCEPT, request_doc
from tests.nodes import free_port, start_node

KINDS = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/"
OFFERSET = KINDS + "offerset/offerset-response.yaml"
REQUEST = request_doc()


class Shim:
    """A TCP proxy that passes what the upstream sends on in ``piece``-byte writes ``pause``
    seconds apart (TCP_NODELAY, so each is its own segment); requests pass as they are."""

    def __init__(self, target_port: int, piece: int = 1400, pause: float = 0.002):
        self.target_port, self.piece, self.pause = target_port, piece, pause
        self.server: asyncio.Server | None = None
        self.writes = 0  # pieces passed on, to show the answers did come in many

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        for writer in (client_w, upstream_w):
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(
            self._pump(client_r, upstream_w, split=False),
            self._pump(upstream_r, client_w, split=True),
            return_exceptions=True,
        )

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, split: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                pieces = [data[i : i + self.piece] for i in range(0, len(data), self.piece)]
                for piece in pieces if split else [data]:
                    writer.write(piece)
                    await writer.drain()
                    if split:
                        self.writes += 1
                        await asyncio.sleep(self.pause)
        finally:
            writer.close()


@dataclass
class Fake:
    """Upstream nodes on one aiohttp server, each under its own path prefix, answering as
    configured: how many offers (and how much padding), how the answer is written, how late."""

    offers: dict[str, int] = field(default_factory=dict)  # name: offers it makes
    padding: dict[str, int] = field(default_factory=dict)  # name: bytes of padding
    mode: dict[str, str] = field(default_factory=dict)  # name: "plain", "chunked", "two-writes"
    delay: dict[str, float] = field(default_factory=dict)  # name: seconds before answering
    reject_delay: float = 0.0
    reject_status: int = 200
    logs_bytes: int = 0
    base: str = ""  # the URL the aggregator reaches the fake at (through the shim)
    updates: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    rejected_at: list[float] = field(default_factory=list)  # when each reject was answered
    offered: dict[str, list[str]] = field(default_factory=dict)  # name: uuids offered

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{name}/node", self._node)
        app.router.add_post("/{name}/requests", self._requests)
        app.router.add_post("/{name}/sessions/{uuid}", self._update)
        app.router.add_get("/{name}/sessions/{uuid}/logs", self._logs)
        return app

    def offerset(self, name: str) -> bytes:
        offers = []
        for i in range(self.offers.get(name, 2)):
            uuid = str(uuidlib.uuid4())
            self.offered.setdefault(name, []).append(uuid)
            schedule = {"available": {"start": f"2099-01-01T{i:02d}:00:00Z/PT0S",
                                      "duration": "PT1H"}}  # fmt: skip
            offers.append({
                "kind": KINDS + "session/scheduled-execution-session.yaml",
                "meta": {"uuid": uuid, "url": f"{self.base}/{name}/sessions/{uuid}",
                         "created": "2098-12-31T00:00:00Z"},
                "phase": "OFFERED",
                "expires": "2099-01-01T00:00:00Z",
                "schedule": schedule,
                "executable": {**REQUEST["executable"], "phase": "WAITING", "schedule": schedule},
                "compute": {**REQUEST["compute"], "phase": "WAITING", "schedule": schedule},
                "site": {"name": name},
            })  # fmt: skip
        meta = {"uuid": str(uuidlib.uuid4()), "description": "x" * self.padding.get(name, 0)}
        return json.dumps({"kind": OFFERSET, "meta": meta, "result": "YES", "offers": offers},
                          separators=(",", ":")).encode()  # fmt: skip

    async def _node(self, _request: web.Request) -> web.Response:
        return web.Response(status=404)  # no description: it is asked whatever the kinds

    async def _requests(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        await request.read()
        await asyncio.sleep(self.delay.get(name, 0))
        body = self.offerset(name)
        mode = self.mode.get(name, "plain")
        if mode == "plain":
            return web.Response(body=body, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if mode == "chunked":
            response.enable_chunked_encoding()
            await response.prepare(request)
            for i in range(0, len(body), 4096):
                await response.write(body[i : i + 4096])
        else:  # two writes, 20 ms apart
            response.content_length = len(body)
            await response.prepare(request)
            await response.write(body[: len(body) // 2])
            await asyncio.sleep(0.02)
            await response.write(body[len(body) // 2 :])
        await response.write_eof()
        return response

    async def _update(self, request: web.Request) -> web.Response:
        name, uuid = request.match_info["name"], request.match_info["uuid"]
        document = await request.json()
        self.updates.append((name, uuid, document))
        await asyncio.sleep(self.reject_delay)
        self.rejected_at.append(time.monotonic())
        if self.reject_status != 200:
            return web.Response(status=self.reject_status, text="no")
        meta = {"uuid": uuid, "url": f"{self.base}/{name}/sessions/{uuid}"}
        return web.json_response({"meta": meta, "phase": document.get("value")})

    async def _logs(self, _request: web.Request) -> web.Response:
        return web.Response(text="line of output\n" * (self.logs_bytes // 15 + 1))

    def rejected(self, name: str | None = None) -> list[str]:
        return [u for n, u, d in self.updates
                if d.get("value") == "REJECTED" and name in (None, n)]  # fmt: skip


@dataclass
class Wire:
    fake: Fake
    shim: Shim
    url: str  # the fake through the shim

    def config(self, names: list[str], **fanout: Any) -> AggregatorConfig:
        timeout = fanout.pop("timeout", "PT5S")
        database = fanout.pop("database", None)  # only for an app: a service is given its store
        return AggregatorConfig.model_validate({
            **({"database": database} if database else {}),
            "fanout": {"deadline": "PT5S", "max_offers": 16, **fanout},
            "breaker": {"failures": 3},
            "upstreams": [{"name": n, "url": f"{self.url}/{n}", "timeout": timeout}
                          for n in names],
        })  # fmt: skip


@pytest.fixture
async def wire() -> AsyncIterator[Wire]:
    fake = Fake()
    runner = web.AppRunner(fake.app(), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    shim = Shim(runner.addresses[0][1])
    fake.base = f"http://127.0.0.1:{await shim.start()}"
    try:
        yield Wire(fake, shim, fake.base)
    finally:
        await shim.close()
        await runner.cleanup()


@pytest.fixture
async def service_for(wire: Wire, sqlite_url: str) -> AsyncIterator[Any]:
    made: list[Aggregator] = []

    def make(config: AggregatorConfig) -> Aggregator:
        made.append(Aggregator(config, Store(sqlite_url), Upstreams(config)))
        return made[-1]

    try:
        yield make
    finally:
        for service in made:
            await service.rejections.close()
            await service.upstreams.close()
            service.store.dispose()


# --- whole answers ------------------------------------------------------------------------------


async def test_an_answer_in_two_writes_is_read_whole(wire):
    """A valid 7 KB answer written in two parts 20 ms apart was "not JSON" every time."""
    wire.fake.mode["a"], wire.fake.padding["a"] = "two-writes", 7000
    ups = Upstreams(wire.config(["a"]))
    upstream = ups.by_name["a"]
    try:
        for _ in range(20):
            answer = await ups.call(upstream, "POST", f"{wire.url}/a/requests", document={})
            assert answer.status == 200 and len(answer.document["offers"]) == 2
    finally:
        await ups.close()
    assert upstream.breaker.failures == 0
    assert wire.shim.writes >= 20 * 6  # each answer came in several pieces


@pytest.mark.parametrize("mode", ["plain", "chunked"])
async def test_a_300_kb_answer_in_small_pieces_is_merged(wire, service_for, mode):
    wire.fake.mode["big"], wire.fake.padding["big"] = mode, 300_000
    wire.fake.offers["big"] = 3
    service = service_for(wire.config(["big", "small"]))
    answer = await service.request_offers(request_doc(), None)
    assert answer["result"] == "YES"
    assert [o["site"]["upstream"] for o in answer["offers"]].count("big") == 3
    assert "failed" not in json.dumps(answer["meta"]["messages"])
    assert service.upstreams.by_name["big"].breaker.failures == 0
    assert wire.shim.writes > 200


@pytest.mark.parametrize("mode", ["plain", "chunked"])
async def test_an_answer_over_the_cap_is_the_upstreams_fault(wire, service_for, mode):
    """Declared too large (Content-Length) or found too large while reading (chunked): the
    upstream failed, the others' offers are still merged."""
    wire.fake.mode["big"], wire.fake.padding["big"] = mode, 100_000
    service = service_for(wire.config(["big", "small"], max_answer_bytes=65536))
    answer = await service.request_offers(request_doc(), None)
    assert answer["result"] == "YES"
    assert {o["site"]["upstream"] for o in answer["offers"]} == {"small"}
    texts = " | ".join(m["message"] for m in answer["meta"]["messages"])
    assert "upstream big failed: its answer" in texts and "larger than the 65536 bytes" in texts
    assert service.upstreams.by_name["big"].breaker.failures == 1


async def test_an_answer_cut_short_is_a_failure_not_a_crash():
    """An upstream that closes the connection before its Content-Length is reached."""

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n"
        writer.write(head + b'\r\n{"result": "YES", "offers": [')
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(cut, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = AggregatorConfig.model_validate(
        {"upstreams": [{"name": "cut", "url": f"http://127.0.0.1:{port}"}]}
    )
    ups = Upstreams(config)
    try:
        with pytest.raises(UpstreamError, match="cut short"):
            await ups.call(ups.by_name["cut"], "GET", f"http://127.0.0.1:{port}/x")
    finally:
        await ups.close()
        server.close()
    assert ups.by_name["cut"].breaker.failures == 1


async def test_session_logs_are_read_whole_up_to_the_cap(wire):
    wire.fake.logs_bytes = 300_000
    ups = Upstreams(wire.config(["a"]))
    upstream = ups.by_name["a"]
    try:
        text = await ups.text(upstream, f"{wire.url}/a/sessions/s/logs", token=None)
        assert text is not None and len(text) >= 300_000
        assert text.count("line of output\n") == 300_000 // 15 + 1
        small = Upstreams(wire.config(["a"], max_answer_bytes=65536))
        try:
            with pytest.raises(UpstreamError, match="larger than"):
                await small.text(small.by_name["a"], f"{wire.url}/a/sessions/s/logs", token=None)
        finally:
            await small.close()
    finally:
        await ups.close()


# --- every offer not passed on is rejected at once -------------------------------------------


async def test_offers_ranked_out_are_rejected_at_once_without_delaying_the_answer(
    wire, service_for
):
    wire.fake.offers.update(a=4, b=4)
    wire.fake.reject_delay = 1.0  # rejecting is slow: the answer must not wait for it
    service = service_for(wire.config(["a", "b"], max_offers=3))
    started = time.monotonic()
    answer = await service.request_offers(request_doc(), "caller-token")
    answered = time.monotonic()
    assert len(answer["offers"]) == 3
    assert answered - started < wire.fake.reject_delay
    assert not [t for t in wire.fake.rejected_at if t <= answered]
    await asyncio.wait_for(service.rejections.idle(), 10)
    passed = {s.remote_uuid for s in service.store.sessions_of(answer["meta"]["uuid"])}
    offered = set(wire.fake.offered["a"] + wire.fake.offered["b"])
    assert len(wire.fake.rejected()) == 5
    assert set(wire.fake.rejected()) == offered - passed
    assert service.rejections.rejected == 5 and service.rejections.failed == 0


async def test_offers_answered_after_the_fanout_stopped_are_rejected(wire, service_for):
    wire.fake.offers.update(late=2, quick=2)
    wire.fake.delay["late"] = 0.8  # after the fan-out stopped, within its own timeout
    service = service_for(wire.config(["late", "quick"], deadline="PT0.5S", reserve="PT0S"))
    answer = await service.request_offers(request_doc(), None)
    assert {o["site"]["upstream"] for o in answer["offers"]} == {"quick"}
    assert "upstream late timed out" in json.dumps(answer["meta"]["messages"])
    await asyncio.wait_for(service.rejections.idle(), 10)
    assert sorted(wire.fake.rejected("late")) == sorted(wire.fake.offered["late"])
    assert wire.fake.rejected("quick") == []
    # an answer too late to use counts against its breaker like a timeout
    assert service.upstreams.by_name["late"].breaker.failures == 1


async def test_offers_of_a_merged_set_that_was_not_kept_are_rejected(wire, service_for):
    service = service_for(wire.config(["a"]))

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the database is gone")

    service.store.save_offerset = broken
    with pytest.raises(RuntimeError):
        await service.request_offers(request_doc(), None)
    await asyncio.wait_for(service.rejections.idle(), 10)
    assert sorted(wire.fake.rejected("a")) == sorted(wire.fake.offered["a"])


async def test_rejections_that_fail_are_logged(wire, service_for, caplog):
    wire.fake.offers["a"] = 3
    wire.fake.reject_status = 500
    service = service_for(wire.config(["a"], max_offers=1))
    with caplog.at_level(logging.WARNING, logger="aggregator.rejections"):
        await service.request_offers(request_doc(), None)
        await asyncio.wait_for(service.rejections.idle(), 10)
    assert service.rejections.failed == 2
    logged = [r.getMessage() for r in caplog.records if r.name == "aggregator.rejections"]
    assert len(logged) == 2 and all("could not reject unused offer" in m for m in logged)


# --- the deadline bounds the work after the fan-out --------------------------------------------


def test_the_reserve_follows_what_recent_answers_needed():
    after = AfterFanout(floor=0.2)
    assert after.reserve(8.0) == 0.2
    after.record(0.4)
    assert after.reserve(8.0) == pytest.approx(0.6)  # the most needed, with a margin
    assert after.reserve(1.0) == 0.5  # never more than half the deadline
    for _ in range(64):
        after.record(0.01)
    assert after.reserve(8.0) == 0.2  # an old outlier is forgotten


async def test_the_fanout_stops_early_enough_to_answer_within_the_deadline(wire, service_for):
    wire.fake.delay["hung"] = 3
    service = service_for(
        wire.config(["hung", "a"], deadline="PT1S", reserve="PT0.3S", timeout="PT1.5S")
    )
    started = time.monotonic()
    answer = await service.request_offers(request_doc(), None)
    took = time.monotonic() - started
    assert answer["result"] == "YES"
    assert took < 1.0, f"the answer took {took:.2f} s against a deadline of 1 s"
    assert took >= 0.69  # the fan-out waited for the hung upstream until 1 s - 0.3 s


# --- the aggregator's own FAILED session of POST /direct -------------------------------------


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """The app's start-up and shutdown (which closes its upstream connections) around a block,
    as a server runs them."""
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        assert (await outbox.get())["type"] == "lifespan.shutdown.complete"
        await task
        gc.unfreeze()  # the aggregator's start-up froze what it found


async def test_the_aggregators_own_failed_session_can_be_fetched(sqlite_url):
    """No upstream could start it nor kept a FAILED session (it is unreachable): the 400's
    session is the aggregator's own, and GET /sessions/{uuid} serves it."""
    config = AggregatorConfig.model_validate({
        "server": {"validate_responses": True},
        "database": {"url": sqlite_url},
        "upstreams": [{"name": "gone", "url": f"http://127.0.0.1:{free_port()}"}],
    })  # fmt: skip
    app = create_aggregator_app(config)
    transport = httpx.ASGITransport(app=app)
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=transport, base_url="http://agg") as client,
    ):
        r = await client.post("/direct", json=request_doc())
        assert r.status_code == 400, r.text
        session = r.json()
        assert session["phase"] == "FAILED"
        uuid = session["meta"]["uuid"]
        assert session["meta"]["url"].endswith(f"/sessions/{uuid}")
        got = await client.get(f"/sessions/{uuid}")
        assert got.status_code == 200, got.text
        assert got.json() == session
        accept = await client.post(f"/sessions/{uuid}", json=ACCEPT)
        assert accept.status_code == 409, accept.text
        assert accept.json()["phase"] == "FAILED"
        logs = await client.get(f"/sessions/{uuid}/logs")
        assert logs.status_code == 200 and logs.text == ""
        offerset = await client.get(f"/offersets/{session['offerset']['uuid']}")
        assert offerset.status_code == 200 and offerset.json()["result"] == "NO"


async def test_the_work_after_each_fanout_is_measured_for_the_next(wire, sqlite_url):
    app = create_aggregator_app(wire.config(["a"], database={"url": sqlite_url}))
    transport = httpx.ASGITransport(app=app)
    async with (
        lifespan(app),
        httpx.AsyncClient(transport=transport, base_url="http://agg") as client,
    ):
        for count in (1, 2):
            r = await client.post("/requests", json=request_doc())
            assert r.status_code == 200 and r.json()["result"] == "YES", r.text
            assert len(app.after.samples) == count
        assert (await client.get("/node")).status_code == 200  # no fan-out: nothing to measure
    assert len(app.after.samples) == 2
    assert all(0 < s < 1 for s in app.after.samples)


# --- the whole answer, measured by its client ----------------------------------------------


class ThreadedWire:
    """The fake upstreams and the shim on an event loop of their own, in a thread, for an
    aggregator process to reach."""

    def __init__(self, fake: Fake):
        self.fake = fake
        self.loop = asyncio.new_event_loop()
        self.url = ""

    def __enter__(self) -> ThreadedWire:
        ready = threading.Event()

        async def serve() -> None:
            self.runner = web.AppRunner(self.fake.app(), access_log=None, shutdown_timeout=0.5)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", 0).start()
            self.shim = Shim(self.runner.addresses[0][1])
            self.url = self.fake.base = f"http://127.0.0.1:{await self.shim.start()}"
            ready.set()

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self.loop)
        assert ready.wait(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        async def stop() -> None:
            await self.shim.close()
            await self.runner.cleanup()
            rest = asyncio.all_tasks() - {asyncio.current_task()}  # the shim's, the hung ones
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.mark.slow
def test_every_answer_is_sent_within_the_deadline_with_a_hung_upstream(tmp_path):
    """A hung upstream and the breaker off (every request asks it): the fan-out stops early
    enough that merging, storing, validating and sending 16 offers fit in the deadline, as the
    client measures it (before: every answer late, by the work after the fan-out)."""
    deadline = 2.0
    fake = Fake(offers={"many": 16}, delay={"hung": 30})
    with ThreadedWire(fake) as wire:
        config = {
            "server": {"validate_responses": True},
            "database": {"url": f"sqlite:///{tmp_path / 'agg.db'}"},
            "fanout": {"deadline": f"PT{deadline}S", "max_offers": 16},
            "breaker": {"failures": 100, "backoff": "PT0S", "max_backoff": "PT0S"},
            "upstreams": [
                {"name": "hung", "url": f"{wire.url}/hung", "timeout": "PT5S"},
                {"name": "many", "url": f"{wire.url}/many"},
            ],
        }
        path = tmp_path / "agg.yaml"
        path.write_text(yaml.safe_dump(config))
        agg = start_node(path, tmp_path, "agg", command="aggregator")
        took = []
        try:
            with httpx.Client(timeout=30) as client:
                for _ in range(5):
                    started = time.monotonic()
                    r = client.post(f"{agg.url}/requests", json=request_doc())
                    took.append(time.monotonic() - started)  # the whole body is read
                    assert r.status_code == 200 and len(r.json()["offers"]) == 16, r.text
                    assert "upstream hung timed out" in r.text
        finally:
            agg.stop()
    took.sort()
    print(f"answers: min {took[0]:.3f} s, median {took[len(took) // 2]:.3f} s, "
          f"max {took[-1]:.3f} s against a deadline of {deadline} s")  # fmt: skip
    assert took[-1] < deadline, took
