"""The aggregator's answers for combined requests and offers: what ``aggregator.service``
hands over when a request has ``parts`` or a uuid is a combined offer's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any

from broker_core.errors import Conflict, NotFound, ParameterInvalid, UpstreamUnavailable

from ..upstreams import UpstreamError
from .booking import Booking, part_phase
from .documents import render, summary
from .offers import combined_offers, offerset_document
from .recovery import Recovery
from .request import parse_combined
from .store import CANCELLED, CANCELLING, CONFIRMED, OFFERED, CombinedRow, CombinedStore, PartRow

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

    def listed(
        self, taken: list[tuple[str, dict[str, Any]]], filters: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """The merged list's offer sets, each naming its upstream; the nodes' offer sets of
        combined parts give way to their combined offer set, listed once (at its first part's):
        a node lists its offer sets to their owner only, so the combined one is too."""
        upstreams = {u.name for u in self.agg.upstreams.by_name.values()
                     if u.config.forward_token}  # fmt: skip
        found = self.store.listed([(name, item["uuid"]) for name, item in taken], upstreams)
        items = []
        for name, item in taken:
            key = (name, item["uuid"])
            if key not in found:
                items.append({**item, "upstream": name})
                continue
            uuid = found[key]
            stored = self.agg.store.offerset(uuid) if uuid else None
            if stored is None:
                continue  # another part's offer set stands for it
            listed = summary(stored, self.store.of_offerset(uuid), item["owner"],
                             self.agg.base_url)  # fmt: skip
            if all(filters.get(f) in (None, listed[f]) for f in ("state", "result")):
                items.append(listed)
        return items

    async def shown(self, parts: list[PartRow], token: str | None, what: str, uuid: str) -> None:
        """NotFound unless the caller may see what these parts are of: the first node that
        keeps its sessions for their users (the caller's token is passed on to it) and
        answers says so by showing the caller a part. Elsewhere the aggregator's own token
        shows it, as it shows an ordinary offer set's offers."""
        asked = [p for p in parts if (u := self.agg.upstreams.by_name.get(p.upstream))
                 and u.config.forward_token]  # fmt: skip
        for part in asked:
            upstream = self.agg.upstreams.by_name[part.upstream]
            try:
                answer = await self.agg.upstreams.call(upstream, "GET", part.remote_url,
                                                       token=token)  # fmt: skip
            except UpstreamError:
                continue
            if answer.status == 200:
                return
            if answer.status in (401, 403, 404):
                raise NotFound(what, uuid)
        if asked:
            raise UpstreamUnavailable(f"no node of its parts answered, so the aggregator cannot "
                                      f"tell whether the caller may see {what} {uuid}")  # fmt: skip

    async def offerset(
        self, uuid: str, stored: dict[str, Any], token: str | None
    ) -> dict[str, Any] | None:
        """A combined offer set (None when this one is not), if the caller may see it."""
        rows = await asyncio.to_thread(self.store.of_offerset, uuid)
        if not rows:  # a NO of a combined request has no offers: the generic view serves it
            return None
        await self.shown([p for r in rows for p in r.parts], token, "offer set", uuid)
        return offerset_document(self.agg.base_url, uuid, stored["created_at"],
                                 stored["result"], list(stored["messages"]),
                                 [render(r) for r in rows])  # fmt: skip

    async def withdraw(self, offerset_uuid: str, token: str | None) -> None:
        """Reject every open combined offer of the set (their part offers on their nodes), if
        the caller may see it."""
        rows = await asyncio.to_thread(self.store.of_offerset, offerset_uuid)
        if rows:
            await self.shown([p for r in rows for p in r.parts], token, "offer set",
                             offerset_uuid)  # fmt: skip
        for row in rows:
            if row.state == OFFERED:
                with contextlib.suppress(Conflict):  # accepted or rejected meanwhile
                    await self.booking.reject(row, token)

    async def session(self, uuid: str, token: str | None) -> dict[str, Any] | None:
        row = await self._row(uuid, token)
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
        row = await self._row(uuid, token)
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

    async def _row(self, uuid: str, token: str | None) -> CombinedRow | None:
        """The combined offer, if it is one and the caller may see it (else NotFound)."""
        row = await asyncio.to_thread(self.store.get, uuid)
        if row is not None:
            await self.shown(row.parts, token, "session", uuid)
        return row
