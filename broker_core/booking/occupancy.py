"""GET /pools/{platform}/{pool}/usage: what is booked on one pool over a window, as the calendar
(``/calendar``) draws it.

Per resource class: the pool's capacity, and step functions over [from, to) of what is booked
in each state (``held``: open offers, an offer set counting with the largest of its holds at
each instant, as the ledger counts it; ``confirmed``; ``active``; ``maintenance``: an admin's
maintenance windows, booked in the ledger as claims of no session) and of the capacity left
free. The steps are read from the same claims the offer sweep reads, so what the calendar
shows free is what a request could be offered (less the node's policies).

Then the bookings overlapping the window: the caller's own in full (session, phase, window,
amounts, link), everyone else's only as anonymous occupancy (a state, a window and amounts:
no session, no owner), and all of them in full for admins. Maintenance windows are public
(``GET /node`` lists them), so they come with their uuid.

Bounded: a window of at most ``MAX_WINDOW``, at most ``MAX_STEPS`` steps per class (a window
busier than that is refused: ask a shorter one), and at most ``MAX_BOOKINGS`` bookings listed
(``truncated`` says when more overlap; the steps still count every one).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlmodel import Session, select

from ..broker import Broker
from ..config import UNITS
from ..db.tables import ACTIVE, CONFIRMED, HELD, Inventory, ResourcePool
from ..errors import NotFound, ParameterInvalid
from ..identity import ANONYMOUS, Identity
from ..pages import epoch
from ..schedule import instant
from . import ledger
from .timeline import Claim, Usage

MAX_WINDOW = 31 * 86400  # a month of steps at most: the calendar asks a week at a time
DEFAULT_WINDOW = 7 * 86400
MAX_BOOKINGS = 500
MAX_STEPS = 5000

State = Literal["held", "confirmed", "active", "maintenance"]
STATES: tuple[State, ...] = ("held", "confirmed", "active", "maintenance")
_OF_LEDGER: dict[str, State] = {HELD: "held", CONFIRMED: "confirmed", ACTIVE: "active"}


@dataclass(frozen=True)
class Window:
    """The window asked for, in epoch seconds: [start, end)."""

    start: int
    end: int


@dataclass(frozen=True)
class Step:
    """Over [start, end): the amounts booked in each state, and what is left free."""

    start: int
    end: int
    booked: dict[State, int]
    free: int

    def document(self) -> dict[str, Any]:
        return {
            "start": instant(self.start),
            "end": instant(self.end),
            **self.booked,
            "free": self.free,
        }


@dataclass
class Entry:
    """One booking on the pool in the window: a session's, or a piece of a maintenance window.
    ``session`` None (and no phase, no owner) is someone else's booking, anonymous."""

    state: State
    start: int
    end: int
    amounts: dict[str, int] = field(default_factory=dict)
    session: str | None = None
    phase: str | None = None
    owner: str | None = None
    own: bool = False
    maintenance: str | None = None

    def document(self, base_url: str, *, show_owner: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "state": self.state,
            "start": instant(self.start),
            "end": instant(self.end),
            "amounts": dict(sorted(self.amounts.items())),
        }
        if self.maintenance is not None:
            doc["maintenance"] = self.maintenance
        if self.session is not None:
            doc.update(
                session=self.session,
                href=f"{base_url}/sessions/{self.session}",
                phase=self.phase,
                own=self.own,
            )
            if show_owner:
                doc["owner"] = self.owner or ANONYMOUS
        return doc


def usage_window(start: str | None, end: str | None, now: int) -> Window:
    """The window of ``from`` and ``to`` (ISO-8601 instants with a zone): from now for a week
    when not given; a 400 naming the parameter when one is no instant, ``to`` is not after
    ``from`` or the window is longer than ``MAX_WINDOW``."""
    first, last = epoch("from", start), epoch("to", end)
    if first is None:
        first = now if last is None else last - DEFAULT_WINDOW
    if last is None:
        last = first + DEFAULT_WINDOW
    if last <= first:
        raise ParameterInvalid("to", "must be after 'from'")
    if last - first > MAX_WINDOW:
        raise ParameterInvalid("to", f"the window may be at most {MAX_WINDOW // 86400} days long")
    return Window(first, last)


def _pool(session: Session, name: str) -> ResourcePool:
    row = session.exec(
        select(ResourcePool).where(ResourcePool.name == name, ResourcePool.enabled)
    ).first()
    if row is None:
        raise NotFound("pool", name)
    return row


