"""Changing a pool's inventory (its total, reserved, allocation ratio, units per class), checked
against what is booked on it.

The change is an **override** kept in the database (``PoolOverride``): per class, the fields
the admin set, applied on top of what the platform gives (a Slurm partition's cores, an
OpenStack hypervisor's, the config's pools), at once and again at every start-up
(``ledger.sync_pools``), so it survives restarts and a platform's new figures for the fields
the admin did not set. Setting a class to null drops its override: back to the platform's.

Before it applies, the change is checked: the live claims on the pool from now on (accepted
sessions, and open offers with their offer set's envelope) are swept against the new
capacities, and every stretch of time where they would no longer fit is listed, per class, with
the sessions booked then. A dry run only answers with that list. A real change with such
stretches is refused (409, with the list) unless ``force``: then it applies, the bookings stand
(the pool is overbooked there, as ``ebroker check-config`` and start-up will say) and the list
comes with the answer. Maintenance windows are not in the list: they take what the new capacity
leaves, and are booked again on it.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import ValidationError

from platforms.contract import PlatformError

from .. import audit
from ..booking import ledger
from ..broker import Broker
from ..config import InventoryConfig
from ..db.tables import PoolOverride
from ..errors import CapacityConflict, Conflict, DocumentInvalid, FieldError, pointer
from ..identity import Identity
from ..schedule import instant
from .maintenance import refit
from .pools import find_pool, override_document, pool_state, require_admin

FAR = 2**62  # the end of time, as far as bookings go


def change_inventory(
    broker: Broker, identity: Identity, platform: str, pool: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Check (``dry_run``) or make a change; the pool's inventories as they are (or would be),
    with the stretches of time where its bookings would no longer fit (``conflicts``)."""
    require_admin(broker, identity, "change a pool's inventory")
    changes: dict[str, dict[str, Any] | None] = body["inventories"]
    given = _platform_inventories(broker, platform, pool)  # before any lock: it may be slow
    now = int(time.time())
    if body.get("dry_run"):
        with broker.db.read() as session:
            return _plan(session, platform, pool, given, changes, now)[0]
    with broker.db.write() as session:
        ledger.lock_all_pools(session)
        answer, override = _plan(session, platform, pool, given, changes, now)
        conflicts = answer["conflicts"]
        if conflicts and not body.get("force"):
            raise CapacityConflict(
                f"the change leaves {len(conflicts)} stretches of time where booked sessions "
                "no longer fit (listed in conflicts); a dry run shows them, force applies the "
                "change anyway",
                conflicts=conflicts,
            )
        row = find_pool(session, platform, pool)
        reason = body.get("reason")
        stored = session.get(PoolOverride, row.id)
        if override:
            stored = stored or PoolOverride(pool_id=row.id, inventories={}, changed_by="",
                                            changed_at=now)  # fmt: skip
            stored.inventories, stored.changed_by, stored.changed_at = override, identity.owner, now
            stored.reason = reason
            session.add(stored)
        elif stored is not None:
            session.delete(stored)
            stored = None
        values = ledger.overridden(given or {}, override)
        if ledger.set_inventories(session, row, values):
            row.generation += 1
            row.updated_at = now
            session.add(row)
        session.flush()
        refit(session, row, now)
        audit.record(session, identity.owner, audit.CHANGE_INVENTORY,
                     audit.pool_subject(row.name), _describe(changes, conflicts, reason),
                     now)  # fmt: skip
        session.flush()
        answer.update(applied=True, inventories=pool_state(session, row, now)["inventories"],
                      **({"override": override_document(stored)} if stored else {}))  # fmt: skip
    return answer


