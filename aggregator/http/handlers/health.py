"""Liveness; readiness (the aggregator's database) with each upstream's breaker state."""

from __future__ import annotations

from typing import Any

from broker_core.http.handlers import respond

from ..context import aggregator


async def live() -> tuple[dict[str, Any], int, dict]:
    return respond({"status": "ok"}, 200)


async def ready() -> tuple[dict[str, Any], int, dict]:
    document, status = aggregator().health()
    return respond(document, status)
