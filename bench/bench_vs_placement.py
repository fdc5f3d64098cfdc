#!/usr/bin/env python3
"""ebroker beside OpenStack Placement: claims per second, p50/p99 and server CPU per claim.

    python bench/bench_vs_placement.py [--db sqlite|postgres|both] [--workers 1,2] [--pools 1,100]
                                       [--clients 16] [--seconds 10] [--pairs 3] [--quick]
                                       [--placement-venv DIR] [--pg-url URL]

A claim is what each system needs to book capacity for one consumer:

- **ebroker:** ``POST /requests`` (one core, one hour, in the next two hours) and
  ``POST /sessions/{uuid}`` accepting the first offer (its siblings' holds freed);
- **Placement:** ``GET /allocation_candidates?resources=VCPU:1,MEMORY_MB:4&limit=1`` and
  ``PUT /allocations/{consumer}`` with the first candidate (microversion 1.38).

Both run standalone on this machine: ebroker's ``ebroker serve`` (its lifecycle engine off, so
that nothing but the booking runs) and Placement from PyPI in its own virtualenv
(``--placement-venv``, made and filled with ``pip install openstack-placement gunicorn`` on the
first run) under gunicorn with ``auth_strategy = noauth2``; each with the same worker count and
the same kind of database (a fresh SQLite file, or a fresh database on the same PostgreSQL).
Each setting (database, workers, pools) runs ``--pairs`` alternating pairs: ebroker then
Placement, then Placement then ebroker, ..., each for ``--seconds`` with ``--clients``
concurrent clients. It prints, per setting, each system's claims/s, p50/p99 of the whole claim
and server CPU ms per claim, the per-pair ratio ebroker / Placement, and the target
(ebroker >= 2x Placement at an equal or better p99) as MET or MISSED. It exits 1 when a claim
got an answer other than success or 409 (or none) or a server died, 0 otherwise.

The two do not do the same work, and the table says so: Placement books capacity without time
(an allocation holds until it is deleted), so its pools never fill with 1,000,000 VCPU; ebroker
books a time slot, offers several, and holds the offers it made until one is accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
from bench_requests import (  # noqa: E402
    ACCEPT,
    COMPUTE,
    DEFAULT_PG,
    DOCKER,
    BenchDatabase,
    Node,
)
from common import ServerProcess, fmt, free_port, iso, percentile  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

PLACEMENT_PACKAGES = ["openstack-placement", "gunicorn", "psycopg2-binary"]
DEFAULT_VENV = Path(os.environ.get("EBROKER_PLACEMENT_VENV", "/var/tmp/ebroker-placement-venv"))
MICROVERSION = {"OpenStack-API-Version": "placement 1.38", "X-Auth-Token": "admin"}
CORES_PER_POOL = 1_000_000  # neither system runs out of room during a run
MEMORY_PER_CORE = 4
TARGET_RATIO = 2.0
THREADS = 4  # the node's server.threads, as in bench_requests.py


# ----------------------------------------------------------------------------------------------
# Placement, standalone


def placement_venv(path: Path) -> Path:
    """The virtualenv with Placement and gunicorn, made on the first run."""
    python = path / "bin" / "python"
    if not (path / "bin" / "gunicorn").exists() or not (path / "bin" / "placement-manage").exists():
        print(f"installing {' '.join(PLACEMENT_PACKAGES)} into {path} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PLACEMENT_PACKAGES],
                       check=True)  # fmt: skip
    return path


def placement_version(venv: Path) -> str:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "show", "openstack-placement"],
        capture_output=True, text=True,
    )  # fmt: skip
    for line in out.stdout.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def placement_db_url(database: BenchDatabase) -> str:
    """Placement's oslo.db URL for a bench database (psycopg2 for PostgreSQL)."""
    if database.kind == "sqlite":
        return database.url
    url = make_url(database.url).set(drivername="postgresql+psycopg2")
    return url.render_as_string(hide_password=False)


