"""Prometheus metrics of the aggregator: its requests and its upstreams."""

from __future__ import annotations

from broker_core.observability.metrics import exposition

from ...metrics import BreakerCollector
from ..context import aggregator


def get() -> tuple[str, int, dict[str, str]]:
    body, content_type = exposition(BreakerCollector(aggregator().upstreams))
    return body.decode(), 200, {"Content-Type": content_type}
