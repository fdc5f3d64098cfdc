"""Maintenance windows: [start, end) on one pool, taking all of its capacity (or the amounts
given per class), as ``scontrol create reservation flags=maint,ignore_jobs`` does.

A window is a claim like any other, in the same ledger: CONFIRMED bookings of no session
(``Booking.maintenance_uuid``), made under every pool's lock, so offers avoid it (the search
reads it as usage) and no interleaving of requests, accepts and windows can book over it. What
is booked already stays: sessions (and open offers) overlapping the window are not moved or
cancelled but listed in the answer for the admin, and the window takes what they leave, piece
by piece (one booking per stretch of time with the same free capacity), so the pool is never
overbooked. Capacity those sessions free early (a cancel, an offer that lapses) is not taken
back by the window on its own; deleting and booking the window again, or changing the pool's
inventory (which refits every window), takes it.

Deleting a window frees its bookings; its row stays, marked deleted, so that the audit log's
events still name it.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from collections import defaultdict
from datetime import datetime
from itertools import pairwise
from typing import Any

from sqlmodel import Session

from .. import audit
from ..booking import ledger
from ..booking.timeline import Usage
from ..broker import Broker
from ..config import UNITS
from ..db.tables import MaintenanceWindow, ResourcePool
from ..errors import DocumentInvalid, FieldError, NotFound
from ..identity import Identity
from ..schedule import instant
from .pools import find_pool, inventories_of, live_windows, require_admin, window_summary

Piece = tuple[int, int, dict[str, int]]  # (start, end, amount per class)


def book_maintenance(
    broker: Broker, identity: Identity, platform: str, pool: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Book a window on the pool; the window, with what it took and the sessions it overlaps."""
    require_admin(broker, identity, "book maintenance")
    start, end = _instant(body, "start"), _instant(body, "end")
    now = int(time.time())
    if end <= start:
        raise DocumentInvalid([FieldError("/end", "must be after start")])
    if end <= now:
        raise DocumentInvalid([FieldError("/end", f"is in the past (now is {instant(now)})")])
    with broker.db.write() as session:
        generations = ledger.lock_all_pools(session)
        row = find_pool(session, platform, pool)
        capacities = {c: inv.capacity for c, inv in inventories_of(session, row.id).items()}
        amounts = body.get("amounts")
        if amounts is not None:
            _check_amounts(amounts, capacities)
        window = MaintenanceWindow(
            uuid=str(uuidlib.uuid4()), pool_id=row.id, start_at=start, end_at=end,
            amounts=amounts, reason=str(body["reason"]).strip(), created_by=identity.owner,
            created_at=now,
        )  # fmt: skip
        session.add(window)
        session.flush()  # the window first: its bookings refer to it
        pieces = take(session, window, capacities, generations, now)
        answer = _document(session, row, window, capacities, pieces, now)
        audit.record(session, identity.owner, audit.BOOK_MAINTENANCE,
                     audit.pool_subject(row.name),
                     f"window {window.uuid} {instant(start)}..{instant(end)}: {window.reason}"
                     + (f"; overlaps {len(answer['overlapping'])} sessions"
                        if answer["overlapping"] else ""), now)  # fmt: skip
    return answer


def list_maintenance(
    broker: Broker, identity: Identity, platform: str, pool: str
) -> dict[str, Any]:
    """The pool's windows not yet over, by start, each with what it took and its overlaps."""
    require_admin(broker, identity, "list maintenance windows")
    now = int(time.time())
    with broker.db.read() as session:
        row = find_pool(session, platform, pool)
        capacities = {c: inv.capacity for c, inv in inventories_of(session, row.id).items()}
        items = [
            _document(session, row, w, capacities, _pieces_of(session, row, w), now)
            for w in live_windows(session, row.id, now)
        ]
    return {"items": items}


def delete_maintenance(
    broker: Broker, identity: Identity, platform: str, pool: str, window_uuid: str
) -> dict[str, Any]:
    """Delete a window and free what it took; the window as it was."""
    require_admin(broker, identity, "delete maintenance windows")
    now = int(time.time())
    with broker.db.write() as session:
        ledger.lock_all_pools(session)
        row = find_pool(session, platform, pool)
        window = session.get(MaintenanceWindow, window_uuid)
        if window is None or window.pool_id != row.id or window.deleted_at is not None:
            raise NotFound(f"maintenance window of pool {row.name}", window_uuid)
        capacities = {c: inv.capacity for c, inv in inventories_of(session, row.id).items()}
        answer = _document(session, row, window, capacities, _pieces_of(session, row, window),
                           now)  # fmt: skip
        ledger.release_maintenance(session, window.uuid, now)
        window.deleted_at, window.deleted_by = now, identity.owner
        session.add(window)
        audit.record(session, identity.owner, audit.DELETE_MAINTENANCE,
                     audit.pool_subject(row.name),
                     f"window {window.uuid} {instant(window.start_at)}.."
                     f"{instant(window.end_at)}: {window.reason}", now)  # fmt: skip
    return {**answer, "deleted": instant(now)}


