"""What the admin controls share: the admin check, the pool lookup, and a pool's state (open or
drained, its inventories, the admin's override, its maintenance windows) as answers and
``GET /node`` show it."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from ..booking import ledger
from ..broker import Broker
from ..db.tables import Inventory, MaintenanceWindow, PoolOverride, ResourcePool
from ..errors import Forbidden, NotFound
from ..identity import Identity
from ..schedule import instant


def require_admin(broker: Broker, identity: Identity, what: str) -> None:
    if not broker.is_admin(identity):
        raise Forbidden(f"only admins may {what}")


def find_pool(session: Session, platform: str, pool: str) -> ResourcePool:
    """The (enabled) pool named ``<platform>/<pool>``, or a 404."""
    name = ledger.pool_key(platform, pool)
    row = session.exec(
        select(ResourcePool).where(ResourcePool.name == name, ResourcePool.enabled)
    ).first()
    if row is None:
        raise NotFound("pool", name)
    return row


def inventories_of(session: Session, pool_id: int | None) -> dict[str, Inventory]:
    rows = session.exec(select(Inventory).where(Inventory.pool_id == pool_id))
    return {inv.resource_class: inv for inv in rows}


def inventory_document(inv: Inventory) -> dict[str, Any]:
    return {
        "total": inv.total,
        "reserved": inv.reserved,
        "allocation_ratio": inv.allocation_ratio,
        "capacity": inv.capacity,
        "min_unit": inv.min_unit,
        "max_unit": inv.max_unit,
        "step_size": inv.step_size,
    }


def live_windows(session: Session, pool_id: int | None, now: int) -> list[MaintenanceWindow]:
    """The pool's maintenance windows not deleted and not yet over, by start."""
    return ledger.live_windows(session.connection(), pool_id, now)


def window_summary(window: MaintenanceWindow) -> dict[str, Any]:
    """A maintenance window as everyone may see it (``GET /node``)."""
    return {
        "uuid": window.uuid,
        "start": instant(window.start_at),
        "end": instant(window.end_at),
        "reason": window.reason,
        **({"amounts": window.amounts} if window.amounts is not None else {}),
    }


def drain_document(row: ResourcePool) -> dict[str, Any] | None:
    if row.drained_at is None:
        return None
    return {"since": instant(row.drained_at), "by": row.drained_by, "reason": row.drain_reason}


def override_document(override: PoolOverride | None) -> dict[str, Any] | None:
    if override is None:
        return None
    return {
        "inventories": override.inventories,
        "by": override.changed_by,
        "at": instant(override.changed_at),
        **({"reason": override.reason} if override.reason else {}),
    }


def pool_state(session: Session, row: ResourcePool, now: int) -> dict[str, Any]:
    """A pool as the admin controls answer with it, and as ``GET /node`` lists it."""
    return {
        "name": row.name,
        "platform": row.platform,
        "generation": row.generation,
        "state": "drained" if row.drained_at is not None else "open",
        **({"drain": drain_document(row)} if row.drained_at is not None else {}),
        "inventories": {
            c: inventory_document(inv) for c, inv in inventories_of(session, row.id).items()
        },
        "traits": list(row.traits or []),
        **_override(session, row),
        "maintenance": [window_summary(w) for w in live_windows(session, row.id, now)],
    }


def _override(session: Session, row: ResourcePool) -> dict[str, Any]:
    document = override_document(session.get(PoolOverride, row.id))
    return {"override": document} if document else {}
