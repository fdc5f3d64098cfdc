"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from ...node import database_ready
from ..context import broker
from . import respond


async def live() -> tuple[dict[str, Any], int, dict]:
    """Answered on the event loop itself, so it says whether the loop is alive, not whether a
    handler thread is free: busy threads are load, not a reason to restart the node."""
    return respond({"status": "ok"}, 200)


def ready() -> tuple[dict[str, Any], int, dict]:
    ok, detail = database_ready(broker())
    document = {"status": "ok" if ok else "unavailable", "checks": {"database": detail}}
    return respond(document, 200 if ok else 503)
