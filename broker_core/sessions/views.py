"""Render stored offer sets and sessions as wire documents.

A session is stored as its row and its typed record (:mod:`.record`); its answer is rendered
here, and only here, in the form of the IVOA ExecutionBroker schema (Calycopis-openapi v1.0): a
``ScheduledExecutionSession`` whose ``schedule.available.start`` is an ISO-8601 interval, whose
components each carry their own ``phase`` and ``schedule``, whose data resources name their
storage by uuid, and whose message values are strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ..db.tables import OfferSet
from ..kinds.base import KIND_PREFIX
from ..schedule import format_seconds, instant, span
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
from .record import ComponentStatus, Series, SessionRecord


class SessionRow(Protocol):
    """What rendering reads of a session: a stored row, or the row just inserted."""

    uuid: str
    offerset_uuid: str
    phase: str
    created_at: int
    modified_at: int
    expires_at: int
    platform: str
    prepare_at: int
    start_at: int
    end_at: int
    record: dict[str, Any] | None


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


def _component_phase(session_phase: str, category: str, status: ComponentStatus | None) -> str:
    if session_phase == PREPARING:
        return status.phase if status is not None else WAITING
    if session_phase == RUNNING:
        return RUNNING if category == "executable" else AVAILABLE
    return _COMPONENT_PHASE.get(session_phase, WAITING)


def _component_schedule(
    schedule: dict[str, Any], status: ComponentStatus | None, planned: dict[str, str] | None = None
) -> dict[str, Any]:
    """The session's booked schedule, with the component's own preparation: as made, once it
    was, else as ``planned`` (a data resource's measured staging time)."""
    own = {k: schedule[k] for k in ("preparing", "available", "releasing")}
    prepared = status.prepared if status is not None else None
    if prepared is None and planned is not None:
        own["preparing"] = planned
    if prepared is not None:
        own["preparing"] = {
            "start": instant(prepared.start),
            "duration": format_seconds(round(prepared.seconds)),
        }
    return own


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


def _schedule(row: SessionRow, end_at: int, entered: dict[str, int]) -> dict[str, Any]:
    """The booked schedule (``available.start`` as the standard's interval), and the instants
    each phase was actually entered."""
    schedule: dict[str, Any] = {
        "preparing": span(row.prepare_at, row.start_at - row.prepare_at),
        "available": span(row.start_at, end_at - row.start_at),
        "releasing": span(end_at, 0),
    }
    schedule["available"]["start"] = start_interval(schedule["available"]["start"])
    if entered:
        schedule["actual"] = {phase: instant(at) for phase, at in entered.items()}
    return schedule


def with_published_ports(
    executable: dict[str, Any], connectors: list[dict[str, Any]]
) -> dict[str, Any]:
    """The executable with each published port saying where it is reachable (the schema's
    DockerExternalPort: ``external: {port: N, addresses: [host]}``), from the connectors
    that name the ``internal`` port they reach."""
    network = executable.get("network")
    ports = network.get("ports") if isinstance(network, dict) else None
    if not isinstance(ports, list) or not connectors:
        return executable
    published = {
        (c.get("internal"), str(c.get("protocol") or "").upper()): c
        for c in connectors
        if isinstance(c.get("port"), int)
    }
    shown = []
    for port in ports:
        internal = port.get("internal") if isinstance(port, dict) else None
        number = internal.get("port") if isinstance(internal, dict) else internal
        connector = published.get((number, str(port.get("protocol") or "TCP").upper()))
        if connector is not None:
            external = {"port": connector["port"]}
            if connector.get("host"):
                external["addresses"] = [connector["host"]]
            port = {**port, "external": external}
        shown.append(port)
    return {**executable, "network": {**network, "ports": shown}}


def render_session(
    row: SessionRow,
    base_url: str,
    record: SessionRecord | None = None,
    occurrences: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The session as the standard's ``ScheduledExecutionSession``, rendered from its row and
    its record (given when the caller has it typed already); a series' ``occurrences`` are
    the phases of its occurrences' sessions, by uuid, once it was accepted."""
    record = record if record is not None else SessionRecord.of(row.record)
    parts = record.components
    meta: dict[str, Any] = {"name": record.name} if record.name else {}
    if record.messages:
        meta["messages"] = wire_messages([m.model_dump(exclude_none=True) for m in record.messages])
    meta |= {
        "uuid": row.uuid,
        "url": f"{base_url}/sessions/{row.uuid}",
        "created": instant(row.created_at),
        "modified": instant(row.modified_at),
        "options": phase_options(row.phase),
    }
    meta["name"] = meta.get("name") or default_name(parts.model_dump(), "execution-session")
    schedule = _schedule(row, row.end_at, record.entered)
    statuses = {(s.uuid, s.category): s for s in record.statuses or []}

    def lifecycle(
        part: dict[str, Any], category: str, planned: dict[str, str] | None = None
    ) -> dict[str, Any]:
        status = statuses.get(((part.get("meta") or {}).get("uuid"), category))
        return {
            **part,
            "phase": _component_phase(row.phase, category, status),
            "schedule": _component_schedule(schedule, status, planned),
        }

    storage = [lifecycle(s, "storage") for s in parts.storage]
    by_name = {(s.get("meta") or {}).get("name"): (s.get("meta") or {}).get("uuid")
               for s in storage}  # fmt: skip
    data = []
    for d, planned in zip(parts.data, _staging_spans(row, record), strict=True):
        d = lifecycle(d, "data", planned)
        target = d.get("storage")
        if isinstance(target, str) and by_name.get(target):  # offered before storage had uuids
            d["storage"] = by_name[target]
        data.append(d)
    platform = row.platform
    executable = with_published_ports(parts.executable or {}, record.connectors or [])
    site = {"name": record.site, "platform": platform,
            "pools": [f"{platform}/{name}" for name in record.pools]}  # fmt: skip
    body: dict[str, Any] = {
        **({"probe": True} if record.probe else {}),
        **({"site": site} if platform else {}),  # a direct execution that never started
        "schedule": schedule,
        "executable": lifecycle(executable, "executable"),
        **({"compute": lifecycle(parts.compute, "compute")} if parts.compute else {}),
        "storage": storage,
        "data": data,
        "costs": [_cost(c) for c in record.costs],
        "metrics": list(record.metrics),
    }
    if record.statuses is not None:
        body["components"] = [_wire_status(s) for s in record.statuses]
    if record.connectors is not None:
        body["connectors"] = [_connector(c) for c in record.connectors]
    if record.notify is not None:
        body["notify"] = record.notify.shown()  # the webhook's secret is never shown
    if record.series is not None:
        body["series"] = render_series(record.series, base_url, occurrences)
    if record.occurrence is not None:
        body["occurrence"] = {
            "series": {"uuid": record.occurrence.series,
                       "url": f"{base_url}/sessions/{record.occurrence.series}"},
            "index": record.occurrence.index,
            "count": record.occurrence.count,
        }  # fmt: skip
    return {
        "kind": SESSION_KIND,
        "meta": meta,
        "phase": row.phase,
        "expires": instant(row.expires_at),
        "offerset": {"uuid": row.offerset_uuid, "url": f"{base_url}/offersets/{row.offerset_uuid}"},
        **body,
    }


def _staging_spans(row: SessionRow, record: SessionRecord) -> list[dict[str, str] | None]:
    """Each data resource's planned staging, where the node measured its time: from the
    preparation's start, one after the other, as the lifecycle stages them."""
    measured = record.data_staging
    spans: list[dict[str, str] | None] = []
    at = row.prepare_at
    for i in range(len(record.components.data)):
        seconds = measured[i] if i < len(measured) else None
        spans.append(span(at, seconds) if seconds is not None else None)
        at += seconds or 0
    return spans


def render_series(
    series: Series, base_url: str, phases: Mapping[str, str] | None
) -> dict[str, Any]:
    """A series' occurrences (each with its own session once the series was accepted, when
    ``phases`` gives theirs) and the occurrences of its rule that are not booked."""
    occurrences = []
    for o in series.occurrences:
        shown: dict[str, Any] = {
            "index": o.index,
            "start": instant(o.start_at),
            "end": instant(o.end_at),
            "preparing": instant(o.prepare_at),
            "pools": list(o.pools),
        }
        if phases is not None and o.session in phases:
            shown |= {"uuid": o.session, "url": f"{base_url}/sessions/{o.session}",
                      "phase": phases[o.session]}  # fmt: skip
        occurrences.append(shown)
    return {
        "rule": series.rule,
        "timezone": series.timezone,
        "partial": series.partial,
        "count": series.count,
        "occurrences": occurrences,
        "missing": [
            {"index": m.index, "start": instant(m.start_at), "end": instant(m.end_at),
             "reason": m.reason}
            for m in series.missing
        ],
    }  # fmt: skip


def _wire_status(status: ComponentStatus) -> dict[str, Any]:
    shown = status.model_dump(exclude_none=True, exclude={"prepared"})
    if status.prepared is not None:
        shown["prepared"] = {
            "start": instant(status.prepared.start),
            "seconds": status.prepared.seconds,
        }
    return shown


def render_offerset(
    row: OfferSet,
    sessions: Sequence[SessionRow],
    base_url: str,
    records: Sequence[SessionRecord] | None = None,
) -> dict[str, Any]:
    """The offer set and its offers (``records``: the sessions' records, when the caller has
    them typed already)."""
    doc = row.document
    stored_meta = doc.get("meta", {})
    meta = {
        **stored_meta,
        "uuid": row.uuid,
        "url": f"{base_url}/offersets/{row.uuid}",
        "created": instant(row.created_at),
    }
    typed = list(records) if records is not None else [SessionRecord.of(s.record) for s in sessions]
    # a series' occurrences are no offers of their own: the series lists them
    shown = [(s, r) for s, r in zip(sessions, typed, strict=True) if r.occurrence is None]
    sessions, typed = [s for s, _ in shown], [r for _, r in shown]
    # the request's name lives with its offers; an offer set of none is just "offerset"
    first = typed[0] if typed else SessionRecord()
    meta["name"] = (
        meta.get("name") or first.name or default_name(first.components.model_dump(), "offerset")
    )
    if "messages" in stored_meta:
        meta["messages"] = wire_messages(stored_meta["messages"])
    return {
        "kind": OFFERSET_KIND,
        "meta": meta,
        "result": row.result,
        "expires": instant(row.expires_at),
        "offers": [
            render_session(s, base_url, record) for s, record in zip(sessions, typed, strict=True)
        ],
    }
