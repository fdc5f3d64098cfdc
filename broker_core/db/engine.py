"""Database engines: SQLite (the embedded default) or PostgreSQL, chosen by URL.

SQLite transactions that write must start with BEGIN IMMEDIATE, or two writers can both read
the same free capacity before either takes the lock; ``SELECT ... FOR UPDATE`` does nothing
there. Reads use a second engine with plain deferred transactions so they never queue behind
writers (WAL mode lets them run alongside).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlmodel import Session

from ..config import DatabaseConfig


@dataclass
class Database:
    url: str
    reader: Engine
    writer: Engine
    # SQLite has one writer at a time and its busy handler retries with growing sleeps, which
    # starves unlucky threads; queueing this process's writers on a lock keeps waits fair and
    # short. Other processes still contend through SQLite's own lock.
    _write_lock: threading.Lock | None = field(default=None, repr=False)

    @property
    def is_sqlite(self) -> bool:
        return self.writer.dialect.name == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.reader, expire_on_commit=False) as session:
            yield session

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A read transaction whose statements all see one snapshot (SQLite's read transactions
        already do; PostgreSQL needs REPEATABLE READ for it)."""
        with Session(self.reader, expire_on_commit=False) as session:
            if not self.is_sqlite:
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction; committed on success, rolled back on any exception."""
        if self._write_lock is None:
            with Session(self.writer, expire_on_commit=False) as session, session.begin():
                yield session
            return
        with (
            self._write_lock,
            Session(self.writer, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    def dispose(self) -> None:
        self.reader.dispose()
        self.writer.dispose()


def _sqlite_engine(url: str, begin: str, synchronous: str) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8,
        max_overflow=16,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # let us emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        connection.exec_driver_sql(begin)

    return engine


def open_database(config: DatabaseConfig) -> Database:
    url = make_url(config.url)
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise ValueError("an in-memory SQLite database cannot be shared; use a file")
        return Database(
            config.url,
            reader=_sqlite_engine(config.url, "BEGIN", config.sqlite_synchronous),
            writer=_sqlite_engine(config.url, "BEGIN IMMEDIATE", config.sqlite_synchronous),
            _write_lock=threading.Lock(),
        )
    engine = create_engine(
        config.url,
        pool_size=config.pool_size,
        max_overflow=config.pool_size,
        pool_pre_ping=True,
    )
    return Database(config.url, reader=engine, writer=engine)
