"""Render stored offer sets and sessions as wire documents.

Stored session documents keep the node's own form (instants, component statuses in
``components``, data resources naming their storage); the answers are rendered here in the form
of the IVOA ExecutionBroker schema (Calycopis-openapi v1.0): a ``ScheduledExecutionSession``
whose ``schedule.available.start`` is an ISO-8601 interval, whose components each carry their
own ``phase`` and ``schedule``, whose data resources name their storage by uuid, and whose
message values are strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from ..db.tables import OfferSet
from ..kinds.base import KIND_PREFIX
from ..schedule import format_seconds, instant
from .phases import (
    ACCEPTED,
    AVAILABLE,
    CANCELLED,
    COMPLETED,
    EXPIRED,
    FAILED,
    OFFERED,
    PREPARING,
    REJECTED,
    RELEASING,
    RUNNING,
    WAITING,
    phase_options,
)


class SessionRow(Protocol):
    """What rendering reads of a session: a stored row, or the row just inserted."""

    uuid: str
    offerset_uuid: str
    phase: str
    created_at: int
    modified_at: int
    expires_at: int
    document: dict[str, Any]


HIDDEN = frozenset({"meta", "lifecycle"})  # the lifecycle engine's own notes stay inside
# the standard's discriminator maps this kind to ScheduledExecutionSession
SESSION_KIND = f"{KIND_PREFIX}session/scheduled-execution-session.yaml"
# what nodes before the standard's form called it (the aggregator still reads it upstream)
OLD_SESSION_KIND = f"{KIND_PREFIX}session/execution-session.yaml"
OFFERSET_KIND = f"{KIND_PREFIX}offerset/offerset-response.yaml"
COST_KIND = f"{KIND_PREFIX}costs/simple-minmax-float-cost.yaml"
WAITING_ZERO = "PT0S"

# a component's phase (the standard's LifecyclePhase) while its session is in each phase;
# PREPARING goes by the component's own status, RUNNING only for the executable
_COMPONENT_PHASE = {
    OFFERED: WAITING,
    ACCEPTED: WAITING,
    WAITING: WAITING,
    AVAILABLE: AVAILABLE,
    RELEASING: RELEASING,
    COMPLETED: COMPLETED,
    FAILED: FAILED,
    CANCELLED: CANCELLED,
    REJECTED: CANCELLED,
    EXPIRED: CANCELLED,
}


def start_interval(start: Any) -> Any:
    """An offered start as the standard's ``ScheduleStartDurationInterval.start``: the
    instant as an interval of no length (``<instant>/PT0S``); an interval stays as it is."""
    if isinstance(start, str) and start and "/" not in start:
        return f"{start}/{WAITING_ZERO}"
    return start


def wire_schedule(schedule: Any) -> Any:
    """A stored schedule with ``available.start`` as an interval."""
    if not isinstance(schedule, dict):
        return schedule
    available = schedule.get("available")
    if isinstance(available, dict) and "start" in available:
        available = {**available, "start": start_interval(available["start"])}
        schedule = {**schedule, "available": available}
    return schedule


def wire_messages(messages: Any) -> Any:
    """Messages with every value a string, as the standard's ``NameValueMap`` holds."""
    if not isinstance(messages, list):
        return messages
    out = []
    for m in messages:
        values = m.get("values") if isinstance(m, dict) else None
        if isinstance(values, dict) and not all(isinstance(v, str) for v in values.values()):
            m = {**m, "values": {str(k): _text(v) for k, v in values.items()}}
        out.append(m)
    return out


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return str(value)


def _component_phase(session_phase: str, category: str, status: dict[str, Any] | None) -> str:
    if session_phase == PREPARING:
        return str((status or {}).get("phase") or WAITING)
    if session_phase == RUNNING:
        return RUNNING if category == "executable" else AVAILABLE
    return _COMPONENT_PHASE.get(session_phase, WAITING)


def _component_schedule(schedule: dict[str, Any], status: dict[str, Any] | None) -> dict[str, Any]:
    """The session's booked schedule, with the component's own preparation once it was made."""
    own: dict[str, Any] = {k: schedule[k] for k in ("preparing", "available", "releasing")
                           if isinstance(schedule.get(k), dict)}  # fmt: skip
    prepared = (status or {}).get("prepared")
    if isinstance(prepared, dict) and isinstance(prepared.get("start"), str):
        seconds = prepared.get("seconds")
        preparing = {"start": prepared["start"]}
        if isinstance(seconds, int | float):
            preparing["duration"] = format_seconds(round(seconds))
        own["preparing"] = preparing
    return own


