"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from ...node import database_ready
from ..context import broker
from . import respond


def live() -> tuple[dict[str, Any], int, dict]:
    return respond({"status": "ok"}, 200)


def ready() -> tuple[dict[str, Any], int, dict]:
    ok, detail = database_ready(broker())
    document = {"status": "ok" if ok else "unavailable", "checks": {"database": detail}}
    return respond(document, 200 if ok else 503)
