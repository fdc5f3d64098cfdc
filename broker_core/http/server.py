"""How a node (or an aggregator) is served: uvicorn, with the connection limits it lacks.

uvicorn bounds an idle keep-alive connection (``timeout_keep_alive``) but nothing else a client
holds: a request head may arrive a byte a minute, a new connection need send nothing at all, the
httptools parser buffers a head of any size, and ``limit_concurrency`` only answers 503 to a
request whose head is complete, so slow clients are never counted. 1,100 of them took down a
node whose process may open 1,024 files, and a 20 MiB header was read in full.

:class:`GuardedProtocol` is uvicorn's httptools protocol with those limits added at the
connection, where they cost nothing per request:

- a head (request line and headers) must arrive within ``header_timeout`` of its first byte (a
  new connection's first request: of the accept), else a 408 and the connection is closed;
- a head larger than ``max_header_bytes`` is a 431, refused before the parser buffers more;
- a body must arrive within ``body_timeout`` of the end of its head, else the connection closes;
- at most ``max_connections`` connections are open per worker process; one more closes the
  connection that has waited longest for its client (reading a head or a body, or idle between
  requests), so a slow client can never keep a prompt one out. Only when every connection is
  busy with a request the node is working on is the newcomer refused, with a 503.

``max_connections`` defaults to what the process's open-file limit leaves after
:data:`FD_RESERVE` (raising the soft limit towards the hard one first), at most
:data:`DEFAULT_MAX_CONNECTIONS`; an explicit value the limit cannot hold stops start-up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState
from uvicorn.supervisors import Multiprocess

from ..config import ConfigError, ServerConfig

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 1000
# the listen queue, and so how many connections the event loop accepts at once before any of
# them is counted: a burst can overshoot max_connections by about this many
BACKLOG = 128
# open files a process needs besides its client connections (an idle node holds about 25; a
# SQLite connection of the pool up to 3, a PostgreSQL one 1; the lifecycle's subprocess pipes,
# staged files and logs; an aggregator's upstream connections), plus the accept burst
FD_RESERVE = 128 + BACKLOG
_HEAD_END = b"\r\n\r\n"
_WARN_EVERY = 10.0  # seconds between two warnings that the connection limit is reached


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    header_timeout: float
    body_timeout: float
    max_header_bytes: int


def open_file_limit(needed: int) -> int:
    """The soft RLIMIT_NOFILE, raised towards ``needed`` as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # not ours to raise: what it is stays
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def connection_limits(server: ServerConfig) -> ConnectionLimits:
    """The limits to serve with; ``max_connections`` resolved against the open-file limit."""
    wanted = server.max_connections or DEFAULT_MAX_CONNECTIONS
    files = open_file_limit(wanted + FD_RESERVE)
    room = files - FD_RESERVE
    if server.max_connections is None:
        if room < 16:
            raise ConfigError(
                f"the process may open only {files} files, too few to serve connections "
                f"({FD_RESERVE} are kept for the node itself): raise the limit (ulimit -n, "
                "systemd LimitNOFILE=)"
            )
        chosen = min(wanted, room)
    elif server.max_connections > room:
        raise ConfigError(
            f"server.max_connections: {server.max_connections} connections need "
            f"{server.max_connections + FD_RESERVE} open files, and the process may open only "
            f"{files}: raise the limit (ulimit -n, systemd LimitNOFILE=) or lower "
            f"server.max_connections to at most {max(room, 0)}"
        )
    else:
        chosen = server.max_connections
    return ConnectionLimits(
        max_connections=chosen,
        header_timeout=server.header_timeout.total_seconds(),
        body_timeout=server.body_timeout.total_seconds(),
        max_header_bytes=server.max_header_bytes,
    )


class GuardedConfig(uvicorn.Config):
    """uvicorn's config carrying the limits to the protocol (and to worker processes, which are
    handed the config pickled)."""

    def __init__(self, app: Any, *, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, http=GuardedProtocol, backlog=BACKLOG, **kwargs)
        self.connection_limits = limits


def serve(
    app: Any,
    server: ServerConfig,
    *,
    log_level: str,
    limits: ConnectionLimits | None = None,
    workers: int = 1,
    factory: bool = False,
) -> None:
    """Serve ``app`` (an ASGI app, or with ``workers`` > 1 an import string of a factory) on the
    configured address with the connection limits (default: the configured ones); returns
    when the server stops."""
    limits = limits or connection_limits(server)
    config = GuardedConfig(
        app,
        limits=limits,
        host=server.host,
        port=server.port,
        log_level=log_level,
        log_config=None,  # the process's logging is ours (observability.logs), workers' too
        workers=workers,
        factory=factory,
        timeout_keep_alive=max(1, round(server.keep_alive_timeout.total_seconds())),
    )
    log.info(
        "serving at most %d connections per worker (headers within %gs, bodies within %gs, "
        "heads up to %d bytes)",
        limits.max_connections,
        limits.header_timeout,
        limits.body_timeout,
        limits.max_header_bytes,
    )
    try:
        if workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            uvicorn.Server(config).run()
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it shut down on, as uvicorn.run
        pass  # does not: Ctrl-C (or a supervisor's SIGINT) is a normal stop, not a traceback


