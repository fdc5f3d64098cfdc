"""The content layer in front of connexion: limits, YAML, legacy forms, and YAML responses.

connexion only speaks JSON, so request bodies are decoded here (refusing oversized, deeply
nested or bomb-like documents quickly), legacy documents are normalised to the canonical model,
and the result is handed on as JSON. JSON responses are re-encoded as YAML when the client's
Accept header prefers it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import ServerConfig
from ..kinds.legacy import normalise_request, normalise_update
from ..kinds.registry import KindRegistry
from .bodies import BodyError, BodyLimits, dump_yaml, is_yaml, media_type, parse_body

JSON = "application/json"
YAML = "application/yaml"
_SESSION_PATH = re.compile(r"^/sessions/[^/]+/?$")
_REQUEST_PATHS = {"/requests", "/offersets", "/direct", "/sessions"}


def _normaliser(path: str, registry: KindRegistry) -> Callable[[Any], Any] | None:
    path = path.rstrip("/") or "/"
    if path in _REQUEST_PATHS:
        return lambda doc: normalise_request(doc, registry)
    if _SESSION_PATH.match(path):
        return normalise_update
    return None


def prefers_yaml(accept: str) -> bool:
    """True when the Accept header ranks a YAML type above JSON."""
    best_yaml = best_json = -1.0
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        kind = fields[0].lower()
        q = 1.0
        for param in fields[1:]:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if is_yaml(kind):
            best_yaml = max(best_yaml, q)
        elif kind in (JSON, "application/*", "*/*") or kind.endswith("+json"):
            best_json = max(best_json, q - (0.001 if "*" in kind else 0))
    return best_yaml > 0 and best_yaml > best_json


def problem_body(status: int, title: str, detail: str, pointer: str | None = None) -> bytes:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status,
                            "detail": detail}  # fmt: skip
    if pointer is not None:
        body["errors"] = [{"pointer": pointer, "detail": detail}]
    return json.dumps(body).encode()


def path_pattern(template: str) -> re.Pattern[str]:
    """The paths a spec path template (``/sessions/{uuid}``) matches."""
    return re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "/?$")


def route_methods(paths: dict[str, dict[str, Any]]) -> list[tuple[re.Pattern[str], str]]:
    """(path pattern, Allow header value) for each path template of the spec."""
    return [
        (path_pattern(t), ", ".join(sorted(m.upper() for m in ops if m in _HTTP_METHODS)))
        for t, ops in paths.items()
    ]


_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


class ContentNegotiation:
    """Serves a node and an aggregator alike: ``bind`` makes the service the handlers use
    current for the request."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        registry: KindRegistry,
        server: ServerConfig,
        paths: dict[str, dict[str, Any]],
        bind: Callable[[], None],
    ):
        self.app = app
        self.registry = registry
        self.bind = bind
        self.routes = route_methods(paths)
        self.limits = BodyLimits(max_bytes=server.max_body_bytes, max_depth=server.max_depth)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.bind()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["method"] == "POST":
            normalise = _normaliser(scope["path"], self.registry)
            if normalise is not None:
                try:
                    raw = await self._read(receive, headers)
                    document = normalise(parse_body(raw, headers.get("content-type"), self.limits))
                    body = json.dumps(document, ensure_ascii=False).encode("utf-8")
                except BodyError as exc:
                    await self._send_problem(send, exc.status, exc.title, exc.detail, exc.pointer)
                    return
                except UnicodeEncodeError:
                    await self._send_problem(
                        send, 400, "Bad Request", "the document contains unpaired surrogates"
                    )
                    return
                scope = dict(scope)
                scope["headers"] = [
                    (k, v)
                    for k, v in scope["headers"]
                    if k.lower() not in (b"content-type", b"content-length")
                ] + [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
                receive = _replay(body)
        if prefers_yaml(headers.get("accept", "")):
            send = _yaml_sender(send)
        allow = next((methods for rx, methods in self.routes if rx.match(scope["path"])), None)
        if allow:
            send = _allow_sender(send, allow)
        await self.app(scope, receive, send)

    async def _read(self, receive: Receive, headers: dict[str, str]) -> bytes:
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.limits.max_bytes:
            raise BodyError(
                413, "Payload Too Large", f"request body larger than {self.limits.max_bytes} bytes"
            )
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_bytes:
                raise BodyError(
                    413,
                    "Payload Too Large",
                    f"request body larger than {self.limits.max_bytes} bytes",
                )
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _send_problem(
        self, send: Send, status: int, title: str, detail: str, pointer: str | None = None
    ) -> None:
        body = problem_body(status, title, detail, pointer)
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/problem+json"),
                        (b"content-length", str(len(body)).encode())],
        })  # fmt: skip
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def _allow_sender(send: Send, allow: str) -> Send:
    """A 405 names the methods the path does support (RFC 9110)."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 405:
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
            message = {**message, "headers": [*headers, (b"allow", allow.encode())]}
        await send(message)

    return wrapped


def _yaml_sender(send: Send) -> Send:
    """Buffer a JSON response and send it as YAML; anything else passes through untouched."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers", []))
            content_type = headers.get(b"content-type", b"").decode("latin-1")
            if media_type(content_type) == JSON:
                start = message
                return
            await send(message)
            return
        if start is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        body = dump_yaml(json.loads(b"".join(chunks) or b"null"))
        headers = [
            (k, v)
            for k, v in start.get("headers", [])
            if k.lower() not in (b"content-type", b"content-length")
        ]
        headers += [(b"content-type", YAML.encode()), (b"content-length", str(len(body)).encode())]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped
