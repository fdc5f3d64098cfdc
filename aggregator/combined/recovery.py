"""Finishing or undoing the combined bookings a killed aggregator (or a node that was down)
left half done, read from the aggregator's own store.

The rule: a booking found CONFIRMING (the aggregator died while accepting its parts) is
finished only when every part's node says the part is accepted; otherwise (a part still
OFFERED, or gone, or its node not answering) it is undone, as a failed accept would have been.
ABORTING and CANCELLING bookings have every part not yet released cancelled. A node that does
not answer is retried with a growing back-off (1 s, doubling, at most ``MAX_BACKOFF``) until
every part is done; the pass runs at start-up and whenever a booking was left unfinished."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from broker_core.sessions.phases import AFTER_ACCEPTANCE

from .booking import Booking, _note, part_phase
from .store import (
    ABORTED,
    ABORTING,
    CANCELLED,
    CANCELLING,
    CONFIRMED,
    CONFIRMING,
    CombinedRow,
    CombinedStore,
)

log = logging.getLogger("aggregator.combined")
MAX_BACKOFF = 30.0
ACCEPTED_PHASES = AFTER_ACCEPTANCE - {"COMPLETED", "FAILED"}


class Recovery:
    def __init__(self, agg: Any, store: CombinedStore, booking: Booking):
        self.agg = agg
        self.store = store
        self.booking = booking
        self.passes = 0  # for tests and logs

    async def run(self) -> None:
        """Settle what is unfinished, again and again while some of it is left."""
        backoff = 1.0
        while True:
            left = await self.settle_all()
            self.passes += 1
            if left:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = 1.0
            self.booking.unfinished.clear()
            with contextlib.suppress(TimeoutError):  # look again now and then all the same
                await asyncio.wait_for(self.booking.unfinished.wait(), MAX_BACKOFF)

    async def settle_all(self) -> int:
        """One pass; how many bookings are still unfinished after it."""
        rows = await asyncio.to_thread(self.store.unfinished)
        left = 0
        for row in rows:
            if row.uuid in self.booking.busy:
                continue  # a request of this process is working on it
            try:
                if not await self.settle(row):
                    left += 1
            except Exception:  # one booking's trouble must not stop the others'
                log.exception("combined booking %s: recovery failed", row.uuid)
                left += 1
        return left

    async def settle(self, row: CombinedRow) -> bool:
        """Finish or undo one booking; True when it is done."""
        token = self.booking.tokens.get(row.uuid)  # gone after a restart: the service's acts
        service = token is None
        if row.state == CONFIRMING:
            phases = await asyncio.gather(*(part_phase(self.agg, p, token, judged=False,
                                                       service=service)
                                            for p in row.parts))  # fmt: skip
            now = int(time.time())
            if all(p in ACCEPTED_PHASES for p in phases):
                log.info("combined booking %s: every part was accepted; finished", row.uuid)
                return await asyncio.to_thread(
                    self.store.move, row.uuid, (CONFIRMING,), CONFIRMED, now, parts=CONFIRMED
                )  # fmt: skip
            said = ", ".join(f"{p.name}: {ph or 'unknown'}" for p, ph in
                             zip(row.parts, phases, strict=True))  # fmt: skip
            note = [_note("the aggregator stopped while booking; not every part was accepted "
                          "({parts}), so every part is released", parts=said)]  # fmt: skip
            log.warning("combined booking %s: interrupted (%s); undoing it", row.uuid, said)
            if not await asyncio.to_thread(self.store.move, row.uuid, (CONFIRMING,), ABORTING,
                                           now, parts=ABORTING, note=note):  # fmt: skip
                return False
            await asyncio.to_thread(self.agg.store.release_acceptance, row.offerset_uuid,
                                    row.uuid)  # fmt: skip
            row = await self.booking._reread(row.uuid)
        final = {ABORTING: ABORTED, CANCELLING: CANCELLED}.get(row.state)
        if final is None:
            return True
        return not await self.booking.undo(row, final, token, service)
