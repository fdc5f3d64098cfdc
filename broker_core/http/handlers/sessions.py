"""GET and POST /sessions/{uuid}: read a session, update it; GET its logs; GET /sessions: list
them."""

from __future__ import annotations

from typing import Any

from ... import pages
from ...lifecycle.logs import session_logs
from ...sessions.listing import list_sessions, session_filters
from ...sessions.updates import get_session, update_session
from ..context import broker
from ..identity import identity
from . import JSON_HEADERS, respond


def get(uuid: str) -> tuple[dict[str, Any], int, dict]:
    return respond(get_session(broker(), str(uuid), identity()), 200)


def post(uuid: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict]:
    return respond(update_session(broker(), str(uuid), body, identity()), 200)


def logs(uuid: str) -> tuple[str, int, dict]:
    return session_logs(broker(), str(uuid), identity()), 200, {"Content-Type": "text/plain"}


def index(
    phase: list[str] | None = None,
    pool: list[str] | None = None,
    owner: str | None = None,
    limit: int = pages.DEFAULT_LIMIT,
    cursor: str | None = None,
    **window: str,
) -> tuple[dict[str, Any], int, dict]:
    node = broker()
    filters = session_filters(
        node, identity(), phase=phase, start=window.get("from"), end=window.get("to"),
        pool=pool, owner=owner,
    )  # fmt: skip
    answer = list_sessions(node, filters, limit=limit, cursor=cursor)
    query = {"phase": phase, "from": window.get("from"), "to": window.get("to"), "pool": pool,
             "owner": owner, "limit": limit}  # fmt: skip
    link = pages.next_link(f"{node.base_url}/sessions", query, answer.get("next"))
    return answer, 200, {**JSON_HEADERS, **link}