class Placement(ServerProcess):
    """Placement under gunicorn, its config in a directory of its own (OS_PLACEMENT_CONFIG_DIR)."""

    def __init__(self, venv: Path, db_url: str, workers: int, workdir: Path, tag: str):
        super().__init__(workdir / f"{tag}.log")
        self.venv = venv
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.config_dir = workdir / tag
        self.config_dir.mkdir()
        (self.config_dir / "placement.conf").write_text(
            "[DEFAULT]\ndebug = False\n"
            "[api]\nauth_strategy = noauth2\n"
            f"[placement_database]\nconnection = {db_url}\n"
        )
        self.env = {**os.environ, "OS_PLACEMENT_CONFIG_DIR": str(self.config_dir)}

    def start(self, timeout: float = 90) -> None:
        conf = str(self.config_dir / "placement.conf")
        subprocess.run([str(self.venv / "bin" / "placement-manage"), "--config-file", conf,
                        "db", "sync"], check=True, env=self.env, capture_output=True)  # fmt: skip
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(self.venv / "bin" / "gunicorn"), "--workers", str(self.workers),
             "--bind", f"127.0.0.1:{self.port}", "--log-level", "warning",
             "placement.wsgi.api:application"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.config_dir,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        import urllib.error
        import urllib.request

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"placement exited:\n{self.log_tail()}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(self.base + "/", timeout=2) as answer,
            ):
                if answer.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"placement not ready after {timeout}s:\n{self.log_tail()}")

    async def make_pools(self, pools: int) -> None:
        """One resource provider a pool, each with CORES_PER_POOL VCPU."""
        async with aiohttp.ClientSession(headers=MICROVERSION) as http:
            for index in range(pools):
                provider = str(uuidlib.uuid4())
                async with http.post(
                    f"{self.base}/resource_providers",
                    json={"name": f"pool-{index}", "uuid": provider},
                ) as r:
                    assert r.status == 200, await r.text()
                inventories = {
                    "resource_provider_generation": 0,
                    "inventories": {
                        "VCPU": {"total": CORES_PER_POOL},
                        "MEMORY_MB": {"total": CORES_PER_POOL * MEMORY_PER_CORE},
                    },
                }
                async with http.put(f"{self.base}/resource_providers/{provider}/inventories",
                                    json=inventories) as r:  # fmt: skip
                    assert r.status == 200, await r.text()


# ----------------------------------------------------------------------------------------------
# ebroker, standalone


def node_config(db_url: str, port: int, workers: int, pools: int, workdir: Path) -> dict[str, Any]:
    return {
        "site": {"name": "ebroker-vs-placement"},
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "validate_responses": False,
            "workers": workers,
            "threads": THREADS,
        },
        "database": {"url": db_url},
        "holds": {"anonymous": {}},  # one anonymous client stands for many users
        "lifecycle": {"enabled": False},  # a claim is a booking; nothing is run
        "platforms": [
            {
                "name": "sim",
                "type": "simulated",
                "options": {"storage_path": str(workdir)},
                "pools": [
                    {
                        "name": f"pool-{index}",
                        "inventories": {
                            "cores": {"total": CORES_PER_POOL},
                            "memory": {"total": CORES_PER_POOL * MEMORY_PER_CORE},
                        },
                    }
                    for index in range(pools)
                ],
            }
        ],
    }


def claim_request() -> dict[str, Any]:
    now = time.time()
    return {
        "executable": {"kind": DOCKER, "image": {"locations": ["localhost/busybox:latest"]}},
        "compute": {
            "kind": COMPUTE,
            "cores": {"min": 1, "max": 1},
            "memory": {"min": MEMORY_PER_CORE, "max": MEMORY_PER_CORE},
        },
        "schedule": {"requested": {"start": f"{iso(now)}/{iso(now + 7200)}", "duration": "PT1H"}},
    }


# ----------------------------------------------------------------------------------------------
# the claims


@dataclass
class Run:
    system: str
    latencies: list[float] = field(default_factory=list)  # ms, a whole claim
    conflicts: int = 0  # a claim refused (409, NO) and not counted
    errors: int = 0  # 5xx or no answer
    elapsed: float = 0.0
    cpu: float = 0.0  # the server's CPU seconds over the run

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / len(self.latencies) if self.latencies else float("nan")


def _outcome(status: int, ok: int) -> str:
    """A lost race (409) is a conflict; any other answer than ``ok`` is an error."""
    return "ok" if status == ok else ("conflict" if status == 409 else "error")


