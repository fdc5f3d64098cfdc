"""Helpers the benchmark scripts share (each script puts this folder on ``sys.path`` by being
run from it)."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import signal
import socket
import subprocess
from pathlib import Path


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(int(ts), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fmt(value: float | None, digits: int = 1) -> str:
    """A figure for a table; n/a for none or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


class ServerProcess:
    """A server a benchmark runs in a subprocess (``proc``), writing to ``log_path``."""

    def __init__(self, log_path: Path):
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        """Interrupt it as an operator would; kill it when it has not exited within 15 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def tracebacks(self) -> int:
        try:
            return self.log_path.read_text(errors="replace").count("Traceback")
        except FileNotFoundError:
            return 0

    def cpu_seconds(self) -> float:
        """User and system CPU time of the server and its worker processes so far (Linux
        /proc; NaN elsewhere)."""
        if self.proc is None:
            return math.nan
        try:
            stats = {}
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    with contextlib.suppress(OSError):
                        fields = (entry / "stat").read_text().rpartition(")")[2].split()
                        stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
        except OSError:
            return math.nan
        tree = {self.proc.pid}
        for _ in range(3):  # the server, its workers, their children
            tree |= {pid for pid, (parent, _) in stats.items() if parent in tree}
        ticks = sum(stats[pid][1] for pid in tree if pid in stats)
        return ticks / os.sysconf("SC_CLK_TCK")
