#!/usr/bin/env python3
"""What a hostile request body costs a broker node: time to refuse, event-loop stall, memory.

    python bench/hostile_bodies.py [--ref REV] [--only TEXT] [--concurrency 8] [--restart]
                                   [--server KEY=VALUE] [--memory-cap-mb 4096] [--quick]

For each body of ``tests/hostile_bodies.py`` (a YAML alias bomb of 117 KB, 100,000 command
arguments, 70,000 keys, 50,000 environment variables, ...) it

1. starts ``ebroker serve`` (one worker, SQLite in a temporary directory, one simulated pool)
   under an address-space cap (``--memory-cap-mb``, so that a body that makes the node allocate
   gigabytes ends in a MemoryError rather than in the machine's OOM killer), or reuses the one
   the body before left alive;
2. resets the node's peak RSS (``/proc/<pid>/clear_refs``) and POSTs the body to /requests
   while a second client asks GET /health/live every 10 ms: the slowest of those answers is the
   stall every other client of the node saw;
3. reports the answer's status, the time to it, the slowest liveness answer, and the node's peak
   RSS above what it held before.

Then it sends ``--concurrency`` copies of each body at once, for the same figures under a flood.

``--ref REV`` runs the node of another revision (``git archive REV``, unpacked in a temporary
directory, on this checkout's virtualenv) for before/after figures; the bodies are the same.
``--restart`` gives every body a fresh node (a peak RSS not lowered by what the body before left
allocated), ``--server body_workers=2`` sets a ``server.*`` option of the node.
It prints markdown tables; it exits 1 when any answer is a 5xx or the node died, 0 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import yaml  # noqa: E402
from common import ServerProcess, fmt, free_port, percentile  # noqa: E402

from tests.hostile_bodies import hostile_bodies  # noqa: E402

PROBE_INTERVAL = 0.01
REQUEST_TIMEOUT = 120.0


def node_config(port: int, workdir: Path, server: dict[str, Any]) -> dict[str, Any]:
    return {
        "site": {"name": "ebroker-bench-hostile"},
        "server": {"host": "127.0.0.1", "port": port, "validate_responses": False, **server},
        "database": {"url": f"sqlite:///{workdir / 'node.db'}"},
        "lifecycle": {"enabled": False},
        "platforms": [
            {
                "name": "sim",
                "type": "simulated",
                "pools": [
                    {
                        "name": "main",
                        "inventories": {"cores": {"total": 64}, "memory": {"total": 256}},
                    }
                ],
            }
        ],
    }


def source_tree(ref: str | None, workdir: Path) -> Path:
    """This checkout, or revision ``ref`` of it unpacked under ``workdir``."""
    if ref is None:
        return REPO
    tree = workdir / "source"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "archive", ref], cwd=REPO, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


class Node(ServerProcess):
    """``ebroker serve`` from ``source`` (python -m, so that tree's code is the one imported)."""

    def __init__(self, source: Path, workdir: Path, memory_cap_mb: int, server: dict[str, Any]):
        super().__init__(workdir / "node.log")
        self.source = source
        self.server = server
        self.workdir = workdir
        self.memory_cap = memory_cap_mb * 1024 * 1024
        self.base = ""
        self.starts = 0

    def start(self, timeout: float = 60) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        config = self.workdir / "node.yaml"
        config.write_text(yaml.safe_dump(node_config(port, self.workdir, self.server)))
        cap = self.memory_cap

        def limit_memory() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

        self.starts += 1
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ebroker", "serve", "-c", str(config),
             "--log-level", "WARNING"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.source, preexec_fn=limit_memory,
            env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(self.source)},
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log_tail()}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(self.base + "/health/ready", timeout=2) as answer,
            ):
                if answer.status == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"node not ready after {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, as a service manager stops it (SIGINT makes the server log a traceback)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _status(self, field: str) -> float:
        """A ``/proc/<pid>/status`` figure in MB (NaN when unreadable)."""
        assert self.proc is not None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return math.nan

    def reset_peak(self) -> float:
        """Reset the peak RSS (Linux: ``clear_refs`` 5); the RSS now, in MB."""
        assert self.proc is not None
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
        return self._status("VmRSS")

    def peak(self) -> float:
        return self._status("VmHWM")


@dataclass
class Figures:
    statuses: list[str]
    seconds: float  # until the last answer
    stall_ms: float  # slowest liveness answer while the bodies were in flight
    probe_p50_ms: float
    peak_mb: float  # peak RSS above the RSS before


