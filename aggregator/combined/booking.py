"""Phase 2 of a combined booking: accept every part, or none.

The accept of a combined offer is a two-phase commit over the nodes' own operations: the
parts' offers already hold their slots (phase 1); the intent (CONFIRMING) is written to the
aggregator's store before any part is accepted, each part's state before its call and after
its answer. If any part fails (a lost race: 409; a node down; a timeout), the booking is
ABORTING, written before any undo: every part is then cancelled on its node (CANCELLED frees an
offer's hold and an accepted session's booking alike; a part whose accept timed out may have
been accepted, and is cancelled as well), and the client gets a 409 saying which part failed.
A part that cannot be cancelled now (its node is down) stays ABORTING: ``recovery`` retries it
until it is done, so no node keeps a confirmed part of a failed booking."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from broker_core.errors import Conflict
from broker_core.kinds.base import message
from broker_core.sessions.phases import AFTER_ACCEPTANCE

from .. import service as aggregator_service
from ..merge import phase_of
from ..rejections import GONE, Unused
from ..upstreams import UpstreamError
from .documents import render
from .store import (
    ABORTED,
    ABORTING,
    CANCELLED,
    CANCELLING,
    CONFIRMED,
    CONFIRMING,
    OFFERED,
    REJECTED,
    CombinedRow,
    CombinedStore,
    PartRow,
)

log = logging.getLogger("aggregator.combined")

ACCEPT = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
CANCEL = {"kind": "uri:enum-value-update", "path": "phase", "value": "CANCELLED"}
# a part's session in one of these holds nothing any more
RELEASED_PHASES = GONE | {"COMPLETED"}


@dataclass
class Outcome:
    """One call to a part's node: whether it did what was asked, and if not, why."""

    done: bool
    why: str = ""
    phase: str | None = None
    # the node would not act for the credential the aggregator has (no caller's token now)
    credential: bool = False


def own_credential_problem(upstream: Any, token: str | None, service: bool) -> str | None:
    """Why the aggregator cannot act on a part at this upstream without its user, or None.

    An upstream the caller's token is passed on to (``forward_token``) keeps each session for
    its user; a restarted aggregator has no such token (they are never stored), so its
    recovery (``service``) acts with ``service_token``, which the node obeys only if it is in
    the node's ``auth.service_groups``."""
    config = upstream.config
    if token is not None or not config.forward_token or not service or config.service_token:
        return None
    return (f"upstream {upstream.name} is passed callers' tokens and the aggregator has no "
            "service_token for it (a credential in the node's auth.service_groups), so it "
            "cannot act on the part without its user's token")  # fmt: skip


