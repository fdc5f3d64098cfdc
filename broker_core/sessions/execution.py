"""A stored session as its platform sees it: the :class:`~platforms.contract.Execution` that
every platform call receives (the lifecycle engine's steps, an extension, the logs)."""

from __future__ import annotations

from pathlib import Path

from platforms.contract import Execution

from ..db.tables import ExecutionSession
from ..staging.rules import StagingRules
from .record import SessionRecord


def execution_of(
    row: ExecutionSession, workdir: Path, staging: StagingRules | None = None
) -> Execution:
    """The session's components as offered, with what its record says was granted."""
    doc = row.document
    record = SessionRecord.of(row.record)
    return Execution(
        session=row.uuid,
        executable=doc.get("executable") or {},
        compute=doc.get("compute") or {},
        storage=list(doc.get("storage", [])),
        data=list(doc.get("data", [])),
        granted=dict(record.granted),
        prepare_at=row.prepare_at,
        start_at=row.start_at,
        end_at=row.end_at,
        workdir=Path(workdir).resolve() / row.uuid,
        state=dict(row.platform_state or {}),
        pools=list(record.pools),
        staging=staging or StagingRules(),
    )
