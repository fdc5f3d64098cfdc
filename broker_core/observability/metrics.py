"""Prometheus metrics of a node (``GET /metrics``), with prometheus-client.

Counters and histograms are kept in the process as things happen: requests by operation and
status, offer sets YES/NO by the class of their reason, accepts and their conflicts, expiries,
platform steps. What the booking table holds (pool capacity and what is booked of it now and
over the next hour, open holds, sessions by phase) is read from the database at scrape time,
so that every replica and worker process reports the same truth. With several worker
processes the in-process metrics are summed over them (prometheus-client's multiprocess mode,
``PROMETHEUS_MULTIPROC_DIR``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import text

if TYPE_CHECKING:
    from ..broker import Broker

disable_created_metrics()  # a *_created series per counter says nothing a scraper needs
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain"
NEXT_HOUR = 3600
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter(
    "ebroker_http_requests", "HTTP requests answered, by operation and status",
    ["operation", "status"],
)  # fmt: skip
LATENCY = Histogram(
    "ebroker_http_request_seconds", "Time to answer an HTTP request, by operation",
    ["operation"], buckets=LATENCY_BUCKETS,
)  # fmt: skip
OFFER_SETS = Counter(
    "ebroker_offer_sets", "Offer sets answered: YES, or NO with the class of its reason "
    "(request, policy, holds, capacity, budget)", ["result", "reason"],
)  # fmt: skip
ACCEPTS = Counter(
    "ebroker_accepts", "Accepts of an offer: accepted, conflict (a 409) or expired",
    ["outcome"],
)  # fmt: skip
EXPIRIES = Counter("ebroker_offers_expired", "Offers that expired unaccepted")
PLATFORM_STEPS = Histogram(
    "ebroker_platform_step_seconds", "Time of a lifecycle step's platform calls",
    ["platform", "phase"], buckets=LATENCY_BUCKETS,
)  # fmt: skip
PLATFORM_ERRORS = Counter(
    "ebroker_platform_step_errors", "Lifecycle steps that failed on their platform",
    ["platform", "phase"],
)  # fmt: skip
NOTIFICATIONS = Counter(
    "ebroker_notifications", "Notification delivery attempts, by channel (webhook, email) and "
    "outcome (delivered, retry, failed, dropped)", ["channel", "outcome"],
)  # fmt: skip

_PHASES = text("SELECT phase, count(*) FROM execution_session GROUP BY phase")
_HOLDS = text("SELECT count(*) FROM booking WHERE state = 'HELD' AND expires_at > :now")


class BookingCollector(Collector):
    """What the booking table holds, read when scraped (one short read transaction)."""

    def __init__(self, broker: Broker):
        self.broker = broker

    def collect(self) -> Iterator[Metric]:
        from ..booking import ledger  # the booking layer, only when scraped

        now = int(time.time())
        capacity = GaugeMetricFamily(
            "ebroker_pool_capacity", "What a pool offers, per resource class",
            labels=["pool", "resource_class"],
        )  # fmt: skip
        booked_now = GaugeMetricFamily(
            "ebroker_pool_booked", "What is booked of a pool now (held offers included)",
            labels=["pool", "resource_class"],
        )  # fmt: skip
        booked_hour = GaugeMetricFamily(
            "ebroker_pool_booked_next_hour", "The most booked of a pool at any time in the "
            "next hour", labels=["pool", "resource_class"],
        )  # fmt: skip
        phases = GaugeMetricFamily(
            "ebroker_sessions", "Sessions in the booking table, by phase", labels=["phase"]
        )
        with self.broker.db.read() as session:
            platforms = [p.name for p in self.broker.platforms]
            views = ledger.load_pools(
                session, platforms, (now, now + NEXT_HOUR), cache=self.broker.usage_cache,
                now=now,
            )  # fmt: skip
            connection = session.connection()
            counted = connection.execute(_PHASES).all()
            held = connection.execute(_HOLDS, {"now": now}).scalar_one()
        for view in sorted(views, key=lambda v: v.name):
            for resource_class, inventory in sorted(view.inventories.items()):
                labels = [view.name, resource_class]
                capacity.add_metric(labels, inventory.capacity)
                if resource_class in view.usage:
                    used = view.usage[resource_class]
                    booked_now.add_metric(labels, used.peak(now, now + 1))
                    booked_hour.add_metric(labels, used.peak(now, now + NEXT_HOUR))
        for phase, count in sorted(counted):
            phases.add_metric([phase], count)
        holds = GaugeMetricFamily("ebroker_holds_open", "Offers held now, unexpired")
        holds.add_metric([], held)
        yield from (capacity, booked_now, booked_hour, phases, holds)


def exposition(*collectors: Collector) -> tuple[bytes, str]:
    """The metrics page: this process's metrics (every worker's, in multiprocess mode) and
    the given collectors'."""
    registry = CollectorRegistry(auto_describe=True)
    if os.environ.get(MULTIPROCESS_ENV):
        MultiProcessCollector(registry)
    else:
        registry.register(_Default())
    for collector in collectors:
        registry.register(collector)
    # Prometheus's text format; a bare text/plain is read as its version 0.0.4, which this
    # output is (connexion holds an answer's media type to the spec's, parameters included)
    return generate_latest(registry), CONTENT_TYPE


class _Default(Collector):
    """The process's own registry (the counters above, the process and GC collectors)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
