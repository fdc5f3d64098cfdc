"""Merging upstream answers into one offer set: pure functions, tested without a network."""

from __future__ import annotations

import time
import uuid as uuidlib
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urljoin

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from broker_core.schedule import ScheduleError, instant, parse_interval
from broker_core.sessions.views import (
    OLD_SESSION_KIND,
    SESSION_KIND,
    wire_messages,
    wire_schedule,
)


class _Meta(BaseModel):
    model_config = ConfigDict(extra="allow")
    uuid: str = Field(min_length=1, max_length=64)
    url: str = Field(pattern=r"^https?://", max_length=2048)


class UpstreamOffer(BaseModel):
    """What the aggregator relies on in an upstream's offer; the rest is passed through."""

    model_config = ConfigDict(extra="allow")
    meta: _Meta
    phase: str
    expires: str | None = None
    schedule: dict[str, Any] | None = None


class UpstreamOfferSet(BaseModel):
    model_config = ConfigDict(extra="allow")
    result: Literal["YES", "NO"]
    offers: list[UpstreamOffer] = Field(default_factory=list, max_length=1024)
    meta: dict[str, Any] = Field(default_factory=dict)


def locate_offers(document: Any, base: str) -> Any:
    """An offer set whose offers' ``meta.url`` are absolute: a node of another implementation
    may give a relative one (resolved against ``base``, the upstream's URL) or none (then it is
    ``{base}/sessions/{uuid}``, where the standard serves sessions)."""
    if not isinstance(document, dict) or not isinstance(document.get("offers"), list):
        return document
    offers = []
    for offer in document["offers"]:
        meta = offer.get("meta") if isinstance(offer, dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("uuid"), str):
            url = meta.get("url")
            if not isinstance(url, str) or not url:
                url = f"{base}/sessions/{meta['uuid']}"
            elif not url.startswith(("http://", "https://")):
                url = urljoin(f"{base}/", url)
            offer = {**offer, "meta": {**meta, "url": url}}
        offers.append(offer)
    return {**document, "offers": offers}


def parse_offerset(document: Any) -> UpstreamOfferSet:
    """An upstream's answer, or ValueError saying what is wrong with it."""
    try:
        parsed = UpstreamOfferSet.model_validate(document)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = "/".join(str(p) for p in first["loc"])
        raise ValueError(f"malformed offer set ({where}: {first['msg']})") from None
    if parsed.result == "YES" and not parsed.offers:
        raise ValueError("malformed offer set (YES without offers)")
    return parsed


@dataclass
class Candidate:
    upstream: str
    weight: float
    offer: UpstreamOffer


def _instant(value: Any) -> float:
    """The earliest instant of a start: an instant (nodes before the standard's form) or an
    ISO-8601 interval (``<instant>/PT0S``, ``start/end``, ``duration/end``), the standard's."""
    if not isinstance(value, str):
        return float("inf")
    try:
        return parse_interval(value).start.timestamp()
    except (ScheduleError, ValueError, OverflowError):
        return float("inf")


def start_of(offer: UpstreamOffer) -> float:
    """When an offer becomes available: its schedule's, or (a simple-execution-session, which
    has no schedule of its own) the latest of its executable's and compute's."""
    start = _start(offer.schedule)
    if start != float("inf"):
        return start
    extra = offer.model_extra or {}
    parts = [_start(part.get("schedule")) for key in ("executable", "compute")
             if isinstance(part := extra.get(key), dict)]  # fmt: skip
    known = [p for p in parts if p != float("inf")]
    return max(known) if known else float("inf")


def _start(schedule: Any) -> float:
    if not isinstance(schedule, dict):
        return float("inf")
    for key in ("available", "preparing"):
        span = schedule.get(key)
        if isinstance(span, dict) and "start" in span:
            return _instant(span["start"])
    return float("inf")


MONEY_TYPE = "urn:ebroker:cost:money:"  # + the currency, as nodes quote it


def cost_of(offer: UpstreamOffer) -> tuple[str, float] | None:
    """The offer's price as (currency, least value): its first money cost item (``type``
    ``urn:ebroker:cost:money:<currency>``, or a cost with no type, as older nodes sent, in its
    ``units``); None when it has none. Energy and carbon items are no price."""
    for c in (offer.model_extra or {}).get("costs") or []:
        if not isinstance(c, dict):
            continue
        kind = c.get("type")
        if kind is not None and not (isinstance(kind, str) and kind.startswith(MONEY_TYPE)):
            continue
        value = c.get("min", c.get("max"))
        if isinstance(value, int | float) and not isinstance(value, bool):
            units = c.get("units") or (kind[len(MONEY_TYPE) :] if kind else "")
            return str(units), float(value)
    return None


