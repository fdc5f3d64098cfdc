"""A combined request, typed: its parts (each a request for one site, or any), their shared
schedule and how close together their starts must be. The spec validated its shape already;
this checks what the spec cannot say (unique names, known sites, a readable ``within``)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from broker_core.errors import DocumentInvalid, FieldError
from broker_core.schedule import ScheduleError, parse_duration

MAX_WITHIN = 24 * 3600  # seconds: parts that need not overlap are no combined booking


@dataclass(frozen=True)
class Part:
    position: int
    name: str
    site: str | None  # an upstream's name; None: any upstream
    request: dict[str, Any]  # the part's request as its node takes it (its schedule included)


@dataclass(frozen=True)
class CombinedRequest:
    parts: list[Part]
    within: int  # seconds: the most the parts' starts may differ


def is_combined(document: Any) -> bool:
    return isinstance(document, dict) and "parts" in document


def parse_combined(document: dict[str, Any], upstreams: list[str]) -> CombinedRequest:
    """The typed request, or DocumentInvalid naming each offending field."""
    errors: list[FieldError] = []
    within = 0
    together = document.get("together") or {}
    if together.get("within") is not None:
        try:
            within = int(parse_duration(together["within"]).total_seconds())
        except ScheduleError as exc:
            errors.append(FieldError("/together/within", str(exc)))
        if within > MAX_WITHIN:
            errors.append(FieldError("/together/within", "at most P1D"))
    shared = document.get("schedule")
    parts, names = [], set()
    for index, raw in enumerate(document["parts"]):
        name, site = raw["name"], raw.get("site")
        if name in names:
            errors.append(FieldError(f"/parts/{index}/name", f"another part is named {name!r}"))
        names.add(name)
        if site is not None and site not in upstreams:
            errors.append(FieldError(f"/parts/{index}/site", f"no upstream is named {site!r}; "
                                     f"known: {', '.join(upstreams)}"))  # fmt: skip
        request = copy.deepcopy(raw["request"])
        if not request.get("schedule") and shared:
            request["schedule"] = copy.deepcopy(shared)
        parts.append(Part(index, name, site, request))
    if errors:
        raise DocumentInvalid(errors)
    return CombinedRequest(parts, within)
