"""Render stored offer sets and sessions as wire documents."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from ..db.tables import OfferSet
from ..kinds.base import KIND_PREFIX
from ..schedule import format_seconds
from .phases import phase_options


class SessionRecord(Protocol):
    """What rendering reads of a session: a stored row, or the row just inserted."""

    uuid: str
    offerset_uuid: str
    phase: str
    created_at: int
    modified_at: int
    expires_at: int
    document: dict[str, Any]


HIDDEN = frozenset({"meta", "lifecycle"})  # the lifecycle engine's own notes stay inside
SESSION_KIND = f"{KIND_PREFIX}session/execution-session.yaml"
OFFERSET_KIND = f"{KIND_PREFIX}offerset/offerset-response.yaml"


def instant(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def span(start: int, seconds: int) -> dict[str, str]:
    return {"start": instant(start), "duration": format_seconds(seconds)}


def render_session(row: SessionRecord, base_url: str) -> dict[str, Any]:
    doc = row.document
    meta = {
        **doc.get("meta", {}),
        "uuid": row.uuid,
        "url": f"{base_url}/sessions/{row.uuid}",
        "created": instant(row.created_at),
        "modified": instant(row.modified_at),
        "options": phase_options(row.phase),
    }
    body = {k: v for k, v in doc.items() if k not in HIDDEN}
    return {
        "kind": SESSION_KIND,
        "meta": meta,
        "phase": row.phase,
        "expires": instant(row.expires_at),
        "offerset": {"uuid": row.offerset_uuid, "url": f"{base_url}/offersets/{row.offerset_uuid}"},
        **body,
    }


def render_offerset(
    row: OfferSet, sessions: Sequence[SessionRecord], base_url: str
) -> dict[str, Any]:
    doc = row.document
    return {
        "kind": OFFERSET_KIND,
        "meta": {
            **doc.get("meta", {}),
            "uuid": row.uuid,
            "url": f"{base_url}/offersets/{row.uuid}",
            "created": instant(row.created_at),
        },
        "result": row.result,
        "expires": instant(row.expires_at),
        "offers": [render_session(s, base_url) for s in sessions],
    }
