"""The aggregator's own metrics, beside the request metrics it shares with a node
(:mod:`broker_core.observability.metrics`): each upstream's call latency by outcome, and the
state of its breaker when scraped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from broker_core.observability.metrics import LATENCY_BUCKETS

if TYPE_CHECKING:
    from .upstreams import Upstreams

UPSTREAM_CALLS = Histogram(
    "ebroker_upstream_call_seconds", "Calls to an upstream, by outcome (ok or error)",
    ["upstream", "outcome"], buckets=LATENCY_BUCKETS,
)  # fmt: skip


class BreakerCollector(Collector):
    """Each upstream's breaker: 0 closed, 1 degraded (recent failures), 2 open (skipped)."""

    def __init__(self, upstreams: Upstreams):
        self.upstreams = upstreams

    def collect(self) -> Iterator[Metric]:
        now = time.monotonic()
        states = GaugeMetricFamily(
            "ebroker_upstream_breaker_state",
            "An upstream's breaker: 0 closed, 1 degraded, 2 open", labels=["upstream"],
        )  # fmt: skip
        failures = GaugeMetricFamily(
            "ebroker_upstream_failures", "An upstream's consecutive failed calls",
            labels=["upstream"],
        )  # fmt: skip
        for name, upstream in sorted(self.upstreams.by_name.items()):
            states.add_metric([name], upstream.breaker.state_code(now))
            failures.add_metric([name], upstream.breaker.failures)
        yield from (states, failures)