async def probe(session: aiohttp.ClientSession, base: str, done: asyncio.Event) -> list[float]:
    """GET /health/live every PROBE_INTERVAL until ``done``; each answer's latency (ms). One
    that never comes counts as the time waited for it."""
    latencies: list[float] = []
    while not done.is_set():
        start = time.perf_counter()
        try:
            async with session.get(base + "/health/live") as answer:
                await answer.read()
        except (TimeoutError, aiohttp.ClientError):
            pass
        latencies.append((time.perf_counter() - start) * 1000)
        await asyncio.sleep(PROBE_INTERVAL)
    return latencies


async def hostile(session: aiohttp.ClientSession, base: str, content_type: str, body: bytes) -> str:
    try:
        async with session.post(
            base + "/requests", data=body, headers={"content-type": content_type}
        ) as answer:
            await answer.read()
            return str(answer.status)
    except TimeoutError:
        return "timeout"
    except aiohttp.ClientError as exc:
        return type(exc).__name__


async def measure(node: Node, content_type: str, body: bytes, copies: int) -> Figures:
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    before = node.reset_peak()
    async with (
        aiohttp.ClientSession(timeout=timeout) as senders,
        aiohttp.ClientSession(timeout=timeout) as prober,
    ):
        async with prober.get(node.base + "/health/live") as warm:  # the probe's connection
            await warm.read()
        done = asyncio.Event()
        probes = asyncio.create_task(probe(prober, node.base, done))
        start = time.perf_counter()
        statuses = await asyncio.gather(
            *(hostile(senders, node.base, content_type, body) for _ in range(copies))
        )
        seconds = time.perf_counter() - start
        done.set()
        latencies = await probes
    return Figures(
        statuses=list(statuses),
        seconds=seconds,
        stall_ms=max(latencies, default=math.nan),
        probe_p50_ms=percentile(latencies, 50),
        peak_mb=node.peak() - before,
    )


def statuses_text(statuses: list[str]) -> str:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{n}x {s}" if n > 1 else s for s, n in counts.items())


def run(args: argparse.Namespace) -> int:
    bodies = [b for b in hostile_bodies() if args.only is None or args.only.lower() in b[0].lower()]
    workdir = Path(tempfile.mkdtemp(prefix="ebroker-bench-hostile-"))
    failures = 0
    try:
        source = source_tree(args.ref, workdir)
        server = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.server)}
        node = Node(source, workdir, args.memory_cap_mb, server)
        label = (args.ref or "working tree") + "".join(f", {o}" for o in args.server)
        print(f"node: {label}; address-space cap {args.memory_cap_mb} MB; one worker\n")
        rounds = [1] if args.concurrency <= 1 else [1, args.concurrency]
        for copies in rounds:
            print(f"### {copies} hostile request{'s' if copies > 1 else ''} at once ({label})\n")
            print("| body | bytes | answers | seconds | loop stall ms | probe p50 ms | peak MB |")
            print("|---|---|---|---|---|---|---|")
            for name, content_type, body in bodies:
                if not node.alive():
                    node.start()
                figures = asyncio.run(measure(node, content_type, body, copies))
                died = not node.alive()
                bad = died or any(not s.isdigit() or s.startswith("5") for s in figures.statuses)
                failures += bad
                answers = statuses_text(figures.statuses) + (" (node died)" if died else "")
                print(
                    f"| {name} | {len(body):,} | {answers} | {fmt(figures.seconds, 2)} "
                    f"| {fmt(figures.stall_ms, 0)} | {fmt(figures.probe_p50_ms, 1)} "
                    f"| {fmt(figures.peak_mb, 0)} |",
                    flush=True,
                )
                if died or args.restart:
                    node.stop()
            print()
        tracebacks = node.tracebacks()  # before stopping it: an interrupted server may log one
        node.stop()
        print(f"node starts: {node.starts}; tracebacks in its log: {tracebacks}")
        if tracebacks:
            print(f"\nthe node's log ends:\n```\n{node.log_tail(60)}\n```")
        print(f"problems (5xx, no answer, node died): {failures}")
    finally:
        with contextlib.suppress(NameError):
            node.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ref", default=None, help="run the node of this git revision (e.g. HEAD~3)")
    p.add_argument("--only", default=None, help="only the bodies whose name contains this")
    p.add_argument("--concurrency", type=int, default=8, help="copies sent at once (round 2)")
    p.add_argument("--memory-cap-mb", type=int, default=4096, help="the node's address space")
    p.add_argument("--restart", action="store_true", help="a fresh node for every body")
    p.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a server.* setting of the node, e.g. body_workers=2 (repeatable)",
    )
    p.add_argument("--quick", action="store_true", help="one request of each body (smoke run)")
    args = p.parse_args(argv)
    if args.quick:
        args.concurrency = 1
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
