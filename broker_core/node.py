"""Assemble a broker node from its configuration: database, kinds, platforms, pools."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text
from sqlmodel import select

from .booking import ledger
from .broker import Broker
from .config import NodeConfig
from .db import migrate
from .db.engine import check_reachable, open_database
from .db.tables import Inventory, ResourcePool
from .kinds.registry import load_registry


def build_broker(config: NodeConfig) -> Broker:
    from platforms.registry import build_platforms
    from policies.identity import Authenticator
    from policies.registry import build_policies

    platforms = build_platforms(config.platforms)
    if config.database.migrate_on_start:
        migrate.upgrade(config.database.url)  # checks the database can be reached first
    else:
        check_reachable(config.database.url)
    db = open_database(config.database)
    broker = Broker(config=config, db=db, registry=load_registry(), platforms=platforms)
    broker.authenticator = Authenticator(config.auth)
    broker.policies = build_policies(config.policies, broker)
    now = int(time.time())
    with db.write() as session:
        for platform in platforms:
            pools = platform.pools()
            ledger.sync_pools(session, platform.name, pools, now)
            broker.pool_names[platform.name] = [pool.name for pool in pools]
        ledger.refresh_longest_bookings(session)
    return broker


def describe(broker: Broker) -> dict[str, Any]:
    """The node description: which kinds it accepts, its pools and their capacity."""
    with broker.db.read() as session:
        pools = list(session.exec(select(ResourcePool).where(ResourcePool.enabled)))
        inventories = list(session.exec(select(Inventory)))
    by_pool: dict[int | None, dict[str, Any]] = {}
    for inv in inventories:
        by_pool.setdefault(inv.pool_id, {})[inv.resource_class] = {
            "total": inv.total,
            "reserved": inv.reserved,
            "allocation_ratio": inv.allocation_ratio,
            "capacity": inv.capacity,
            "min_unit": inv.min_unit,
            "max_unit": inv.max_unit,
            "step_size": inv.step_size,
        }
    offers = broker.config.offers
    return {
        "site": {"name": broker.config.site.name, "description": broker.config.site.description},
        "url": broker.base_url,
        "kinds": sorted({k for p in broker.platforms for k in p.accepted_kinds()}),
        "platforms": [
            {
                "name": platform.name,
                "type": platform.config.type,
                "kinds": sorted(platform.accepted_kinds()),
                "pools": [
                    {
                        "name": pool.name,
                        "generation": pool.generation,
                        "inventories": by_pool.get(pool.id, {}),
                    }
                    for pool in pools
                    if pool.platform == platform.name
                ],
            }
            for platform in broker.platforms
        ],
        "offers": {
            "max_offers": offers.max_offers,
            "hold_seconds": int(offers.hold.total_seconds()),
            "lookahead_seconds": int(offers.lookahead.total_seconds()),
            "default_duration_seconds": int(offers.default_duration.total_seconds()),
            "max_duration_seconds": int(offers.max_duration.total_seconds()),
        },
    }


def database_ready(broker: Broker) -> tuple[bool, str]:
    try:
        with broker.db.read() as session:
            session.exec(text("SELECT 1"))  # type: ignore[call-overload]
        current = migrate.current_revision(broker.db.reader)
        head = migrate.head_revision()
        if current != head:
            return False, f"database schema at {current}, expected {head}"
        return True, "ok"
    except Exception as exc:  # readiness reports any failure instead of raising
        return False, f"{type(exc).__name__}: {exc}"
