"""GET /audit: each broker node keeps the audit log of the changes made on it (an aggregator
passes accepts, cancels and extensions on to the node, which records them with the caller's
identity), so an aggregator has none to show: a 404 saying to ask the nodes, as for the other
node-only operations."""

from __future__ import annotations

from typing import Any

from broker_core.errors import NotFound


def index(**_parameters: Any) -> tuple[dict[str, Any], int, dict]:
    raise NotFound("audit log on this aggregator; ask the broker nodes for", "theirs")