def _cost_key(candidates: list[Candidate]) -> Any:
    """Prices compare only in one currency: the most common one among the candidates first,
    cheapest first; then the others, currency by currency; then offers with no price."""
    prices = [cost_of(c.offer) for c in candidates]
    currencies = [p[0] for p in prices if p is not None]
    main = min(set(currencies), key=lambda u: (-currencies.count(u), u)) if currencies else ""

    def key(c: Candidate) -> tuple[int, str, float]:
        price = cost_of(c.offer)
        if price is None:
            return (2, "", 0.0)
        return (0 if price[0] == main else 1, price[0], price[1])

    return key


def rank(candidates: list[Candidate], order: str, limit: int) -> list[Candidate]:
    """Earliest start first (or cheapest first), heavier upstreams first among equals."""
    cost = _cost_key(candidates)
    if order == "cost":
        key = lambda c: (cost(c), start_of(c.offer), -c.weight, c.upstream)  # noqa: E731
    else:
        key = lambda c: (start_of(c.offer), -c.weight, cost(c), c.upstream)  # noqa: E731
    return sorted(candidates, key=key)[:limit]


def rewrite_session(
    document: dict[str, Any],
    *,
    local_uuid: str,
    offerset_uuid: str,
    upstream: str,
    base_url: str,
) -> dict[str, Any]:
    """An upstream session as the aggregator serves it: its own uuid and URLs, and the site
    path it comes through (``site.upstream``: ``national/site-a`` through two levels)."""
    doc = dict(document)
    # a node of the form before the standard's: its kind, start instants and message values
    if doc.get("kind") == OLD_SESSION_KIND:
        doc["kind"] = SESSION_KIND
    if isinstance(doc.get("schedule"), dict):
        doc["schedule"] = wire_schedule(doc["schedule"])
    # a node of another implementation may leave out what a session of ours always has: a
    # simple-execution-session has no schedule, one no longer OFFERED may have no expiry
    if not isinstance(doc.get("schedule"), dict):
        doc["schedule"] = {}
    if not isinstance(doc.get("expires"), str):
        meta_in = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
        created = meta_in.get("created")
        doc["expires"] = created if isinstance(created, str) else instant(int(time.time()))
    meta = {k: v for k, v in dict(doc.get("meta") or {}).items() if k in META_KEYS}
    if "messages" in meta:
        meta["messages"] = own_messages(meta["messages"])
    meta["uuid"] = local_uuid
    meta["url"] = f"{base_url}/sessions/{local_uuid}"
    doc["meta"] = meta
    doc["offerset"] = {"uuid": offerset_uuid, "url": f"{base_url}/offersets/{offerset_uuid}"}
    site = dict(doc.get("site") or {})
    below = site.get("upstream")
    site["upstream"] = f"{upstream}/{below}" if isinstance(below, str) and below else upstream
    doc["site"] = site
    return doc


META_KEYS = frozenset(
    {"uuid", "name", "url", "description", "created", "modified", "messages", "options"}
)
LEVELS = frozenset({"DEBUG", "INFO", "WARN", "ERROR"})


def own_messages(messages: Any) -> list[dict[str, Any]]:
    """Upstream messages in the form the aggregator serves: values as strings, a template
    always (the message itself when the upstream gives none), one of our levels (the
    standard's ``OTHER`` is ``INFO``), and no fields a message of ours does not have (the
    standard's ``kind``)."""
    if not isinstance(messages, list):
        return []
    out = []
    for m in wire_messages([m for m in messages if isinstance(m, dict)]):
        text = m.get("message")
        template = m.get("template")
        own: dict[str, Any] = {
            "template": template if isinstance(template, str) else str(text or ""),
        }
        if "level" in m:
            own["level"] = m["level"] if m["level"] in LEVELS else "INFO"
        if isinstance(m.get("values"), dict):
            own["values"] = m["values"]
        if text is not None:
            own["message"] = str(text)
        if isinstance(m.get("time"), str):
            own["time"] = m["time"]
        out.append(own)
    return out


def is_session(document: Any) -> bool:
    """A session document (of either implementation), not a problem or an offer set."""
    return (
        isinstance(document, dict)
        and isinstance(document.get("phase"), str)
        and isinstance(document.get("meta"), dict)
        and "offers" not in document
    )


def phase_of(document: Any) -> str | None:
    """The session phase an answer carries: a session's own, a problem's ``phase``, or the
    phase of the session a problem carries (``session``)."""
    if not isinstance(document, dict):
        return None
    if isinstance(document.get("phase"), str):
        return document["phase"]
    session = document.get("session")
    return session.get("phase") if is_session(session) else None


def new_uuid() -> str:
    return str(uuidlib.uuid4())
