"""POST /direct (and POST /sessions): start now on the first upstream that can."""

from __future__ import annotations

from typing import Any

from broker_core.http.handlers import JSON_HEADERS

from ..context import aggregator, bearer_token


async def post(
    body: dict[str, Any], project: str | None = None
) -> tuple[dict[str, Any], int, dict]:
    document, status, headers = await aggregator().direct(body, bearer_token(), project)
    return document, status, {**JSON_HEADERS, **headers}
