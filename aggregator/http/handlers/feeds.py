"""GET /sessions.ics and POST /feed-tokens: a feed token is signed with one node's secret and
reads that node's sessions, so the feeds are the nodes' own: an aggregator has none to serve
(a 404 saying to ask the nodes; their session lists are merged by GET /sessions here)."""

from __future__ import annotations

from typing import Any

from broker_core.errors import NotFound


def sessions(token: str | None = None) -> tuple[bytes, int, dict[str, str]]:
    raise NotFound("session feed on this aggregator; ask the broker nodes for", "theirs")


def token() -> tuple[dict[str, Any], int, dict]:
    raise NotFound("feed tokens on this aggregator; ask the broker nodes for", "theirs")
