"""Maintenance windows: [start, end) on one pool, taking all of its capacity (or the amounts
given per class), as ``scontrol create reservation flags=maint,ignore_jobs`` does.

A window is a claim like any other, in the same ledger: CONFIRMED bookings of no session
(``Booking.maintenance_uuid``), made under every pool's lock, so offers avoid it (the search
reads it as usage) and no interleaving of requests, accepts and windows can book over it. What
is booked already stays: sessions (and open offers) overlapping the window are not moved or
cancelled but listed in the answer for the admin, and the window takes what they leave, piece
by piece (one booking per stretch of time with the same free capacity), so the pool is never
overbooked. What those sessions free early (a cancel, an early end, an offer that lapses) goes
to the window in the transaction that frees it (``ledger.top_up_maintenance``), so a window
keeps what it wants once it can; a change of the pool's inventory books every window afresh.

Deleting a window frees its bookings; its row stays, marked deleted, so that the audit log's
events still name it.
"""

from __future__ import annotations

import time
import uuid as uuidlib
from datetime import datetime
from itertools import pairwise
from typing import Any

from sqlmodel import Session

from .. import audit
from ..booking import ledger
from ..broker import Broker
from ..config import UNITS
from ..db.tables import ExecutionSession, MaintenanceWindow, ResourcePool
from ..errors import DocumentInvalid, FieldError, NotFound
from ..identity import Identity
from ..notifications import outbox
from ..notifications.events import MAINTENANCE, MaintenanceNotice
from ..schedule import instant
from ..sessions.phases import EXTENDABLE
from ..sessions.record import SessionRecord
from .pools import find_pool, inventories_of, live_windows, require_admin, window_summary

Piece = ledger.Piece


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
        ledger.lock_all_pools(session)
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
        connection = session.connection()
        ledger.take_maintenance(connection, window, now)
        ledger.set_maintenance_until(connection, row.id, live_windows(session, row.id, now))
        answer = _document(session, row, window, capacities, _pieces_of(session, row, window), now)
        _notify_overlapping(broker, session, window, answer["overlapping"], now)
        audit.record(session, identity.owner, audit.BOOK_MAINTENANCE,
                     audit.pool_subject(row.name),
                     f"window {window.uuid} {instant(start)}..{instant(end)}: {window.reason}"
                     + (f"; overlaps {len(answer['overlapping'])} sessions"
                        if answer["overlapping"] else ""), now)  # fmt: skip
    return answer


def _notify_overlapping(
    broker: Broker,
    session: Session,
    window: MaintenanceWindow,
    overlapping: list[dict[str, Any]],
    now: int,
) -> None:
    """Tell the owners of the accepted sessions the window overlaps (their bookings stand),
    in the window's transaction."""
    notice = MaintenanceNotice(window=window.uuid, start=window.start_at, end=window.end_at,
                               reason=window.reason[:1024])  # fmt: skip
    for item in overlapping:
        if item["phase"] not in EXTENDABLE:  # open offers and ended sessions are not told
            continue
        found = session.get(ExecutionSession, item["session"])
        if found is not None:
            outbox.emit(session, broker.config.notifications, outbox.SessionFacts.of(found),
                        SessionRecord.of(found.record), MAINTENANCE, now,
                        maintenance=notice)  # fmt: skip


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
        window.deleted_at, window.deleted_by = now, identity.owner
        session.add(window)
        session.flush()  # deleted first: freeing its bookings gives the other windows their share
        connection = session.connection()
        ledger.release_maintenance(connection, window.uuid, now)
        ledger.set_maintenance_until(connection, row.id, live_windows(session, row.id, now))
        audit.record(session, identity.owner, audit.DELETE_MAINTENANCE,
                     audit.pool_subject(row.name),
                     f"window {window.uuid} {instant(window.start_at)}.."
                     f"{instant(window.end_at)}: {window.reason}", now)  # fmt: skip
    return {**answer, "deleted": instant(now)}


def refit(session: Session, pool: ResourcePool, now: int) -> None:
    """Book every live window of the (locked) pool afresh, on its capacity as it is now (after
    an inventory change): what each takes grows or shrinks with the pool."""
    connection = session.connection()
    for window in live_windows(session, pool.id, now):
        ledger.release_maintenance(connection, window.uuid, now)  # which tops every window up
    ledger.top_up_maintenance(connection, pool.id, now)


def _pieces_of(session: Session, row: ResourcePool, window: MaintenanceWindow) -> list[Piece]:
    """What a window holds now, as stretches of the same amounts (its live bookings, added
    up: a top-up is a booking of its own beside the first)."""
    claims = [
        c
        for c in ledger.pool_claims(session.connection(), row.id, (window.start_at, window.end_at))
        if c.maintenance == window.uuid
    ]
    if not claims:
        return []
    usage = {c: ledger.usage_of(claims, c) for c in sorted({x.resource_class for x in claims})}
    points = sorted({t for u in usage.values() for t in u.times})
    pieces: list[Piece] = []
    for a, b in pairwise(points):
        amounts = {c: u.at(a) for c, u in usage.items()}
        if not any(amounts.values()):
            continue
        if pieces and pieces[-1][1] == a and pieces[-1][2] == amounts:
            pieces[-1] = (pieces[-1][0], b, amounts)
        else:
            pieces.append((a, b, amounts))
    return pieces


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
    short = _short(wanted, pieces, max(window.start_at, now), window.end_at)
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
    for claim in ledger.pool_claims(session.connection(), row.id, (window.start_at, window.end_at)):
        if claim.session is None:
            continue
        item = found.setdefault(claim.session, {
            "session": claim.session, "phase": claim.phase, "owner": claim.owner or "anonymous",
            "start": instant(claim.start), "end": instant(claim.end), "amounts": {},
        })  # fmt: skip
        item["amounts"][claim.resource_class] = claim.amount
    return list(found.values())


def _short(wanted: dict[str, int], pieces: list[Piece], low: int, high: int) -> list[str]:
    """The classes of which the window holds less than it wants somewhere in [low, high) (what
    is left of it: the past is not booked), because sessions booked earlier have it."""
    return sorted(
        c
        for c, want in wanted.items()
        if want > 0
        and sum(
            max(0, min(b, high) - max(a, low))
            for a, b, amounts in pieces
            if amounts.get(c, 0) >= want
        )
        < high - low
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