def _with_lifecycle(
    doc: Any, category: str, phase: str, schedule: dict[str, Any], statuses: dict[str, Any]
) -> Any:
    if not isinstance(doc, dict):
        return doc
    status = statuses.get(((doc.get("meta") or {}).get("uuid"), category))
    return {
        **doc,
        "phase": _component_phase(phase, category, status),
        "schedule": _component_schedule(schedule, status),
    }


def _cost(cost: Any) -> Any:
    """A cost with the standard's ``kind``: a min/max cost when the request named none."""
    if isinstance(cost, dict) and not cost.get("kind"):
        return {**cost, "kind": COST_KIND}
    return cost


def _connector(connector: Any) -> Any:
    """A connector with the standard's ``location`` (its URL, or host:port)."""
    if not isinstance(connector, dict) or "location" in connector:
        return connector
    if isinstance(connector.get("url"), str):
        return {**connector, "location": connector["url"]}
    if connector.get("host") and connector.get("port"):
        return {**connector, "location": f"{connector['host']}:{connector['port']}"}
    return connector


def default_name(doc: dict[str, Any], what: str) -> str:
    """A name for a document the client named nothing of, since the standard's clients show
    ``meta.name``: the executable's name, else its kind's (``docker-container``), else ``what``.
    Never a uuid, so that two answers to one request read the same."""
    executable = doc.get("executable")
    if isinstance(executable, dict):
        name = (executable.get("meta") or {}).get("name")
        if isinstance(name, str) and name:
            return name
        kind = executable.get("kind")
        if isinstance(kind, str) and kind:
            return kind.rstrip("/").rsplit("/", 1)[-1].removesuffix(".yaml")
    return what


def render_session(row: SessionRow, base_url: str) -> dict[str, Any]:
    doc = row.document
    stored_meta = doc.get("meta", {})
    meta = {
        **stored_meta,
        "uuid": row.uuid,
        "url": f"{base_url}/sessions/{row.uuid}",
        "created": instant(row.created_at),
        "modified": instant(row.modified_at),
        "options": phase_options(row.phase),
    }
    meta["name"] = meta.get("name") or default_name(doc, "execution-session")
    if "messages" in stored_meta:
        meta["messages"] = wire_messages(stored_meta["messages"])
    body = {k: v for k, v in doc.items() if k not in HIDDEN}
    schedule = wire_schedule(doc.get("schedule") or {})
    if "schedule" in body:
        body["schedule"] = schedule
    statuses = {
        (s.get("uuid"), s.get("category")): s
        for s in doc.get("components") or []
        if isinstance(s, dict)
    }

    def lifecycle(part: Any, category: str) -> Any:
        return _with_lifecycle(part, category, row.phase, schedule, statuses)

    storage = [lifecycle(s, "storage") for s in doc.get("storage") or []]
    by_name = {
        (s.get("meta") or {}).get("name"): (s.get("meta") or {}).get("uuid")
        for s in storage
        if isinstance(s, dict)
    }
    data = []
    for d in doc.get("data") or []:
        d = lifecycle(d, "data")
        target = d.get("storage") if isinstance(d, dict) else None
        if isinstance(target, str) and by_name.get(target):  # stored before storage had uuids
            d["storage"] = by_name[target]
        data.append(d)
    for key, value in (
        ("executable", lifecycle(doc.get("executable"), "executable")),
        ("compute", lifecycle(doc.get("compute"), "compute")),
        ("storage", storage),
        ("data", data),
    ):
        if key in body:
            body[key] = value
    if isinstance(body.get("costs"), list):
        body["costs"] = [_cost(c) for c in body["costs"]]
    if isinstance(body.get("connectors"), list):
        body["connectors"] = [_connector(c) for c in body["connectors"]]
    return {
        "kind": SESSION_KIND,
        "meta": meta,
        "phase": row.phase,
        "expires": instant(row.expires_at),
        "offerset": {"uuid": row.offerset_uuid, "url": f"{base_url}/offersets/{row.offerset_uuid}"},
        **body,
    }


def render_offerset(
    row: OfferSet, sessions: Sequence[SessionRow], base_url: str
) -> dict[str, Any]:
    doc = row.document
    stored_meta = doc.get("meta", {})
    meta = {
        **stored_meta,
        "uuid": row.uuid,
        "url": f"{base_url}/offersets/{row.uuid}",
        "created": instant(row.created_at),
    }
    # the request's name lives with its offers; an offer set of none is just "offerset"
    first = sessions[0].document if sessions else {}
    meta["name"] = (
        meta.get("name") or (first.get("meta") or {}).get("name") or default_name(first, "offerset")
    )
    if "messages" in stored_meta:
        meta["messages"] = wire_messages(stored_meta["messages"])
    return {
        "kind": OFFERSET_KIND,
        "meta": meta,
        "result": row.result,
        "expires": instant(row.expires_at),
        "offers": [render_session(s, base_url) for s in sessions],
    }
