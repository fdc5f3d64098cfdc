"""The admin controls of a pool: PUT and DELETE /pools/{platform}/{pool}/drain, GET and POST
/pools/{platform}/{pool}/maintenance, DELETE /pools/{platform}/{pool}/maintenance/{uuid}, PATCH
/pools/{platform}/{pool}/inventory."""

from __future__ import annotations

from typing import Any

from ...admin.drain import drain_pool, undrain_pool
from ...admin.inventory import change_inventory
from ...admin.maintenance import book_maintenance, delete_maintenance, list_maintenance
from ..context import broker
from ..identity import identity
from . import JSON_HEADERS, respond


def drain(platform: str, pool: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict]:
    return respond(drain_pool(broker(), identity(), platform, pool, body), 200)


def undrain(platform: str, pool: str) -> tuple[dict[str, Any], int, dict]:
    return respond(undrain_pool(broker(), identity(), platform, pool), 200)


def maintenance(platform: str, pool: str) -> tuple[dict[str, Any], int, dict]:
    return respond(list_maintenance(broker(), identity(), platform, pool), 200)


def book(platform: str, pool: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict]:
    node = broker()
    window = book_maintenance(node, identity(), platform, pool, body)
    location = f"{node.base_url}/pools/{platform}/{pool}/maintenance/{window['uuid']}"
    return window, 201, {**JSON_HEADERS, "Location": location}


def unbook(platform: str, pool: str, uuid: str) -> tuple[dict[str, Any], int, dict]:
    return respond(delete_maintenance(broker(), identity(), platform, pool, str(uuid)), 200)


def inventory(platform: str, pool: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict]:
    return respond(change_inventory(broker(), identity(), platform, pool, body), 200)
