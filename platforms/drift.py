"""Pools that shrink under a running node, as platforms that re-read their capacity see it (a
Kubernetes node lost, an OpenStack host disabled): a re-read that finds a pool giving less than
was booked for it at start-up is logged once per change, and noted once per change in the
messages of each session drawing on that pool. Offers already avoid what is gone (the platform's
external claims); this tells the people whose bookings it may touch."""

from __future__ import annotations

import logging

from broker_core.config import PoolConfig

from .contract import Execution

log = logging.getLogger(__name__)
NOTED_STATE = "shrink_noted"  # execution.state: pool -> the text last noted in the session


def shrinkage(
    baseline: list[PoolConfig], now: dict[str, tuple[dict[str, int], str]]
) -> dict[str, str]:
    """Pools whose capacity now (pool -> (amount per class, why)) is below what was booked at
    start-up: pool -> ``"<now> of <then> <class>, ... remain (<why>)"``."""
    found = {}
    for pool in baseline:
        if pool.name not in now:
            continue
        amounts, why = now[pool.name]
        lacking = [
            f"{amounts.get(cls, 0)} of {inventory.capacity} {cls}"
            for cls, inventory in sorted(pool.inventories.items())
            if amounts.get(cls, 0) < inventory.capacity
        ]
        if lacking:
            found[pool.name] = f"{', '.join(lacking)} remain ({why})"
    return found


class Drift:
    """What a platform's last re-read found lacking, per pool."""

    def __init__(self, platform: str):
        self.platform = platform
        self.shrunk: dict[str, str] = {}

    def update(self, shrunk: dict[str, str]) -> None:
        """A re-read's finding: logged where it changed."""
        for pool, text in shrunk.items():
            if self.shrunk.get(pool) != text:
                log.warning(
                    "platform %s: pool %s shrank below what it offers for booking: %s",
                    self.platform,
                    pool,
                    text,
                )
        for pool in set(self.shrunk) - set(shrunk):
            log.warning("platform %s: pool %s has its booked capacity again", self.platform, pool)
        self.shrunk = shrunk

    def note(self, execution: Execution) -> None:
        """A note in the session, once per change, for each of its pools that has shrunk."""
        noted = execution.state.setdefault(NOTED_STATE, {})
        for pool in execution.pools:
            text = self.shrunk.get(pool)
            if text and noted.get(pool) != text:
                execution.notes.append(f"pool {pool} of {self.platform} shrank: {text}")
                noted[pool] = text
