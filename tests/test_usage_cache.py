"""The per-process usage cache serves exactly the usage the booking table holds.

Two brokers on one database stand for two node processes: one makes every kind of change
(offers, accepts, rejects, cancels, expiries, direct bookings), the other only looks now and
then, so its cache must catch up over many generations at once.
"""

from __future__ import annotations

import contextlib
import random
import time
from datetime import UTC, datetime

from sqlmodel import select

from broker_core.booking import ledger
from broker_core.booking.cache import KEEP_PAST, UsageCache
from broker_core.db.tables import Allocation, ResourcePool
from broker_core.errors import Conflict
from broker_core.offers.service import request_offers
from broker_core.sessions.updates import expire_due, update_session
from tests.conftest import ACCEPT, request_doc

H = 3600
CLASSES = ["cores", "memory"]


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def phase(value: str) -> dict[str, str]:
    return {**ACCEPT, "value": value}


def usage(broker, window, cache):
    """(generation, {class: (amount at each step, releases)}) of the one pool over
    ``window``, read with or without a cache."""
    with broker.db.snapshot() as session:
        (view,) = ledger.load_pools(
            session, ["sim"], window, CLASSES, cache=cache, now=int(time.time())
        )
    low, high = window
    # the cache may keep steps that change nothing, and steps outside the window
    return view.generation, {
        c: (
            [(t, u.at(t)) for t in range(low, high, 300)],
            [t for t in u.releases if low < t < high],
        )
        for c, u in view.usage.items()
    }


def test_cached_usage_equals_the_table_after_every_kind_of_change(broker_factory, database_url):
    rng = random.Random(7)
    writer = broker_factory(database_url)
    reader = broker_factory(database_url)  # another process: its own cache
    now = time.time()
    offered: list[str] = []
    accepted: list[str] = []
    checks = 0
    for step in range(120):
        action = rng.random()
        if action < 0.45 or not offered:
            start = now + rng.randint(0, 40) * H / 4
            doc = request_doc(
                cores=(1, rng.randint(1, 6)),
                memory=(1, 8),
                start=f"{iso(start)}/{iso(start + 2 * H)}",
                duration=f"PT{rng.choice((1, 2, 3))}H",
            )
            answer = request_offers(writer, doc)
            offered += [o["meta"]["uuid"] for o in answer["offers"]]
        elif action < 0.6:
            uuid = offered.pop(rng.randrange(len(offered)))
            try:
                update_session(writer, uuid, phase("ACCEPTED"))
                accepted.append(uuid)
            except Conflict:
                pass  # a sibling was accepted first
        elif action < 0.75:
            uuid = offered.pop(rng.randrange(len(offered)))
            with contextlib.suppress(Conflict):  # a sibling was accepted first
                update_session(writer, uuid, phase("REJECTED"))
        elif action < 0.85 and accepted:
            update_session(writer, accepted.pop(rng.randrange(len(accepted))), phase("CANCELLED"))
        elif action < 0.92:
            expire_due(writer, now=int(time.time()) + 10 * H)  # every open offer expires
            offered.clear()
        else:
            with contextlib.suppress(Conflict):  # nothing free right now
                request_offers(writer, request_doc(cores=(1, 2), duration="PT1H"), direct=True)
        if step % rng.choice((1, 3, 7)) == 0:
            low = int(now) + rng.randint(-1, 40) * H // 4
            window = (low, low + rng.choice((1, 3, 12)) * H)
            for broker in (writer, reader):
                cached = usage(broker, window, broker.usage_cache)
                assert cached == usage(broker, window, None), f"step {step}, window {window}"
                checks += 1
    assert checks > 60
    # the changes really were caught up by generation, not by reading everything again
    with writer.db.read() as session:
        pool = session.get(ResourcePool, 1)
        tagged = set(session.exec(select(Allocation.generation)))
    assert pool.generation > 100 and max(tagged) == pool.generation


def test_a_release_bumps_the_pools_generation_and_retags_its_allocations(broker):
    answer = request_offers(broker, request_doc(cores=(2, 2), duration="PT1H"))
    first = answer["offers"][0]["meta"]["uuid"]
    with broker.db.read() as session:
        before = session.get(ResourcePool, 1).generation
    update_session(broker, first, phase("REJECTED"))
    with broker.db.read() as session:
        after = session.get(ResourcePool, 1).generation
        tags = set(session.exec(select(Allocation.generation)))
    assert after == before + 1
    assert after in tags  # the rejected booking's allocations carry the new generation


def test_a_window_older_than_the_cache_keeps_is_read_from_the_table(broker):
    request_offers(broker, request_doc(cores=(3, 3), duration="PT1H"), direct=True)
    cache = UsageCache()
    now = int(time.time())
    recent = (now - H, now + 2 * H)
    assert usage(broker, recent, cache) == usage(broker, recent, None)
    old = (now - 2 * KEEP_PAST, now + 2 * H)
    assert usage(broker, old, cache) == usage(broker, old, None)
    served = cache.usage(1, 0, old, CLASSES, load=None, changes=None, now=now)
    assert served is None, "a window before the cache's floor must not be served from it"
