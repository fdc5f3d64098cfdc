"""The outermost layer of the node's and the aggregator's HTTP apps: each request gets its id
(``X-Request-ID``, in its log lines and its answer) and is counted and timed by operation."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import request_ids
from .metrics import LATENCY, REQUESTS

OTHER = "other"  # a path of no operation: one label, however many such paths are asked for
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def operations_of(paths: Mapping[str, Any]) -> list[tuple[str, re.Pattern[str], str]]:
    """(method, path pattern, operationId) for every operation of a spec's ``paths``."""
    found = []
    for template, operations in paths.items():
        segments = [
            "[^/]+" if s.startswith("{") and s.endswith("}") else re.escape(s)
            for s in template.strip("/").split("/")
        ]
        pattern = "/" + "/".join(segments) if template.strip("/") else ""
        compiled = re.compile(f"^{pattern}/?$")
        for method, operation in operations.items():
            if method in _METHODS and isinstance(operation, dict) and "operationId" in operation:
                found.append((method.upper(), compiled, operation["operationId"]))
    return found


class Observed:
    """ASGI middleware: the request's id, and its count and latency by operation and status."""

    def __init__(self, app: ASGIApp, paths: Mapping[str, Any]):
        self.app = app
        self.operations = operations_of(paths)

    def operation(self, method: str, path: str) -> str:
        for wanted, pattern, operation_id in self.operations:
            if (method == wanted or (method == "HEAD" and wanted == "GET")) and pattern.match(path):
                return operation_id
        return OTHER

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v.decode("latin-1") for k, v in scope.get("headers", ())
                      if k == b"x-request-id"), None)  # fmt: skip
        request_id = request_ids.chosen(given)
        token = request_ids.current.set(request_id)
        operation = self.operation(scope["method"], scope["path"])
        started = time.perf_counter()
        status = 500  # what a request that never answered counts as

        async def answering(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"x-request-id"]  # fmt: skip
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, answering)
        finally:
            LATENCY.labels(operation).observe(time.perf_counter() - started)
            REQUESTS.labels(operation, str(status)).inc()
            request_ids.current.reset(token)
