"""GET /offersets/{uuid}: the merged offer set, each offer's phase read from its node;
POST /offersets/{uuid}: withdraw it on every node; GET /offersets: the nodes' lists, merged."""

from __future__ import annotations

from typing import Any

from broker_core import pages
from broker_core.http.handlers import JSON_HEADERS, respond

from ...listing import OFFERSETS, link, merged_list, offersets_filters
from ...withdraw import withdraw
from ..context import aggregator, bearer_token


async def get(uuid: str) -> tuple[dict[str, Any], int, dict]:
    return respond(await aggregator().get_offerset(str(uuid), bearer_token()), 200)


async def post(uuid: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict]:
    return respond(await withdraw(aggregator(), str(uuid), body, bearer_token()), 200)


async def index(
    state: str | None = None,
    result: str | None = None,
    owner: str | None = None,
    limit: int = pages.DEFAULT_LIMIT,
    cursor: str | None = None,
    **window: str,
) -> tuple[dict[str, Any], int, dict]:
    service = aggregator()
    filters = offersets_filters(state, result, window.get("from"), window.get("to"), owner)
    answer = await merged_list(service, OFFERSETS, filters, limit=limit, cursor=cursor,
                               token=bearer_token())  # fmt: skip
    return answer, 200, {**JSON_HEADERS, **link(service.base_url, OFFERSETS, filters, limit,
                                                 answer)}  # fmt: skip
