"""The database layer: one writer at a time across processes, checkpoints off the write path,
and which commits wait for the disk."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from broker_core.config import DatabaseConfig
from broker_core.db.engine import DURABLE, Checkpointer, open_database
from broker_core.offers.service import request_offers
from broker_core.sessions.updates import expire_due, update_session
from tests.conftest import ACCEPT, request_doc


@contextmanager
def database(path: Path) -> Iterator[Any]:
    db = open_database(DatabaseConfig(url=f"sqlite:///{path}"))
    try:
        yield db
    finally:
        db.dispose()


def _make_table(db: Any) -> None:
    with db.write() as session:
        session.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))


def test_writers_of_two_processes_take_turns(tmp_path: Path):
    """Two Database objects on one file stand for two processes (each opens its own lock
    file); the second writer waits for the first to commit, without SQLite's busy sleeps."""
    path = tmp_path / "two.db"
    with database(path) as first, database(path) as second:
        _make_table(first)
        inside, events = threading.Event(), []

        def hold() -> None:
            with first.write() as session:
                session.execute(text("INSERT INTO t VALUES (1)"))
                inside.set()
                time.sleep(0.45)  # SQLite's busy handler would sleep past it
                events.append(("first commits", time.monotonic()))

        holder = threading.Thread(target=hold)
        holder.start()
        inside.wait(5)
        with second.write() as session:
            events.append(("second starts", time.monotonic()))
            count = session.execute(text("SELECT count(*) FROM t")).scalar()
        holder.join()
    assert [name for name, _ in events] == ["first commits", "second starts"]
    assert count == 1, "the second writer saw the first one's commit"
    assert events[1][1] - events[0][1] < 0.05, "woken at once, not after a busy-handler sleep"


def test_the_writer_lock_is_released_when_a_transaction_fails(tmp_path: Path):
    path = tmp_path / "fail.db"
    with database(path) as db:
        _make_table(db)
        try:
            with db.write() as session:
                session.execute(text("INSERT INTO t VALUES (1)"))
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        done = threading.Event()
        threading.Thread(target=lambda: (_make_table(db), done.set())).start()
        assert done.wait(5), "a failed transaction left the writer lock held"
        with db.read() as session:
            assert session.execute(text("SELECT count(*) FROM t")).scalar() == 0


def _checkpointed_rows(path: Path) -> int:
    """Rows in the database file itself, ignoring what is still only in the log."""
    connection = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return connection.execute("SELECT count(*) FROM t").fetchone()[0]
    except sqlite3.OperationalError:  # the table itself is not checkpointed yet
        return 0
    finally:
        connection.close()


ROWS = 1500


def test_checkpoints_run_in_the_background_not_in_the_writers(tmp_path: Path):
    path = tmp_path / "wal.db"
    with database(path) as db:
        db._checkpointer.stop()  # writers alone: they must leave the log to the checkpointer
        _make_table(db)
        for i in range(ROWS):  # more log pages than SQLite's default checkpoint threshold
            with db.write(durable=False) as session:
                session.execute(text("INSERT INTO t VALUES (:i)"), {"i": i})
        assert _checkpointed_rows(path) == 0
        assert (tmp_path / "wal.db-wal").stat().st_size > 0
        background = Checkpointer(str(path), interval=0.05).start()
        try:
            deadline = time.monotonic() + 5
            while _checkpointed_rows(path) < ROWS and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            background.stop()
        assert _checkpointed_rows(path) == ROWS


def test_a_database_checkpoints_its_log_by_itself(tmp_path: Path):
    path = tmp_path / "own.db"
    with database(path) as db:
        _make_table(db)
        with db.write() as session:
            session.execute(text("INSERT INTO t VALUES (1)"))
        deadline = time.monotonic() + 5
        while _checkpointed_rows(path) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _checkpointed_rows(path) == 1


def test_only_holds_are_committed_without_waiting_for_the_disk(database_url, broker_factory):
    broker = broker_factory(database_url)
    sqlite = broker.db.is_sqlite
    probe = "PRAGMA synchronous" if sqlite else "SHOW synchronous_commit"
    seen = {}
    for durable in (True, False):
        with broker.db.write(durable=durable) as session:
            seen[durable] = str(session.execute(text(probe)).scalar())
    # SQLite: 2 is FULL, 1 is NORMAL
    assert seen == ({True: "2", False: "1"} if sqlite else {True: "on", False: "off"})
    # after a hasty transaction, the connection it used commits durably again
    with broker.db.write() as session:
        assert str(session.execute(text(probe)).scalar()) == seen[True]


def test_durable_offers_makes_every_commit_wait_for_the_disk(database_url, broker_factory):
    broker = broker_factory(database_url, database={"url": database_url, "durable_offers": True})
    probe = "PRAGMA synchronous" if broker.db.is_sqlite else "SHOW synchronous_commit"
    with broker.db.write(durable=False) as session:
        assert str(session.execute(text(probe)).scalar()) in ("2", "on")


def test_every_transaction_that_confirms_a_booking_waits_for_the_disk(database_url, broker_factory):
    """Watch every statement: any write of a CONFIRMED or ACTIVE booking, or of an ACCEPTED
    session, must run in a durable transaction; offers and expiries need not."""
    broker = broker_factory(database_url)
    confirming, hasty = [], []

    def watch(conn, _cursor, statement, parameters, _context, _many):  # type: ignore[no-untyped-def]
        values = parameters if isinstance(parameters, list | tuple) else [parameters]
        flat = []
        for v in values:
            flat.extend(
                v.values() if isinstance(v, dict) else v if isinstance(v, list | tuple) else [v]
            )
        durable = conn.get_execution_options().get(DURABLE, True)
        writes = statement.lstrip().upper().startswith(("INSERT", "UPDATE"))
        if writes and {"CONFIRMED", "ACTIVE", "ACCEPTED"} & {str(v) for v in flat}:
            confirming.append((durable, statement.split("(")[0][:60]))
        if writes and not durable:
            hasty.append(statement.split("(")[0][:60])

    event.listen(broker.db.writer, "before_cursor_execute", watch)
    answer = request_offers(broker, request_doc(cores=(2, 2), duration="PT1H"))
    offers = [o["meta"]["uuid"] for o in answer["offers"]]
    update_session(broker, offers[0], ACCEPT)
    request_offers(broker, request_doc(cores=(1, 1), duration="PT1H"), direct=True)
    request_offers(broker, request_doc(cores=(1, 1), duration="PT1H"))
    expire_due(broker, now=int(time.time()) + 86_400)
    assert confirming, "the spy saw no confirmation at all"
    assert all(durable for durable, _ in confirming), confirming
    assert hasty, "offers and expiries were committed durably too"
