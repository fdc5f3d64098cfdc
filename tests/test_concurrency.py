"""No interleaving of concurrent requests can overbook a pool: SQLite and PostgreSQL, real HTTP.

Two real node servers (separate ``ebroker serve`` processes, so SQLite's locking is exercised
across processes) share one database. Fifty client threads hammer them with requests whose
windows overlap heavily on a small pool, accept offers (their own, siblings, and offers of offer
sets shared with another client on purpose, so that accepts race), reject, cancel and let offers
expire. A checker thread reads the booking table directly all the while and checks, with its own
independent code (``tests/invariants.py``), that capacity is never exceeded at any instant.
"""

from __future__ import annotations

import contextlib
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
import yaml

from broker_core.broker import Broker
from broker_core.errors import Conflict
from broker_core.offers.service import request_offers
from tests.conftest import ACCEPT, request_doc
from tests.invariants import ACCEPTED_PHASES, capacities, overbookings, state_problems
from tests.nodes import Node, Tally, start_node

pytestmark = pytest.mark.slow  # real processes or fuzzing: `-m 'not slow'` leaves it out

REJECT = {**ACCEPT, "value": "REJECTED"}
CANCEL = {**ACCEPT, "value": "CANCELLED"}

CLIENTS = 50
# the run lasts until every goal is met (at least MIN_SECONDS, at most MAX_SECONDS: the machine
# may be busy with other work), so that it surely exercised what it claims to
MIN_SECONDS, MAX_SECONDS = 6.0, 20.0
GOALS = {
    "requests": 120, "request-YES": 40, "request-NO": 1,
    "accepted": 20, "race-paired": 10,
    "lost-race": 3, "lost-race-paired": 2,  # accepts that lost to a sibling's acceptance
    "cancel-200": 10, "reject-200": 1, "cancel-offer-200": 1, "conflict-EXPIRED": 1,
}  # fmt: skip
# what a client does with an offer set it got (weights); a walk-away leaves it to expire
ACTIONS = [("share", 40), ("accept", 38), ("reject-then-accept", 10), ("cancel-offer", 5),
           ("walk-away", 5), ("late", 2)]  # fmt: skip
FIRST_ACTIONS = ["late"] * 2 + ["cancel-offer"] * 3 + ["reject-then-accept"] * 3
HOLD_SECONDS = 3
CORES, MEMORY = 8, 32


def small_pool(
    cores: int = CORES, memory: int = MEMORY, *pools: dict[str, Any]
) -> list[dict[str, Any]]:
    return [
        {
            "name": "sim",
            "type": "simulated",
            "options": {"base_preparation": "PT0S", "image_pull": "PT0S", "data_staging": "PT0S"},
            "pools": [
                {"name": "small", "inventories": {"cores": {"total": cores},
                                                  "memory": {"total": memory}}},
                *pools,
            ],
        }
    ]  # fmt: skip


# a second, tinier pool whose capacity is (total - reserved) * allocation_ratio: 4 cores, 16 GiB
TINY = {
    "name": "tiny",
    "inventories": {
        "cores": {"total": 6, "reserved": 2},
        "memory": {"total": 10, "reserved": 2, "allocation_ratio": 2.0},
    },
}


def config_overrides() -> dict[str, Any]:
    return {
        "platforms": small_pool(CORES, MEMORY, TINY),
        "offers": {"hold": f"PT{HOLD_SECONDS}S", "max_offers": 4},
        "server": {"validate_responses": True},
    }


def db_url_for(request: pytest.FixtureRequest, backend: str) -> str:
    return request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")


# --- real node servers --------------------------------------------------------------------


@contextlib.contextmanager
def node_servers(config_file: Path, count: int, workdir: Path) -> Iterator[list[Node]]:
    """``count`` ``ebroker serve`` processes for one config (so one database), ready to use."""
    nodes: list[Node] = []
    try:
        for i in range(count):
            nodes.append(start_node(config_file, workdir, f"node{i}"))
        yield nodes
    finally:
        for node in nodes:
            node.stop()


# --- the continuous invariant checker -----------------------------------------------------