def _plan(
    session: Any,
    platform: str,
    pool: str,
    given: dict[str, dict[str, Any]] | None,
    changes: dict[str, dict[str, Any] | None],
    now: int,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """What the change would make of the pool: the answer of a dry run, and the override."""
    row = find_pool(session, platform, pool)
    if given is None:
        raise Conflict(f"platform {platform} no longer offers pool {pool}")
    stored = session.get(PoolOverride, row.id)
    override = _merged(stored.inventories if stored else {}, changes, given)
    values = ledger.overridden(given, override)
    _check(values, changes)
    capacities = {c: InventoryConfig(**v).capacity for c, v in values.items()}
    answer = {
        "pool": row.name,
        "applied": False,
        "inventories": {c: {**v, "capacity": capacities[c]} for c, v in values.items()},
        "conflicts": misfits(session, row.id, capacities, now),
    }
    return answer, override


def _platform_inventories(broker: Broker, platform: str, pool: str) -> dict[str, Any] | None:
    """The inventories the platform gives the pool now (its fields per class), under the admin's
    override; None when it no longer offers the pool (or there is no such platform)."""
    found = next((p for p in broker.platforms if p.name == platform), None)
    if found is None:
        return None
    try:
        pools = found.pools()
    except PlatformError as exc:
        raise Conflict(f"platform {platform} cannot say its pools now: {exc}") from None
    config = next((p for p in pools if p.name == pool), None)
    if config is None:
        return None
    return {c: inv.model_dump() for c, inv in config.inventories.items()}


def _merged(
    stored: dict[str, dict[str, Any]],
    changes: dict[str, dict[str, Any] | None],
    given: dict[str, dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """The override after the changes: each class's fields set on top of those set before; a
    null class drops its override. A class the platform does not give is a 400."""
    unknown = [c for c in changes if c not in given]
    if unknown:
        have = ", ".join(sorted(given))
        raise DocumentInvalid([
            FieldError(pointer("inventories", c), f"the pool has no {c} inventory; it has {have}")
            for c in unknown
        ])  # fmt: skip
    override = {c: dict(fields) for c, fields in stored.items()}
    for c, fields in changes.items():
        if fields is None:
            override.pop(c, None)
        else:
            override[c] = {**override.get(c, {}), **fields}
    return {c: fields for c, fields in override.items() if fields}


def _check(values: dict[str, dict[str, Any]], changes: dict[str, Any]) -> None:
    """Each class's inventory as it would be must be one (reserved within total, ...): a 400
    pointing at the class changed."""
    errors = []
    for c, fields in values.items():
        try:
            InventoryConfig(**fields)
        except ValidationError as exc:
            where = ("inventories", c) if c in changes else ("inventories",)
            for error in exc.errors():
                field = [str(p) for p in error["loc"]]
                errors.append(FieldError(pointer(*where, *field), error["msg"]))
    if errors:
        raise DocumentInvalid(errors)


def misfits(
    session: Any, pool_id: int | None, capacities: dict[str, int], now: int
) -> list[dict[str, Any]]:
    """Every stretch of time from ``now`` on where the pool's live claims (but maintenance)
    need more of a class than ``capacities``: [from, to), the most needed then, and the
    sessions booked in it."""
    claims = ledger.pool_claims(session.connection(), pool_id, (now, FAR))
    claims = [c for c in claims if c.maintenance is None]
    found = []
    for c, capacity in sorted(capacities.items()):
        usage = ledger.usage_of(claims, c)
        times, used = usage.times, usage.used
        stretch: list[int] | None = None  # [from, to, most needed]
        stretches = []
        for i, t in enumerate(times):
            over = used[i] > capacity and (i + 1 < len(times) and times[i + 1] > now)
            if over:
                if stretch is None:
                    stretch = [max(t, now), times[i + 1], used[i]]
                else:
                    stretch[1], stretch[2] = times[i + 1], max(stretch[2], used[i])
            elif stretch is not None:
                stretches.append(stretch)
                stretch = None
        for start, end, needed in stretches:
            sessions = sorted(
                {(x.start, x.session) for x in claims
                 if x.resource_class == c and x.session and x.start < end and start < x.end}
            )  # fmt: skip
            found.append({
                "resource_class": c,
                "capacity": capacity,
                "needed": needed,
                "from": instant(start),
                "to": instant(end),
                "sessions": [_booked(claims, uuid, c) for _, uuid in sessions],
            })  # fmt: skip
    return found


def _booked(claims: list[ledger.PoolClaim], uuid: str | None, c: str) -> dict[str, Any]:
    claim = next(x for x in claims if x.session == uuid and x.resource_class == c)
    return {
        "session": uuid,
        "phase": claim.phase,
        "owner": claim.owner or "anonymous",
        "amount": claim.amount,
        "start": instant(claim.start),
        "end": instant(claim.end),
    }


def _describe(changes: dict[str, Any], conflicts: list[Any], reason: str | None) -> str:
    parts = [
        f"{c}: " + ("platform's values" if fields is None else
                    ", ".join(f"{k}={v}" for k, v in sorted(fields.items())))
        for c, fields in sorted(changes.items())
    ]  # fmt: skip
    text = "; ".join(parts)
    if conflicts:
        text += f"; forced over {len(conflicts)} stretches where bookings no longer fit"
    if reason:
        text += f" ({reason})"
    return text
