"""Smoke-run the HTTP benchmark (bench/bench_requests.py) in its quick mode on SQLite, and the
policy benchmark (bench/bench_policies.py) briefly."""

from __future__ import annotations

import pytest

from tests.benches import run_bench


@pytest.mark.slow
def test_bench_quick_sqlite() -> None:
    output = run_bench("bench_requests.py", "--quick", "--db", "sqlite")
    assert "### POST /requests" in output, output
    assert "| db | bookings |" in output, output
    assert "| sqlite | 300 |" in output, output
    assert "### Accept race" in output, output
    assert "overbookings: 0" in output, output


def test_bench_policies_runs() -> None:
    output = run_bench("bench_policies.py", "--requests", "20")
    assert "| token + local-rules + allocations |" in output, output
    assert "policies/plain p50 ratio" in output, output