class Booking:
    """Accepts, cancels and undoes combined bookings for one aggregator."""

    def __init__(self, agg: Any, store: CombinedStore):
        self.agg = agg
        self.store = store
        self.busy: set[str] = set()  # combined bookings this process is working on now
        self.tokens: dict[str, str | None] = {}  # the callers' tokens, for retries (memory only)
        self.unfinished = asyncio.Event()  # something was left for recovery

    # --- the client's updates ----------------------------------------------------------------

    async def accept(self, row: CombinedRow, token: str | None) -> dict[str, Any]:
        if row.state == CONFIRMED:
            return render(row)  # repeating an accept is harmless
        if row.state != OFFERED:
            raise Conflict(f"the combined offer is {render(row)['phase']}: it cannot be "
                           "accepted", phase=render(row)["phase"], session=render(row))  # fmt: skip
        now = int(time.time())
        if row.expires_at <= now:
            raise Conflict(f"the combined offer expired at {row.document['expires']}",
                           phase="EXPIRED", session=render(row))  # fmt: skip
        store = self.store
        if not await asyncio.to_thread(self.agg.store.claim_acceptance, row.offerset_uuid,
                                       row.uuid):  # fmt: skip
            raise Conflict("another offer of this offer set was accepted", phase="REJECTED")
        if not await asyncio.to_thread(store.move, row.uuid, (OFFERED,), CONFIRMING, now,
                                       parts=CONFIRMING):  # fmt: skip
            raise Conflict("the combined offer is being booked by another request",
                           phase="OFFERED")  # fmt: skip
        self.busy.add(row.uuid)
        self.tokens[row.uuid] = token
        try:
            outcomes = await asyncio.gather(*(self._accept_part(row, p, token)
                                              for p in row.parts))  # fmt: skip
            failed = [(p, o) for p, o in zip(row.parts, outcomes, strict=True) if not o.done]
            if not failed:
                await asyncio.to_thread(store.move, row.uuid, (CONFIRMING,), CONFIRMED,
                                        int(time.time()))  # fmt: skip
                await self._reject_siblings(row, token)
                self.tokens.pop(row.uuid, None)  # nothing is left to retry with it
                return render(await self._reread(row.uuid))
            why = "; ".join(f"part {p.name} at upstream {p.upstream}: {o.why}" for p, o in failed)
            note = [_note("the combined booking failed, so every part is released: {why}",
                          why=why)]  # fmt: skip
            await asyncio.to_thread(store.move, row.uuid, (CONFIRMING,), ABORTING,
                                    int(time.time()), parts=ABORTING, note=note)  # fmt: skip
            await asyncio.to_thread(self.agg.store.release_acceptance, row.offerset_uuid, row.uuid)
            left = await self.undo(await self._reread(row.uuid), ABORTED, token)
        finally:
            self.busy.discard(row.uuid)
        detail = f"the combined booking failed: {why}; " + (
            "every part was released" if not left else
            f"parts {', '.join(left)} are being released (their nodes did not answer)"
        )  # fmt: skip
        raise Conflict(detail, phase="FAILED", messages=[detail],
                       session=render(await self._reread(row.uuid)))  # fmt: skip

    async def cancel(self, row: CombinedRow, token: str | None) -> dict[str, Any]:
        """Cancel a combined booking (every part), or withdraw a combined offer."""
        if row.state in (CANCELLED, CANCELLING):
            return render(row)
        if row.state == OFFERED:
            return await self.reject(row, token, CANCELLED)
        if row.state != CONFIRMED:
            phase = render(row)["phase"]
            raise Conflict(f"the combined offer is {phase}: it cannot be cancelled", phase=phase,
                           session=render(row))  # fmt: skip
        if not await asyncio.to_thread(self.store.move, row.uuid, (CONFIRMED,), CANCELLING,
                                       int(time.time()), parts=ABORTING):  # fmt: skip
            raise Conflict("the combined booking is changing: try again", phase="ACCEPTED")
        self.busy.add(row.uuid)
        self.tokens[row.uuid] = token
        try:
            left = await self.undo(await self._reread(row.uuid), CANCELLED, token)
        finally:
            self.busy.discard(row.uuid)
        document = render(await self._reread(row.uuid))
        if left:
            document["meta"]["messages"].append(_note(
                "parts {parts} could not be cancelled yet (their nodes did not answer): the "
                "aggregator retries until they are", parts=", ".join(left)))  # fmt: skip
        return document

    async def reject(self, row: CombinedRow, token: str | None, state: str = REJECTED) -> dict:
        """Withdraw a combined offer: its part offers that no other open combined offer of the
        set uses are rejected on their nodes."""
        if row.state in (REJECTED, CANCELLED):
            return render(row)
        if row.state != OFFERED or not await asyncio.to_thread(
            self.store.move, row.uuid, (OFFERED,), state, int(time.time())
        ):
            phase = render(row)["phase"]
            raise Conflict(f"the combined offer is {phase}: it cannot be rejected", phase=phase,
                           session=render(row))  # fmt: skip
        siblings = await asyncio.to_thread(self.store.of_offerset, row.offerset_uuid)
        kept = {p.remote_url for s in siblings if s.state == OFFERED for p in s.parts}
        self.agg.rejections.reject(
            [Unused(p.upstream, p.remote_url) for p in row.parts if p.remote_url not in kept],
            token, "a rejected combined offer",
        )  # fmt: skip
        return render(await self._reread(row.uuid))

    # --- the steps ---------------------------------------------------------------------------

    async def _accept_part(self, row: CombinedRow, part: PartRow, token: str | None) -> Outcome:
        outcome = await self._post(part, ACCEPT, token)
        if outcome.done and outcome.phase in AFTER_ACCEPTANCE | {"ACCEPTED"}:
            await asyncio.to_thread(self.store.set_part, row.uuid, part.position, CONFIRMED)
            return outcome
        if outcome.done:
            return Outcome(False, f"it answered with phase {outcome.phase}", outcome.phase)
        return outcome

    async def undo(
        self, row: CombinedRow, final: str, token: str | None, service: bool = False
    ) -> list[str]:
        """Cancel every part not yet ABORTED; the names of those still left (their nodes did
        not answer, or would not act for the aggregator). When none is left the booking is
        ``final``. ``service``: the recovery's, without a caller (see ``bearer``)."""
        pending = [p for p in row.parts if p.state != ABORTED]
        outcomes = await asyncio.gather(*(self._undo_part(p, token, service) for p in pending))
        left, refused = [], []
        for part, outcome in zip(pending, outcomes, strict=True):
            if outcome.done:
                await asyncio.to_thread(self.store.set_part, row.uuid, part.position, ABORTED)
            else:
                left.append(part.name)
                if outcome.credential:
                    refused.append(f"part {part.name}: {outcome.why}")
                    log.error("combined booking %s: part %s at upstream %s cannot be released: "
                              "%s", row.uuid, part.name, part.upstream, outcome.why)  # fmt: skip
                else:
                    log.warning("combined booking %s: part %s at upstream %s not released yet: "
                                "%s", row.uuid, part.name, part.upstream, outcome.why)  # fmt: skip
        if refused:
            await self._say_once(
                row,
                "the aggregator cannot release every part of this failed "
                "booking; it keeps trying: {why}",
                why="; ".join(refused),
            )
        if left:
            self.unfinished.set()
        else:
            self.tokens.pop(row.uuid, None)  # nothing is left to retry with it
            await asyncio.to_thread(self.store.move, row.uuid, (row.state,), final,
                                    int(time.time()))  # fmt: skip
        return left

    async def _say_once(self, row: CombinedRow, template: str, **values: Any) -> None:
        """A warning in the booking's own messages, unless the last one says the same."""
        note = _note(template, **values)
        current = await self._reread(row.uuid)
        if current.messages and current.messages[-1].get("message") == note.get("message"):
            return
        await asyncio.to_thread(self.store.move, row.uuid, (current.state,), current.state,
                                int(time.time()), note=[note])  # fmt: skip

    async def _undo_part(self, part: PartRow, token: str | None, service: bool) -> Outcome:
        """CANCELLED: an offer's hold, or an accepted session's booking, is freed; a session
        that holds nothing already is left as it is (a 404: its node no longer knows it). At an
        upstream that keeps sessions for their users, a 404 or 403 without the user's token is
        no proof of that: the node would not act for the aggregator."""
        upstream = self.agg.upstreams.by_name.get(part.upstream)
        problem = own_credential_problem(upstream, token, service) if upstream else None
        if problem is not None:
            return Outcome(False, problem, credential=True)
        outcome = await self._post(part, CANCEL, token, judged=False, service=service)
        if outcome.done or outcome.phase in RELEASED_PHASES:
            return Outcome(True, phase=outcome.phase)
        status = outcome.why.split(":")[0].removeprefix("it answered ")
        if status in ("404", "403") and upstream and upstream.config.forward_token and not token:
            which = "service_token" if service else "token"
            return Outcome(False, f"upstream {part.upstream} would not let the aggregator's "
                           f"{which} act on it (it answered {status}): that credential must be "
                           "in the node's auth.service_groups", outcome.phase,
                           credential=True)  # fmt: skip
        if status == "404":
            return Outcome(True, phase=outcome.phase)
        return outcome

    async def _post(
        self, part: PartRow, update: dict[str, Any], token: str | None, judged: bool = True,
        service: bool = False,
    ) -> Outcome:  # fmt: skip
        """One update of a part on its node; an undo (not ``judged``) is not held back by the
        node's breaker, so that a node back up is released at once."""
        upstream = self.agg.upstreams.by_name.get(part.upstream)
        if upstream is None:
            return Outcome(False, "the upstream is no longer configured")
        try:
            answer = await self.agg.upstreams.call(upstream, "POST", part.remote_url,
                                                   document=update, token=token,
                                                   judged=judged, service=service)  # fmt: skip
        except UpstreamError as exc:
            return Outcome(False, str(exc))
        phase = phase_of(answer.document)
        if answer.status == 200:
            return Outcome(True, phase=phase)
        if answer.status == 404:
            return Outcome(False, "404", phase)
        said = aggregator_service._detail(answer)
        return Outcome(False, f"it answered {answer.status}: {said}", phase)

    async def _reject_siblings(self, accepted: CombinedRow, token: str | None) -> None:
        """Every other combined offer of the set is REJECTED; their part offers not booked
        now are rejected on their nodes."""
        siblings = await asyncio.to_thread(self.store.of_offerset, accepted.offerset_uuid)
        booked = {p.remote_url for p in accepted.parts}
        now = int(time.time())
        urls: dict[str, str] = {}
        for sibling in siblings:
            if sibling.uuid == accepted.uuid:
                continue
            await asyncio.to_thread(self.store.move, sibling.uuid, (OFFERED,), REJECTED, now)
            urls.update({p.remote_url: p.upstream for p in sibling.parts
                         if p.remote_url not in booked})  # fmt: skip
        self.agg.rejections.reject([Unused(up, url) for url, up in urls.items()], token,
                                   "a sibling combined offer was accepted")  # fmt: skip

    async def _reread(self, uuid: str) -> CombinedRow:
        row = await asyncio.to_thread(self.store.get, uuid)
        assert row is not None  # combined rows are never deleted
        return row


async def part_phase(
    agg: Any, part: PartRow, token: str | None, judged: bool = True, service: bool = False
) -> str | None:
    """The phase of a part's session as its node says now; None when it does not say."""
    upstream = agg.upstreams.by_name.get(part.upstream)
    if upstream is None:
        return None
    try:
        answer = await agg.upstreams.call(upstream, "GET", part.remote_url, token=token,
                                          judged=judged, service=service)  # fmt: skip
    except UpstreamError:
        return None
    return phase_of(answer.document) if answer.status == 200 else None


def _note(template: str, **values: Any) -> dict[str, Any]:
    return aggregator_service._dump(message(template, level="WARN", **values))
