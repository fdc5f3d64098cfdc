"""sessions keep a typed record of what was granted and when it happened

What was granted (per pool, and per class as the platform provides it), the pools drawn on
and the instants of the lifecycle were read back from the rendered session document; they
are now the session's ``record``. Existing rows get theirs from their document (as the node
read it until now) and from their booking's allocations.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 12:00:00
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_SESSIONS = sa.table(
    "execution_session",
    sa.column("uuid", sa.String),
    sa.column("document", sa.JSON),
    sa.column("record", sa.JSON),
)


def upgrade() -> None:
    with op.batch_alter_table("execution_session", schema=None) as batch_op:
        batch_op.add_column(sa.Column("record", sa.JSON(), nullable=True))
    connection = op.get_bind()
    names = dict(connection.execute(sa.text("SELECT id, name FROM resource_pool")).all())
    booked: dict[str, list[tuple[int, str, int]]] = {}
    for session_uuid, pool_id, resource_class, amount in connection.execute(
        sa.text(
            "SELECT b.session_uuid, a.pool_id, a.resource_class, a.amount FROM allocation a "
            "JOIN booking b ON b.id = a.booking_id ORDER BY a.id"
        )
    ):
        booked.setdefault(session_uuid, []).append((pool_id, resource_class, amount))
    rows = connection.execute(sa.select(_SESSIONS.c.uuid, _SESSIONS.c.document)).all()
    for session_uuid, document in rows:
        document = _loaded(document)
        record = record_of(document, booked.get(session_uuid, []), names)
        connection.execute(
            _SESSIONS.update().where(_SESSIONS.c.uuid == session_uuid).values(record=record)
        )


def downgrade() -> None:
    # a probe's claim lived in its document before
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(_SESSIONS.c.uuid, _SESSIONS.c.document, _SESSIONS.c.record)
    ).all()
    for session_uuid, document, record in rows:
        document, record = _loaded(document), _loaded(record)
        if not record.get("probe"):
            continue
        claim = [[g["pool_id"], g["resource_class"], g["amount"]] for g in record["allocations"]]
        document = {**document, "lifecycle": {**document.get("lifecycle", {}), "claim": claim}}
        connection.execute(
            _SESSIONS.update().where(_SESSIONS.c.uuid == session_uuid).values(document=document)
        )
    with op.batch_alter_table("execution_session", schema=None) as batch_op:
        batch_op.drop_column("record")


def _loaded(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        value = json.loads(value)
    return value if isinstance(value, dict) else {}


def record_of(
    document: dict[str, Any], booked: list[tuple[int, str, int]], names: dict[int, str]
) -> dict[str, Any]:
    """A session's record, from its document as the node read it until now (frozen here: the
    node's own code may change, what the rows hold does not)."""
    compute = document.get("compute") or {}
    granted = {c: _int((compute.get(c) or {}).get("max")) for c in ("cores", "memory")}
    granted["storage"] = sum(
        _int((s.get("size") or {}).get("max")) for s in document.get("storage") or []
    )
    site_pools = (document.get("site") or {}).get("pools") or []
    probe = bool(document.get("probe"))
    claim = (document.get("lifecycle") or {}).get("claim") or []
    allocations = [tuple(a) for a in claim] if probe else booked
    entered = {}
    for phase, stamp in ((document.get("schedule") or {}).get("actual") or {}).items():
        if isinstance(stamp, str):  # the node wrote them as 2026-12-01T12:00:00Z
            try:
                entered[phase] = int(datetime.fromisoformat(stamp).timestamp())
            except ValueError:
                continue
    return {
        "allocations": [
            {
                "pool_id": int(pool_id),
                "pool": _own_name(names.get(int(pool_id), "")),
                "resource_class": str(resource_class),
                "amount": int(amount),
            }
            for pool_id, resource_class, amount in allocations
        ],
        "granted": granted,
        "pools": [_own_name(n) for n in site_pools if isinstance(n, str)],
        "entered": entered,
        "probe": probe,
    }


def _own_name(name: str) -> str:
    """Offers name pools "<platform>/<pool>"; a platform knows its pools by their own names."""
    return name.partition("/")[2] or name


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0
