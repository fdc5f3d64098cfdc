#!/usr/bin/env python3
"""Benchmark a broker node over real HTTP: POST /requests latency and throughput against a
pre-filled booking table, and an accept race of 64 clients, on SQLite and PostgreSQL.

    python bench/bench_requests.py [--db sqlite|postgres|both] [--sizes 1000,10000,100000] [--quick]

For each database and table size it

1. creates a fresh database (a SQLite file in a temporary directory, or a PostgreSQL database
   ``ebroker_bench_<random>`` on ``--pg-url``, dropped at the end), writes a node config (one
   simulated platform, one pool of 1024 cores / 4096 GiB, ``server.validate_responses: false``),
   runs ``ebroker db upgrade -c <config>`` and lets the node's own ``sync_pools`` create the pool;
2. seeds N bookings with bulk inserts (SQLAlchemy core ``insert`` + executemany): mostly RELEASED
   history, a share CONFIRMED in the 7-day look-ahead (placed without ever exceeding 75 % of the
   pool, so the table is partly busy but never overbooked), a few ACTIVE now, a few open offer
   sets with HELD bookings; every booking with its offer_set, execution_session and allocations;
3. starts ``ebroker serve -c <config>`` on a free port, waits for GET /health/ready;
4. drives POST /requests from one aiohttp ClientSession with a fixed number of requests in flight
   (1..4 cores in a random 2-hour window in the next days), REJECTing the first offer of each YES
   (``reject-first``; the other offers of the set stay HELD until they expire), or REJECTing
   every offer (``--client reject-all``), or leaving every offer to expire (the ``expire``
   variant, run at the largest size);
5. at the largest size, races 64 clients accepting/rejecting offers of the same offer sets while
   others create new offer sets for the same scarce window;
6. stops the node and checks the booking table independently: at every breakpoint, per pool and
   resource class, CONFIRMED/ACTIVE amounts + per offer set the largest HELD amount <= capacity;
   and that no offer set has two accepted offers.

It prints markdown tables and ``overbookings: N``; it exits 1 on any overbooking or double
accept, 2 on server errors (5xx), tracebacks in the node's log, or a failed run.

Diagnosis: ``--profile-dir DIR`` attaches py-spy (``pip install py-spy``) to the node and prints
the functions where its time goes; ``--sqlite-analyze`` runs ANALYZE on the seeded SQLite table
(the node never does); ``--sqlite-synchronous`` overrides the node's ``sqlite_synchronous``,
``--durable-offers`` makes offers wait for the disk too, and ``--hold PT10S`` makes the offers
expire during the run, so that the expiry of as many offer sets as are made is measured too.
``EBROKER_BENCH_WORKERS`` and ``EBROKER_BENCH_THREADS`` set the node's ``server.workers`` and
``server.threads``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import platform
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import sqlalchemy as sa  # noqa: E402
import yaml  # noqa: E402
from common import ServerProcess, fmt, free_port, iso, percentile  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from tests.invariants import find_overbookings  # noqa: E402

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
KIND = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/"
DOCKER = KIND + "executable/docker-container.yaml"
COMPUTE = KIND + "compute/simple-compute-resource.yaml"
ACCEPT = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
REJECT = {"kind": "uri:enum-value-update", "path": "phase", "value": "REJECTED"}

PLATFORM, POOL = "sim", "main"
CORES, MEMORY_PER_CORE = 1024, 4
LOOKAHEAD = 7 * 86400
HOLD = 300  # the node's default offer hold (offers.hold)
WORKERS = int(os.environ.get("EBROKER_BENCH_WORKERS", "1"))  # the node's server.workers
THREADS = int(os.environ.get("EBROKER_BENCH_THREADS", "4"))  # and server.threads
GRID = 300  # seeded live bookings are aligned to 5 minutes
FIRM_LIMIT = 0.75  # seeded CONFIRMED/ACTIVE never exceed this share of the pool at any instant
TARGET_P99_MS, TARGET_RPS, TARGET_SIZE = 50.0, 200.0, 100_000


# ----------------------------------------------------------------------------------------------
# small helpers


def ebroker_command() -> list[str]:
    """The ``ebroker`` console script of this interpreter, else the module."""
    script = Path(sys.executable).with_name("ebroker")
    if script.exists():
        return [str(script)]
    found = shutil.which("ebroker")
    return [found] if found else [sys.executable, "-m", "ebroker"]


# ----------------------------------------------------------------------------------------------
# databases


class BenchDatabase:
    """A fresh database for one run: a SQLite file or a new PostgreSQL database."""

    def __init__(self, kind: str, workdir: Path, pg_url: str, label: str):
        self.kind = kind
        self.name = f"ebroker_bench_{uuidlib.uuid4().hex[:12]}"
        if kind == "sqlite":
            self.url = f"sqlite:///{workdir / (self.name + '.db')}"
            self._admin = None
        else:
            self._admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
            with self._admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
            self.url = (
                make_url(pg_url).set(database=self.name).render_as_string(hide_password=False)
            )
        self.label = label

    def drop(self) -> None:
        if self._admin is not None:
            with self._admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self._admin.dispose()
            self._admin = None
        elif self.kind == "sqlite":
            path = Path(make_url(self.url).database or "")
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    Path(str(path) + suffix).unlink()


def node_config(db_url: str, port: int, workdir: Path) -> dict[str, Any]:
    return {
        "site": {"name": "ebroker-bench"},
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "validate_responses": False,
            "workers": WORKERS,
            "threads": THREADS,
        },
        "database": {"url": db_url},
        # one anonymous client stands for many users: no hold limits
        "holds": {"anonymous": {}},
        "platforms": [
            {
                "name": PLATFORM,
                "type": "simulated",
                "options": {"storage_path": str(workdir)},
                "pools": [
                    {
                        "name": POOL,
                        "inventories": {
                            "cores": {"total": CORES},
                            "memory": {"total": CORES * MEMORY_PER_CORE},
                        },
                    }
                ],
            }
        ],
    }


# ----------------------------------------------------------------------------------------------
# seeding


class Tracker:
    """Cores in use per 5-minute bucket (seeded live bookings are aligned to the grid)."""

    def __init__(self, origin: int, end: int):
        self.origin = origin
        self.used = [0] * ((end - origin) // GRID + 1)

    def _range(self, start: int, end: int) -> range:
        return range((start - self.origin) // GRID, (end - self.origin) // GRID)

    def fits(self, start: int, end: int, amount: int, limit: int) -> bool:
        r = self._range(start, end)
        return max(self.used[r.start : r.stop]) + amount <= limit

    def add(self, start: int, end: int, amount: int) -> None:
        for i in self._range(start, end):
            self.used[i] += amount


@dataclass
class SeedInfo:
    bookings: int = 0
    offer_sets: int = 0
    released: int = 0
    confirmed: int = 0
    active: int = 0
    held: int = 0
    mean_busy: float = 0.0  # mean share of the pool CONFIRMED/ACTIVE over the look-ahead
    peak_busy: float = 0.0
    seconds: float = 0.0


class Seeder:
    """Builds the rows of a realistic booking table and bulk-inserts them in chunks."""

    CHUNK = 10_000  # bookings per executemany batch

    def __init__(self, url: str, now: int, rng: random.Random, analyze: bool = False):
        self.url, self.now, self.rng, self.analyze = url, now, rng, analyze
        self.engine = sa.create_engine(url)
        from broker_core.db.tables import Allocation, Booking, ExecutionSession, OfferSet

        self.t_offerset = OfferSet.__table__
        self.t_session = ExecutionSession.__table__
        self.t_booking = Booking.__table__
        self.t_alloc = Allocation.__table__
        self.next_booking = 1
        self.next_alloc = 1
        self.rows: dict[str, list[dict[str, Any]]] = {
            "offer_set": [],
            "session": [],
            "booking": [],
            "alloc": [],
        }
        self.info = SeedInfo()
        self.pool_id = 0

    # -- pools: the node's own code makes them, exactly as at start-up
    def sync_pools(self, config: dict[str, Any]) -> None:
        from sqlmodel import Session

        from broker_core.booking import ledger
        from broker_core.config import parse_config

        parsed = parse_config(config)
        with Session(self.engine) as session, session.begin():
            for p in parsed.platforms:
                ledger.sync_pools(session, p.name, p.pools, self.now)
        with self.engine.connect() as conn:
            self.pool_id = conn.execute(
                sa.text("SELECT id FROM resource_pool WHERE name = :n"), {"n": f"{PLATFORM}/{POOL}"}
            ).scalar_one()

    # -- row builders
    def _offer_set(self, created: int, owner: str) -> str:
        u = str(uuidlib.uuid4())
        self.rows["offer_set"].append({
            "uuid": u, "result": "YES", "owner": owner, "created_at": created,
            "expires_at": created + HOLD,
            "document": {"meta": {"messages": []}, "request": {"meta": {"name": "seeded"}}},
        })  # fmt: skip
        self.info.offer_sets += 1
        return u

    def _booking(
        self, offerset: str, owner: str, created: int, state: str, phase: str,
        start: int, end: int, cores: int, expires: int,
    ) -> None:  # fmt: skip
        su = str(uuidlib.uuid4())
        self.rows["session"].append({
            "uuid": su, "offerset_uuid": offerset, "phase": phase, "platform": PLATFORM,
            "owner": owner, "created_at": created, "modified_at": created, "expires_at": expires,
            "prepare_at": start, "start_at": min(start + 40, end - 1), "end_at": end,
            "generation": 0 if phase == "OFFERED" else 1,
            "document": {
                "meta": {"messages": []},
                "site": {"name": "ebroker-bench", "platform": PLATFORM,
                         "pools": [f"{PLATFORM}/{POOL}"]},
                "compute": {"kind": COMPUTE, "cores": {"min": cores, "max": cores},
                            "memory": {"min": cores * MEMORY_PER_CORE,
                                       "max": cores * MEMORY_PER_CORE}},
            },
        })  # fmt: skip
        bid = self.next_booking
        self.next_booking += 1
        self.rows["booking"].append({
            "id": bid, "session_uuid": su, "offerset_uuid": offerset, "state": state,
            "start_at": start, "end_at": end, "expires_at": expires if state == "HELD" else None,
            "created_at": created, "modified_at": created,
        })  # fmt: skip
        for rc, amount in (("cores", cores), ("memory", cores * MEMORY_PER_CORE)):
            self.rows["alloc"].append({
                "id": self.next_alloc, "booking_id": bid, "pool_id": self.pool_id,
                "resource_class": rc, "amount": amount,
            })  # fmt: skip
            self.next_alloc += 1
        self.info.bookings += 1
        key = {"RELEASED": "released", "CONFIRMED": "confirmed", "ACTIVE": "active",
               "HELD": "held"}[state]  # fmt: skip
        setattr(self.info, key, getattr(self.info, key) + 1)

    def _duration(self) -> int:
        return self.rng.choice((900, 1800, 3600, 3600, 7200, 10800, 14400))

    def _flush(self, conn: sa.Connection, force: bool = False) -> None:
        if not force and len(self.rows["booking"]) < self.CHUNK:
            return
        for table, key in (
            (self.t_offerset, "offer_set"),
            (self.t_session, "session"),
            (self.t_booking, "booking"),
            (self.t_alloc, "alloc"),
        ):
            if self.rows[key]:
                conn.execute(table.insert(), self.rows[key])
                self.rows[key] = []

    # -- the table
    def _plan_live(self, n: int, grid_now: int) -> list[tuple[int, str, list[tuple]]]:
        """The live offer sets, placed on the pool without overbooking it: a list of
        (created, owner, [(state, phase, start, end, cores, expires), ...])."""
        rng, now = self.rng, self.now
        horizon = now + LOOKAHEAD
        firm = Tracker(grid_now - 2 * 86400, horizon + 2 * 86400)  # CONFIRMED/ACTIVE
        total = Tracker(grid_now - 2 * 86400, horizon + 2 * 86400)  # and every hold in full
        firm_limit = int(CORES * FIRM_LIMIT)
        budget = n // 2  # at least half of the table is history
        plan: list[tuple[int, str, list[tuple]]] = []
        used = 0

        def owner() -> str:
            return f"user{rng.randint(1, 500)}"

        # ACTIVE now: started in the last two hours, ending within the next hours
        for _ in range(max(1, round(n * 0.005))):
            if used >= budget:
                break
            cores = rng.randint(1, 8)
            start = grid_now - rng.randint(0, 24) * GRID
            end = max(start + self._duration() // GRID * GRID, grid_now + GRID)
            if firm.fits(start, end, cores, firm_limit):
                firm.add(start, end, cores)
                total.add(start, end, cores)
                created = start - rng.randint(600, 86400)
                plan.append((created, owner(), [("ACTIVE", "RUNNING", start, end, cores,
                                                 created + HOLD)]))  # fmt: skip
                used += 1
        # open offer sets: 1..4 HELD alternatives each (counted here as if all were taken)
        for _ in range(max(1, round(n * 0.004))):
            if used >= budget:
                break
            cores, dur = rng.randint(1, 8), self._duration()
            created = now - rng.randint(0, HOLD - 60)
            start0 = grid_now + GRID * rng.randint(2, (LOOKAHEAD - 5 * dur) // GRID)
            slots = [(start0 + i * dur, start0 + (i + 1) * dur)
                     for i in range(min(rng.randint(1, 4), budget - used))]  # fmt: skip
            if all(total.fits(s, e, cores, CORES) for s, e in slots):
                for s, e in slots:
                    total.add(s, e, cores)
                plan.append((created, owner(), [("HELD", "OFFERED", s, e, cores, created + HOLD)
                                                for s, e in slots]))  # fmt: skip
                used += len(slots)
        # CONFIRMED in the look-ahead (capacity permitting), with their rejected siblings
        for _ in range(round(n * 0.08)):
            if used >= budget:
                break
            cores, dur = rng.randint(1, 8), self._duration()
            for _try in range(8):
                start = grid_now + GRID * rng.randint(2, (LOOKAHEAD - dur) // GRID)
                if firm.fits(start, start + dur, cores, firm_limit) and total.fits(
                    start, start + dur, cores, CORES
                ):
                    break
            else:
                continue
            firm.add(start, start + dur, cores)
            total.add(start, start + dur, cores)
            created = now - rng.randint(60, 3 * 86400)
            rows = [("CONFIRMED", "ACCEPTED", start, start + dur, cores, created + HOLD)]
            for i in range(min(rng.randint(0, 3), budget - used - 1)):
                s = start + (i + 1) * dur
                rows.append(("RELEASED", "REJECTED", s, s + dur, cores, created + HOLD))
            plan.append((created, owner(), rows))
            used += len(rows)
        look = firm._range(grid_now, grid_now + LOOKAHEAD)
        window = firm.used[look.start : look.stop]
        self.info.mean_busy = sum(window) / (len(window) * CORES)
        self.info.peak_busy = max(window) / CORES
        return plan

    def seed(self, n: int) -> SeedInfo:
        t0 = time.perf_counter()
        rng, now = self.rng, self.now
        grid_now = now // GRID * GRID
        live = self._plan_live(n, grid_now)
        n_history = n - sum(len(rows) for _, _, rows in live)
        with self.engine.begin() as conn:
            # history first (lower ids, as in a table that grew over time), all RELEASED
            while self.info.bookings < n_history:
                k = min(rng.randint(1, 4), n_history - self.info.bookings)
                start = grid_now - rng.randint(86400, 180 * 86400) // 60 * 60
                created = start - rng.randint(600, 7 * 86400)
                owner = f"user{rng.randint(1, 500)}"
                os_uuid = self._offer_set(created, owner)
                accepted = rng.random() < 0.7
                dur, cores = self._duration(), rng.randint(1, 8)
                for i in range(k):
                    s = start + i * dur
                    if accepted and i == 0:
                        phase = rng.choices(("COMPLETED", "CANCELLED", "FAILED"), (85, 10, 5))[0]
                    else:
                        phase = "REJECTED" if accepted or rng.random() < 0.3 else "EXPIRED"
                    self._booking(os_uuid, owner, created, "RELEASED", phase, s, s + dur, cores,
                                  created + HOLD)  # fmt: skip
                self._flush(conn)
            for created, owner, rows in live:
                os_uuid = self._offer_set(created, owner)
                for state, phase, start, end, cores, expires in rows:
                    self._booking(os_uuid, owner, created, state, phase, start, end, cores,
                                  expires)  # fmt: skip
                self._flush(conn)
            self._flush(conn, force=True)
            if self.engine.dialect.name == "postgresql":
                # explicit ids were inserted: move the sequences past them
                for table in ("booking", "allocation"):
                    conn.exec_driver_sql(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"
                    )
        if self.engine.dialect.name == "postgresql" or self.analyze:
            # PostgreSQL: autovacuum analyzes a table this size within a minute anyway.
            # SQLite never analyzes by itself (the node runs no ANALYZE / PRAGMA optimize),
            # so there it only happens with --sqlite-analyze.
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("ANALYZE")
        self.engine.dispose()
        self.info.seconds = time.perf_counter() - t0
        return self.info


# ----------------------------------------------------------------------------------------------
# the independent check


@dataclass
class Check:
    overbookings: int = 0
    worst: list[str] = field(default_factory=list)
    double_accepts: int = 0
    leaked_holds: int = 0
    live: dict[str, int] = field(default_factory=dict)


def check_table(url: str) -> Check:
    """The booking table's invariant, checked by the tests' own checker
    (``tests.invariants.find_overbookings``), and no double accepts or leaked holds. Reads the
    tables directly."""
    result = Check()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            found = find_overbookings(conn)
            result.live = dict(
                conn.exec_driver_sql(
                    "SELECT state, COUNT(*) FROM booking WHERE state IN "
                    "('HELD', 'CONFIRMED', 'ACTIVE') GROUP BY state"
                ).all()
            )
            result.double_accepts = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM (SELECT offerset_uuid FROM execution_session "
                "WHERE phase NOT IN ('OFFERED', 'REJECTED', 'EXPIRED') "
                "GROUP BY offerset_uuid HAVING COUNT(*) > 1) t"
            ).scalar_one()
            result.double_accepts += conn.exec_driver_sql(
                "SELECT COUNT(*) FROM (SELECT offerset_uuid FROM booking "
                "WHERE state IN ('CONFIRMED', 'ACTIVE') "
                "GROUP BY offerset_uuid HAVING COUNT(*) > 1) t"
            ).scalar_one()
            result.leaked_holds = conn.exec_driver_sql(
                "SELECT COUNT(*) FROM booking b JOIN execution_session s "
                "ON s.uuid = b.session_uuid WHERE b.state = 'HELD' AND s.phase <> 'OFFERED'"
            ).scalar_one()
    finally:
        engine.dispose()
    result.overbookings = len(found)
    result.worst = [
        f"pool {o.pool} {o.resource_class} at {iso(o.at)}: {o.firm} firm + {sum(o.holds)} held "
        f"> capacity {o.capacity}"
        for o in found[:5]
    ]
    return result


# ----------------------------------------------------------------------------------------------
# profiling (py-spy raw/collapsed stacks)


def profile_summary(path: Path, top: int = 25) -> str:
    """The functions with the most samples on the stack (inclusive) and on top (self), over
    the node's busy samples (threads waiting idle are not sampled by py-spy without --idle)."""
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [
            f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].split("/")[-1] + ")"
            for f in stack.split(";")[1:]
        ]  # drop the thread/process frame
        if not frames:
            continue
        total += n
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
    lines = [f"  profile {path.name}: {total} samples",
             "  inclusive (share of samples with the function on the stack):"]  # fmt: skip
    lines += [f"    {c / total:6.1%}  {f}" for f, c in inclusive.most_common(top)]
    lines.append("  self (share of samples on top of the stack):")
    lines += [f"    {c / total:6.1%}  {f}" for f, c in own.most_common(top)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# the node


class Node(ServerProcess):
    def __init__(self, config: dict[str, Any], workdir: Path, tag: str,
                 profile: Path | None = None):  # fmt: skip
        super().__init__(workdir / f"{tag}.log")
        self.profile = profile
        self.profiler: subprocess.Popen | None = None
        self.config_path = workdir / f"{tag}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.port = config["server"]["port"]
        self.base = f"http://127.0.0.1:{self.port}"

    def upgrade(self) -> None:
        out = subprocess.run(
            [*ebroker_command(), "db", "upgrade", "-c", str(self.config_path)],
            capture_output=True, text=True, cwd=REPO, timeout=120,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"ebroker db upgrade failed:\n{out.stdout}\n{out.stderr}")

    def start(self, timeout: float = 90) -> None:
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*ebroker_command(), "serve", "-c", str(self.config_path), "--log-level", "WARNING"],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        import urllib.error
        import urllib.request

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base + "/health/ready", timeout=2) as r:
                    if r.status == 200:
                        self._start_profiler()
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"node not ready after {timeout}s:\n{self.log_tail()}")

    def _start_profiler(self) -> None:
        """py-spy attached to the node (sampling; collapsed stacks written when it exits).

        Only the thread holding the GIL is sampled: one process runs Python on one core at a
        time, so that is what bounds its throughput (waits on SQLite or fsync do not)."""
        if self.profile is None or self.proc is None:
            return
        spy = shutil.which("py-spy")
        if spy is None:
            raise RuntimeError("--profile-dir needs py-spy (pip install py-spy)")
        self.profile.parent.mkdir(parents=True, exist_ok=True)
        self.profiler = subprocess.Popen(
            [spy, "record", "--pid", str(self.proc.pid), "--format", "raw", "--rate", "200",
             "--gil", "--nonblocking", "-o", str(self.profile)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1.0)  # let it attach

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        super().stop()
        if self.profiler is not None:
            try:
                self.profiler.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.profiler.send_signal(signal.SIGINT)
                self.profiler.wait(timeout=10)
            self.profiler = None
            if self.profile is not None and self.profile.exists():
                print(profile_summary(self.profile), flush=True)


# ----------------------------------------------------------------------------------------------
# load: POST /requests


def request_doc(rng: random.Random, now: float, cores: tuple[int, int], window_start: float,
                window_hours: float = 2, duration: str = "PT1H") -> dict[str, Any]:  # fmt: skip
    return {
        "executable": {"kind": DOCKER, "image": {"locations": ["localhost/busybox:latest"]}},
        "compute": {
            "kind": COMPUTE,
            "cores": {"min": cores[0], "max": cores[1]},
            "memory": {"min": cores[0] * MEMORY_PER_CORE, "max": cores[1] * MEMORY_PER_CORE},
        },
        "schedule": {
            "requested": {
                "start": f"{iso(window_start)}/{iso(window_start + window_hours * 3600)}",
                "duration": duration,
            }
        },
    }


@dataclass
class LoadResult:
    mode: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)  # ms, POST /requests
    statuses: collections.Counter = field(default_factory=collections.Counter)
    update_statuses: collections.Counter = field(default_factory=collections.Counter)
    warmup_statuses: collections.Counter = field(default_factory=collections.Counter)
    yes: int = 0
    elapsed: float = 0.0
    node_cpu: float = math.nan  # CPU seconds the node's processes spent over the run

    @property
    def count(self) -> int:
        return len(self.latencies)

    @property
    def rps(self) -> float:
        return self.count / self.elapsed if self.elapsed else math.nan

    @property
    def errors(self) -> int:
        return sum(
            v
            for c in (self.statuses, self.update_statuses, self.warmup_statuses)
            for k, v in c.items()
            if k >= 500
        )


