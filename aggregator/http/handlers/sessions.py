"""GET and POST /sessions/{uuid}, GET /sessions/{uuid}/logs: carried to the origin node."""

from __future__ import annotations

from typing import Any

from broker_core.http.handlers import respond

from ..context import aggregator, bearer_token


async def get(uuid: str) -> tuple[dict[str, Any], int, dict]:
    return respond(await aggregator().get_session(str(uuid), bearer_token()), 200)


async def post(uuid: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict]:
    return respond(await aggregator().update_session(str(uuid), body, bearer_token()), 200)


async def logs(uuid: str) -> tuple[str, int, dict]:
    text = await aggregator().session_logs(str(uuid), bearer_token())
    return text, 200, {"Content-Type": "text/plain"}
