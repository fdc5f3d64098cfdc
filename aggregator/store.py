"""Reads and writes of the aggregator's mapping tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from broker_core.db import migrate

from . import tables

SCHEMA = migrate.Schema(Path(__file__).resolve().parent / "migrations", "aggregator_version")


@dataclass(frozen=True)
class RemoteSession:
    uuid: str
    offerset_uuid: str
    upstream: str
    remote_uuid: str
    remote_url: str
    rank: int


class Store:
    def __init__(self, url: str, *, migrate_on_start: bool = True):
        if migrate_on_start:
            migrate.upgrade(url, schema=SCHEMA)
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":

            @event.listens_for(self.engine, "connect")
            def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

    def save_offerset(
        self,
        uuid: str,
        *,
        created_at: int,
        expires_at: int,
        result: str,
        messages: list[dict[str, Any]],
        sessions: list[RemoteSession],
        own_session: dict[str, Any] | None = None,
    ) -> None:
        """An offer set, the upstream sessions behind its offers and, when it has one, the
        aggregator's own session (a session document with its ``meta.uuid``)."""
        with self.engine.begin() as c:
            c.execute(insert(tables.offer_set), [{
                "uuid": uuid, "created_at": created_at, "expires_at": expires_at,
                "result": result, "messages": messages,
            }])  # fmt: skip
            if sessions:
                c.execute(insert(tables.session), [s.__dict__ for s in sessions])
            if own_session is not None:
                c.execute(insert(tables.own_session), [{
                    "uuid": own_session["meta"]["uuid"], "offerset_uuid": uuid,
                    "document": own_session,
                }])  # fmt: skip

    def offerset(self, uuid: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(tables.offer_set).where(tables.offer_set.c.uuid == uuid)).first()
        return dict(row._mapping) if row else None

    def sessions_of(self, offerset_uuid: str) -> list[RemoteSession]:
        with self.engine.connect() as c:
            rows = c.execute(
                select(tables.session)
                .where(tables.session.c.offerset_uuid == offerset_uuid)
                .order_by(tables.session.c.rank)
            ).all()
        return [RemoteSession(**row._mapping) for row in rows]

    def session(self, uuid: str) -> RemoteSession | None:
        """An upstream's session the aggregator offered, or an occurrence of a series it did."""
        with self.engine.connect() as c:
            row = c.execute(select(tables.session).where(tables.session.c.uuid == uuid)).first()
            if row is not None:
                return RemoteSession(**row._mapping)
            o = tables.occurrence.c
            found = c.execute(
                select(o.uuid, o.offerset_uuid, o.upstream, o.remote_uuid, o.remote_url).where(
                    o.uuid == uuid
                )
            ).first()
        return RemoteSession(*found, rank=-1) if found else None

    def series_of(self, uuid: str) -> str | None:
        """The aggregator's uuid of the series this occurrence belongs to, if it is one."""
        o = tables.occurrence.c
        with self.engine.connect() as c:
            return c.execute(select(o.series_uuid).where(o.uuid == uuid)).scalar()

    def save_occurrences(self, rows: list[dict[str, Any]]) -> None:
        """The occurrences of a series as the aggregator serves them (those it knows already
        are left as they are: their uuids are derived from the series', so they never change)."""
        o = tables.occurrence.c
        with self.engine.begin() as c:
            known = set(c.execute(
                select(o.uuid).where(o.uuid.in_([r["uuid"] for r in rows]))
            ).scalars())  # fmt: skip
            new = [r for r in rows if r["uuid"] not in known]
            if new:
                try:
                    with c.begin_nested():
                        c.execute(insert(tables.occurrence), new)
                except IntegrityError:  # another request saved them meanwhile: the same rows
                    pass

    def local_sessions(
        self, remotes: list[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, str]]:
        """The aggregator's uuid and offer set of each of these (upstream, remote uuid) it
        offered itself."""
        found = self.remote_sessions(remotes)
        return {key: (s.uuid, s.offerset_uuid) for key, s in found.items()}

    def remote_sessions(
        self, remotes: list[tuple[str, str]]
    ) -> dict[tuple[str, str], RemoteSession]:
        """The sessions the aggregator offered among these (upstream, remote uuid) (by
        ``ix_agg_session_remote``)."""
        if not remotes:
            return {}
        s = tables.session
        wanted = set(remotes)
        with self.engine.connect() as c:
            rows = c.execute(
                select(s).where(s.c.remote_uuid.in_(sorted({uuid for _, uuid in remotes})))
            ).all()
        found = (RemoteSession(**row._mapping) for row in rows)
        return {(r.upstream, r.remote_uuid): r for r in found
                if (r.upstream, r.remote_uuid) in wanted}  # fmt: skip

    def own_session(self, uuid: str) -> dict[str, Any] | None:
        """One of the aggregator's own sessions, as it was answered; None when it is not."""
        column = tables.own_session.c.document
        with self.engine.connect() as c:
            row = c.execute(select(column).where(tables.own_session.c.uuid == uuid)).first()
        return dict(row[0]) if row else None

    def claim_acceptance(self, offerset_uuid: str, session_uuid: str) -> bool:
        """Mark this offer as the set's accepted one, unless another already is."""
        column = tables.offer_set.c.accepted_uuid
        with self.engine.begin() as c:
            result = c.execute(
                update(tables.offer_set)
                .where(
                    tables.offer_set.c.uuid == offerset_uuid,
                    or_(column.is_(None), column == session_uuid),
                )
                .values(accepted_uuid=session_uuid)
            )
            return result.rowcount == 1

    def release_acceptance(self, offerset_uuid: str, session_uuid: str) -> None:
        with self.engine.begin() as c:
            c.execute(
                update(tables.offer_set)
                .where(
                    tables.offer_set.c.uuid == offerset_uuid,
                    tables.offer_set.c.accepted_uuid == session_uuid,
                )
                .values(accepted_uuid=None)
            )

    def ready(self) -> str | None:
        """None when the database answers with the current schema; else what is wrong."""
        try:
            current = migrate.current_revision(self.engine, SCHEMA)
        except Exception as exc:  # any database error means not ready
            return f"database unavailable: {type(exc).__name__}"
        head = migrate.head_revision(SCHEMA)
        return None if current == head else f"database schema at {current}, expected {head}"

    def dispose(self) -> None:
        self.engine.dispose()
