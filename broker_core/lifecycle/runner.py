"""The lifecycle engine's loop in a node process: pick due sessions, lease them, step them in
worker threads, keep their leases fresh, and reconcile the platforms with the booking table."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from ..broker import Broker
from .engine import Lifecycle
from .reconcile import reconcile

log = logging.getLogger(__name__)


class LifecycleRunner:
    def __init__(self, broker: Broker):
        self.broker = broker
        self.engine = Lifecycle(broker)
        self.config = broker.config.lifecycle
        self._wake = asyncio.Event()
        self._working: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        """Look for due sessions now (callable from any thread: accept/cancel call it)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.broker.wake_lifecycle = self.wake
        tick = self.config.poll_interval.total_seconds()
        renew_every = max(self.config.lease.total_seconds() / 4, 0.5)
        reconcile_every = self.config.reconcile_interval.total_seconds()
        last_renew = last_reconcile = time.monotonic()
        try:
            while True:
                try:
                    await self._start_due()
                    now = time.monotonic()
                    if now - last_renew >= renew_every:
                        last_renew = now
                        await asyncio.to_thread(self.engine.renew, list(self._working))
                    if now - last_reconcile >= reconcile_every:
                        last_reconcile = now
                        await asyncio.to_thread(reconcile, self.engine)
                except Exception:  # the engine must outlive a database hiccup
                    log.exception("lifecycle loop failed; retrying")
                self._wake.clear()
                # asyncio.timeout, not wait_for: before 3.12 wait_for can swallow the
                # cancellation that stops this loop, and the app never shuts down
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(tick, 1.0)):
                        await self._wake.wait()
        finally:
            self.broker.wake_lifecycle = None
            for task in self._working.values():
                task.cancel()

    async def _start_due(self) -> None:
        room = self.config.parallel - len(self._working)
        if room <= 0:
            return
        for uuid in await asyncio.to_thread(self.engine.due, room + len(self._working)):
            if uuid in self._working or len(self._working) >= self.config.parallel:
                continue
            if await asyncio.to_thread(self.engine.acquire, uuid):
                self._working[uuid] = asyncio.create_task(self._advance(uuid))

    async def _advance(self, uuid: str) -> None:
        try:
            await asyncio.to_thread(self.engine.advance, uuid)
        except Exception:
            log.exception("session %s: lifecycle step failed; retrying later", uuid)
        finally:
            self._working.pop(uuid, None)
            self._wake.set()  # a step may have made the session (or another) due again