def _category(claim: ledger.PoolClaim) -> State:
    return "maintenance" if claim.maintenance is not None else _OF_LEDGER[claim.state]


def steps(
    claims: Sequence[ledger.PoolClaim], resource_class: str, capacity: int, window: Window
) -> list[Step]:
    """The step functions of one class over the window: consecutive steps always differ."""
    usages: dict[State, Usage] = {}
    for state in STATES:
        usages[state] = Usage(
            Claim(c.start, c.end, c.amount, c.offerset if c.state == HELD else None)
            for c in claims
            if c.resource_class == resource_class and _category(c) == state
        )
    points = sorted(
        {window.start}
        | {t for u in usages.values() for t in u.times if window.start < t < window.end}
    )
    changes: list[tuple[int, dict[State, int]]] = []
    for point in points:
        booked = {state: usages[state].at(point) for state in STATES}
        if not changes or changes[-1][1] != booked:
            changes.append((point, booked))
    ends = [point for point, _ in changes[1:]] + [window.end]
    return [
        Step(point, end, booked, max(capacity - sum(booked.values()), 0))
        for (point, booked), end in zip(changes, ends, strict=True)
    ]


def entries(claims: Iterable[ledger.PoolClaim]) -> list[Entry]:
    """The claims as bookings: one per session, one per piece of a maintenance window, each
    with its amounts of every class, in start order."""
    by_key: dict[tuple[Any, ...], Entry] = {}
    for c in claims:
        key: tuple[Any, ...]
        if c.session is not None:
            key = ("session", c.session)
        else:
            key = ("maintenance", c.maintenance, c.start, c.end)
        entry = by_key.get(key)
        if entry is None:
            entry = by_key[key] = Entry(
                _category(c),
                c.start,
                c.end,
                session=c.session,
                phase=c.phase,
                owner=c.owner,
                maintenance=c.maintenance,
            )
        entry.amounts[c.resource_class] = entry.amounts.get(c.resource_class, 0) + c.amount
    return sorted(by_key.values(), key=lambda e: (e.start, e.end, e.state))


def seen_by(entry: Entry, broker: Broker, identity: Identity) -> Entry:
    """The entry as this caller may see it: their own (or, for an admin, anyone's) in full,
    someone else's without its session, phase and owner."""
    if entry.session is None:
        return entry
    own = (entry.owner or ANONYMOUS) == identity.owner
    if own or broker.is_admin(identity):
        entry.own = own
        return entry
    return Entry(entry.state, entry.start, entry.end, entry.amounts)


def pool_usage(
    broker: Broker,
    identity: Identity,
    name: str,
    start: str | None = None,
    end: str | None = None,
    *,
    now: int | None = None,
) -> dict[str, Any]:
    """The usage document of the pool named ``<platform>/<pool>`` over the window."""
    window = usage_window(start, end, int(time.time()) if now is None else now)
    with broker.db.read() as session:
        row = _pool(session, name)
        inventories = list(session.exec(select(Inventory).where(Inventory.pool_id == row.id)))
        claims = ledger.pool_claims(session, row.id, (window.start, window.end))  # type: ignore[arg-type]
    admin = broker.is_admin(identity)
    stepped = {
        inv.resource_class: steps(claims, inv.resource_class, inv.capacity, window)
        for inv in inventories
    }
    busiest = max((len(found) for found in stepped.values()), default=0)
    if busiest > MAX_STEPS:
        raise ParameterInvalid(
            "to", f"the window holds {busiest} changes of usage, more than {MAX_STEPS}: ask a "
            "shorter one"
        )  # fmt: skip
    resources = [
        {
            "resource_class": inv.resource_class,
            "capacity": inv.capacity,
            "unit": UNITS.get(inv.resource_class, inv.resource_class),
            "steps": [s.document() for s in stepped[inv.resource_class]],
        }
        for inv in sorted(inventories, key=lambda i: i.resource_class)
    ]
    listed = [seen_by(e, broker, identity) for e in entries(claims)]
    return {
        "pool": row.name,
        "platform": row.platform,
        # drained by an admin: no new sessions (what is booked stays); GET /node says why
        "state": "drained" if row.drained_at is not None else "open",
        "from": instant(window.start),
        "to": instant(window.end),
        "now": instant(int(time.time()) if now is None else now),
        "resources": resources,
        "bookings": [e.document(broker.base_url, show_owner=admin) for e in listed[:MAX_BOOKINGS]],
        "truncated": len(listed) > MAX_BOOKINGS,
    }
