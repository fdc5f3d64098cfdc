"""Prometheus metrics of the node."""

from __future__ import annotations

from ...observability.metrics import BookingCollector, exposition
from ..context import broker


def get() -> tuple[str, int, dict[str, str]]:
    body, content_type = exposition(BookingCollector(broker()))
    return body.decode(), 200, {"Content-Type": content_type}
