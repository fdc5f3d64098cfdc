"""a session is its row and its typed record; the wire document is rendered on every read

Each session kept a rendered document beside its record: the components as offered, the
site, the schedule as ISO text, the quote, the messages, the component statuses, the
connectors and the engine's notes, and the platform's state in a column of its own. All of it
moves into the record (instants as epoch seconds), and both columns go.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 15:00:00
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_SESSIONS = sa.table(
    "execution_session",
    sa.column("uuid", sa.String),
    sa.column("platform", sa.String),
    sa.column("prepare_at", sa.BigInteger),
    sa.column("start_at", sa.BigInteger),
    sa.column("end_at", sa.BigInteger),
    sa.column("document", sa.JSON),
    sa.column("platform_state", sa.JSON),
    sa.column("record", sa.JSON),
)
_MESSAGE_KEYS = ("level", "template", "values", "message", "time")
_LEVELS = ("DEBUG", "INFO", "WARN", "ERROR")
_RECORD_0006 = ("allocations", "granted", "pools", "entered", "probe")


def upgrade() -> None:
    connection = op.get_bind()
    columns = (_SESSIONS.c.uuid, _SESSIONS.c.document, _SESSIONS.c.platform_state,
               _SESSIONS.c.record)  # fmt: skip
    for session_uuid, document, state, record in connection.execute(sa.select(*columns)).all():
        merged = record_of(_loaded(document), _loaded(state), _loaded(record))
        connection.execute(
            _SESSIONS.update().where(_SESSIONS.c.uuid == session_uuid).values(record=merged)
        )
    with op.batch_alter_table("execution_session", schema=None) as batch_op:
        batch_op.drop_column("document")
        batch_op.drop_column("platform_state")


def downgrade() -> None:
    with op.batch_alter_table("execution_session", schema=None) as batch_op:
        batch_op.add_column(sa.Column("document", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("platform_state", sa.JSON(), nullable=True))
    connection = op.get_bind()
    columns = (_SESSIONS.c.uuid, _SESSIONS.c.platform, _SESSIONS.c.prepare_at,
               _SESSIONS.c.start_at, _SESSIONS.c.end_at, _SESSIONS.c.record)  # fmt: skip
    for session_uuid, platform, prepare_at, start_at, end_at, record in connection.execute(
        sa.select(*columns)
    ).all():
        record = _loaded(record)
        document = document_of(record, platform or "", prepare_at, start_at, end_at)
        connection.execute(
            _SESSIONS.update()
            .where(_SESSIONS.c.uuid == session_uuid)
            .values(
                document=document,
                platform_state=record.get("platform_state") or None,
                record={k: record[k] for k in _RECORD_0006 if k in record},
            )
        )
    with op.batch_alter_table("execution_session", schema=None) as batch_op:
        batch_op.alter_column("document", existing_type=sa.JSON(), nullable=False)


def _loaded(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def record_of(
    document: dict[str, Any], state: dict[str, Any], record: dict[str, Any]
) -> dict[str, Any]:
    """A session's whole record, from its 0006 record, document and platform state (frozen
    here: the node's own code may change, what the rows hold does not)."""
    meta = _dict(document.get("meta"))
    lifecycle = _dict(document.get("lifecycle"))
    merged = {k: record[k] for k in _RECORD_0006 if k in record}
    name = meta.get("name")
    if isinstance(name, str) and name:
        merged["name"] = name
    site = _dict(document.get("site")).get("name")
    if isinstance(site, str) and site:
        merged["site"] = site
    merged["components"] = {
        "executable": _dict(document.get("executable")) or None,
        "compute": _dict(document.get("compute")) or None,
        "storage": _dicts(document.get("storage")),
        "data": _dicts(document.get("data")),
    }
    merged["costs"] = _dicts(document.get("costs"))
    merged["metrics"] = _dicts(document.get("metrics"))
    if isinstance(document.get("components"), list):
        merged["statuses"] = [_status(s) for s in _dicts(document["components"])]
    merged["messages"] = [m for m in map(_message, _dicts(meta.get("messages"))) if m]
    if isinstance(document.get("connectors"), list):
        merged["connectors"] = _dicts(document["connectors"])
    merged["platform_state"] = state
    if isinstance(lifecycle.get("outcome"), str):
        merged["outcome"] = lifecycle["outcome"]
    if isinstance(lifecycle.get("exit_code"), int):
        merged["exit_code"] = lifecycle["exit_code"]
    if isinstance(lifecycle.get("release_attempts"), int):
        merged["release_attempts"] = lifecycle["release_attempts"]
    return merged


