"""Database engines: SQLite (the embedded default) or PostgreSQL, chosen by URL.

SQLite transactions that write must start with BEGIN IMMEDIATE, or two writers can both read
the same free capacity before either takes the lock; ``SELECT ... FOR UPDATE`` does nothing
there. Reads use a second engine with plain deferred transactions so they never queue behind
writers (WAL mode lets them run alongside).

SQLite's own wait for its write lock is a busy handler that polls with growing sleeps (1, 2,
5 ... 100 ms), so writers of several processes (``server.workers``) would spend most of their
time asleep. Writers therefore queue first on a lock of this process and then on an exclusive
``flock`` of a file beside the database, which wakes the next one the moment it is free.

Only one writer runs at a time, so whatever a write transaction waits for, every writer waits
for. Two waits are taken off that path:

- WAL checkpoints (copying the log back into the database, with two fsyncs) are run by a
  background thread (:class:`Checkpointer`) instead of by whichever commit crosses the
  threshold; writers checkpoint themselves only as a backstop, if the log grows very long.
- A transaction that only holds capacity for a while (offers, refusals, expiries) may be
  committed without waiting for the disk (``durable=False``): SQLite's ``synchronous=NORMAL``
  for it, PostgreSQL's ``synchronous_commit = off``. A crash of this process loses nothing; a
  power failure (or a crash of the PostgreSQL server) may forget the last moments' offers,
  never a confirmed booking, because a durable commit (an accept) flushes the whole log up to
  itself, earlier commits included.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from sqlalchemy.pool import NullPool
from sqlmodel import Session

from ..config import ConfigError, DatabaseConfig

log = logging.getLogger(__name__)
CHECKPOINT_INTERVAL = 0.5  # seconds
BACKSTOP_CHECKPOINT_PAGES = 16_384  # 64 MiB of log at 4 KiB pages

try:
    import fcntl
except ImportError:  # not on POSIX: SQLite's busy handler alone
    fcntl = None  # type: ignore[assignment]


class WriterLock:
    """One writer at a time over all processes on this database: an exclusive ``flock`` of
    ``path``, held by one thread of this process at a time."""

    def __init__(self, path: str):
        self.path = path
        self._threads = threading.Lock()
        self._fd: int | None = None
        self._pid = 0

    def __enter__(self) -> WriterLock:
        self._threads.acquire()
        try:
            if fcntl is not None:
                fcntl.flock(self._descriptor(), fcntl.LOCK_EX)  # waits without the GIL
        except BaseException:
            self._threads.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if fcntl is not None and self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def _descriptor(self) -> int:
        # flock belongs to an open file, so each process (workers are spawned or forked)
        # opens its own
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        return self._fd


@dataclass
class Database:
    url: str
    reader: Engine
    writer: Engine
    # SQLite has one writer at a time: they queue on this lock (see the module docstring)
    _write_lock: WriterLock | None = field(default=None, repr=False)
    _checkpointer: Checkpointer | None = field(default=None, repr=False)
    durable_offers: bool = False  # every commit waits for the disk

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
    def write(self, *, durable: bool = True) -> Iterator[Session]:
        """A write transaction; committed on success, rolled back on any exception.

        With ``durable=False`` the commit does not wait for the disk (see the module
        docstring): only for transactions whose loss in a power failure is harmless.
        """
        bind = self.writer if durable else self._hasty_writer
        with (
            self._write_lock or nullcontext(),
            Session(bind, expire_on_commit=False) as session,
            session.begin(),
        ):
            yield session

    @cached_property
    def _hasty_writer(self) -> Engine:
        if self.durable_offers:
            return self.writer
        return self.writer.execution_options(**{DURABLE: False})

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        if self._write_lock is not None:
            self._write_lock.close()
        self.reader.dispose()
        self.writer.dispose()


# an execution option of the engine a transaction runs on: False commits without waiting for
# the disk
DURABLE = "ebroker_durable"


class Checkpointer:
    """Checkpoints a SQLite database's write-ahead log in the background, so that no writer
    (holding the one write lock everybody queues on) pays for it.

    PASSIVE checkpoints copy what no reader still needs and never wait for readers or writers.
    """

    def __init__(self, path: str, interval: float = CHECKPOINT_INTERVAL):
        self.path = path
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)

    def start(self) -> Checkpointer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop.wait(self.interval):
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # retried at the next interval
                    log.warning("WAL checkpoint of %s failed: %s", self.path, exc)
        finally:
            connection.close()


def _sqlite_engine(url: str, begin: str, synchronous: str) -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8,
        max_overflow=16,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # let us emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # the Checkpointer does this; a writer only when the log has grown this long
        cursor.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_CHECKPOINT_PAGES}")
        cursor.close()
        record.info["synchronous"] = synchronous

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        # set before BEGIN: changed inside a transaction, it would not apply to its commit
        wanted = synchronous
        if synchronous == "FULL" and not connection.get_execution_options().get(DURABLE, True):
            wanted = "NORMAL"
        info = connection.connection.info
        if info.get("synchronous") != wanted:
            connection.exec_driver_sql(f"PRAGMA synchronous={wanted}")
            info["synchronous"] = wanted
        connection.exec_driver_sql(begin)

    return engine


def _postgresql_engine(config: DatabaseConfig) -> Engine:
    engine = create_engine(
        config.url,
        pool_size=config.pool_size,
        max_overflow=config.pool_size,
        pool_pre_ping=True,
    )

    @event.listens_for(engine, "begin")
    def _on_begin(connection):  # type: ignore[no-untyped-def]
        if not connection.get_execution_options().get(DURABLE, True):
            connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")

    return engine


class DatabaseUnavailable(ConfigError):
    """The database cannot be reached or opened; the message names it (password masked) and
    says why in a few words."""


PROBE_TIMEOUT = 10  # seconds a server may take to answer the first connection


def masked_url(url: str) -> str:
    """The URL as it may be printed: ``postgresql+psycopg://user:***@host:5432/db``."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<not a database URL>"


