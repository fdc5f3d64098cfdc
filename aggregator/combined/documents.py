"""Combined offers as the aggregator serves them: pure functions of the stored rows.

A combined offer is a session document (the standard's fields, taken from its first part, so
a client that knows one part only still reads an offer) with ``parts``: each part's node, its
session there, its phase and its schedule. Its phase follows the two-phase state: a booking
under way is still OFFERED, a failed one FAILED (its messages say which part failed and that
every other part was released)."""

from __future__ import annotations

import copy
import time
from typing import Any

from broker_core.schedule import instant, parse_instant

from ..merge import rewrite_session
from .slots import PartOffer
from .store import (
    ABORTED,
    ABORTING,
    CANCELLED,
    CANCELLING,
    CONFIRMED,
    CONFIRMING,
    OFFERED,
    PREPARED,
    REJECTED,
    CombinedRow,
    PartRow,
)

OPTIONS = [{"kind": "uri:enum-value-option", "path": "phase",
            "values": ["ACCEPTED", "REJECTED", "CANCELLED"]}]  # fmt: skip
CANCEL_OPTION = [{"kind": "uri:enum-value-option", "path": "phase", "values": ["CANCELLED"]}]
# the session phase a combined offer shows in each state (CONFIRMED: its parts' own)
PHASES = {OFFERED: "OFFERED", CONFIRMING: "OFFERED", ABORTING: "FAILED", ABORTED: "FAILED",
          CANCELLING: "CANCELLED", CANCELLED: "CANCELLED", REJECTED: "REJECTED"}  # fmt: skip
# a part's phase from its state, when its node is not asked
PART_PHASES = {PREPARED: "OFFERED", CONFIRMING: "OFFERED", CONFIRMED: "ACCEPTED",
               ABORTING: "FAILED", ABORTED: "CANCELLED"}  # fmt: skip
# the lifecycle's order: a combined booking is as far as its least advanced part
ORDER = ["ACCEPTED", "WAITING", "PREPARING", "AVAILABLE", "RUNNING", "RELEASING", "COMPLETED",
         "FAILED", "CANCELLED"]  # fmt: skip
# the fields of the first part's session that say nothing of the whole
PER_PART = ("costs", "metrics", "components", "connectors", "probe")


def epoch(text: Any) -> float:
    try:
        return parse_instant(text).timestamp() if isinstance(text, str) else float("inf")
    except ValueError:
        return float("inf")


def offer_row(
    slot: tuple[PartOffer, ...], names: list[str], *, uuid: str, offerset_uuid: str, rank: int,
    base_url: str,
) -> CombinedRow:  # fmt: skip
    """The combined offer of one slot, as it is stored (and then served)."""
    now = int(time.time())
    dumped = [o.offer.model_dump(mode="json") for o in slot]
    upstreams = "+".join(dict.fromkeys(o.upstream for o in slot))
    document = rewrite_session(copy.deepcopy(dumped[0]), local_uuid=uuid,
                               offerset_uuid=offerset_uuid, upstream=upstreams,
                               base_url=base_url)  # fmt: skip
    for key in PER_PART:
        document.pop(key, None)
    expires = min(o.expires for o in slot)
    document["phase"] = "OFFERED"
    document["expires"] = instant(int(expires))
    document["meta"]["options"] = OPTIONS
    document["meta"]["messages"] = []
    document["parts"] = [
        {
            "name": names[o.part],
            "upstream": o.upstream,
            "uuid": o.offer.meta.uuid,
            "url": o.offer.meta.url,
            "phase": "OFFERED",
            "state": PREPARED,
            **({"expires": d["expires"]} if isinstance(d.get("expires"), str) else {}),
            **({"schedule": d["schedule"]} if isinstance(d.get("schedule"), dict) else {}),
            **({"costs": d["costs"]} if isinstance(d.get("costs"), list) else {}),
        }
        for o, d in zip(slot, dumped, strict=True)
    ]
    parts = [PartRow(i, names[o.part], o.upstream, o.offer.meta.uuid, o.offer.meta.url,
                     remote_offerset=_offerset_of(d))
             for i, (o, d) in enumerate(zip(slot, dumped, strict=True))]  # fmt: skip
    return CombinedRow(uuid, offerset_uuid, rank, OFFERED, int(expires), now, document, [],
                       parts)  # fmt: skip


def _offerset_of(offer: dict[str, Any]) -> str | None:
    """The uuid of the node's offer set an offer is of, if the node names it."""
    named = offer.get("offerset")
    uuid = named.get("uuid") if isinstance(named, dict) else None
    return uuid if isinstance(uuid, str) and len(uuid) <= 64 else None


def summary(
    offerset: dict[str, Any], rows: list[CombinedRow], owner: str, base_url: str
) -> dict[str, Any]:
    """A combined offer set as GET /offersets lists it (an OfferSetSummary): open while one
    of its combined offers can be accepted, the count of its offers in each phase, and the
    upstreams of its parts (``a+b``, as its offers name them)."""
    phases = [render(r)["phase"] for r in rows]
    counts: dict[str, int] = {}
    for phase in phases:
        counts[phase] = counts.get(phase, 0) + 1
    upstreams = "+".join(dict.fromkeys(p.upstream for r in rows for p in r.parts))
    uuid = offerset["uuid"]
    return {
        "uuid": uuid,
        "href": f"{base_url}/offersets/{uuid}",
        "result": offerset["result"],
        "state": "open" if "OFFERED" in phases else "closed",
        "owner": owner,
        "created": instant(offerset["created_at"]),
        "expires": instant(offerset["expires_at"]),
        "offers": counts,
        "upstream": upstreams,
    }


def render(row: CombinedRow, live: dict[int, str] | None = None) -> dict[str, Any]:
    """The combined offer now: its phase from its state (and, once booked, from its parts'
    ``live`` phases as their nodes answered), each part's phase and state, and the messages of
    its booking."""
    document = copy.deepcopy(row.document)
    live = live or {}
    for entry, part in zip(document["parts"], row.parts, strict=True):
        entry["state"] = part.state
        entry["phase"] = live.get(part.position) or PART_PHASES.get(part.state, "OFFERED")
    if row.state == CONFIRMED:
        phases = [e["phase"] for e in document["parts"]]
        known = [p for p in phases if p in ORDER]
        document["phase"] = min(known, key=ORDER.index) if known else "ACCEPTED"
    elif row.state == OFFERED and row.expires_at <= time.time():
        document["phase"] = "EXPIRED"
    else:
        document["phase"] = PHASES.get(row.state, "FAILED")
    options = {"OFFERED": OPTIONS, "ACCEPTED": CANCEL_OPTION, "WAITING": CANCEL_OPTION}
    document["meta"]["options"] = options.get(document["phase"], [])
    document["meta"]["messages"] = list(document["meta"].get("messages") or []) + row.messages
    return document
