"""Independent checks of the booking table's invariants, straight from the database.

Deliberately written without ``broker_core.booking.timeline`` (or anything else from the core
but the table names): an independent reading of the rules catches bugs in the code under test
instead of repeating them. The overbooking check is the project's one: the tests and
``bench/bench_requests.py`` both run it.

The rule (see DESIGN.md, "Booking table"): at every instant, for each pool and resource class,
the CONFIRMED/ACTIVE amounts plus, for each offer set, the largest of its HELD amounts at that
instant stay within the capacity ``(total - reserved) * allocation_ratio``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from itertools import pairwise

from sqlalchemy import Connection, text

FIRM = ("CONFIRMED", "ACTIVE")
FINISHED_PHASES = ("REJECTED", "EXPIRED", "CANCELLED", "COMPLETED", "FAILED")
# an accepted session, as the lifecycle engine moves it on
WAITING_PHASES = ("ACCEPTED", "WAITING")  # booking CONFIRMED
RUNNING_PHASES = ("PREPARING", "AVAILABLE", "RUNNING", "RELEASING")  # booking ACTIVE
ACCEPTED_PHASES = (*WAITING_PHASES, *RUNNING_PHASES)
EXPECTED_BOOKING = {
    **dict.fromkeys(WAITING_PHASES, "CONFIRMED"),
    **dict.fromkeys(RUNNING_PHASES, "ACTIVE"),
}

# one statement, so one consistent snapshot on SQLite and PostgreSQL alike
LIVE_ALLOCATIONS = text(
    """
    SELECT a.pool_id, a.resource_class, a.amount, b.start_at, b.end_at, b.state,
           b.offerset_uuid, b.id
    FROM allocation a JOIN booking b ON b.id = a.booking_id
    WHERE b.state IN ('HELD', 'CONFIRMED', 'ACTIVE')
    """
)
CAPACITIES = text(
    "SELECT pool_id, resource_class, total, reserved, allocation_ratio FROM inventory"
)


@dataclass(frozen=True)
class Row:
    amount: int
    start: int
    end: int
    state: str
    offerset: str
    booking: int


def capacities(conn: Connection) -> dict[tuple[int, str], int]:
    return {
        (pool, rc): int((total - reserved) * ratio)
        for pool, rc, total, reserved, ratio in conn.execute(CAPACITIES)
    }


@dataclass(frozen=True)
class Overbooking:
    """A pool's resource class at an instant where the live bookings exceed its capacity."""

    pool: int
    resource_class: str
    at: int
    capacity: int
    firm: int  # the CONFIRMED/ACTIVE amounts
    holds: list[int]  # per offer set holding some, the largest of its holds, ascending
    bookings: list[tuple[int, str, int, str]]  # (id, state, amount, offer set) of every claim

    @property
    def used(self) -> int:
        return self.firm + sum(self.holds)

    def __str__(self) -> str:
        return (
            f"pool {self.pool} {self.resource_class} at {self.at}: {self.used} in use > capacity "
            f"{self.capacity} (firm {self.firm}, holds {self.holds}; bookings {self.bookings})"
        )


def find_overbookings(
    conn: Connection, caps: dict[tuple[int, str], int] | None = None
) -> list[Overbooking]:
    """Every (pool, class, instant) where the live bookings exceed capacity.

    Usage is a step function that only changes where a booking starts or ends, so it is checked
    at every such breakpoint, swept in time order so that the benchmark's 100 000 bookings take
    seconds.
    """
    caps = capacities(conn) if caps is None else caps
    rows: dict[tuple[int, str], list[Row]] = defaultdict(list)
    for pool, rc, amount, start, end, state, offerset, booking in conn.execute(LIVE_ALLOCATIONS):
        rows[(pool, rc)].append(Row(amount, start, end, state, offerset, booking))
    found = []
    for (pool, rc), claims in rows.items():
        found += _sweep(pool, rc, claims, caps.get((pool, rc), 0))
    return found


def _sweep(pool: int, rc: str, claims: list[Row], capacity: int) -> list[Overbooking]:
    starting: dict[int, list[int]] = defaultdict(list)
    ending: dict[int, list[int]] = defaultdict(list)
    for index, c in enumerate(claims):
        starting[c.start].append(index)
        ending[c.end].append(index)
    live: dict[int, Row] = {}  # the claims covering the instant, by index
    firm = 0
    holds: dict[str, Counter[int]] = {}  # per offer set holding some, its live holds' amounts
    largest: dict[str, int] = {}  # per offer set, its largest live hold
    held = 0  # the sum of those
    found = []
    for instant in sorted(starting.keys() | ending.keys()):
        changed = set()
        for index in ending.get(instant, ()):
            c = live.pop(index, None)
            if c is None:
                continue  # never live: it ended where (or before) it started
            if c.state in FIRM:
                firm -= c.amount
            else:
                amounts = holds[c.offerset]
                amounts[c.amount] -= 1
                if not amounts[c.amount]:
                    del amounts[c.amount]
                changed.add(c.offerset)
        for index in starting.get(instant, ()):
            c = claims[index]
            if c.end <= instant:
                continue  # covers no instant
            live[index] = c
            if c.state in FIRM:
                firm += c.amount
            else:
                holds.setdefault(c.offerset, Counter())[c.amount] += 1
                changed.add(c.offerset)
        for offerset in changed:
            now_largest = max(holds[offerset], default=0)
            held += now_largest - largest.get(offerset, 0)
            largest[offerset] = now_largest
            if not holds[offerset]:
                del holds[offerset], largest[offerset]
        if firm + held > capacity:
            bookings = sorted((c.booking, c.state, c.amount, c.offerset[:8]) for c in live.values())
            found.append(
                Overbooking(pool, rc, instant, capacity, firm, sorted(largest.values()), bookings)
            )
    return found


