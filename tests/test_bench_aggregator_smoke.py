"""Smoke-run the aggregator benchmark (bench/bench_aggregator.py) in its quick mode."""

from __future__ import annotations

import pytest

from tests.benches import run_bench


@pytest.mark.slow
def test_bench_aggregator_quick() -> None:
    output = run_bench("bench_aggregator.py", "--quick", timeout=120)
    assert "### POST /requests through the aggregator" in output, output
    assert "| upstreams | scenario | requests | p50 ms | p99 ms | req/s |" in output, output
    for size in (3, 5):
        assert f"| {size} | healthy | " in output, output
        assert f"| {size} | dead+slow | " in output, output
    assert "### Targets" in output, output
    assert "problems (non-200, NO, short answers, dead/slow not asked, tracebacks): 0" in output
