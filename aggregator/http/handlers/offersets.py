"""GET /offersets/{uuid}: the merged offer set, each offer's phase read from its node."""

from __future__ import annotations

from typing import Any

from broker_core.http.handlers import respond

from ..context import aggregator, bearer_token


async def get(uuid: str) -> tuple[dict[str, Any], int, dict]:
    return respond(await aggregator().get_offerset(str(uuid), bearer_token()), 200)