class Checker(threading.Thread):
    """Reads the database every few ms and records any overbooking it sees."""

    def __init__(self, database_url: str):
        super().__init__(daemon=True, name="invariant-checker")
        url = sqlalchemy.engine.make_url(database_url)
        kwargs: dict[str, Any] = {}
        if url.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"timeout": 30}
        self.engine = sqlalchemy.create_engine(url, **kwargs)
        self.stop = threading.Event()
        self.checks = 0
        self.max_live = 0
        self.violations: list[str] = []
        self.errors: list[str] = []

    def run(self) -> None:
        with self.engine.connect() as conn:
            caps = capacities(conn)
            conn.rollback()
            while not self.stop.is_set():
                try:
                    problems = overbookings(conn, caps)
                    self.max_live = max(self.max_live, self._live(conn))
                    conn.rollback()  # a fresh snapshot next time
                except Exception as exc:  # keep checking; report at the end
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    conn.rollback()
                    problems = []
                self.checks += 1
                self.violations.extend(problems)
                if len(self.violations) > 50:
                    return
                time.sleep(0.003)

    @staticmethod
    def _live(conn: sqlalchemy.Connection) -> int:
        query = "SELECT count(*) FROM booking WHERE state IN ('HELD', 'CONFIRMED', 'ACTIVE')"
        return int(conn.execute(sqlalchemy.text(query)).scalar_one())

    def final(self) -> tuple[list[str], list[str]]:
        with self.engine.connect() as conn:
            return overbookings(conn), state_problems(conn)

    def scalar(self, query: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sqlalchemy.text(query)).scalar_one()

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=10)
        self.engine.dispose()


# --- the clients --------------------------------------------------------------------------


@dataclass
class Shared:
    """One offer set offered up by the client that got it, for another client to race on."""

    offers: list[dict[str, Any]]
    barrier: threading.Barrier = field(default_factory=lambda: threading.Barrier(2, timeout=0.5))


@dataclass
class Stats(Tally):
    # offer set uuid -> session uuids a client was told (200) are ACCEPTED
    accepted: dict[str, set[str]] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    latency: dict[str, list[float]] = field(default_factory=dict)

    def took(self, what: str, started: float) -> None:
        with self.lock:
            self.latency.setdefault(what, []).append(time.monotonic() - started)

    def latencies(self) -> str:
        def pct(values: list[float], q: float) -> int:
            return round(1000 * sorted(values)[min(int(q * len(values)), len(values) - 1)])

        return ", ".join(
            f"{what} p50/p99/max {pct(v, 0.5)}/{pct(v, 0.99)}/{pct(v, 1.0)} ms"
            for what, v in sorted(self.latency.items())
        )


