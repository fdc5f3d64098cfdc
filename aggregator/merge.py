"""Merging upstream answers into one offer set: pure functions, tested without a network."""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from broker_core.schedule import ScheduleError, parse_interval
from broker_core.sessions.views import OLD_SESSION_KIND, SESSION_KIND, wire_messages, wire_schedule


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
    schedule = offer.schedule or {}
    for key in ("available", "preparing"):
        span = schedule.get(key)
        if isinstance(span, dict) and "start" in span:
            return _instant(span["start"])
    return float("inf")


def cost_of(offer: UpstreamOffer) -> float:
    costs = (offer.model_extra or {}).get("costs") or []
    values = [c.get("min", c.get("max")) for c in costs if isinstance(c, dict)]
    numbers = [v for v in values if isinstance(v, int | float)]
    return min(numbers) if numbers else float("inf")


def rank(candidates: list[Candidate], order: str, limit: int) -> list[Candidate]:
    """Earliest start first (or cheapest first), heavier upstreams first among equals."""
    if order == "cost":
        key = lambda c: (cost_of(c.offer), start_of(c.offer), -c.weight, c.upstream)  # noqa: E731
    else:
        key = lambda c: (start_of(c.offer), -c.weight, cost_of(c.offer), c.upstream)  # noqa: E731
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
    meta = dict(doc.get("meta") or {})
    if "messages" in meta:
        meta["messages"] = wire_messages(meta["messages"])
    meta["uuid"] = local_uuid
    meta["url"] = f"{base_url}/sessions/{local_uuid}"
    doc["meta"] = meta
    doc["offerset"] = {"uuid": offerset_uuid, "url": f"{base_url}/offersets/{offerset_uuid}"}
    site = dict(doc.get("site") or {})
    below = site.get("upstream")
    site["upstream"] = f"{upstream}/{below}" if isinstance(below, str) and below else upstream
    doc["site"] = site
    return doc


def new_uuid() -> str:
    return str(uuidlib.uuid4())
