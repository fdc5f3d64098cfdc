"""Who is calling: the bearer token or Basic credentials verified before anything else reads
the request.

The identity is kept in a context variable that the worker threads running the handlers
inherit. Operations the spec marks ``security: []`` (health, the node description, the spec
and its UI) are public; every other one needs valid credentials unless anonymous access is
on. Bad credentials are a 401 even where anonymous access is allowed: never silently ignored.

The session feed (``FEED_PATH``) alone also takes a feed token in its ``token`` query
parameter (``broker_core.auth.feeds``), for calendar apps that cannot send a header; a header,
when there is one, is what counts.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qs

import anyio.to_thread
from starlette.types import ASGIApp, Receive, Scope, Send

from ..auth import feeds
from ..broker import Broker
from ..errors import IdentityUnavailable, Unauthenticated
from ..identity import ANONYMOUS_IDENTITY, Identity
from .negotiation import path_pattern, problem_body

FEED_PATH = "/sessions.ics"

current_identity: ContextVar[Identity] = ContextVar("current_identity", default=ANONYMOUS_IDENTITY)


def identity() -> Identity:
    return current_identity.get()


class Authentication:
    def __init__(self, app: ASGIApp, *, broker: Broker, spec: dict[str, Any]):
        feeds.mask_in_access_log()  # feed tokens travel in URLs
        self.app = app
        self.broker = broker
        # per path of the spec, the methods that need no token (``security: []``)
        self.routes = [
            (path_pattern(template), {m.upper() for m, op in operations.items()
                                  if isinstance(op, dict) and op.get("security") == []})
            for template, operations in spec["paths"].items()
        ]  # fmt: skip

    def _is_public(self, scope: Scope) -> bool:
        path = scope["path"]
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        for pattern, public in self.routes:
            if pattern.match(path):
                return method in public
        return True  # not an operation: the spec, its UI, or a 404

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_public(scope):
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope["headers"] if k.lower() == b"authorization"), None)
        authenticator = self.broker.authenticator
        try:
            feed_token = _feed_token(scope) if header is None else None
            if feed_token is not None:
                found = feeds.read_token(self.broker.config.auth, feed_token, int(time.time()))
            elif authenticator is None:
                found = ANONYMOUS_IDENTITY
            elif header is None:
                found = authenticator.authenticate(None)  # no I/O without a token
            else:
                text = header.decode("latin-1")
                # verifying a Basic password is CPU-heavy: a thread, unless verified moments ago
                found = authenticator.cached(text) or await anyio.to_thread.run_sync(
                    authenticator.authenticate, text
                )
        except Unauthenticated as exc:
            challenges = authenticator.challenges(exc) if authenticator else []
            await _refuse(send, 401, "Unauthorized", exc.detail, _challenge(challenges))
            return
        except IdentityUnavailable as exc:
            await _refuse(send, 503, "Service Unavailable", exc.detail, [(b"retry-after", b"5")])
            return
        token = current_identity.set(found)
        try:
            await self.app(scope, receive, send)
        finally:
            current_identity.reset(token)


def _feed_token(scope: Scope) -> str | None:
    """The ``token`` query parameter of a request for the session feed (None elsewhere, or
    without one); asked twice, it is no token of ours."""
    if scope["path"] != FEED_PATH:
        return None
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    if not values:
        return None
    return values[0] if len(values) == 1 else ""


def _challenge(values: list[str]) -> list[tuple[bytes, bytes]]:
    """One ``WWW-Authenticate`` header per scheme (RFC 9110 allows several)."""
    return [(b"www-authenticate", v.encode("latin-1", "replace")) for v in values]


async def _refuse(
    send: Send, status: int, title: str, detail: str, headers: list[tuple[bytes, bytes]]
) -> None:
    body = problem_body(status, title, detail)
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()), *headers],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body})


__all__ = ["Authentication", "current_identity", "identity"]
