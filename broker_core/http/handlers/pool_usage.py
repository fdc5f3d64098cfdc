"""GET /pools/{platform}/{pool}/usage: what is booked on a pool over a window, and what is free."""

from __future__ import annotations

from typing import Any

from ...booking.ledger import pool_key
from ...booking.occupancy import pool_usage
from ..context import broker
from ..identity import identity
from . import respond


def get(platform: str, pool: str, **window: str) -> tuple[dict[str, Any], int, dict]:
    name = pool_key(platform, pool)
    return respond(pool_usage(broker(), identity(), name, window.get("from"), window.get("to")))
