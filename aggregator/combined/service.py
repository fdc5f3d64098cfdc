"""The aggregator's answers for combined requests and offers: what ``aggregator.service``
hands over when a request has ``parts`` or a uuid is a combined offer's."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from broker_core.errors import Conflict, ParameterInvalid

from .booking import Booking, part_phase
from .documents import render
from .offers import combined_offers, offerset_document
from .recovery import Recovery
from .request import parse_combined
from .store import CANCELLED, CANCELLING, CONFIRMED, OFFERED, CombinedStore

LIVE_STATES = (CONFIRMED, CANCELLING, CANCELLED)  # the parts' phases are asked of their nodes


class Combined:
    def __init__(self, agg: Any):
        self.agg = agg
        self.store = CombinedStore(lambda: agg.store.engine)
        self.booking = Booking(agg, self.store)
        self.recovery = Recovery(agg, self.store, self.booking)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """The recovery pass, in the background for as long as the aggregator runs."""
        self._task = asyncio.create_task(self.recovery.run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def request_offers(
        self, document: dict[str, Any], token: str | None, project: str | None, probe: bool
    ) -> dict[str, Any]:
        if probe:
            raise ParameterInvalid(
                "probe",
                "a combined request cannot be a probe: its offers "
                "hold their slots, so that every part can be booked",
            )
        request = parse_combined(document, list(self.agg.upstreams.by_name))
        return await combined_offers(self.agg, self.store, request, token, project)

    async def offerset(self, uuid: str, stored: dict[str, Any]) -> dict[str, Any] | None:
        """A combined offer set (None when this one is not)."""
        rows = await asyncio.to_thread(self.store.of_offerset, uuid)
        if not rows:  # a NO of a combined request has no offers: the generic view serves it
            return None
        return offerset_document(self.agg.base_url, uuid, stored["created_at"],
                                 stored["result"], list(stored["messages"]),
                                 [render(r) for r in rows])  # fmt: skip

    async def withdraw(self, offerset_uuid: str, token: str | None) -> None:
        """Reject every open combined offer of the set (their part offers on their nodes)."""
        for row in await asyncio.to_thread(self.store.of_offerset, offerset_uuid):
            if row.state == OFFERED:
                with contextlib.suppress(Conflict):  # accepted or rejected meanwhile
                    await self.booking.reject(row, token)

    async def session(self, uuid: str, token: str | None) -> dict[str, Any] | None:
        row = await asyncio.to_thread(self.store.get, uuid)
        if row is None:
            return None
        live: dict[int, str] = {}
        if row.state in LIVE_STATES:
            phases = await asyncio.gather(*(part_phase(self.agg, p, token)
                                            for p in row.parts))  # fmt: skip
            live = {p.position: ph for p, ph in zip(row.parts, phases, strict=True) if ph}
        return render(row, live)

    async def update(
        self, uuid: str, update: dict[str, Any], token: str | None
    ) -> dict[str, Any] | None:
        row = await asyncio.to_thread(self.store.get, uuid)
        if row is None:
            return None
        value = update.get("value")
        if update.get("kind") != "uri:enum-value-update" or update.get("path") != "phase":
            raise Conflict("a combined offer takes only phase updates (ACCEPTED, REJECTED, "
                           "CANCELLED); update each part on its node for anything else",
                           phase=render(row)["phase"])  # fmt: skip
        if value == "ACCEPTED":
            return await self.booking.accept(row, token)
        if value == "REJECTED":
            return await self.booking.reject(row, token)
        if value == "CANCELLED":
            return await self.booking.cancel(row, token)
        raise Conflict(f"a combined offer cannot be set to {value!r}; allowed: ACCEPTED, "
                       "REJECTED, CANCELLED", phase=render(row)["phase"])  # fmt: skip
