"""Smoke-run the HTTP benchmark (bench/bench_requests.py) in its quick mode on SQLite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_quick_sqlite() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_requests.py"), "--quick", "--db", "sqlite"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "### POST /requests" in output, output
    assert "| db | bookings |" in output, output
    assert "| sqlite | 300 |" in output, output
    assert "### Accept race" in output, output
    assert "overbookings: 0" in output, output


def test_bench_policies_runs() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_policies.py"), "--requests", "20"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "| token + local-rules + allocations |" in output, output
    assert "policies/plain p50 ratio" in output, output
