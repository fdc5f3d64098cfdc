"""GET /sessions and GET /offersets on an aggregator: the lists of its upstreams, merged.

Each upstream is asked for a page of the caller's list (their token passed on, so each node
shows what it shows them), and the pages are merged in the nodes' own order: sessions by
booked start, offer sets by creation, then uuid. Only upstreams the caller's token is passed
on to (``forward_token``) are asked: with the aggregator's own token a node would list the
aggregator's sessions, every caller's. The aggregator's cursor holds each upstream's position:
the upstream cursor its current page starts at and the key of the last item the merged list
took, so a page neither repeats nor skips an item, and an item made meanwhile that sorts before
the position is not listed (as on a node). An upstream that fails is named in ``messages`` and
asked again from where it was on the next page (its items may then come later than their
order, but none is lost while the list goes on); an upstream's failure never fails the whole
list, and never keeps it from ending: the last page of the others is the last page.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from broker_core import pages
from broker_core.errors import Forbidden, ParameterInvalid
from broker_core.http.app import SPEC_DOCUMENT
from broker_core.kinds.base import Message, message
from broker_core.sessions.views import wire_messages

from . import series
from .upstreams import Upstream, UpstreamError

CURSOR_VERSION = 1
MAX_CURSOR_JSON = 2**16  # what a cursor may inflate to: a forged one cannot be a zip bomb
# the most upstream pages one answer reads from one upstream (skipping what was taken before)
MAX_PAGES_PER_UPSTREAM = 3
_SCHEMAS = SPEC_DOCUMENT["components"]["schemas"]


@dataclass(frozen=True)
class ListKind:
    """One list: its path, the time its order goes by, and the fields of its items."""

    path: str
    order_by: str  # the item field of the first sort key
    fields: frozenset[str]
    required: frozenset[str]


SESSIONS = ListKind("/sessions", "start", frozenset(_SCHEMAS["SessionSummary"]["properties"]),
                    frozenset(_SCHEMAS["SessionSummary"]["required"]))  # fmt: skip
OFFERSETS = ListKind("/offersets", "created",
                     frozenset(_SCHEMAS["OfferSetSummary"]["properties"]),
                     frozenset(_SCHEMAS["OfferSetSummary"]["required"]))  # fmt: skip

Key = tuple[int, str]


@dataclass
class Position:
    """Where one upstream's list is: the cursor of its current page (None: its first page),
    and the key its items must sort after (the last item the merged list took when it was
    last asked; None: nothing yet)."""

    cursor: str | None = None
    taken: Key | None = None


@dataclass
class Fetched:
    """What one upstream gave for this answer: its items after its position, in its order,
    and whether it has more after them (its next page's cursor)."""

    items: list[tuple[Key, dict[str, Any]]] = field(default_factory=list)
    cursor: str | None = None  # the cursor the last page read started at
    more: str | None = None  # the cursor of the page after it


# --- the cursor --------------------------------------------------------------------------------


def encode_cursor(positions: Mapping[str, Position], filters: Mapping[str, Any]) -> str:
    """Each upstream's position, compressed (the upstreams' own cursors repeat their filters'
    digest and the key): a federation of dozens of upstreams keeps to the spec's cursor length."""
    state = {name: [p.cursor, list(p.taken) if p.taken else None] for name, p in positions.items()}
    raw = json.dumps({"v": CURSOR_VERSION, "f": pages.digest(filters), "u": state},
                     separators=(",", ":"))  # fmt: skip
    return base64.urlsafe_b64encode(zlib.compress(raw.encode(), 9)).rstrip(b"=").decode()


def decode_cursor(cursor: str, filters: Mapping[str, Any]) -> dict[str, Position]:
    """The upstreams still to be listed, and where; a foreign cursor is a 400 naming it."""
    try:
        packed = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(zlib.decompressobj().decompress(packed, MAX_CURSOR_JSON))
        version, made_for, state = data["v"], data["f"], data["u"]
        positions = {}
        for name, (at, taken) in state.items():
            if not isinstance(name, str) or not (at is None or isinstance(at, str)):
                raise TypeError
            key = (int(taken[0]), str(taken[1])) if taken is not None else None
            positions[name] = Position(at, key)
    except (binascii.Error, zlib.error, ValueError, TypeError, KeyError, AttributeError,
            IndexError):  # fmt: skip
        raise ParameterInvalid("cursor", "not a cursor of this list") from None
    if version != CURSOR_VERSION:
        raise ParameterInvalid("cursor", "not a cursor of this list")
    if made_for != pages.digest(filters):
        raise ParameterInvalid(
            "cursor", "the cursor was made for other filters: repeat the filters of its page"
        )
    return positions


# --- the merge (pure) -----------------------------------------------------------------------


def key_of(kind: ListKind, item: Any) -> Key | None:
    """An item's place in the order, or None when it is malformed."""
    if not isinstance(item, dict) or not kind.required <= item.keys():
        return None
    at, uuid = item.get(kind.order_by), item.get("uuid")
    if not isinstance(at, str) or not isinstance(uuid, str):
        return None
    try:
        return int(datetime.fromisoformat(at).timestamp()), uuid
    except ValueError:
        return None


def merge(
    fetched: Mapping[str, Fetched], positions: Mapping[str, Position], limit: int
) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, Position], bool]:
    """The first ``limit`` items of the upstreams' lists together, by (key, upstream), each
    upstream's position after them, and whether that was the end of every list (an upstream
    whose list was all taken is asked again on a next page, for what was made since, as a
    node's own next page would show it).

    An item is taken only up to the smallest last key of the upstreams that have more after
    what they gave: beyond it such an upstream's next items could come first."""
    bounds = [f.items[-1][0] for f in fetched.values() if f.more and f.items]
    bound = min(bounds) if bounds else None
    merged = sorted(
        ((key, name, item) for name, f in fetched.items() for key, item in f.items),
        key=lambda t: (t[0], t[1]),
    )
    taken = [t for t in merged if bound is None or t[0] <= bound][:limit]
    # where the list is now: every upstream asked skips what sorts up to the last item taken
    # (as a node's own cursor does), whichever upstream's page it is read from next
    last = taken[-1][0] if taken else None
    after: dict[str, Position] = {}
    finished = True  # every upstream's list was taken whole: no next page
    for name, position in positions.items():
        f = fetched.get(name)
        if f is None:  # it failed: where it was, asked again on a next page if there is one
            after[name] = position
            continue
        # never back: after a failed upstream's late items, the others stay where they were
        skip = _later(last, position.taken)
        mine = sum(1 for _, who, _ in taken if who == name)
        if mine < len(f.items):  # some of its page is left: resume within it
            after[name] = Position(f.cursor, skip)
            finished = False
        elif f.more:
            after[name] = Position(f.more, skip)
            finished = False
        else:  # all of its list was taken: asked again, from its last page, for what is new
            after[name] = Position(f.cursor, skip)
    return [(name, item) for _, name, item in taken], after, finished


