"""GET and POST /sessions/{uuid}, GET /sessions/{uuid}/logs: carried to the origin node;
GET /sessions: the nodes' lists, merged."""

from __future__ import annotations

from typing import Any

from broker_core import pages
from broker_core.http.handlers import JSON_HEADERS, respond

from ...listing import SESSIONS, link, merged_list, sessions_filters
from ..context import aggregator, bearer_token


async def get(uuid: str) -> tuple[dict[str, Any], int, dict]:
    return respond(await aggregator().get_session(str(uuid), bearer_token()), 200)


async def post(uuid: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict]:
    return respond(await aggregator().update_session(str(uuid), body, bearer_token()), 200)


async def logs(uuid: str) -> tuple[str, int, dict]:
    text = await aggregator().session_logs(str(uuid), bearer_token())
    return text, 200, {"Content-Type": "text/plain"}


async def index(
    phase: list[str] | None = None,
    pool: list[str] | None = None,
    owner: str | None = None,
    limit: int = pages.DEFAULT_LIMIT,
    cursor: str | None = None,
    **window: str,
) -> tuple[dict[str, Any], int, dict]:
    service = aggregator()
    filters = sessions_filters(phase, window.get("from"), window.get("to"), pool, owner)
    answer = await merged_list(service, SESSIONS, filters, limit=limit, cursor=cursor,
                               token=bearer_token())  # fmt: skip
    return answer, 200, {**JSON_HEADERS, **link(service.base_url, SESSIONS, filters, limit,
                                                 answer)}  # fmt: skip
