"""An independent check of combined bookings (one booking across several sites), straight from
the databases: the aggregator's ``agg_combined`` rows and every node's booking table.

Written without ``aggregator.combined`` (raw SQL on the table names only), so that it catches
bugs instead of repeating them. The rules:
- all or nothing: no node holds a CONFIRMED/ACTIVE booking for a part of a combined booking
  that is not CONFIRMED (failed, aborted, cancelled, rejected, never accepted); and a CONFIRMED
  one has every part booked (CONFIRMED/ACTIVE, or already RELEASED by a session that ran);
- every node's own invariants hold (no overbooking, sessions and bookings agree): the checks
  of ``tests/invariants.py``.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from tests.invariants import FIRM, overbookings, state_problems

COMBINED = text(
    "SELECT c.uuid, c.state, p.name, p.upstream, p.remote_uuid FROM agg_combined c "
    "JOIN agg_combined_part p ON p.combined_uuid = c.uuid"
)
BOOKINGS = text(
    "SELECT s.uuid, s.phase, b.state FROM execution_session s "
    "LEFT JOIN booking b ON b.session_uuid = s.uuid"
)
RAN = ("COMPLETED", "RELEASING", "FAILED")  # a session that ran frees its booking at its end


def combined_problems(aggregator: Connection, nodes: dict[str, Connection]) -> list[str]:
    """Every breach of all-or-nothing and of the nodes' invariants; ``nodes`` by upstream."""
    problems = []
    booked: dict[str, dict[str, tuple[str, str | None]]] = {}
    for name, conn in nodes.items():
        booked[name] = {uuid: (phase, state) for uuid, phase, state in conn.execute(BOOKINGS)}
        problems += [f"{name}: {p}" for p in overbookings(conn)]
        problems += [f"{name}: {p}" for p in state_problems(conn)]
    for uuid, state, part, upstream, remote in aggregator.execute(COMBINED):
        if upstream not in booked:
            continue
        phase, booking = booked[upstream].get(remote, (None, None))
        if state != "CONFIRMED" and booking in FIRM:
            problems.append(f"combined {uuid} is {state} but part {part} is {booking} on "
                            f"{upstream} (session {remote} {phase})")  # fmt: skip
        if state == "CONFIRMED" and booking not in FIRM and phase not in RAN:
            problems.append(f"combined {uuid} is CONFIRMED but part {part} is {booking} on "
                            f"{upstream} (session {remote} {phase})")  # fmt: skip
    return problems
