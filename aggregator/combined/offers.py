"""Phase 1 of a combined booking: ask each part's upstreams for offers (which hold their slots),
pair them into combined slots, and reject every part offer no combined offer uses.

When the parts' offers do not coincide (two nodes' earliest slots a minute apart, say), every
part is asked again from the latest of the parts' earliest starts, at most ``ROUNDS`` times in
all, within the aggregator's fan-out deadline; the offers of a round given up are rejected."""

from __future__ import annotations

import asyncio
import json
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from broker_core.kinds.base import Message, message
from broker_core.schedule import (
    Interval,
    ScheduleError,
    format_interval,
    instant,
    parse_intervals,
)
from broker_core.sessions.views import OFFERSET_KIND

from .. import service as aggregator_service
from ..merge import new_uuid, start_of
from ..rejections import Unused
from .documents import epoch, offer_row
from .request import CombinedRequest, Part
from .slots import PartOffer, combine, narrowed_start
from .store import CombinedStore

ROUNDS = 3
MAX_CANDIDATES = 64  # a part's earliest offers that are paired; the others are rejected
LOOK_AHEAD = 7 * 86400  # seconds a narrowed start window reaches when the request set none


async def combined_offers(
    agg: Any, store: CombinedStore, request: CombinedRequest, token: str | None,
    project: str | None,
) -> dict[str, Any]:  # fmt: skip
    stop = agg._stop_at()
    notes: list[Message] = []
    documents = {p.position: p.request for p in request.parts}
    slots: list[tuple[PartOffer, ...]] = []
    asked: list[list[PartOffer]] = []
    for round_ in range(ROUNDS):
        answers = await asyncio.gather(*(
            _ask_part(agg, part, documents[part.position], token, project, stop)
            for part in request.parts
        ))  # fmt: skip
        asked = [_earliest(offers, agg, token) for offers, _ in answers]
        round_notes = [n for _, said in answers for n in said]
        slots = combine(asked, request.within, agg.config.fanout.max_offers)
        if slots or any(not offers for offers in asked):
            notes += round_notes
            break
        latest = narrowed_start(asked)
        _reject(agg, [o for offers in asked for o in offers], token,
                "a combined request's offers that did not coincide")  # fmt: skip
        if latest is None or round_ == ROUNDS - 1 or time.monotonic() >= stop:
            notes += round_notes
            notes.append(message(
                "no combined slot: the parts' offers do not start within {within} s of each "
                "other (the latest earliest start was {latest})", level="WARN",
                within=request.within, latest=instant(int(latest or 0)),
            ))  # fmt: skip
            asked = []
            break
        narrowed = {p.position: _narrowed(documents[p.position], latest) for p in request.parts}
        if any(d is None for d in narrowed.values()):
            notes.append(message("no combined slot: some part's requested start ends before "
                                 "{latest}, when another part can start at the earliest",
                                 level="WARN", latest=instant(int(latest))))  # fmt: skip
            asked = []
            break
        documents = {k: v for k, v in narrowed.items() if v is not None}
    for part, offers in zip(request.parts, asked or [[] for _ in request.parts], strict=True):
        if not offers:
            notes.append(message("part {part} has no offer, so no combined slot can be offered",
                                 level="WARN", part=part.name))  # fmt: skip
    used = {id(o) for slot in slots for o in slot}
    _reject(agg, [o for offers in asked for o in offers if id(o) not in used], token,
            "part offers no combined offer uses")  # fmt: skip
    try:
        return await _keep(agg, store, request, slots, notes)
    except BaseException:
        _reject(agg, [o for slot in slots for o in slot], token, "the offer set was not kept")
        raise