class Client:
    def __init__(self, index: int, nodes: list[Node], stats: Stats, shared: queue.Queue[Shared],
                 window: str, stop: threading.Event):  # fmt: skip
        self.rng = random.Random(index)
        self.http = [httpx.Client(base_url=n.url, timeout=60) for n in nodes]
        self.stats, self.shared, self.window, self.stop = stats, shared, window, stop
        self.mine: list[str] = []  # sessions this client accepted and has not cancelled
        # a few clients start with the rarer actions, so that each surely happens
        self.plan = [FIRST_ACTIONS[index]] if index < len(FIRST_ACTIONS) else []

    def node(self) -> httpx.Client:
        return self.rng.choice(self.http)  # any node may serve any offer set

    def run(self) -> None:
        try:
            while not self.stop.is_set() and len(self.stats.failures) < 20:
                self.step()
            for session in self.mine:
                if self.rng.random() < 0.5:
                    self.update(session, CANCEL, "final-cancel")
        except Exception as exc:
            self.stats.fail(f"client raised {type(exc).__name__}: {exc}")
        finally:
            for c in self.http:
                c.close()

    def step(self) -> None:
        rng = self.rng
        if rng.random() < 0.35:
            with contextlib.suppress(queue.Empty):
                item = self.shared.get_nowait()
                self.race(item, joined=True)
                return
        offers = self.request()
        if not offers:
            time.sleep(rng.uniform(0, 0.02))
            return
        action = self.plan.pop() if self.plan else rng.choices(*zip(*ACTIONS, strict=True))[0]
        self.stats.count(f"action-{action}")
        if action == "share":  # another client races us for this offer set
            item = Shared(offers)
            self.shared.put(item)
            self.race(item, joined=False)
        elif action == "reject-then-accept":
            self.update(offers[0]["meta"]["uuid"], REJECT, "reject")
            if len(offers) > 1:
                self.accept(rng.choice(offers[1:]))
        elif action == "cancel-offer":  # withdraw one open offer (its hold freed), take another
            withdrawn = rng.choice(offers)
            self.update(withdrawn["meta"]["uuid"], CANCEL, "cancel-offer")
            others = [offer for offer in offers if offer is not withdrawn]
            if others:
                self.accept(rng.choice(others))
        elif action == "late":  # let the offers expire, then try
            time.sleep(HOLD_SECONDS + 1.2)
            self.accept(rng.choice(offers), "late")
        elif action == "accept":
            self.accept(offers[0] if rng.random() < 0.5 else rng.choice(offers))
        # else walk away: the reapers free the holds when they expire
        while len(self.mine) > 1 or (self.mine and rng.random() < 0.9):
            self.update(self.mine.pop(rng.randrange(len(self.mine))), CANCEL, "cancel")

    def race(self, item: Shared, *, joined: bool) -> None:
        """Both clients go at once: mostly for different siblings, sometimes the same offer."""
        offers = item.offers
        try:
            item.barrier.wait()
            label = "race"
            if joined:
                self.stats.count("race-paired")
        except threading.BrokenBarrierError:  # nobody came in time, or came too late
            label = "race-unpaired"
        if not joined:
            self.accept(offers[0], label)
        elif self.rng.random() < 0.1:
            self.update(self.rng.choice(offers)["meta"]["uuid"], REJECT, f"{label}-reject")
        elif len(offers) > 1 and self.rng.random() < 0.8:
            self.accept(self.rng.choice(offers[1:]), label)
        else:
            self.accept(offers[0], label)

    def request(self) -> list[dict[str, Any]]:
        rng = self.rng
        cores = rng.randint(1, 4)
        memory = rng.randint(1, 8)
        doc = request_doc(
            (rng.randint(1, cores), cores),
            (rng.randint(1, memory), memory),
            start=self.window,
            duration=rng.choice(["PT20M", "PT40M", "PT1H", "PT1H"]),
        )
        started = time.monotonic()
        r = self.node().post("/requests", json=doc)
        self.stats.took("request", started)
        if r.status_code != 200:
            self.stats.fail(f"POST /requests -> {r.status_code}: {r.text[:500]}")
            return []
        body = r.json()
        result = body.get("result")
        if result not in ("YES", "NO") or (result == "YES") != bool(body.get("offers")):
            self.stats.fail(f"POST /requests -> odd body {str(body)[:500]}")
            return []
        self.stats.count("requests", f"request-{result}")
        return body["offers"] if result == "YES" else []

    def update(self, session: str, update: dict[str, Any], label: str) -> httpx.Response | None:
        started = time.monotonic()
        r = self.node().post(f"/sessions/{session}", json=update)
        self.stats.took("update", started)
        if r.status_code not in (200, 409):
            what = f"{label} {update['value']} {session}"
            self.stats.fail(f"{what} -> {r.status_code}: {r.text[:500]}")
            return None
        self.stats.count(f"{label}-{r.status_code}")
        # a repeated accept answers with the phase the lifecycle engine has moved it on to
        wanted = ACCEPTED_PHASES if update["value"] == "ACCEPTED" else (update["value"],)
        if r.status_code == 200 and r.json().get("phase") not in wanted:
            self.stats.fail(f"{label} {session} -> 200 but phase {r.json().get('phase')}")
        if r.status_code == 200 and update["value"] == "CANCELLED":
            with self.stats.lock:
                self.stats.cancelled.add(session)
        return r

    def accept(self, offer: dict[str, Any], label: str = "accept") -> None:
        session = offer["meta"]["uuid"]
        r = self.update(session, ACCEPT, label)
        if r is None:
            return
        if r.status_code == 200:
            offerset = r.json()["offerset"]["uuid"]
            with self.stats.lock:
                first = not any(session in s for s in self.stats.accepted.values())
                self.stats.accepted.setdefault(offerset, set()).add(session)
            if first:
                self.mine.append(session)
            self.stats.count("accepted")
        elif (phase := r.json().get("phase")) == "REJECTED":
            # lost to a sibling's acceptance (accepted, perhaps already cancelled since), or
            # rejected by the other client of a race
            offerset = self.node().get(f"/offersets/{offer['offerset']['uuid']}")
            phases = {o["phase"] for o in offerset.json()["offers"]}
            won = phases & {*ACCEPTED_PHASES, "CANCELLED"}
            if not won:
                self.stats.count("conflict-REJECTED")
            else:  # and in a race both clients started at the same moment
                self.stats.count("lost-race", *(["lost-race-paired"] if label == "race" else []))
        else:
            self.stats.count(f"conflict-{phase}")