async def ebroker_claim(http: aiohttp.ClientSession, base: str) -> str:
    async with http.post(f"{base}/requests", json=claim_request()) as r:
        if r.status != 200:
            return "error"
        body = await r.json()
    if body.get("result") != "YES":
        return "conflict"
    offer = body["offers"][0]["meta"]["uuid"]
    async with http.post(f"{base}/sessions/{offer}", json=ACCEPT) as r:
        return _outcome(r.status, 200)


async def placement_claim(http: aiohttp.ClientSession, base: str) -> str:
    query = f"resources=VCPU:1,MEMORY_MB:{MEMORY_PER_CORE}&limit=1"
    async with http.get(f"{base}/allocation_candidates?{query}") as r:
        if r.status != 200:
            return "error"
        body = await r.json()
    if not body["allocation_requests"]:
        return "conflict"
    allocation = {
        "allocations": body["allocation_requests"][0]["allocations"],
        "consumer_generation": None,
        "project_id": "bench-project",
        "user_id": "bench-user",
        "consumer_type": "INSTANCE",  # required from microversion 1.38
    }
    async with http.put(f"{base}/allocations/{uuidlib.uuid4()}", json=allocation) as r:
        return _outcome(r.status, 204)


async def claims(system: str, base: str, server: ServerProcess, clients: int,
                 seconds: float) -> Run:  # fmt: skip
    claim = ebroker_claim if system == "ebroker" else placement_claim
    run = Run(system)
    headers = MICROVERSION if system == "placement" else {}
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, headers=headers,
                                     timeout=timeout) as http:  # fmt: skip
        for _ in range(clients):  # warm: every worker, every connection
            await claim(http, base)
        deadline = time.monotonic() + seconds

        async def client() -> None:
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    outcome = await claim(http, base)
                except (TimeoutError, aiohttp.ClientError):
                    outcome = "error"
                if outcome == "ok":
                    run.latencies.append(1000 * (time.perf_counter() - started))
                elif outcome == "conflict":
                    run.conflicts += 1
                else:
                    run.errors += 1

        cpu = server.cpu_seconds()
        began = time.monotonic()
        await asyncio.gather(*(client() for _ in range(clients)))
        run.elapsed = time.monotonic() - began
        run.cpu = server.cpu_seconds() - cpu
    return run


# ----------------------------------------------------------------------------------------------
# one setting: alternating pairs


@dataclass
class Setting:
    db: str
    workers: int
    pools: int
    pairs: list[tuple[Run, Run]] = field(default_factory=list)  # (ebroker, placement)

    def title(self) -> str:
        return f"{self.db}, {self.workers} worker{'s' if self.workers > 1 else ''}, " \
               f"{self.pools} pool{'s' if self.pools > 1 else ''}"  # fmt: skip


def run_setting(setting: Setting, args: argparse.Namespace, venv: Path, workdir: Path) -> Setting:
    tag = f"{setting.db}-{setting.workers}w-{setting.pools}p"
    ours = BenchDatabase(setting.db, workdir, args.pg_url, "ebroker")
    theirs = BenchDatabase(setting.db, workdir, args.pg_url, "placement")
    node_port = free_port()
    node = Node(node_config(ours.url, node_port, setting.workers, setting.pools, workdir),
                workdir, f"ebroker-{tag}")  # fmt: skip
    placement = Placement(venv, placement_db_url(theirs), setting.workers, workdir,
                          f"placement-{tag}")  # fmt: skip
    try:
        node.upgrade()
        node.start()
        placement.start()
        asyncio.run(placement.make_pools(setting.pools))
        for index in range(args.pairs):
            order = ["ebroker", "placement"] if index % 2 == 0 else ["placement", "ebroker"]
            runs = {}
            for system in order:
                server, base = (
                    (node, node.base) if system == "ebroker" else (placement, placement.base)
                )
                runs[system] = asyncio.run(claims(system, base, server, args.clients,
                                                  args.seconds))  # fmt: skip
            setting.pairs.append((runs["ebroker"], runs["placement"]))
            mine, other = runs["ebroker"], runs["placement"]
            print(f"  {setting.title()} pair {index + 1}: ebroker {mine.rate:.0f}/s, "
                  f"placement {other.rate:.0f}/s", flush=True)  # fmt: skip
        for server in (node, placement):
            if server.proc is None or server.proc.poll() is not None:
                raise RuntimeError(f"a server died:\n{server.log_tail()}")
    finally:
        node.stop()
        placement.stop()
        ours.drop()
        theirs.drop()
    return setting