def take(
    session: Session,
    window: MaintenanceWindow,
    capacities: dict[str, int],
    generations: dict[int, int],
    now: int,
) -> list[Piece]:
    """Book what the (locked) pool has free of what the window wants, over what is left of
    it; the pieces booked."""
    low = max(window.start_at, now)
    if low >= window.end_at:
        return []
    claims = [
        c
        for c in ledger.pool_claims(session, window.pool_id, (low, window.end_at))
        if c.maintenance != window.uuid
    ]
    wanted = window.amounts if window.amounts is not None else capacities
    usage = {c: ledger.usage_of(claims, c) for c in wanted if c in capacities}
    pieces = fit(low, window.end_at, {c: wanted[c] for c in usage}, capacities, usage)
    ledger.insert_maintenance(
        session, window.uuid, pieces, pool_id=window.pool_id, generations=generations, now=now
    )
    return pieces


def refit(session: Session, pool: ResourcePool, generations: dict[int, int], now: int) -> None:
    """Book every live window of the (locked) pool afresh, on its capacity as it is now (after
    an inventory change): what each takes grows or shrinks with the pool."""
    capacities = {c: inv.capacity for c, inv in inventories_of(session, pool.id).items()}
    for window in live_windows(session, pool.id, now):
        ledger.release_maintenance(session, window.uuid, now)
        generations.update(ledger.lock_all_pools(session))
        take(session, window, capacities, generations, now)


def fit(
    low: int, high: int, wanted: dict[str, int], capacities: dict[str, int],
    usage: dict[str, Usage],
) -> list[Piece]:  # fmt: skip
    """Pure: the pieces of [low, high) a window wanting ``wanted`` can take, each stretch
    taking per class the least of what it wants and what the usage leaves of the capacity."""
    points = sorted({low, high} | {t for u in usage.values() for t in u.times if low < t < high})
    pieces: list[Piece] = []
    for a, b in pairwise(points):
        amounts = {
            c: max(0, min(want, capacities.get(c, 0) - usage[c].peak(a, b)))
            for c, want in wanted.items()
        }
        if pieces and pieces[-1][1] == a and pieces[-1][2] == amounts:
            pieces[-1] = (pieces[-1][0], b, amounts)
        else:
            pieces.append((a, b, amounts))
    return pieces


def _pieces_of(session: Session, row: ResourcePool, window: MaintenanceWindow) -> list[Piece]:
    """What a window holds now: its live bookings' pieces."""
    grouped: dict[tuple[int, int], dict[str, int]] = defaultdict(dict)
    far = (window.start_at, window.end_at)
    for claim in ledger.pool_claims(session, row.id, far):
        if claim.maintenance == window.uuid:
            grouped[(claim.start, claim.end)][claim.resource_class] = claim.amount
    return [(a, b, amounts) for (a, b), amounts in sorted(grouped.items())]


def _document(
    session: Session,
    row: ResourcePool,
    window: MaintenanceWindow,
    capacities: dict[str, int],
    pieces: list[Piece],
    now: int,
) -> dict[str, Any]:
    """A window for the admin: what it wants, what it took, and the sessions it overlaps."""
    wanted = window.amounts if window.amounts is not None else capacities
    short = _short(wanted, pieces, window.end_at)
    return {
        **window_summary(window),
        "pool": row.name,
        "created_by": window.created_by,
        "created": instant(window.created_at),
        "taken": [
            {"start": instant(a), "end": instant(b), "amounts": amounts} for a, b, amounts in pieces
        ],
        "complete": not short,
        **({"short": short} if short else {}),
        "overlapping": overlapping(session, row, window),
    }


def overlapping(
    session: Session, row: ResourcePool, window: MaintenanceWindow
) -> list[dict[str, Any]]:
    """The sessions (and open offers) booked on the pool during the window, by start: not moved,
    not cancelled, listed for the admin to decide."""
    found: dict[str, dict[str, Any]] = {}
    for claim in ledger.pool_claims(session, row.id, (window.start_at, window.end_at)):
        if claim.session is None:
            continue
        item = found.setdefault(claim.session, {
            "session": claim.session, "phase": claim.phase, "owner": claim.owner or "anonymous",
            "start": instant(claim.start), "end": instant(claim.end), "amounts": {},
        })  # fmt: skip
        item["amounts"][claim.resource_class] = claim.amount
    return list(found.values())


def _short(wanted: dict[str, int], pieces: list[Piece], end: int) -> list[str]:
    """The classes of which the window took less than it wants over some of its time (from its
    first piece on: the past is not booked), because sessions booked earlier have it."""
    if not pieces:
        return sorted(c for c, want in wanted.items() if want > 0)
    low = pieces[0][0]
    return sorted(
        c
        for c, want in wanted.items()
        if want > 0
        and sum(b - a for a, b, amounts in pieces if amounts.get(c, 0) >= want) < end - low
    )


def _instant(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise DocumentInvalid([FieldError(f"/{name}", "is not an ISO-8601 instant")]) from None
    if parsed.tzinfo is None:
        raise DocumentInvalid([FieldError(f"/{name}", "has no time zone (add Z for UTC)")])
    return int(parsed.timestamp())


def _check_amounts(amounts: dict[str, int], capacities: dict[str, int]) -> None:
    errors = []
    for c, amount in amounts.items():
        if c not in capacities:
            errors.append(FieldError(_amount_pointer(c), f"the pool has no {c} inventory; it has "
                                     f"{', '.join(sorted(capacities))}"))  # fmt: skip
        elif amount > capacities[c]:
            unit = UNITS.get(c, c)
            errors.append(FieldError(_amount_pointer(c), f"more than the pool's capacity "
                                     f"({capacities[c]} {unit})"))  # fmt: skip
    if errors:
        raise DocumentInvalid(errors)


def _amount_pointer(resource_class: str) -> str:
    return f"/amounts/{resource_class}"
