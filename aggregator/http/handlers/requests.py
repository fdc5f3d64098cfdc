"""POST /requests (and POST /offersets): fan out and merge."""

from __future__ import annotations

from typing import Any

from broker_core.http.handlers import respond

from ..context import aggregator, bearer_token


async def post(
    body: dict[str, Any], project: str | None = None, probe: bool = False
) -> tuple[dict[str, Any], int, dict]:
    answer = await aggregator().request_offers(body, bearer_token(), project, probe=probe)
    return respond(answer, 200)
