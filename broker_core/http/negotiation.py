"""The content layer in front of connexion: limits, YAML and XML, legacy forms, and answers.

connexion only speaks JSON, so request bodies are decoded here (refusing oversized, deeply
nested, too wide or bomb-like documents quickly), legacy documents are normalised to the
canonical model, and the result is handed on as JSON. JSON responses are re-encoded as YAML or
XML when the client's Accept header prefers it (problems too, as ``application/problem+xml``,
for XML). Decoding and re-encoding run on the body workers (``body_workers.py``), never on the
event loop.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from functools import cache
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import ServerConfig
from ..kinds.legacy import normalise_request, normalise_update
from ..kinds.registry import KindRegistry
from . import body_workers
from .bodies import (
    BodyError,
    BodyLimits,
    dump_yaml,
    is_yaml,
    media_ranges,
    media_type,
    parse_body,
)
from .xml import PROBLEM_NS, PROBLEM_XML, Schemas, dump_xml, is_xml

JSON = "application/json"
YAML = "application/yaml"
XML = "application/xml"
PROBLEM_JSON = "application/problem+json"
_SESSION_PATH = re.compile(r"^/sessions/[^/]+/?$")
# what takes an update document: a session, and an offer set (its withdrawal)
_UPDATE_PATH = re.compile(r"^/(?:sessions|offersets)/[^/]+/?$")
_REQUEST_PATHS = {"/requests", "/offersets", "/direct", "/sessions"}
# the admin documents (a drain, a maintenance window, an inventory change): JSON or YAML, as
# they are (the spec gives them no XML form: XML is connexion's 415)
_ADMIN_BODY_PATH = re.compile(r"^/pools/[^/]+/[^/]+/(?:drain|maintenance|inventory)/?$")
_BODY_METHODS = ("POST", "PUT", "PATCH")


def _normaliser(
    path: str, registry: KindRegistry, method: str = "POST", content_type: str | None = None
) -> Callable[[Any], Any] | None:
    path = path.rstrip("/") or "/"
    if _ADMIN_BODY_PATH.match(path):
        return None if is_xml(media_type(content_type)) else _as_is
    if method != "POST":
        return None
    if path in _REQUEST_PATHS:
        return lambda doc: normalise_request(doc, registry)
    if _UPDATE_PATH.match(path):
        return normalise_update
    return None


def _as_is(document: Any) -> Any:
    return document


def preferred_format(accept: str) -> str:
    """``json``, ``yaml`` or ``xml``: what the Accept header ranks highest (JSON on a tie, then
    YAML). A browser's header (one naming text/html) lists application/xml only as a
    fallback for pages, so XML is never chosen for it."""
    best = {"json": -1.0, "yaml": -1.0, "xml": -1.0}
    ranges = media_ranges(accept)
    browser = any(kind == "text/html" for kind, _ in ranges)
    for kind, q in ranges:
        if is_yaml(kind):
            best["yaml"] = max(best["yaml"], q)
        elif is_xml(kind):
            if not browser:
                best["xml"] = max(best["xml"], q)
        elif kind in (JSON, "application/*", "*/*") or kind.endswith("+json"):
            best["json"] = max(best["json"], q - (0.001 if "*" in kind else 0))
    winner = max(best, key=lambda name: best[name])  # dicts keep order: json, yaml, xml
    return winner if winner != "json" and best[winner] > 0 else "json"


def prefers_yaml(accept: str) -> bool:
    """True when the Accept header ranks a YAML type above JSON (and XML)."""
    return preferred_format(accept) == "yaml"


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

# What each answer is in XML: its root element (the standard's names where it has them) and
# its schema in the spec, by method and path. Other JSON answers (the spec itself) stay JSON.
_OFFER_SET = ("offers-response", "OfferSetResponse")
_SESSION = ("execution", "ExecutionSession")
_XML_ANSWERS: list[tuple[str, re.Pattern[str], tuple[str, str]]] = [
    ("POST", re.compile(r"^/(?:requests|offersets)/?$"), _OFFER_SET),
    ("*", re.compile(r"^/offersets/[^/]+/?$"), _OFFER_SET),
    ("GET", re.compile(r"^/sessions/?$"), ("sessions", "SessionList")),
    ("GET", re.compile(r"^/offersets/?$"), ("offersets", "OfferSetList")),
    ("*", _SESSION_PATH, _SESSION),
    ("POST", re.compile(r"^/(?:direct|sessions)/?$"), _SESSION),
    ("GET", re.compile(r"^/node/?$"), ("node", "NodeDescription")),
    ("GET", re.compile(r"^/usage/?$"), ("usage", "UsageReport")),
    ("GET", re.compile(r"^/projects/[^/]+/?$"), ("project", "ProjectReport")),
    ("GET", re.compile(r"^/health/[^/]+/?$"), ("health", "Health")),
    ("GET", re.compile(r"^/$"), ("service", "LandingPage")),
]
# The documents requests carry, with the legacy forms normalised after parsing (``computer``
# for ``compute``, ``{update: …}``), so their XML text is typed by the schema too.
XML_REQUEST_SCHEMA = {
    "allOf": [
        {"$ref": "#/components/schemas/ExecutionRequest"},
        {"properties": {"computer": {"$ref": "#/components/schemas/Compute"}}},
    ]
}
XML_UPDATE_SCHEMA = {
    "allOf": [
        {"$ref": "#/components/schemas/Update"},
        {"properties": {"update": {"$ref": "#/components/schemas/Update"}}},
    ]
}
_INTEGER_UPDATES = ("uri:integer-value-update", "integer-value-update")


@cache
def spec_schemas() -> Schemas:
    """The spec's component schemas (read once, from the spec the app serves)."""
    from .app import SPEC_DOCUMENT  # the app imports this module

    return Schemas(SPEC_DOCUMENT.get("components", {}).get("schemas", {}))


