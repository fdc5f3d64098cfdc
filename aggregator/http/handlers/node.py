"""GET /node: what the federation behind this aggregator accepts, and its upstreams."""

from __future__ import annotations

from typing import Any

from broker_core.http.handlers import respond

from ..context import aggregator


async def get() -> tuple[dict[str, Any], int, dict]:
    return respond(await aggregator().describe(), 200)
