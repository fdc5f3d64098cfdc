"""A stored session as its platform sees it: the :class:`~platforms.contract.Execution` that
every platform call receives (the lifecycle engine's steps, an extension, the logs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from platforms.contract import Execution, PlatformError

from ..db.tables import ExecutionSession
from ..errors import DocumentInvalid
from ..kinds.base import Component
from ..kinds.registry import KindRegistry, UnknownKind
from ..staging.rules import StagingRules
from .record import SessionRecord


def execution_of(
    row: ExecutionSession,
    registry: KindRegistry,
    workdir: Path,
    staging: StagingRules | None = None,
    *,
    components: bool = True,
) -> Execution:
    """The session's components as offered, as their kinds' models, with what its record says
    was granted. A component that no longer validates (its kind's plugin is gone) is a
    PlatformError for the session; ``components=False`` gives the session without any, which
    is still enough to stop and remove its work (found by name and platform state)."""
    record = SessionRecord.of(row.record)
    parts = record.components

    def typed(category: str, document: dict[str, Any] | None, *where: object) -> Component | None:
        if not document or not components:
            return None
        try:
            return registry.parse(category, document, (category, *where))
        except (UnknownKind, DocumentInvalid) as exc:
            raise PlatformError(f"the session's {category} cannot be read: {exc}") from None

    storage = [typed("storage", d, i) for i, d in enumerate(parts.storage)]
    data = [typed("data", d, i) for i, d in enumerate(parts.data)]
    return Execution(
        session=row.uuid,
        executable=typed("executable", parts.executable),
        compute=typed("compute", parts.compute),
        storage=[c for c in storage if c is not None],
        data=[c for c in data if c is not None],
        granted=dict(record.granted),
        prepare_at=row.prepare_at,
        start_at=row.start_at,
        end_at=row.end_at,
        workdir=Path(workdir).resolve() / row.uuid,
        state=dict(record.platform_state),
        pools=list(record.pools),
        staging=staging or StagingRules(),
    )
