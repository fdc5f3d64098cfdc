"""A real, small global policy service (the protocol of :mod:`policies.remote`), for tests.

An aiohttp application on a free port of 127.0.0.1, served by its own event loop in a
background thread, so that the plugin under test talks real HTTP to it::

    with PolicyService(deny(subject="mallory", reason="user banned"),
                       limit(group="federation", caps={"cores": 8})) as service:
        policy = RemotePolicy("global", {"url": service.url}, None)
        ...
        assert service.calls_for("alice") == 1

Rules are tried in order and the first one matching the request's identity answers; with none
matching the service allows. ``service.rules`` may be replaced while it runs. Every request body
it received is kept in ``service.bodies`` (and its headers in ``service.headers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web

__all__ = [
    "PolicyService",
    "Rule",
    "allow",
    "deny",
    "error",
    "limit",
    "malformed",
    "slow",
    "unused_url",
]


@dataclass
class Rule:
    """What the service answers to requests from ``subject`` and/or members of ``group`` (both
    None: every request). ``status``/``raw`` replace the JSON answer (to test faulty services);
    ``delay`` seconds are slept before answering (to test timeouts); ``pieces`` > 1 sends the
    answer in that many writes, 20 ms apart (as a real network delivers a large answer)."""

    subject: str | None = None
    group: str | None = None
    decision: Literal["allow", "deny", "limit"] = "allow"
    messages: list[str] = field(default_factory=list)
    limits: dict[str, Any] | None = None
    delay: float = 0.0
    status: int = 200
    raw: str | None = None
    pieces: int = 1

    def matches(self, request: dict[str, Any]) -> bool:
        identity = request.get("identity") or {}
        if self.subject is not None and identity.get("subject") != self.subject:
            return False
        return self.group is None or self.group in (identity.get("groups") or [])

    def answer(self) -> dict[str, Any]:
        document: dict[str, Any] = {"decision": self.decision, "messages": list(self.messages)}
        if self.limits is not None:
            document["limits"] = self.limits
        return document


def allow(
    subject: str | None = None, group: str | None = None, *, messages: list[str] | None = None
) -> Rule:
    return Rule(subject, group, "allow", list(messages or []))


def deny(subject: str | None = None, group: str | None = None, reason: str | None = None) -> Rule:
    return Rule(subject, group, "deny", [reason] if reason else [])


def limit(
    subject: str | None = None,
    group: str | None = None,
    *,
    caps: dict[str, int] | None = None,
    pools: list[str] | None = None,
    max_duration: int | None = None,
    windows: list[list[int]] | None = None,
    messages: list[str] | None = None,
) -> Rule:
    limits: dict[str, Any] = {}
    if caps is not None:
        limits["caps"] = caps
    if pools is not None:
        limits["pools"] = pools
    if max_duration is not None:
        limits["max_duration"] = max_duration
    if windows is not None:
        limits["windows"] = windows
    return Rule(subject, group, "limit", list(messages or []), limits)


def slow(subject: str | None = None, group: str | None = None, seconds: float = 5.0) -> Rule:
    """Answers allow, but only after ``seconds`` (a hung service, as far as a client can tell)."""
    return Rule(subject, group, delay=seconds)


def malformed(
    subject: str | None = None, group: str | None = None, raw: str = '{"decision": "maybe"'
) -> Rule:
    return Rule(subject, group, raw=raw)


def error(subject: str | None = None, group: str | None = None, status: int = 500) -> Rule:
    return Rule(subject, group, status=status, raw=json.dumps({"error": "boom"}))


def in_pieces(subject: str, pieces: int = 4, messages: int = 200) -> Rule:
    """Answers allow, with ``messages`` long messages, in ``pieces`` writes."""
    texts = [f"note {i}: " + "x" * 80 for i in range(messages)]
    return Rule(subject, None, "allow", texts, pieces=pieces)


def unused_url(path: str = "/decide") -> str:
    """A URL nobody listens on (connection refused), at least for the moment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


class PolicyService:
    """The service; a context manager that starts and stops it."""

    def __init__(self, *rules: Rule, path: str = "/decide"):
        self.rules: list[Rule] = list(rules)
        self.path = path
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.port: int | None = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="policy-service", daemon=True)
        self._started = threading.Event()
        self._startup_error: BaseException | None = None
        self._runner: web.AppRunner | None = None
        self._stopping: asyncio.Event | None = None

    # --- what tests look at ------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.port is not None, "the service is not running"
        return f"http://127.0.0.1:{self.port}{self.path}"

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self.bodies)

    def calls_for(self, subject: str) -> int:
        with self._lock:
            return sum(
                1
                for b in self.bodies
                if b.get("request", {}).get("identity", {}).get("subject") == subject
            )

    def reset(self) -> None:
        with self._lock:
            self.bodies.clear()
            self.headers.clear()

    @contextlib.contextmanager
    def using(self, *rules: Rule) -> Iterator[PolicyService]:
        """Temporarily answer by other rules."""
        saved, self.rules = self.rules, list(rules)
        try:
            yield self
        finally:
            self.rules = saved

    # --- the server --------------------------------------------------------------------------

    async def _decide(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "not JSON"}, status=400)
        with self._lock:
            self.bodies.append(body)
            self.headers.append(dict(request.headers))
        summary = body.get("request") if isinstance(body, dict) else None
        if not isinstance(summary, dict):
            return web.json_response({"error": "no 'request' object"}, status=400)
        rule = next((r for r in list(self.rules) if r.matches(summary)), Rule())
        if rule.delay > 0 and self._stopping is not None:
            # wakes early when the service stops, so stopping never waits for it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), rule.delay)
        if rule.raw is not None:
            return web.Response(status=rule.status, text=rule.raw, content_type="application/json")
        if rule.pieces > 1:
            return await self._in_pieces(request, rule)
        return web.json_response(rule.answer(), status=rule.status)

    async def _in_pieces(self, request: web.Request, rule: Rule) -> web.StreamResponse:
        raw = json.dumps(rule.answer()).encode()
        response = web.StreamResponse(status=rule.status)
        response.content_type = "application/json"
        response.content_length = len(raw)
        await response.prepare(request)
        step = -(-len(raw) // rule.pieces)
        for start in range(0, len(raw), step):
            await response.write(raw[start : start + step])
            await asyncio.sleep(0.02)
        await response.write_eof()
        return response

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._stopping = asyncio.Event()
            app = web.Application()
            app.router.add_post(self.path, self._decide)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            self.port = self._runner.addresses[0][1]
        except BaseException as exc:
            self._startup_error = exc
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def start(self) -> PolicyService:
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the policy service did not start")
        if self._startup_error is not None:
            raise RuntimeError("the policy service did not start") from self._startup_error
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return

        def _stop() -> None:
            if self._stopping is not None:
                self._stopping.set()
            self._loop.stop()

        self._loop.call_soon_threadsafe(_stop)
        self._thread.join(10)

    def __enter__(self) -> PolicyService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
