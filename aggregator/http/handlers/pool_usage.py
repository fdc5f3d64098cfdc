"""GET /pools/{platform}/{pool}/usage: each broker node keeps its own booking table, and pool
names are only unique within a node (two nodes may both have ``sim/main``), so an aggregator has
no pool to show: a 404 saying to ask the node, as for the other node-only operations. The
calendar (``/calendar``) is served by the nodes only, for the same reason."""

from __future__ import annotations

from typing import Any

from broker_core.errors import NotFound


def get(platform: str, pool: str, **_window: str) -> tuple[dict[str, Any], int, dict]:
    raise NotFound("pool", f"{platform}/{pool} on this aggregator (pools are kept by the broker "
                   "nodes: ask the node for its usage)")  # fmt: skip
