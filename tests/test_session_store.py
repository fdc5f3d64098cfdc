"""Session rows have one store (``broker_core.sessions.store``), and an accept is one ledger
operation."""

from __future__ import annotations

import ast
from pathlib import Path

from sqlmodel import select

from broker_core.db.tables import Booking, ExecutionSession, ResourcePool
from tests.conftest import ACCEPT, request_doc

ROOT = Path(__file__).resolve().parent.parent / "broker_core"


def _generation(broker) -> int:
    with broker.db.read() as session:
        return session.exec(select(ResourcePool.generation)).one()


def test_an_accept_confirms_and_frees_the_siblings_in_one_change_of_the_pool(client, broker):
    """Confirming the booking and releasing the siblings' holds is one trip to the pools: one
    lock, one new generation (two before)."""
    offers = client.post("/requests", json=request_doc(cores=(2, 2))).json()["offers"]
    assert len(offers) >= 2
    before = _generation(broker)
    chosen = offers[0]["meta"]["uuid"]
    r = client.post(f"/sessions/{chosen}", json=ACCEPT)
    assert r.status_code == 200 and r.json()["phase"] == "ACCEPTED"
    assert _generation(broker) == before + 1
    with broker.db.read() as session:
        states = dict(session.exec(select(Booking.session_uuid, Booking.state)).all())
        phases = dict(session.exec(select(ExecutionSession.uuid, ExecutionSession.phase)).all())
    assert states[chosen] == "CONFIRMED"
    for offer in offers[1:]:
        assert states[offer["meta"]["uuid"]] == "RELEASED"
        assert phases[offer["meta"]["uuid"]] == "REJECTED"


def test_an_accept_of_an_offer_no_longer_held_changes_nothing(client, broker):
    offers = client.post("/requests", json=request_doc()).json()["offers"]
    chosen = offers[0]["meta"]["uuid"]
    with broker.db.write() as session:
        booking = session.exec(select(Booking).where(Booking.session_uuid == chosen)).one()
        booking.state = "RELEASED"
        session.add(booking)
    before = _generation(broker)
    r = client.post(f"/sessions/{chosen}", json=ACCEPT)
    assert r.status_code == 409 and "no longer held" in r.json()["detail"]
    assert _generation(broker) == before
    with broker.db.read() as session:
        held = session.exec(select(Booking.state).where(Booking.session_uuid != chosen)).all()
    assert set(held) <= {"HELD"}


# --- the rule: one store -------------------------------------------------------------------------

# where session rows may still be written: the store, and the ledger's expiry of replaced offer
# sets (the booking layer, below the sessions)
ALLOWED = {"sessions/store.py", "booking/holds.py", "db/locks.py"}


def _writes_sessions(tree: ast.AST, *, locks: bool) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("update", "insert"):
            arg = node.args[0] if node.args else None
            text = ast.unparse(arg) if arg is not None else ""
            if text.startswith("ExecutionSession"):
                found.append(f"{node.func.id}({text})")  # type: ignore[attr-defined]
        if isinstance(node, ast.Assign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for part in ast.walk(target):
                    if isinstance(part, ast.Attribute) and part.attr == "generation":
                        found.append(ast.unparse(node))
        if locks and isinstance(node, ast.Attribute) and node.attr == "is_sqlite":
            found.append("is_sqlite")
    return found


def test_session_rows_are_written_by_the_store_alone():
    """No module but the store writes session rows or bumps their generation, and none tells
    SQLite from PostgreSQL to lock them (``db.locks`` does)."""
    offenders = {}
    for path in sorted(ROOT.rglob("*.py")):
        name = str(path.relative_to(ROOT))
        if name in ALLOWED or name.startswith(("migrations/", "db/")):
            continue
        tree = ast.parse(path.read_text())
        found = _writes_sessions(tree, locks=name.startswith(("sessions/", "lifecycle/")))
        if name.startswith(("sessions/", "lifecycle/", "offers/")) and found:
            offenders[name] = found
    assert offenders == {}