def _later(a: Key | None, b: Key | None) -> Key | None:
    return b if a is None else a if b is None else max(a, b)


# --- asking the upstreams -----------------------------------------------------------------------


def upstream_query(filters: Mapping[str, Any], limit: int, cursor: str | None) -> str:
    params: list[tuple[str, str]] = []
    for name, value in filters.items():
        if value is None:
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            params.append((name, str(item)))
    params.append(("limit", str(limit)))
    if cursor:
        params.append(("cursor", cursor))
    return urlencode(params)


class Refused(Exception):
    """An upstream refused the list (a 4xx): ``status`` and what it said."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status = status


async def fetch(
    service: Any,
    upstream: Upstream,
    kind: ListKind,
    filters: Mapping[str, Any],
    position: Position,
    limit: int,
    token: str,
    deadline: float,
) -> Fetched:
    """One upstream's items after its position: its page from the position's cursor, without
    what sorts before the position's key, and further pages while nothing is left of one."""
    cursor = position.cursor
    for _ in range(MAX_PAGES_PER_UPSTREAM):
        url = f"{upstream.config.base}{kind.path}?{upstream_query(filters, limit, cursor)}"
        answer = await service.upstreams.call(upstream, "GET", url, token=token,
                                              deadline=deadline)  # fmt: skip
        doc = answer.document
        if answer.status != 200:
            detail = doc.get("detail") if isinstance(doc, dict) else None
            raise Refused(answer.status, str(detail or f"it answered {answer.status}")[:300])
        if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
            raise UpstreamError("its answer is no list")
        items = []
        for item in doc["items"]:
            key = key_of(kind, item)
            if key is None:
                raise UpstreamError("its list has a malformed item")
            if position.taken is not None and key <= position.taken:
                continue  # it sorts before the last item taken: listed, or made since
            items.append((key, {k: v for k, v in item.items() if k in kind.fields}))
        more = doc.get("next") if isinstance(doc.get("next"), str) else None
        if items or not more:
            return Fetched(items, cursor, more)
        cursor = more
    return Fetched([], cursor, more)