# ----------------------------------------------------------------------------------------------
# the report


def _p(runs: list[Run], q: float) -> float:
    return percentile([v for r in runs for v in r.latencies], q)


def report(settings: list[Setting], version: str, args: argparse.Namespace) -> tuple[str, bool]:
    lines = [
        f"ebroker against OpenStack Placement {version}: {args.clients} clients, "
        f"{args.pairs} alternating pairs of {args.seconds:g} s per setting; "
        f"{os.cpu_count()} cores, load average before {os.getloadavg()[0]:.2f}, "
        f"Python {platform.python_version()}",
        "",
        "| setting | ebroker claims/s | Placement claims/s | ratio per pair | ebroker p50/p99 ms "
        "| Placement p50/p99 ms | CPU ms per claim (ebroker / Placement) | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    met_all = True
    for s in settings:
        mine = [p[0] for p in s.pairs]
        other = [p[1] for p in s.pairs]
        ratios = [a.rate / b.rate if b.rate else float("nan") for a, b in s.pairs]
        worst = min(ratios) if ratios else float("nan")
        p99_ok = _p(mine, 99) <= _p(other, 99)
        met = worst >= TARGET_RATIO and p99_ok
        met_all &= met
        lines.append(
            f"| {s.title()} | {sum(r.rate for r in mine) / len(mine):.0f} "
            f"| {sum(r.rate for r in other) / len(other):.0f} "
            f"| {', '.join(f'{r:.2f}x' for r in ratios)} "
            f"| {fmt(_p(mine, 50))}/{fmt(_p(mine, 99))} "
            f"| {fmt(_p(other, 50))}/{fmt(_p(other, 99))} "
            f"| {fmt(sum(r.cpu_ms for r in mine) / len(mine), 2)} / "
            f"{fmt(sum(r.cpu_ms for r in other) / len(other), 2)} "
            f"| {'MET' if met else 'MISSED'} |"
        )
    errors = sum(r.errors for s in settings for pair in s.pairs for r in pair)
    lines += [
        "",
        f"target: ebroker >= {TARGET_RATIO:g}x Placement's claims/s in every pair, at an equal or "
        f"better p99: {'MET' if met_all else 'MISSED'} in every setting above"
        if met_all else
        f"target: ebroker >= {TARGET_RATIO:g}x Placement's claims/s in every pair, at an equal or "
        "better p99: MISSED (see the settings marked MISSED)",
        f"errors (an answer other than success or 409, or none): {errors}",
        "",
        "What each does that the other does not: ebroker books a time slot (start, end) and "
        "offers several, holding each offer until one is accepted or the hold lapses, and "
        "checks the request against the spec; Placement books capacity with no time (an "
        "allocation holds until deleted), picks among providers by traits and aggregates, and "
        "keeps consumer generations. ebroker's lifecycle engine is off here: a claim is a "
        "booking on both.",
    ]  # fmt: skip
    return "\n".join(lines), errors == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)  # fmt: skip
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--pools", default="1,100", help="pool counts, comma-separated")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="SQLite, 1 worker, 1 pool, 1 pair of 2 s (a smoke run)"
    )
    parser.add_argument("--placement-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--pg-url", default=os.environ.get("EBROKER_BENCH_PG_URL", DEFAULT_PG))
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.db, args.workers, args.pools, args.pairs, args.seconds = "sqlite", "1", "1", 1, 2.0
    dbs = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    workers = [int(w) for w in args.workers.split(",")]
    pools = [int(p) for p in args.pools.split(",")]
    venv = placement_venv(args.placement_venv)
    version = placement_version(venv)
    workdir = Path(tempfile.mkdtemp(prefix="ebroker-vs-placement-"))
    settings = []
    try:
        for db in dbs:
            for count in workers:
                for size in pools:
                    settings.append(run_setting(Setting(db, count, size), args, venv, workdir))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    text, clean = report(settings, version, args)
    print()
    print(text)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