async def _post(http: aiohttp.ClientSession, url: str, doc: dict) -> tuple[int, Any, float]:
    t0 = time.perf_counter()
    async with http.post(
        url, data=json.dumps(doc), headers={"Content-Type": "application/json"}
    ) as r:
        body = await r.read()
    ms = (time.perf_counter() - t0) * 1000
    try:
        parsed = json.loads(body) if body else None
    except ValueError:
        parsed = None
    return r.status, parsed, ms


async def load_run(base: str, *, mode: str, concurrency: int, count: int, duration: float,
                   seed: int, warmup: int,
                   cpu_seconds: Callable[[], float] = lambda: math.nan) -> LoadResult:  # fmt: skip
    rng = random.Random(seed)
    result = LoadResult(mode, concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency * 2, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)

    def make() -> dict[str, Any]:
        now = time.time()
        n = rng.randint(1, 4)
        start = now + rng.uniform(3600, 6 * 86400)
        return request_doc(rng, now, (n, n), start, 2, rng.choice(("PT30M", "PT1H", "PT2H")))

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        # warm up (not measured): connections, the node's lazy imports and caches
        warm_end = time.perf_counter() + 10

        async def warm() -> None:
            for _ in range(max(1, warmup // concurrency)):
                if time.perf_counter() > warm_end:
                    break
                status, body, _ = await _post(http, base + "/requests", make())
                result.warmup_statuses[status] += 1
                if status == 200 and body["result"] == "YES" and mode != "expire":
                    await _post(
                        http, f"{base}/sessions/{body['offers'][0]['meta']['uuid']}", REJECT
                    )

        await asyncio.gather(*(warm() for _ in range(concurrency)))

        issued = 0
        cpu_before = cpu_seconds()
        t0 = time.perf_counter()
        deadline = t0 + duration
        last_done = t0

        async def worker() -> None:
            nonlocal issued, last_done
            while issued < count and time.perf_counter() < deadline:
                issued += 1
                status, body, ms = await _post(http, base + "/requests", make())
                last_done = time.perf_counter()
                result.latencies.append(ms)
                result.statuses[status] += 1
                if status != 200 or not isinstance(body, dict):
                    continue
                if body.get("result") == "YES":
                    result.yes += 1
                    offers = [o["meta"]["uuid"] for o in body["offers"]]
                    rejected = {"reject-first": offers[:1], "reject-all": offers}.get(mode, [])
                    for u in rejected:
                        st, _, _ = await _post(http, f"{base}/sessions/{u}", REJECT)
                        result.update_statuses[st] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.elapsed = last_done - t0
        result.node_cpu = cpu_seconds() - cpu_before
    return result


# ----------------------------------------------------------------------------------------------
# the accept race


@dataclass
class RaceResult:
    clients: int
    accept_latencies: list[float] = field(default_factory=list)
    accept_statuses: collections.Counter = field(default_factory=collections.Counter)
    reject_statuses: collections.Counter = field(default_factory=collections.Counter)
    create_statuses: collections.Counter = field(default_factory=collections.Counter)
    setup_statuses: collections.Counter = field(default_factory=collections.Counter)
    creates_yes: int = 0
    won: int = 0  # offer sets whose offer this benchmark's clients got accepted
    repeats: int = 0  # 200 for an offer another client had already won (idempotent repeat)
    double_wins: int = 0  # two different offers of one set accepted: a bug
    prepared: int = 0  # offer sets made in the set-up
    elapsed: float = 0.0

    @property
    def accepts(self) -> int:
        return sum(self.accept_statuses.values())

    @property
    def lost(self) -> int:
        return self.accept_statuses.get(409, 0)

    @property
    def errors(self) -> int:
        return sum(
            v
            for c in (
                self.accept_statuses,
                self.reject_statuses,
                self.create_statuses,
                self.setup_statuses,
            )
            for k, v in c.items()
            if k >= 500
        )


class RaceGroup:
    """The racers for one offer set: each waits until all have picked their task, then fires."""

    def __init__(self, offerset: str, size: int):
        self.offerset = offerset
        self.size = size
        self.arrived = 0
        self.go = asyncio.Event()


async def accept_race(base: str, *, clients: int, offer_sets: int, prefill_seconds: float,
                      duration: float, seed: int, racers: int = 3,
                      create_every: int = 16) -> RaceResult:  # fmt: skip
    """Set-up (not timed): up to ``offer_sets`` offer sets, a quarter of them for one scarce
    2-hour window (32..128 cores each, so the window runs out), the rest for random windows.
    Then ``clients`` concurrent clients race: ``racers`` of them at once for each offer set
    (a random offer of the set each, so sometimes the same offer, sometimes siblings; 90 %
    ACCEPT, 10 % REJECT), and one operation in ``create_every`` is a new request for the scarce
    window, competing for its capacity with the holds being accepted and freed."""
    rng = random.Random(seed)
    result = RaceResult(clients)
    scarce = (time.time() + 2 * 86400) // 3600 * 3600 + 3600
    tasks: collections.deque = collections.deque()
    winner: dict[str, str] = {}  # offer set -> the session that won it
    connector = aiohttp.TCPConnector(limit=clients + 8)
    timeout = aiohttp.ClientTimeout(total=300)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:

        def enqueue(body: dict[str, Any]) -> None:
            offers = [o["meta"]["uuid"] for o in body["offers"]]
            group = RaceGroup(body["meta"]["uuid"], racers)
            for _ in range(racers):
                tasks.append((group, rng.choice(offers), ACCEPT if rng.random() < 0.9 else REJECT))

        async def create(scarce_window: bool, record: bool) -> None:
            if scarce_window:
                doc = request_doc(rng, time.time(), (32, 128), scarce, 2, "PT1H")
            else:
                n = rng.randint(1, 8)
                when = time.time() + rng.uniform(3600, 6 * 86400)
                doc = request_doc(rng, time.time(), (n, n), when, 2, "PT1H")
            status, body, _ = await _post(http, base + "/requests", doc)
            (result.create_statuses if record else result.setup_statuses)[status] += 1
            if status == 200 and body.get("result") == "YES":
                if record:
                    result.creates_yes += 1
                enqueue(body)

        # set-up, 16 at a time, bounded in time
        made = 0
        setup_end = time.perf_counter() + prefill_seconds

        async def prefill() -> None:
            nonlocal made
            while made < offer_sets and time.perf_counter() < setup_end:
                made += 1
                await create(made % 4 == 0, record=False)

        await asyncio.gather(*(prefill() for _ in range(16)))
        result.prepared = len(tasks) // racers

        # the race
        start = asyncio.Event()
        deadline = math.inf
        ops = 0

        async def racer() -> None:
            nonlocal ops
            await start.wait()
            while tasks and time.perf_counter() < deadline:
                ops += 1
                if ops % create_every == 0:
                    await create(True, record=True)
                    continue
                group, session_uuid, action = tasks.popleft()
                group.arrived += 1
                if group.arrived >= group.size:
                    group.go.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(group.go.wait(), 1.0)
                status, _, ms = await _post(http, f"{base}/sessions/{session_uuid}", action)
                if action is REJECT:
                    result.reject_statuses[status] += 1
                    continue
                result.accept_statuses[status] += 1
                result.accept_latencies.append(ms)
                if status == 200:
                    won = winner.get(group.offerset)
                    if won is None:
                        winner[group.offerset] = session_uuid
                        result.won += 1
                    elif won == session_uuid:
                        result.repeats += 1
                    else:
                        result.double_wins += 1

        workers = [asyncio.create_task(racer()) for _ in range(clients)]
        await asyncio.sleep(0)
        t0 = time.perf_counter()
        deadline = t0 + duration
        start.set()
        await asyncio.gather(*workers)
        result.elapsed = time.perf_counter() - t0
    return result


# ----------------------------------------------------------------------------------------------
# orchestration


@dataclass
class Row:
    db: str
    size: int
    seed: SeedInfo
    load: LoadResult
    live_after: dict[str, int]
    check: Check
    race: RaceResult | None = None
    tracebacks: int = 0  # in the node's log


def run_one(kind: str, size: int, mode: str, args: argparse.Namespace, workdir: Path,
            with_race: bool) -> Row:  # fmt: skip
    tag = f"{kind}-{size}-{mode}"
    db = BenchDatabase(kind, workdir, args.pg_url, tag)
    node = None
    try:
        port = free_port()
        config = node_config(db.url, port, workdir)
        if kind == "sqlite" and args.sqlite_synchronous:
            config["database"]["sqlite_synchronous"] = args.sqlite_synchronous
        if args.durable_offers:
            config["database"]["durable_offers"] = True
        if args.hold:
            config["offers"] = {"hold": args.hold}
        profile = Path(args.profile_dir) / f"{tag}.txt" if args.profile_dir else None
        node = Node(config, workdir, tag, profile)
        node.upgrade()  # the schema, as `ebroker db upgrade` makes it
        now = int(time.time())
        seeder = Seeder(db.url, now, random.Random(args.seed + size),
                        analyze=args.sqlite_analyze)  # fmt: skip
        seeder.sync_pools(config)
        info = seeder.seed(size)
        print(
            f"  [{tag}] seeded {info.bookings} bookings ({info.offer_sets} offer sets; "
            f"{info.confirmed} CONFIRMED, {info.active} ACTIVE, {info.held} HELD) "
            f"in {info.seconds:.1f}s; look-ahead busy {info.mean_busy:.0%} mean, "
            f"{info.peak_busy:.0%} peak",
            flush=True,
        )
        node.start()
        load = asyncio.run(
            load_run(
                node.base, mode=mode, concurrency=args.concurrency, count=args.requests,
                duration=args.duration, seed=args.seed, warmup=args.warmup,
                cpu_seconds=node.cpu_seconds,
            )
        )  # fmt: skip
        print(
            f"  [{tag}] {load.count} POST /requests in {load.elapsed:.1f}s: "
            f"p50 {fmt(percentile(load.latencies, 50))} ms, p99 "
            f"{fmt(percentile(load.latencies, 99))} ms, {fmt(load.rps)} req/s, "
            f"node CPU {fmt(load.node_cpu / load.count * 1000 if load.count else math.nan)} "
            f"ms per request, statuses {dict(load.statuses)}",
            flush=True,
        )
        race = None
        if with_race:
            race = asyncio.run(
                accept_race(
                    node.base, clients=args.race_clients, offer_sets=args.race_offer_sets,
                    prefill_seconds=args.race_setup_seconds, duration=args.race_duration,
                    seed=args.seed + 1,
                )
            )  # fmt: skip
            print(
                f"  [{tag}] race over {race.prepared} offer sets: {race.accepts} accepts in "
                f"{race.elapsed:.1f}s, won {race.won}, "
                f"lost {race.lost}, statuses {dict(race.accept_statuses)}",
                flush=True,
            )
        node.stop()
        if node.tracebacks():
            print(f"  [{tag}] server log has tracebacks:\n{node.log_tail(60)}", flush=True)
        check = check_table(db.url)
        return Row(kind, size, info, load, check.live, check, race, node.tracebacks())
    finally:
        if node is not None:
            node.stop()
        if not args.keep:
            db.drop()


def markdown(rows: list[Row], args: argparse.Namespace) -> str:
    out = []
    out.append("### POST /requests")
    out.append("")
    out.append(
        "| db | bookings | live at start (CONF/ACT/HELD) | busy (mean/peak) | seed s | client | "
        "in flight | requests | p50 ms | p99 ms | req/s | YES % | 5xx | target p99<50ms, >=200/s |"
    )
    out.append("|" + "---|" * 14)
    for r in rows:
        s, ld = r.seed, r.load
        p50, p99 = percentile(ld.latencies, 50), percentile(ld.latencies, 99)
        target = ""
        if r.db == "sqlite" and r.size >= TARGET_SIZE:
            ok = p99 < TARGET_P99_MS and ld.rps >= TARGET_RPS
            target = ("MET" if ok else "MISSED") + f" (p99 {fmt(p99)} ms, {fmt(ld.rps)}/s)"
        elif r.size >= TARGET_SIZE:
            target = "(target is for SQLite)"
        out.append(
            f"| {r.db} | {r.size:,} | {s.confirmed}/{s.active}/{s.held} | "
            f"{s.mean_busy:.0%}/{s.peak_busy:.0%} | {s.seconds:.1f} | {ld.mode} | "
            f"{ld.concurrency} | {ld.count} | {fmt(p50)} | {fmt(p99)} | {fmt(ld.rps)} | "
            f"{fmt(100 * ld.yes / ld.count if ld.count else math.nan, 0)} | {ld.errors} | "
            f"{target} |"
        )
    races = [r for r in rows if r.race is not None]
    if races:
        out.append("")
        out.append(
            f"### Accept race ({args.race_clients} clients; 3 racers at once per offer set, each "
            "for a random offer of the set, 10% of them REJECT; 1 operation in 16 is a new "
            "request for the same scarce 2-hour window)"
        )
        out.append("")
        out.append(
            "| db | bookings | clients | offer sets raced | accept POSTs | accepts/s | won | "
            "lost (409) | repeat 200 | other | accept p50 ms | accept p99 ms | "
            "offer sets created (YES/all) | rejects (200/409) | 5xx |"
        )
        out.append("|" + "---|" * 15)
        for r in races:
            rc = r.race
            assert rc is not None
            other = rc.accepts - rc.accept_statuses.get(200, 0) - rc.lost
            out.append(
                f"| {r.db} | {r.size:,} | {rc.clients} | {rc.prepared} | {rc.accepts} | "
                f"{fmt(rc.accepts / rc.elapsed if rc.elapsed else math.nan)} | {rc.won} | "
                f"{rc.lost} | {rc.repeats} | {other} | {fmt(percentile(rc.accept_latencies, 50))} "
                f"| {fmt(percentile(rc.accept_latencies, 99))} | "
                f"{rc.creates_yes}/{sum(rc.create_statuses.values())} | "
                f"{rc.reject_statuses.get(200, 0)}/{rc.reject_statuses.get(409, 0)} | "
                f"{rc.errors} |"
            )
    out.append("")
    out.append("### Booking table after each run (independent check)")
    out.append("")
    out.append("| db | bookings | client | live after (CONF/ACT/HELD) | overbooked breakpoints "
               "| double accepts | holds of finished sessions |")  # fmt: skip
    out.append("|" + "---|" * 7)
    for r in rows:
        lv = r.check.live
        out.append(
            f"| {r.db} | {r.size:,} | {r.load.mode} | {lv.get('CONFIRMED', 0)}/"
            f"{lv.get('ACTIVE', 0)}/{lv.get('HELD', 0)} | {r.check.overbookings} | "
            f"{r.check.double_accepts} | {r.check.leaked_holds} |"
        )
    return "\n".join(out)


def environment_note(args: argparse.Namespace) -> str:
    cpus = os.cpu_count()
    pg = ""
    if "postgres" in args.dbs:
        with contextlib.suppress(Exception):
            e = sa.create_engine(args.pg_url)
            with e.connect() as c:
                pg = c.exec_driver_sql("SHOW server_version").scalar_one()
            e.dispose()
    return (
        f"machine: {cpus} cores ({platform.machine()}), Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}" + (f", PostgreSQL {pg}" if pg else "") + ". "
        f"Client (aiohttp, one ClientSession) and node (uvicorn, {WORKERS} worker(s) of "
        f"{THREADS} threads) share these {cpus} cores. Pool: {CORES} cores / "
        f"{CORES * MEMORY_PER_CORE} GiB; node defaults otherwise (7-day look-ahead, holds "
        f"{args.hold or 'PT5M'}, SQLite synchronous={args.sqlite_synchronous or 'FULL'}, "
        f"offers {'durable' if args.durable_offers else 'not waiting for the disk'}"
        f"{', ANALYZEd SQLite table' if args.sqlite_analyze else ''}). Each request: "
        f"1..4 cores, a random 2-hour window in the next 6 days, duration 30 min..2 h; "
        f"`reject-first` REJECTs the first offer of a YES (its siblings stay HELD until they "
        f"expire), `reject-all` REJECTs every offer, `expire` leaves all offers to expire. "
        f"Latency is client-side, per POST /requests, including queueing at the node. "
        f"Per run: up to {args.requests} "
        f"requests or {args.duration:g} s with {args.concurrency} in flight, after "
        f"{args.warmup} warm-up requests."
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--sizes", default=None, help="booking table sizes (default 1000,10000,100000)")
    p.add_argument("--quick", action="store_true", help="small sizes, a few seconds (smoke run)")
    p.add_argument("--pg-url", default=os.environ.get("EBROKER_BENCH_PG_URL", DEFAULT_PG))
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    p.add_argument("--requests", type=int, default=None, help="POST /requests per run")
    p.add_argument("--duration", type=float, default=None, help="max seconds per run")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--race-clients", type=int, default=64)
    p.add_argument(
        "--race-offer-sets",
        type=int,
        default=None,
        help="offer sets made before the race (3 racers each)",
    )
    p.add_argument(
        "--race-setup-seconds", type=float, default=None, help="time limit for making them"
    )
    p.add_argument("--race-duration", type=float, default=None)
    p.add_argument(
        "--client",
        choices=("reject-first", "reject-all", "expire"),
        default="reject-first",
        help="what the main client does with a YES: REJECT its first offer (default), REJECT "
        "every offer, or leave them to expire",
    )
    p.add_argument("--expire-variant", choices=("largest", "all", "none"), default=None,
                   help="also run the leave-offers-to-expire client (default: at the largest "
                        "size; none with --quick)")  # fmt: skip
    p.add_argument(
        "--hold", default=None,
        help="offers.hold for the node, e.g. PT10S, so that offers also expire during the run "
             "(default: the node's, PT5M)",
    )  # fmt: skip
    p.add_argument("--durable-offers", action="store_true",
                   help="database.durable_offers: offers wait for the disk too")  # fmt: skip
    p.add_argument(
        "--sqlite-synchronous",
        choices=("OFF", "NORMAL", "FULL"),
        default=None,
        help="database.sqlite_synchronous for the node (default: the node's, FULL)",
    )
    p.add_argument(
        "--sqlite-analyze",
        action="store_true",
        help="run ANALYZE on the seeded SQLite table (the node itself never does)",
    )
    p.add_argument(
        "--profile-dir", default=None, help="run py-spy on the node and print where its time goes"
    )
    p.add_argument("--seed", type=int, default=20261121)
    p.add_argument("--keep", action="store_true", help="keep the databases and temp dir")
    args = p.parse_args(argv)

    q = args.quick
    sizes = args.sizes or ("300" if q else "1000,10000,100000")
    args.size_list = [int(s.replace("_", "")) for s in sizes.split(",") if s.strip()]
    args.requests = args.requests or (120 if q else 3000)
    args.duration = args.duration or (3.0 if q else 30.0)
    args.warmup = args.warmup if args.warmup is not None else (16 if q else 64)
    args.race_offer_sets = args.race_offer_sets or (40 if q else 600)
    args.race_setup_seconds = args.race_setup_seconds or (4.0 if q else 90.0)
    args.race_duration = args.race_duration or (3.0 if q else 20.0)
    args.expire_variant = args.expire_variant or ("none" if q else "largest")
    args.dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]

    try:
        import uvloop  # the client's own overhead matters on 2 shared cores

        uvloop.install()
    except ImportError:
        pass

    workdir = Path(tempfile.mkdtemp(prefix="ebroker-bench-"))
    rows: list[Row] = []
    failed = False
    print(f"# ebroker POST /requests benchmark{' (quick)' if q else ''}", flush=True)
    print(environment_note(args), flush=True)
    largest = max(args.size_list)
    try:
        for kind in args.dbs:
            for size in args.size_list:
                modes = [args.client]
                extra = args.expire_variant == "all" or (
                    args.expire_variant == "largest" and size == largest
                )
                if extra and "expire" not in modes:
                    modes.append("expire")
                for mode in modes:
                    try:
                        rows.append(
                            run_one(kind, size, mode, args, workdir,
                                    with_race=size == largest and mode == args.client)
                        )  # fmt: skip
                    except Exception as exc:  # report and go on with the other runs
                        failed = True
                        print(f"  [{kind}-{size}-{mode}] FAILED: {type(exc).__name__}: {exc}",
                              flush=True)  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")

    print()
    print(markdown(rows, args))
    overbookings = sum(r.check.overbookings for r in rows)
    doubles = sum(r.check.double_accepts for r in rows) + sum(
        r.race.double_wins for r in rows if r.race
    )
    errors = sum(r.load.errors for r in rows) + sum(r.race.errors for r in rows if r.race)
    tracebacks = sum(r.tracebacks for r in rows)
    print()
    for r in rows:
        for line in r.check.worst:
            print(f"OVERBOOKED ({r.db}, {r.size}, {r.load.mode}): {line}")
    print(f"overbookings: {overbookings}")
    print(f"double accepts: {doubles}")
    print(f"server errors (5xx): {errors}; server tracebacks: {tracebacks}")
    sqlite_big = [r for r in rows if r.db == "sqlite" and r.size >= TARGET_SIZE
                  and r.load.mode == args.client]  # fmt: skip
    for r in sqlite_big:
        p99 = percentile(r.load.latencies, 99)
        print(
            f"target at {r.size:,} bookings on SQLite: p99 {fmt(p99)} ms (target < "
            f"{TARGET_P99_MS:g}), {fmt(r.load.rps)} req/s (target >= {TARGET_RPS:g}) -> "
            f"{'MET' if p99 < TARGET_P99_MS and r.load.rps >= TARGET_RPS else 'MISSED'} "
            f"(2 cores shared by client and server)"
        )
    if overbookings or doubles:
        return 1
    if errors or tracebacks or failed or not rows:
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
