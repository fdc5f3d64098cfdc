"""Assemble a broker node from its configuration: database, kinds, platforms, pools."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from sqlmodel import Session, select

from .admin.pools import inventory_document, pool_state
from .booking import ledger
from .broker import Broker
from .config import UNITS, ConfigError, NodeConfig
from .db import migrate
from .db.engine import check_reachable, masked_url, open_database
from .db.tables import Inventory, ResourcePool
from .kinds.registry import load_registry
from .schedule import instant

if TYPE_CHECKING:
    from platforms.contract import Platform

    from .notifications.templates import Templates

log = logging.getLogger(__name__)


def build_broker(config: NodeConfig) -> Broker:
    from platforms.registry import build_platforms
    from policies.registry import build_policies

    from .auth import Authenticator
    from .auth.groups import check_group_names
    from .policy_host import NodeHost

    for warning in check_group_names(config):
        log.warning("%s", warning)
    platforms = build_platforms(config.platforms)
    if config.database.migrate_on_start:
        migrate.upgrade(config.database.url)  # checks the database can be reached first
    else:
        check_reachable(config.database.url)
    db = open_database(config.database)
    broker = Broker(config=config, db=db, registry=load_registry(), platforms=platforms)
    broker.authenticator = Authenticator(config.auth)
    broker.mail_templates = mail_templates(config)
    broker.policies = build_policies(config.policies, NodeHost(config, db))
    now = int(time.time())
    capacities: dict[str, dict[str, int]] = {}
    with db.write() as session:
        for platform in platforms:
            pools = platform.pools()
            ledger.sync_pools(session, platform.name, pools, now)
            broker.pool_names[platform.name] = [pool.name for pool in pools]
            capacities.update(ledger.capacities_of(session, platform.name, pools))
        ledger.refresh_longest_bookings(session)
        found = ledger.overbookings(session, capacities, now)
    broker.capacity_warnings = [describe_overbooking(o) for o in found]
    for warning in broker.capacity_warnings:
        log.warning("%s", warning)
    return broker


def mail_templates(config: NodeConfig) -> Templates:
    """The e-mail templates, the site's replacing the built-in ones: a broken one stops the
    node at start-up, naming its file."""
    from .notifications.templates import TemplateProblem, Templates

    try:
        return Templates(config.notifications.email.templates)
    except TemplateProblem as exc:
        raise ConfigError(f"notifications.email.templates: {exc}") from None


def describe_overbooking(found: ledger.Overbooking) -> str:
    """One line for the admin: which pool, resource, instant and sessions."""
    unit = UNITS.get(found.resource_class, found.resource_class)
    has = (
        f"has {found.capacity} {unit}"
        if found.configured
        else f"is no longer configured (0 {unit})"
    )
    sessions = ", ".join(found.sessions[:10])
    if len(found.sessions) > 10:
        sessions += f" and {len(found.sessions) - 10} more"
    return (
        f"pool {found.pool} {has} but its confirmed sessions need {found.needed} at "
        f"{instant(found.at)}: {sessions}; the bookings stand: raise the pool's capacity "
        "or cancel sessions"
    )


def check_bookings(config: NodeConfig, platforms: list[Platform]) -> list[str]:
    """What ``check-config`` says about the database: that it is not there yet, or whether the
    configured pools still hold its confirmed bookings. It only reads: nothing is migrated and
    the pool rows are not synced."""
    url = config.database.url
    parsed = make_url(url)
    shown = masked_url(url)
    if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
        return [f"database {shown} does not exist yet: no bookings to check"]
    check_reachable(url)
    engine = create_engine(url, poolclass=NullPool)
    try:
        current, head = migrate.current_revision(engine), migrate.head_revision()
        if current is None:
            return [f"database {shown} has no ebroker schema yet: no bookings to check"]
        if current != head:
            return [
                f"database {shown} is at schema revision {current}, not {head}: bookings not "
                "checked (ebroker db upgrade, or serve, migrates it)"
            ]
        capacities: dict[str, dict[str, int]] = {}
        unread: list[str] = []
        notes: list[str] = []
        with Session(engine) as session:
            for platform in platforms:
                try:
                    pools = platform.pools()
                except Exception as exc:  # a platform that cannot say its pools now is left out
                    unread.append(platform.name)
                    notes.append(f"platform {platform.name}: pools not read ({exc}); not checked")
                    continue
                # with the admins' inventory overrides, as the node will apply them
                capacities.update(ledger.capacities_of(session, platform.name, pools))
            found = ledger.overbookings(session, capacities, int(time.time()), unread)
        return notes + [f"warning: {describe_overbooking(o)}" for o in found]
    finally:
        engine.dispose()


def describe(broker: Broker) -> dict[str, Any]:
    """The node description: which kinds it accepts, its pools and their capacity."""
    with broker.db.read() as session:
        pools = list(session.exec(select(ResourcePool).where(ResourcePool.enabled)))
        inventories = list(session.exec(select(Inventory)))
        states = {pool.id: admin_state(session, pool, int(time.time())) for pool in pools}
    by_pool: dict[int | None, dict[str, Any]] = {}
    for inv in inventories:
        by_pool.setdefault(inv.pool_id, {})[inv.resource_class] = inventory_document(inv)
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
                        **states[pool.id],
                        "inventories": by_pool.get(pool.id, {}),
                        "traits": list(pool.traits or []),
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


def admin_state(session: Session, pool: ResourcePool, now: int) -> dict[str, Any]:
    """What the admins did to a pool, for everyone to see: drained or open (why, by whom,
    since when), its inventory override, its maintenance windows not yet over."""
    state = pool_state(session, pool, now)
    return {k: state[k] for k in ("state", "drain", "override", "maintenance") if k in state}


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
