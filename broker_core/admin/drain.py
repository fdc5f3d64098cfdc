"""Draining a pool, as ``scontrol update nodename=... state=drain reason=...`` drains a node:
the pool takes no new claims (no offers, no direct bookings, no extensions, no accepts of probe
offers), while what is booked on it stays and runs to its booked end. Undraining opens it again.

A drain has a reason, and is recorded with who drained the pool and since when; everyone sees
it in ``GET /node``. A request that only a drained pool could serve is answered NO with a
message naming the pool, its drain and what else would work (``offers.holding.drained_notes``).
The claim path cannot race a drain: the pool's row is locked here, and a claim locks only the
pools that are not drained (``ledger.lock_pools``), so a request that searched before the drain
finds its slots on the pool gone once it holds the locks, and searches again without it.
"""

from __future__ import annotations

import time
from typing import Any

from .. import audit
from ..booking import ledger
from ..broker import Broker
from ..identity import Identity
from ..schedule import instant
from .pools import find_pool, pool_state, require_admin


def drain_pool(
    broker: Broker, identity: Identity, platform: str, pool: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Drain the pool (again: a new reason, the same ``since``); its state then."""
    require_admin(broker, identity, "drain pools")
    reason = str(body["reason"]).strip()
    now = int(time.time())
    with broker.db.write() as session:
        ledger.lock_all_pools(session)
        row = find_pool(session, platform, pool)
        again = row.drained_at is not None
        if not again:
            row.drained_at = now
        row.drained_by, row.drain_reason = identity.owner, reason
        row.generation += 1  # claims that read the pool before see it changed
        row.updated_at = now
        session.add(row)
        audit.record(session, identity.owner, audit.DRAIN, audit.pool_subject(row.name),
                     ("new reason: " if again else "") + reason, now)  # fmt: skip
        session.flush()
        return pool_state(session, row, now)


def undrain_pool(broker: Broker, identity: Identity, platform: str, pool: str) -> dict[str, Any]:
    """Open the pool to new claims again; its state then (an open pool stays open)."""
    require_admin(broker, identity, "undrain pools")
    now = int(time.time())
    with broker.db.write() as session:
        ledger.lock_all_pools(session)
        row = find_pool(session, platform, pool)
        if row.drained_at is not None:
            since = instant(row.drained_at)
            detail = f"drained since {since} by {row.drained_by}: {row.drain_reason}"
            row.drained_at = row.drained_by = row.drain_reason = None
            row.generation += 1
            row.updated_at = now
            session.add(row)
            audit.record(session, identity.owner, audit.UNDRAIN, audit.pool_subject(row.name),
                         detail, now)  # fmt: skip
            session.flush()
        return pool_state(session, row, now)