class _Waiting:
    """The connections of one server that wait for their client, longest waiting first."""

    def __init__(self) -> None:
        self.order: OrderedDict[GuardedProtocol, None] = OrderedDict()
        self.warned = -_WARN_EVERY

    def wait(self, protocol: GuardedProtocol) -> None:
        self.order.pop(protocol, None)
        self.order[protocol] = None

    def done(self, protocol: GuardedProtocol) -> None:
        self.order.pop(protocol, None)

    def longest(self) -> GuardedProtocol | None:
        if not self.order:
            return None
        protocol, _ = self.order.popitem(last=False)
        return protocol

    def warn(self, text: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.warned >= _WARN_EVERY:
            self.warned = now
            log.warning(text, *args)


_WAITING: weakref.WeakKeyDictionary[ServerState, _Waiting] = weakref.WeakKeyDictionary()

Phase = Literal["head", "body", "busy", "idle", "closed"]


def _answer(status: int, reason: str, detail: str, extra: bytes = b"") -> bytes:
    """A complete problem response that closes the connection."""
    body = json.dumps(
        {"type": "about:blank", "title": reason, "status": status, "detail": detail}
    ).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools) with the limits of the module docstring."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits: ConnectionLimits = config.connection_limits  # type: ignore[attr-defined]
        waiting = _WAITING.get(server_state)
        if waiting is None:
            waiting = _WAITING[server_state] = _Waiting()
        self.waiting = waiting
        self.phase: Phase = "head"
        self._timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0  # of the head being read
        self._tail = b""  # its last bytes, to find a blank line split across two reads

    # --- the connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            victim = self.waiting.longest()
            if victim is None:
                self.waiting.warn(
                    "%d connections, all busy with requests: refusing new ones (503)",
                    len(self.connections) - 1,
                )
                self._close_with(
                    _answer(503, "Service Unavailable", "the node is at its connection limit; "
                            "try again shortly", b"retry-after: 1\r\n")
                )  # fmt: skip
                return
            self.waiting.warn(
                "at the limit of %d connections: closing those that wait longest for their "
                "client (server.max_connections)",
                self.limits.max_connections,
            )
            victim.evict()
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self.waiting.done(self)
        self.phase = "closed"
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.phase == "idle":
            self._await_head()
        if self.phase in ("head", "busy") and not self._head_fits(data):
            self._close_with(
                _answer(431, "Request Header Fields Too Large", "the request line and headers "
                        f"are larger than {self.limits.max_header_bytes} bytes")
            )  # fmt: skip
            return
        super().data_received(data)

    # --- the parser's events (httptools calls these while data_received feeds it)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._head_bytes, self._tail = 0, b""
        if self.phase == "closed" or self.transport.is_closing():
            return
        self.phase = "body"
        self.waiting.wait(self)
        self._start_timer(self.limits.body_timeout, self._body_timed_out)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.phase == "body":
            self.phase = "busy"
            self.waiting.done(self)
            self._stop_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None and self.phase == "busy":
            self.phase = "idle"  # uvicorn's keep-alive timer closes it if nothing comes
            self.waiting.wait(self)

    # --- limits

    def _await_head(self) -> None:
        self.phase = "head"
        self._head_bytes, self._tail = 0, b""
        self.waiting.wait(self)
        self._start_timer(self.limits.header_timeout, self._head_timed_out)

    def _head_fits(self, data: bytes) -> bool:
        """Counts the bytes of ``data`` that belong to the head being read (up to the blank
        line that ends it); False once they are more than ``max_header_bytes``."""
        window = self._tail + data
        end = window.find(_HEAD_END)
        counted = len(data) if end < 0 else max(0, end + len(_HEAD_END) - len(self._tail))
        self._head_bytes += counted
        self._tail = window[-(len(_HEAD_END) - 1) :]
        return self._head_bytes <= self.limits.max_header_bytes

    def _head_timed_out(self) -> None:
        self._timer = None
        if self.phase != "head" or self.transport.is_closing():
            return
        if self._head_bytes:
            self._close_with(
                _answer(408, "Request Timeout", "the request line and headers did not arrive "
                        f"within {self.limits.header_timeout:g} s")
            )  # fmt: skip
        else:
            self._close_with(b"")

    def _body_timed_out(self) -> None:
        self._timer = None
        if self.phase != "body" or self.transport.is_closing():
            return
        log.info("closing a connection whose request body did not arrive in time")
        self.evict()

    def evict(self) -> None:
        """Close the connection; a request whose body was being read sees a disconnect."""
        self.waiting.done(self)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's answer, if any, is not written
            self.cycle.message_event.set()
        self._close_with(b"")

    def _close_with(self, answer: bytes) -> None:
        self._stop_timer()
        self.waiting.done(self)
        self.phase = "closed"
        if not self.transport.is_closing():
            if answer:
                self.transport.write(answer)
            self.transport.close()

    def _start_timer(self, delay: float, callback: Any) -> None:
        self._stop_timer()
        self._timer = self.loop.call_later(delay, callback)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
