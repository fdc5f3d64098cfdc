"""GET /audit: the audit log, for admins."""

from __future__ import annotations

from typing import Any

from ... import pages
from ...audit import audit_filters, list_events
from ..context import broker
from ..identity import identity
from . import JSON_HEADERS


def index(
    actor: str | None = None,
    action: list[str] | None = None,
    subject: str | None = None,
    limit: int = pages.DEFAULT_LIMIT,
    cursor: str | None = None,
    **window: str,
) -> tuple[dict[str, Any], int, dict]:
    node = broker()
    filters = audit_filters(
        node, identity(), actor=actor, action=action, subject=subject,
        start=window.get("from"), end=window.get("to"),
    )  # fmt: skip
    answer = list_events(node, filters, limit=limit, cursor=cursor)
    query = {"actor": actor, "action": action, "subject": subject, "from": window.get("from"),
             "to": window.get("to"), "limit": limit}  # fmt: skip
    link = pages.next_link(f"{node.base_url}/audit", query, answer.get("next"))
    return answer, 200, {**JSON_HEADERS, **link}
