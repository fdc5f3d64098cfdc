"""A fake node of the other implementation (Calycopis-broker) for aggregator tests: an aiohttp
server in a thread that answers as the standard's schema (Calycopis-openapi v1.0) says, with
documents written here by hand: sessions of the standard's kinds, `schedule.available.start` an
ISO-8601 interval, message values strings, components with their own phase and schedule, and
none of ebroker's extras (`site`, `offerset`, `meta.options`). It has no ``/node``, answers
unknown resources with empty 404 bodies and errors with plain text. Switches choose its answer
forms: ``requests`` (``"200"`` or ``"303"`` See Other to ``/offersets/{uuid}``) and ``direct``
(``"303"`` with no body, ``"200"`` with the session, ``"400"`` with a FAILED session)."""

from __future__ import annotations

import asyncio
import threading
import uuid as uuidlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from tests.nodes import free_port

V1 = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/"
SCHEDULED = V1 + "session/scheduled-execution-session.yaml"
SIMPLE = V1 + "session/simple-execution-session.yaml"
OFFERSET = V1 + "offerset/offerset-response.yaml"  # AbstractComponent's kind: any URI
COST = V1 + "costs/simple-minmax-float-cost.yaml"
COMPUTE = V1 + "compute/simple-compute-resource.yaml"


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Update:
    path: str  # the URL path the update was posted to
    document: dict[str, Any]