def unmet(counts: Counter[str]) -> dict[str, str]:
    return {k: f"{counts[k]} < {v}" for k, v in GOALS.items() if counts[k] < v}


def overlapping_window() -> str:
    """A 2-hour start window an hour ahead, shared by every request so they all compete."""
    start = (int(time.time()) // 60 + 60) * 60
    iso = [datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
           for t in (start, start + 7200)]  # fmt: skip
    return "/".join(iso)


# --- the HTTP scenario --------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_no_overbooking_over_http_with_two_nodes(
    backend: str,
    request: pytest.FixtureRequest,
    broker_factory: Callable[..., Broker],
    tmp_path: Path,
) -> None:
    database_url = db_url_for(request, backend)
    broker = broker_factory(database_url, **config_overrides())  # migrates and creates the pool
    config_file = tmp_path / "node.yaml"
    config_file.write_text(yaml.safe_dump(broker.config.model_dump(mode="json")))

    checker = Checker(database_url)
    stats = Stats()
    shared: queue.Queue[Shared] = queue.Queue()
    window = overlapping_window()
    with node_servers(config_file, 2, tmp_path) as nodes:
        checker.start()
        started = time.monotonic()
        stop = threading.Event()
        clients = [Client(i, nodes, stats, shared, window, stop) for i in range(CLIENTS)]
        threads = [threading.Thread(target=c.run, name=f"client{i}") for i, c in enumerate(clients)]
        for t in threads:
            t.start()
        while (elapsed := time.monotonic() - started) < MAX_SECONDS and not stats.failures:
            if elapsed >= MIN_SECONDS and not unmet(stats.counts):
                break
            time.sleep(0.1)
        stop.set()
        for t in threads:
            t.join(timeout=60)
        hung = [t.name for t in threads if t.is_alive()]
        elapsed = time.monotonic() - started

        # every open offer expires after the hold: the servers' reapers free it promptly
        offered = "SELECT count(*) FROM execution_session WHERE phase = 'OFFERED'"
        reap_deadline = time.monotonic() + HOLD_SECONDS + 8
        while checker.scalar(offered) and time.monotonic() < reap_deadline:
            time.sleep(0.2)
        left_open = checker.scalar(offered)
        checker.close()
        logs = "\n".join(n.output() for n in nodes)

    final_overbookings, final_state = checker.final()
    c = stats.counts
    print(
        f"\n[{backend}] {elapsed:.1f}s, {checker.checks} continuous checks "
        f"(up to {checker.max_live} live bookings): "
        + ", ".join(f"{k}={v}" for k, v in sorted(c.items()))
        + f"\n  {stats.latencies()}"
    )

    assert not hung, f"clients did not finish: {hung}"
    assert not stats.failures, "\n".join(stats.failures[:20])
    assert not checker.errors, "\n".join(checker.errors[:10])
    assert not checker.violations, "overbooked:\n" + "\n".join(checker.violations[:10])
    assert not final_overbookings, "overbooked at the end:\n" + "\n".join(final_overbookings[:10])
    assert not final_state, "\n".join(final_state[:20])
    assert left_open == 0, f"{left_open} offers were not expired by the reaper"
    assert "Traceback" not in logs, logs[-5000:]

    # the clients' view agrees: one acceptance per offer set, and it stuck unless cancelled
    assert all(len(s) == 1 for s in stats.accepted.values()), [
        s for s in stats.accepted.values() if len(s) > 1
    ]
    accepted = {s for sessions in stats.accepted.values() for s in sessions}
    with checker.engine.connect() as conn:
        query = sqlalchemy.text("SELECT uuid, phase FROM execution_session")
        phases = dict(conn.execute(query).all())
    for session in accepted:
        want = ("CANCELLED",) if session in stats.cancelled else ACCEPTED_PHASES
        assert phases[session] in want, (session, phases[session], want)
    assert sum(p in ACCEPTED_PHASES for p in phases.values()) == len(accepted - stats.cancelled)

    # and the run exercised what it claims to
    assert not unmet(c), f"goals not met in {MAX_SECONDS}s: {unmet(c)}"
    assert checker.checks >= 50 and checker.max_live > 0