def overbookings(conn: Connection, caps: dict[tuple[int, str], int] | None = None) -> list[str]:
    """Every (pool, class, instant) where the live bookings exceed capacity, described."""
    return [str(found) for found in find_overbookings(conn, caps)]


def state_problems(conn: Connection) -> list[str]:
    """Sessions, offer sets and bookings that disagree with each other."""
    problems = []
    rows = conn.execute(
        text(
            "SELECT s.uuid, s.offerset_uuid, s.phase, b.state, s.due_at, s.series_uuid, "
            "b.start_at, b.end_at FROM execution_session s "
            "LEFT JOIN booking b ON b.session_uuid = s.uuid"
        )
    ).all()
    # a recurring series books nothing itself: each occurrence (series_uuid naming it) has
    # its own session and booking, and the series counts as its offer set's one offer
    series = {row[5] for row in rows if row[5] is not None}
    problems += _series_problems(rows, series)
    rows = [row[:5] for row in rows if row[0] not in series]
    # a probe's offers hold nothing: no booking until one is accepted (a fresh claim)
    probes = {
        uuid
        for uuid, record in conn.execute(
            text("SELECT uuid, record FROM execution_session WHERE phase IN "
                 "('OFFERED', 'EXPIRED', 'REJECTED', 'CANCELLED')")
        )
        if (json.loads(record) if isinstance(record, str) else record or {}).get("probe")
    }  # fmt: skip
    accepted: dict[str, list[str]] = defaultdict(list)
    bookings: dict[str, list[str | None]] = defaultdict(list)
    cleaning = set()
    occurrences = {row[0] for row in conn.execute(
        text("SELECT uuid FROM execution_session WHERE series_uuid IS NOT NULL")
    )}  # fmt: skip
    for uuid, offerset, phase, state, due in rows:
        bookings[uuid].append(state)
        if phase in (*ACCEPTED_PHASES, "COMPLETED", "FAILED") and uuid not in occurrences:
            accepted[offerset].append(uuid)
        if due is not None:
            cleaning.add(uuid)
    phases = {uuid: phase for uuid, _, phase, _, _ in rows}
    # a direct execution that could not start is a FAILED session of a NO offer set, never booked
    refused = {
        uuid
        for (uuid,) in conn.execute(
            text(
                "SELECT s.uuid FROM execution_session s JOIN offer_set o "
                "ON o.uuid = s.offerset_uuid WHERE o.result = 'NO' AND s.phase = 'FAILED'"
            )
        )
    }
    for offerset, uuids in accepted.items():
        if len(uuids) > 1:
            problems.append(f"offer set {offerset} has {len(uuids)} accepted sessions")
    for uuid, phase in phases.items():
        states = bookings[uuid]
        if uuid in refused or uuid in probes:
            if states != [None]:
                problems.append(f"refused direct session {uuid} has bookings {states}")
            continue
        wanted = EXPECTED_BOOKING.get(phase)
        if wanted is not None and states != [wanted]:
            problems.append(f"{phase} session {uuid} has bookings {states}")
        elif phase == "CANCELLED" and uuid in cleaning and states[0] in ("CONFIRMED", "ACTIVE"):
            continue  # the engine is still stopping its work; it frees the booking after
        elif phase in FINISHED_PHASES and states != ["RELEASED"]:
            problems.append(f"{phase} session {uuid} has bookings {states}")
        elif phase == "OFFERED" and states != ["HELD"]:
            problems.append(f"OFFERED session {uuid} has bookings {states}")
    return problems


def _series_problems(rows: list, series: set[str]) -> list[str]:
    """A series has no booking of its own, and the held bookings of one series' occurrences
    never overlap each other: the pools count an offer set's holds by their largest at each
    instant, which is what one series holds only when no two of its occurrences overlap."""
    problems = []
    held: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for uuid, _, _, state, _, parent, start, end in rows:
        if uuid in series and state is not None:
            problems.append(f"series {uuid} has a booking of its own ({state})")
        if parent is not None and state == "HELD":
            held[parent].append((start, end))
    accepted: dict[str, set[str]] = defaultdict(set)  # per offer set, the series accepted
    for _, offerset, phase, _, _, parent, _, _ in rows:
        if parent is not None and phase not in ("OFFERED", "EXPIRED", "REJECTED"):
            accepted[offerset].add(parent)
    for offerset, parents in accepted.items():
        if len(parents) > 1:
            problems.append(f"offer set {offerset} has {len(parents)} accepted series")
    for parent, spans in held.items():
        spans.sort()
        for (_, end), (start, _) in pairwise(spans):
            if start < end:
                problems.append(f"series {parent} holds overlapping occurrences")
                break
    return problems