def xml_answer(method: str, path: str) -> tuple[str, str] | None:
    """(root element, schema name) of the answer to a request, for XML; None: not XML."""
    for answer_method, pattern, answer in _XML_ANSWERS:
        if answer_method in ("*", method) and pattern.match(path):
            return answer
    return None


def _xml_request_schema(path: str) -> Any:
    path = path.rstrip("/") or "/"
    return XML_UPDATE_SCHEMA if _UPDATE_PATH.match(path) else XML_REQUEST_SCHEMA


def _typed_update_value(document: Any) -> Any:
    """An integer update's value from XML, where text is all there is (``value`` may be a
    string or an integer, so the schema cannot say which)."""
    if isinstance(document, dict):
        inner = document.get("update") if set(document) == {"update"} else document
        if (
            isinstance(inner, dict)
            and isinstance(inner.get("value"), str)
            and str(inner.get("kind", "")).endswith(_INTEGER_UPDATES)
        ):
            text = inner["value"].strip()
            if re.fullmatch(r"[+-]?[0-9]{1,19}", text):
                inner["value"] = int(text)
    return document


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
        self.limits = BodyLimits(
            max_bytes=server.max_body_bytes,
            max_depth=server.max_depth,
            max_nodes=server.max_nodes,
            max_expanded_bytes=server.max_expanded_bytes,
            max_items=server.max_items,
            max_properties=server.max_properties,
        )
        self.workers = body_workers.BodyWorkers(server.body_workers, server.body_queue)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.bind()
        body_workers.current.set(self.workers)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        accept = headers.get("accept", "")
        if scope["method"] in _BODY_METHODS:
            normalise = _normaliser(
                scope["path"], self.registry, scope["method"], headers.get("content-type")
            )
            if normalise is not None:
                try:
                    raw = await self._read(receive, headers)
                    body = await self.workers.run(
                        self._decode, raw, headers.get("content-type"), scope["path"], normalise
                    )
                except BodyError as exc:
                    await self._send_problem(
                        send, exc.status, exc.title, exc.detail, exc.pointer, accept
                    )
                    return
                scope = dict(scope)
                scope["headers"] = [
                    (k, v)
                    for k, v in scope["headers"]
                    if k.lower() not in (b"content-type", b"content-length")
                ] + [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
                receive = _replay(body)
        answer_format = preferred_format(accept)
        if answer_format == "yaml":
            send = _yaml_sender(send)
        elif answer_format == "xml":
            send = _xml_sender(send, xml_answer(scope["method"], scope["path"]))
        allow = next((methods for rx, methods in self.routes if rx.match(scope["path"])), None)
        if allow:
            send = _allow_sender(send, allow)
        await self.app(scope, receive, send)

    def _decode(
        self, raw: bytes, content_type: str | None, path: str, normalise: Callable[[Any], Any]
    ) -> bytes:
        """A request body as canonical JSON (run on a body worker: it may take a while)."""
        xml_schema = (spec_schemas(), _xml_request_schema(path))
        parsed = parse_body(raw, content_type, self.limits, xml_schema)
        if is_xml(media_type(content_type)) and _UPDATE_PATH.match(path):
            parsed = _typed_update_value(parsed)
        document = normalise(parsed)
        try:
            return json.dumps(document, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise BodyError(
                400, "Bad Request", "the document contains unpaired surrogates"
            ) from None

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
        self,
        send: Send,
        status: int,
        title: str,
        detail: str,
        pointer: str | None = None,
        accept: str = "",
    ) -> None:
        body = problem_body(status, title, detail, pointer)
        if preferred_format(accept) == "xml":
            send = _xml_sender(send, None)
        headers = [(b"content-type", PROBLEM_JSON.encode()),
                   (b"content-length", str(len(body)).encode())]  # fmt: skip
        if status == 503:
            headers.append((b"retry-after", str(body_workers.RETRY_AFTER_SECONDS).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
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
    return _reencoding_sender(send, lambda mt, doc: (YAML, dump_yaml(doc)) if mt == JSON else None)


def _xml_sender(send: Send, answer: tuple[str, str] | None) -> Send:
    """Buffer a JSON answer (one of ``_XML_ANSWERS``) or a problem and send it as XML."""

    def encode(mt: str, document: Any) -> tuple[str, bytes] | None:
        schemas = spec_schemas()
        if mt == PROBLEM_JSON:
            body = dump_xml(
                document,
                "problem",
                schemas,
                schemas.named("Problem"),
                namespace=PROBLEM_NS,
                item_names={"errors": "i", "messages": "i"},  # RFC 9457 appendix B
            )
            return PROBLEM_XML, body
        if mt == JSON and answer is not None:
            root, schema = answer
            return XML, dump_xml(document, root, schemas, schemas.named(schema))
        return None

    return _reencoding_sender(send, encode)


def _reencoding_sender(send: Send, encode: Callable[[str, Any], tuple[str, bytes] | None]) -> Send:
    """Buffer a JSON response and send what ``encode(media type, document)`` makes of it; a
    response it declines (None) passes through untouched."""
    start: Message | None = None
    media = ""
    chunks: list[bytes] = []

    async def wrapped(message: Message) -> None:
        nonlocal start, media
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers", []))
            media = media_type(headers.get(b"content-type", b"").decode("latin-1"))
            if media in (JSON, PROBLEM_JSON):
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
        raw = b"".join(chunks)
        try:
            encoded = await body_workers.run_body_job(
                lambda: encode(media, json.loads(raw or b"null")), always_wait=True
            )
        except (ValueError, BodyError):  # not JSON after all, or no memory to encode it: as it came
            encoded = None
        if encoded is None:
            await send(start)
            await send({"type": "http.response.body", "body": raw})
            return
        content_type, body = encoded
        headers = [
            (k, v)
            for k, v in start.get("headers", [])
            if k.lower() not in (b"content-type", b"content-length")
        ]
        headers += [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return wrapped