# --- the direct, unit-level race ----------------------------------------------------------


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_direct_race_books_exactly_what_fits(
    backend: str, request: pytest.FixtureRequest, broker_factory: Callable[..., Broker]
) -> None:
    database_url = db_url_for(request, backend)
    fits, threads_count = 5, 50
    overrides = {"platforms": small_pool(cores=2 * fits, memory=100)}
    # two brokers (two engines, like two nodes) on one database
    brokers = [broker_factory(database_url, **overrides) for _ in range(2)]
    barrier = threading.Barrier(threads_count, timeout=30)
    results: list[str] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        doc = request_doc((2, 2), (1, 1), duration="PT1H")
        barrier.wait()
        try:
            request_offers(brokers[i % 2], doc, direct=True)
            outcome = "booked"
        except Conflict:
            outcome = "conflict"
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(threads_count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert Counter(results) == {"booked": fits, "conflict": threads_count - fits}, Counter(results)

    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as conn:
            assert overbookings(conn) == []
            assert state_problems(conn) == []
            states = conn.execute(sqlalchemy.text("SELECT state FROM booking")).scalars().all()
            phases = (
                conn.execute(sqlalchemy.text("SELECT phase FROM execution_session")).scalars().all()
            )
    finally:
        engine.dispose()
    assert Counter(states) == {"CONFIRMED": fits}
    assert Counter(phases) == {"ACCEPTED": fits}  # no lifecycle engine runs here


# --- the checker itself -------------------------------------------------------------------


def test_checker_sees_overbooking(sqlite_url: str, broker_factory: Callable[..., Broker]) -> None:
    """The independent checker flags an overbooking, and counts sibling holds by their maximum."""
    broker_factory(sqlite_url, platforms=small_pool(cores=8))
    engine = sqlalchemy.create_engine(sqlite_url)
    booking_id = 0

    def book(conn: sqlalchemy.Connection, state: str, offerset: str, start: int, end: int,
             cores: int) -> None:  # fmt: skip
        nonlocal booking_id
        booking_id += 1
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO booking (id, session_uuid, offerset_uuid, state, start_at, end_at, "
                "created_at, modified_at) VALUES (:id, :s, :o, :state, :start, :end, 0, 0)"
            ),
            {"id": booking_id, "s": f"s{booking_id}", "o": offerset, "state": state,
             "start": start, "end": end},
        )  # fmt: skip
        conn.execute(
            sqlalchemy.text(
                "INSERT INTO allocation (booking_id, pool_id, resource_class, amount) "
                "SELECT :id, id, 'cores', :cores FROM resource_pool"
            ),
            {"id": booking_id, "cores": cores},
        )

    try:
        with engine.begin() as conn:
            book(conn, "CONFIRMED", "a", 0, 100, 4)
            book(conn, "ACTIVE", "b", 50, 150, 1)
            for start in (0, 40, 80):  # three alternatives of one offer set: 3 at most at once
                book(conn, "HELD", "c", start, start + 60, 3)
            book(conn, "RELEASED", "d", 0, 200, 8)  # released: not counted
            book(conn, "HELD", "e", 100, 200, 4)  # 1 + 3 + 4 = 8 at 100..140: just fits
        with engine.connect() as conn:
            assert overbookings(conn) == []
        with engine.begin() as conn:
            book(conn, "HELD", "f", 139, 140, 1)  # one more core for one second
        with engine.connect() as conn:
            problems = overbookings(conn)
        assert len(problems) == 1 and "at 139: 9 in use > capacity 8" in problems[0], problems
    finally:
        engine.dispose()
