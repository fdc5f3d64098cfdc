"""GET /offersets/{uuid}; POST /offersets/{uuid} (withdraw it); GET /offersets: list them."""

from __future__ import annotations

from typing import Any

from ... import pages
from ...offers.listing import list_offersets, offerset_filters
from ...offers.service import get_offerset
from ...offers.withdraw import withdraw_offerset
from ..context import broker
from ..identity import identity
from . import JSON_HEADERS, respond


def get(uuid: str) -> tuple[dict[str, Any], int, dict]:
    return respond(get_offerset(broker(), str(uuid), identity()), 200)


def post(uuid: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict]:
    return respond(withdraw_offerset(broker(), str(uuid), body, identity()), 200)


def index(
    state: str | None = None,
    result: str | None = None,
    owner: str | None = None,
    limit: int = pages.DEFAULT_LIMIT,
    cursor: str | None = None,
    **window: str,
) -> tuple[dict[str, Any], int, dict]:
    node = broker()
    filters = offerset_filters(
        node, identity(), state=state, result=result, start=window.get("from"),
        end=window.get("to"), owner=owner,
    )  # fmt: skip
    answer = list_offersets(node, filters, limit=limit, cursor=cursor)
    query = {"state": state, "result": result, "from": window.get("from"),
             "to": window.get("to"), "owner": owner, "limit": limit}  # fmt: skip
    link = pages.next_link(f"{node.base_url}/offersets", query, answer.get("next"))
    return answer, 200, {**JSON_HEADERS, **link}