def _reason(exc: BaseException, password: str | None) -> str:
    """The driver's reason in a few words: the last clause of its first line."""
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
    reason = lines[0].rsplit(": ", 1)[-1].strip().rstrip(".") or lines[0].strip()
    reason = re.sub(r"^\[Errno -?[0-9]+\]\s*", "", reason)  # "[Errno -2] Name or service..."
    if password:
        reason = reason.replace(password, "***")
    return reason[:200]


def check_reachable(url: str) -> None:
    """Connect once, or raise :class:`DatabaseUnavailable` naming the database and why."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"database.url: not a database URL: {url[:200]!r}") from None
    shown = masked_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        directory = Path(parsed.database).parent
        if not directory.is_dir():
            raise DatabaseUnavailable(
                f"cannot open database {shown}: directory {directory} does not exist"
            )
    connect_args = {"connect_timeout": PROBE_TIMEOUT} if backend == "postgresql" else {}
    try:
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
    except (NoSuchModuleError, ImportError):
        raise DatabaseUnavailable(f"cannot open database {shown}: no driver for it") from None
    except ArgumentError as exc:
        raise DatabaseUnavailable(f"cannot open database {shown}: {exc}") from None
    try:
        with engine.connect():
            pass
    except (DBAPIError, OSError) as exc:
        raise DatabaseUnavailable(
            f"cannot reach database {shown}: {_reason(exc, parsed.password)}"
        ) from None
    finally:
        engine.dispose()


def open_database(config: DatabaseConfig) -> Database:
    url = make_url(config.url)
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise ValueError("an in-memory SQLite database cannot be shared; use a file")
        return Database(
            config.url,
            reader=_sqlite_engine(config.url, "BEGIN", config.sqlite_synchronous),
            writer=_sqlite_engine(config.url, "BEGIN IMMEDIATE", config.sqlite_synchronous),
            _write_lock=WriterLock(f"{url.database}-writer.lock"),
            _checkpointer=Checkpointer(url.database).start(),
            durable_offers=config.durable_offers,
        )
    engine = _postgresql_engine(config)
    return Database(config.url, reader=engine, writer=engine, durable_offers=config.durable_offers)