def _status(status: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {
        "category": status.get("category"),
        "phase": str(status.get("phase") or "WAITING"),
    }
    for key in ("uuid", "kind", "name"):
        if isinstance(status.get(key), str):
            kept[key] = status[key]
    prepared = _dict(status.get("prepared"))
    start = _epoch(prepared.get("start"))
    if start is not None and isinstance(prepared.get("seconds"), int | float):
        kept["prepared"] = {"start": start, "seconds": float(prepared["seconds"])}
    return kept


def _message(message: dict[str, Any]) -> dict[str, Any] | None:
    """A stored message as the record keeps one; None for one that is not a message."""
    if not isinstance(message.get("template"), str):
        return None
    kept = {k: message[k] for k in _MESSAGE_KEYS if k in message}
    if kept.get("level") not in _LEVELS:
        kept["level"] = "INFO"
    if not isinstance(kept.get("values"), dict):
        kept["values"] = {}
    for key in ("message", "time"):
        if key in kept and not isinstance(kept[key], str):
            del kept[key]
    return kept


def _epoch(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    try:
        return int(datetime.fromisoformat(text).timestamp())
    except ValueError:
        return None


def _instant(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(seconds: int) -> str:
    """ISO-8601 duration (as the node wrote them: PT1H30M, PT40S, PT0S)."""
    days, rest = divmod(max(seconds, 0), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = "P" + (f"{days}D" if days else "")
    time = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    time += f"{secs}S" if secs or not (days or hours or minutes) else ""
    return text + ("T" + time if time else "")


def _span(start: int, seconds: int) -> dict[str, str]:
    return {"start": _instant(start), "duration": _duration(seconds)}


def document_of(
    record: dict[str, Any], platform: str, prepare_at: int, start_at: int, end_at: int
) -> dict[str, Any]:
    """The stored document of revision 0006, from a whole record and the row's instants."""
    parts = _dict(record.get("components"))
    meta: dict[str, Any] = {"name": record["name"]} if record.get("name") else {}
    meta["messages"] = record.get("messages") or []
    document: dict[str, Any] = {"probe": True} if record.get("probe") else {}
    document["meta"] = meta
    if platform:
        pools = [f"{platform}/{name}" for name in record.get("pools") or []]
        document["site"] = {"name": record.get("site", ""), "platform": platform, "pools": pools}
    schedule = {
        "preparing": _span(prepare_at, start_at - prepare_at),
        "available": _span(start_at, end_at - start_at),
        "releasing": _span(end_at, 0),
    }
    if record.get("entered"):
        schedule["actual"] = {k: _instant(v) for k, v in record["entered"].items()}
    document["schedule"] = schedule
    document["executable"] = parts.get("executable") or {}
    if parts.get("compute"):
        document["compute"] = parts["compute"]
    document["storage"] = parts.get("storage") or []
    document["data"] = parts.get("data") or []
    document["costs"] = record.get("costs") or []
    document["metrics"] = record.get("metrics") or []
    if record.get("statuses") is not None:
        statuses = []
        for status in record["statuses"]:
            status = dict(status)
            if status.get("prepared"):
                prepared = status["prepared"]
                status["prepared"] = {"start": _instant(prepared["start"]),
                                      "seconds": prepared["seconds"]}  # fmt: skip
            statuses.append(status)
        document["components"] = statuses
    if record.get("connectors") is not None:
        document["connectors"] = record["connectors"]
    lifecycle = {k: record[k] for k in ("outcome", "exit_code", "release_attempts") if k in record}
    if lifecycle:
        document["lifecycle"] = lifecycle
    return document