@dataclass
class CalycopisFake:
    requests: str = "200"  # or "303"
    direct: str = "303"  # or "200", "400"
    port: int = field(default_factory=free_port)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    offersets: dict[str, list[str]] = field(default_factory=dict)
    updates: list[Update] = field(default_factory=list)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, Accept

    def __post_init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.started = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- documents -------------------------------------------------------------------------

    def _component_schedule(self, start: datetime) -> dict[str, Any]:
        return {
            "preparing": {"start": stamp(start - timedelta(minutes=1)), "duration": "PT1M"},
            "available": {"start": f"{stamp(start)}/PT5M", "duration": "PT1H"},
        }

    def _session(
        self, request: dict[str, Any], start: datetime, *, cores: int, simple: bool = False
    ) -> dict[str, Any]:
        uuid = str(uuidlib.uuid4())
        now = datetime.now(UTC)
        executable = dict(request.get("executable") or {})
        executable.update(
            meta={"uuid": str(uuidlib.uuid4()), "name": "executable"},
            phase="WAITING",
            schedule=self._component_schedule(start),
        )
        session: dict[str, Any] = {
            "kind": SIMPLE if simple else SCHEDULED,
            "meta": {
                "uuid": uuid,
                "url": f"{self.url}/sessions/{uuid}",
                "created": stamp(now),
                "messages": [
                    {
                        "kind": "https://example.org/calycopis/messages/offered",
                        "time": stamp(now),
                        "level": "OTHER",
                        "template": "Offered {cores} cores",
                        "values": {"cores": str(cores)},
                        "message": f"Offered {cores} cores",
                    }
                ],
            },
            "phase": "OFFERED",
            "expires": stamp(now + timedelta(minutes=5)),
            "executable": executable,
            "compute": {
                "kind": COMPUTE,
                "meta": {"uuid": str(uuidlib.uuid4()), "name": "compute"},
                "phase": "WAITING",
                "schedule": self._component_schedule(start),
                "cores": {"min": cores, "max": cores},
                "memory": {"min": 1, "max": 1},
            },
            "costs": [{"kind": COST, "min": 1.5, "max": 2.5, "units": "EUR"}],
            "connectors": [],
        }
        if not simple:
            session["schedule"] = {
                "preparing": {"start": stamp(start - timedelta(minutes=1)), "duration": "PT1M"},
                "available": {"start": f"{stamp(start)}/PT5M", "duration": "PT1H"},
            }
        self.sessions[uuid] = session
        return session

    def _offerset(self, uuid: str) -> dict[str, Any]:
        offers = [self.sessions[s] for s in self.offersets[uuid]]
        return {
            "kind": OFFERSET,
            "meta": {"uuid": uuid, "url": f"{self.url}/offersets/{uuid}"},
            "result": "YES",
            "offers": offers,
        }

    # --- handlers --------------------------------------------------------------------------

    def _saw(self, request: web.Request) -> None:
        self.seen.append((request.method, request.path, request.headers.get("Accept", "")))

    async def _requests(self, request: web.Request) -> web.Response:
        self._saw(request)
        body = await request.json()
        # one offer very soon, one later, so the merge interleaves them with a node's
        soon = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=30)
        offers = [
            self._session(body, soon, cores=2)["meta"]["uuid"],
            self._session(body, soon + timedelta(days=2), cores=4, simple=True)["meta"]["uuid"],
        ]
        uuid = str(uuidlib.uuid4())
        self.offersets[uuid] = offers
        if self.requests == "303":
            return web.Response(status=303, headers={"Location": f"/offersets/{uuid}"})
        return web.json_response(self._offerset(uuid))

    async def _get_offerset(self, request: web.Request) -> web.Response:
        self._saw(request)
        uuid = request.match_info["uuid"]
        if uuid not in self.offersets:
            return web.Response(status=404)  # an empty body, as Spring answers
        return web.json_response(self._offerset(uuid))

    async def _get_session(self, request: web.Request) -> web.Response:
        self._saw(request)
        session = self.sessions.get(request.match_info["uuid"])
        if session is None:
            return web.Response(status=404)
        return web.json_response(session)

    async def _update(self, request: web.Request) -> web.Response:
        self._saw(request)
        session = self.sessions.get(request.match_info["uuid"])
        if session is None:
            return web.Response(status=404)
        update = await request.json()
        self.updates.append(Update(request.path, update))
        if update.get("path") != "phase" or update.get("value") not in ("ACCEPTED", "REJECTED"):
            return web.Response(status=400, text="unsupported update")  # not JSON
        if session["phase"] != "OFFERED":
            return web.json_response(session, status=400)  # refused, with the session as it is
        session["phase"] = update["value"]
        if update["value"] == "ACCEPTED":
            session["phase"] = "WAITING"
            for members in self.offersets.values():
                if session["meta"]["uuid"] in members:
                    for other in members:
                        if self.sessions[other]["phase"] == "OFFERED":
                            self.sessions[other]["phase"] = "REJECTED"
        return web.json_response(session)

    async def _direct(self, request: web.Request) -> web.Response:
        self._saw(request)
        body = await request.json()
        session = self._session(body, datetime.now(UTC).replace(microsecond=0), cores=2)
        if self.direct == "400":
            session["phase"] = "FAILED"
            session["meta"]["messages"] = [
                {"level": "ERROR", "template": "No resources available now", "values": {}}
            ]
            return web.json_response(session, status=400)
        session["phase"] = "WAITING"
        if self.direct == "200":
            return web.json_response(session)
        return web.Response(
            status=303, headers={"Location": f"/sessions/{session['meta']['uuid']}"}
        )

    async def _broken(self, request: web.Request) -> web.Response:
        return web.Response(status=500, text="Internal Server Error")

    # --- running ---------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/requests", self._requests)
        app.router.add_get("/offersets/{uuid}", self._get_offerset)
        app.router.add_get("/sessions/{uuid}", self._get_session)
        app.router.add_post("/sessions/{uuid}", self._update)
        app.router.add_post("/direct", self._direct)
        app.router.add_get("/broken", self._broken)
        runner = self.runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self.started.set()
        self.loop.run_forever()

    def __enter__(self) -> CalycopisFake:
        self.thread.start()
        if not self.started.wait(10):
            raise RuntimeError("the fake Calycopis node did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        done = asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop)
        done.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