async def _ask_part(
    agg: Any, part: Part, document: dict[str, Any], token: str | None, project: str | None,
    stop: float,
) -> tuple[list[PartOffer], list[Message]]:  # fmt: skip
    """One part's offers, from its site or from every upstream; what went wrong, as notes."""
    ups = [agg.upstreams.by_name[part.site]] if part.site else list(agg.upstreams.by_name.values())
    body = json.dumps(document).encode()
    path = "/requests" + (f"?{urlencode({'project': project})}" if project else "")
    kinds = aggregator_service.requested_kinds(document)
    tasks = [asyncio.create_task(agg._ask(u, path, body, token, kinds, stop)) for u in ups]
    _, pending = await asyncio.wait(tasks, timeout=max(stop - time.monotonic(), 0))
    agg._reject_answers(((u, t) for u, t in zip(ups, tasks, strict=True) if t in pending), token)
    offers: list[PartOffer] = []
    notes: list[Message] = []
    for upstream, task in zip(ups, tasks, strict=True):
        if task in pending:
            notes.append(message("part {part}: upstream {upstream} timed out", level="WARN",
                                 part=part.name, upstream=upstream.name))  # fmt: skip
            continue
        outcome, detail = task.result()
        if outcome != "offers":
            notes.append(message("part {part}: {said}", level="WARN", part=part.name,
                                 said=detail.message))  # fmt: skip
            continue
        for offer in detail[0]:
            start, expires = start_of(offer), epoch(offer.expires)
            if math.isinf(start) or math.isinf(expires):  # it cannot be paired: not held
                agg.rejections.reject([Unused(upstream.name, offer.meta.url)], token,
                                      "a part offer without a start or an expiry")  # fmt: skip
                continue
            offers.append(PartOffer(part.position, upstream.name, start, expires, offer))
    return offers, notes


def _earliest(offers: list[PartOffer], agg: Any, token: str | None) -> list[PartOffer]:
    """A part's ``MAX_CANDIDATES`` earliest offers (the rest are rejected): what pairing
    costs stays bounded whatever the upstreams answer."""
    offers = sorted(offers, key=lambda o: o.start)
    _reject(agg, offers[MAX_CANDIDATES:], token, "a part's offers beyond the earliest")
    return offers[:MAX_CANDIDATES]


def _narrowed(document: dict[str, Any], latest: float) -> dict[str, Any] | None:
    """The part's request asked to start no earlier than ``latest`` (within its own window);
    None when its window ends before."""
    floor = datetime.fromtimestamp(latest, UTC)
    schedule = dict(document.get("schedule") or {})
    requested = dict(schedule.get("requested") or {})
    try:
        windows = parse_intervals(requested["start"]) if requested.get("start") else []
    except ScheduleError:
        return None  # the node said so already
    if not windows:
        windows = [Interval(floor, floor + timedelta(seconds=LOOK_AHEAD))]
    kept = [Interval(max(w.start, floor), w.end) for w in windows if w.end >= floor]
    if not kept:
        return None
    requested["start"] = [format_interval(w) for w in kept]
    return {**document, "schedule": {**schedule, "requested": requested}}


def _reject(agg: Any, offers: list[PartOffer], token: str | None, why: str) -> None:
    agg.rejections.reject([Unused(o.upstream, o.offer.meta.url) for o in offers], token, why)


async def _keep(
    agg: Any, store: CombinedStore, request: CombinedRequest,
    slots: list[tuple[PartOffer, ...]], notes: list[Message],
) -> dict[str, Any]:  # fmt: skip
    now = int(time.time())
    offerset_uuid = new_uuid()
    names = [p.name for p in request.parts]
    rows = [offer_row(slot, names, uuid=new_uuid(), offerset_uuid=offerset_uuid, rank=i,
                      base_url=agg.base_url) for i, slot in enumerate(slots)]  # fmt: skip
    messages = [aggregator_service._dump(n) for n in notes]
    result = "YES" if rows else "NO"
    expires = min((r.expires_at for r in rows), default=now)
    await asyncio.to_thread(store.save, {
        "uuid": offerset_uuid, "created_at": now, "expires_at": expires, "result": result,
        "messages": messages,
    }, rows)  # fmt: skip
    return offerset_document(agg.base_url, offerset_uuid, now, result, messages,
                             [r.document for r in rows])  # fmt: skip


def offerset_document(
    base_url: str, uuid: str, created: int, result: str, messages: list[dict[str, Any]],
    offers: list[dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    return {
        "kind": OFFERSET_KIND,
        "meta": {
            "uuid": uuid,
            "url": f"{base_url}/offersets/{uuid}",
            "created": instant(created),
            "messages": messages,
        },
        "result": result,
        "expires": min((o["expires"] for o in offers), default=instant(created)),
        "offers": offers,
    }
