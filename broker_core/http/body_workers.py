"""CPU-bound work on bodies (decoding, validating against the spec, re-encoding answers) off the
event loop, a bounded number at once.

On the event loop, one large body stalls every client of the node for as long as it takes: the
liveness probe too. In worker threads it costs the loop only its share of the GIL. Bounding how
many run at once keeps a flood of hostile bodies from taking every thread and, with a bound on
how many may wait, the memory they hold: past it, a request is refused with 503 at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar
from typing import TypeVar

import anyio
import anyio.to_thread

from .bodies import BodyError, too_large_to_decode

T = TypeVar("T")
RETRY_AFTER_SECONDS = 1


class BodyWorkers:
    """At most ``workers`` body jobs at once, and at most ``queue`` waiting for one."""

    def __init__(self, workers: int, queue: int):
        self.workers = workers
        self.queue = queue
        self._loop: asyncio.AbstractEventLoop | None = None
        self._limiter: anyio.CapacityLimiter | None = None

    def limiter(self) -> anyio.CapacityLimiter:
        """The limiter of the running event loop (a test may run several loops, one by one)."""
        loop = asyncio.get_running_loop()
        if self._limiter is None or self._loop is not loop:
            self._loop, self._limiter = loop, anyio.CapacityLimiter(self.workers)
        return self._limiter

    async def run(self, job: Callable[..., T], *args: object, always_wait: bool = False) -> T:
        """``job(*args)`` in a worker thread; a 503 when too many wait (unless ``always_wait``:
        an answer already made is worth waiting for), a 413 when it runs out of memory."""
        limiter = self.limiter()
        stats = limiter.statistics()
        full = stats.borrowed_tokens >= stats.total_tokens and stats.tasks_waiting >= self.queue
        if full and not always_wait:
            raise BodyError(
                503,
                "Service Unavailable",
                f"the node is busy with other request bodies ({self.workers} at work, "
                f"{stats.tasks_waiting} waiting); retry in {RETRY_AFTER_SECONDS} s",
            )
        try:
            return await anyio.to_thread.run_sync(job, *args, limiter=limiter)
        except MemoryError:
            raise too_large_to_decode() from None


# the workers of the app serving the current request (set by the content layer)
current: ContextVar[BodyWorkers] = ContextVar("body_workers")
_FALLBACK = BodyWorkers(workers=1, queue=64)


async def run_body_job(job: Callable[..., T], *args: object, always_wait: bool = False) -> T:
    """``job(*args)`` on the current app's body workers (a default set outside a request)."""
    return await current.get(_FALLBACK).run(job, *args, always_wait=always_wait)
