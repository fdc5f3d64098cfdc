"""Upstream offers the aggregator does not pass on are rejected on their upstreams at once: an
offer nobody sees still holds its resources until it expires, keeping them from other users.
Rejections run in the background (the client's answer does not wait for them), each call within
its upstream's own timeout and outside its breaker; what could not be rejected is logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any

from .merge import phase_of
from .upstreams import Upstream, UpstreamError, Upstreams

log = logging.getLogger("aggregator.rejections")

REJECT = {"kind": "uri:enum-value-update", "path": "phase", "value": "REJECTED"}
# an offer that is already one of these needs no rejection
GONE = frozenset({"REJECTED", "EXPIRED", "CANCELLED", "FAILED"})
CLOSE_GRACE = 2.0  # seconds rejections under way may take when the aggregator stops


@dataclass(frozen=True)
class Unused:
    """An upstream's offer the aggregator does not pass on: its upstream and session URL."""

    upstream: str
    url: str


class Rejections:
    """The background rejections of one aggregator (on its event loop)."""

    def __init__(self, upstreams: Upstreams | None):
        self.upstreams = upstreams
        self._tasks: set[asyncio.Task[Any]] = set()
        self.rejected = 0  # counts, for tests and logs
        self.failed = 0

    def reject(self, offers: Iterable[Unused], token: str | None, why: str) -> None:
        """Reject ``offers`` in the background; ``why`` says in the log why they were unused."""
        offers = list(offers)
        if offers:
            self._spawn(self._reject_all(offers, token, why))

    def reject_when_answered(
        self, asked: Iterable[tuple[str, Awaitable[list[Unused]]]], token: str | None
    ) -> None:
        """Reject the offers of answers still under way (each within its upstream's timeout):
        the answers came too late to be passed on, or the request was given up."""
        for upstream, answer in asked:
            self._spawn(self._reject_late(upstream, answer, token))

    async def close(self) -> None:
        """Let rejections under way finish for a moment, then cancel the rest."""
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=CLOSE_GRACE)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%d rejections were cancelled when the aggregator stopped", len(pending))

    async def idle(self) -> None:
        """Wait until no rejection is under way (tests, benchmarks)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reject_late(
        self, upstream: str, answer: Awaitable[list[Unused]], token: str | None
    ) -> None:
        try:
            offers = await answer
        except Exception:  # the answer's own failure was already noted (or nobody waits for it)
            return
        await self._reject_all(offers, token, f"upstream {upstream} answered too late")

    async def _reject_all(self, offers: list[Unused], token: str | None, why: str) -> None:
        await asyncio.gather(*(self._reject_one(o, token, why) for o in offers))

    async def _reject_one(self, offer: Unused, token: str | None, why: str) -> None:
        upstream: Upstream | None = None
        if self.upstreams is not None:
            upstream = self.upstreams.by_name.get(offer.upstream)
        if upstream is None or self.upstreams is None:
            self._failed(offer, why, "the upstream is no longer configured")
            return
        try:
            answer = await self.upstreams.call(upstream, "POST", offer.url, document=REJECT,
                                               token=token, judged=False)  # fmt: skip
        except UpstreamError as exc:
            self._failed(offer, why, str(exc))
            return
        if answer.status == 200 or phase_of(answer.document) in GONE:
            self.rejected += 1
            return
        self._failed(offer, why, f"it answered {answer.status}")

    def _failed(self, offer: Unused, why: str, error: str) -> None:
        self.failed += 1
        log.warning("could not reject unused offer %s at upstream %s (%s): %s",
                    offer.url, offer.upstream, why, error)  # fmt: skip