async def merged_list(
    service: Any,
    kind: ListKind,
    filters: Mapping[str, Any],
    *,
    limit: int,
    cursor: str | None,
    token: str | None,
) -> dict[str, Any]:
    """A page of the merged list (``pages.page``, with ``messages``)."""
    limit = pages.bounded(limit)
    notes: list[Message] = []
    listed = [u for u in service.upstreams.by_name.values() if u.config.forward_token]
    for u in service.upstreams.by_name.values():
        if not u.config.forward_token:
            notes.append(message(
                "upstream {upstream} is not listed: the aggregator does not pass callers' "
                "tokens on to it, so it cannot ask for the caller's own", upstream=u.name,
            ))  # fmt: skip
    if token is None and listed:
        notes.append(message("no upstream is listed: the caller sent no bearer token to pass "
                             "on", level="WARN"))  # fmt: skip
        listed = []
    if cursor is None:
        positions = {u.name: Position() for u in listed}
    else:
        positions = decode_cursor(cursor, filters)
    asked = [service.upstreams.by_name[n] for n in positions if n in service.upstreams.by_name]
    deadline = time.monotonic() + service.config.fanout.deadline.total_seconds()
    results = await asyncio.gather(
        *(fetch(service, u, kind, filters, positions[u.name], limit, token or "", deadline)
          for u in asked),
        return_exceptions=True,
    )  # fmt: skip
    fetched: dict[str, Fetched] = {}
    refusals = []
    for upstream, result in zip(asked, results, strict=True):
        if isinstance(result, Fetched):
            fetched[upstream.name] = result
        elif isinstance(result, Refused):
            refusals.append(result)
            notes.append(message("upstream {upstream} refused the list ({status}): {detail}",
                                 level="WARN", upstream=upstream.name, status=result.status,
                                 detail=str(result)))  # fmt: skip
        elif isinstance(result, UpstreamError):
            notes.append(message("upstream {upstream} failed: {error}; its items are missing "
                                 "from this page (it is asked again on a next page)",
                                 level="WARN", upstream=upstream.name,
                                 error=str(result)))  # fmt: skip
        else:
            raise result
    if refusals and not fetched and all(r.status == 403 for r in refusals):
        raise Forbidden(str(refusals[0]))
    for refused in (n for n in positions if n not in service.upstreams.by_name):
        notes.append(message("upstream {upstream} is no longer configured: not listed",
                             level="WARN", upstream=refused))  # fmt: skip
    failed = {u.name for u, r in zip(asked, results, strict=True)
              if isinstance(r, UpstreamError)}  # fmt: skip
    kept = {n: p for n, p in positions.items() if n in fetched or n in failed}
    taken, after, finished = merge(fetched, kept, limit)
    items = await asyncio.to_thread(rewrite, service, kind, taken, filters)
    next_cursor = None if finished else encode_cursor(after, filters)
    answer = pages.page(items, limit, next_cursor)
    if notes:
        answer["messages"] = wire_messages([m.model_dump(exclude_none=True) for m in notes])
    return answer


def rewrite(
    service: Any, kind: ListKind, taken: list[tuple[str, dict[str, Any]]],
    filters: Mapping[str, Any] | None = None,
) -> list[dict]:  # fmt: skip
    """The items as the aggregator shows them, each naming its upstream: a session the
    aggregator offered, or an occurrence of a series it offered, has the aggregator's uuid and
    href (and offer set, and series), which its other operations know; any other keeps its
    node's. A node's offer set of a combined request's part stands for the combined offer set
    (see ``Combined.listed``)."""
    if kind is OFFERSETS:
        return service.combined.listed(taken, filters or {})
    known = {}
    occurrences: dict[tuple[str, str], tuple[str, Any]] = {}
    if kind is SESSIONS:
        known = service.store.local_sessions([(name, item["uuid"]) for name, item in taken])
        occurrences = series.listed(service.store, taken)
    base = service.base_url
    items = []
    for name, item in taken:
        local = known.get((name, item["uuid"]))
        occurrence = occurrences.get((name, item["uuid"]))
        if local is not None:
            uuid, offerset_uuid = local
            item = {**item, "uuid": uuid, "href": f"{base}/sessions/{uuid}",
                    "offerset": offerset_uuid}  # fmt: skip
        elif occurrence is not None:  # an occurrence of a series it offered: its own uuid
            uuid, of = occurrence
            item = {**item, "uuid": uuid, "href": f"{base}/sessions/{uuid}",
                    "offerset": of.offerset_uuid, "series": of.uuid}  # fmt: skip
        items.append({**item, "upstream": name})
    return items


def link(base_url: str, kind: ListKind, filters: Mapping[str, Any], limit: int,
         answer: Mapping[str, Any]) -> dict[str, str]:  # fmt: skip
    return pages.next_link(f"{base_url}{kind.path}", {**filters, "limit": limit},
                           answer.get("next"))  # fmt: skip


def sessions_filters(
    phase: Sequence[str] | None, start: str | None, end: str | None,
    pool: Sequence[str] | None, owner: str | None,
) -> dict[str, Any]:  # fmt: skip
    """The filters passed on, checked as a node checks them (a bad one is the caller's 400,
    not every upstream's)."""
    pages.window(start, end)
    return {"phase": pages.split(phase) or None, "from": start, "to": end,
            "pool": pages.split(pool) or None, "owner": owner}  # fmt: skip


def offersets_filters(
    state: str | None, result: str | None, start: str | None, end: str | None,
    owner: str | None,
) -> dict[str, Any]:  # fmt: skip
    pages.window(start, end)
    return {"state": state, "result": result, "from": start, "to": end, "owner": owner}
