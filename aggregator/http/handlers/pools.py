"""The admin controls of pools: an aggregator has no pools of its own (each broker node keeps
its own booking table), so every pool is unknown here, as for the other node-only operations
(``accounting``): a 404 saying to ask the node, whose admins drain it, book its maintenance and
change its inventory."""

from __future__ import annotations

from typing import Any

from broker_core.errors import NotFound


def _unknown(platform: str, pool: str) -> NotFound:
    return NotFound(
        "pool", f"{platform}/{pool} on this aggregator (pools are kept by the broker nodes: "
        "ask the node)"
    )  # fmt: skip


def drain(platform: str, pool: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict]:
    raise _unknown(platform, pool)


def undrain(platform: str, pool: str) -> tuple[dict[str, Any], int, dict]:
    raise _unknown(platform, pool)


def maintenance(platform: str, pool: str) -> tuple[dict[str, Any], int, dict]:
    raise _unknown(platform, pool)


def book(platform: str, pool: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict]:
    raise _unknown(platform, pool)


def unbook(platform: str, pool: str, uuid: str) -> tuple[dict[str, Any], int, dict]:
    raise _unknown(platform, pool)


def inventory(platform: str, pool: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict]:
    raise _unknown(platform, pool)
