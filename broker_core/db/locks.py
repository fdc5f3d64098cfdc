"""Row locks, where the database has them.

PostgreSQL takes ``SELECT ... FOR UPDATE`` row locks; SQLite has none (``FOR UPDATE`` does
nothing there), but its writers already run one at a time (BEGIN IMMEDIATE behind the writer
lock, see ``engine``), so a write transaction holds everything it reads. Callers lock the same
way on both, and this module is the one place that tells them apart.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlmodel import Session, select

from .tables import ExecutionSession, OfferSet

S = TypeVar("S", bound=Any)


def serialises_writers(session: Session) -> bool:
    """Whether the session's database runs one writer at a time (SQLite): nothing to lock."""
    return session.get_bind().dialect.name == "sqlite"


def for_update(session: Session, statement: S, **options: Any) -> S:
    """``statement`` taking row locks (``FOR UPDATE``, with its ``options`` such as
    ``skip_locked``) where the database has them."""
    if serialises_writers(session):
        return statement
    return statement.with_for_update(**options)


def lock_session(session: Session, session_uuid: str) -> ExecutionSession | None:
    """The session row, locked after its offer set's row (the lock order shared by accepts,
    cancels and expiries, so they cannot deadlock); None when there is no such session."""
    if serialises_writers(session):
        return session.get(ExecutionSession, session_uuid)
    offerset_uuid = session.exec(
        select(ExecutionSession.offerset_uuid).where(ExecutionSession.uuid == session_uuid)
    ).first()
    if offerset_uuid is None:
        return None
    session.exec(select(OfferSet.uuid).where(OfferSet.uuid == offerset_uuid).with_for_update())
    return session.exec(
        select(ExecutionSession).where(ExecutionSession.uuid == session_uuid).with_for_update()
    ).one()
