"""Run a benchmark script the way a user would, for the smoke tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_bench(script: str, *args: str, timeout: float = 300) -> str:
    """``bench/<script>`` with ``args``; its output, after checking it exited 0."""
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    return output
