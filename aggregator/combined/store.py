"""Every read and write of the combined offers and their bookings (``agg_combined``,
``agg_combined_part``). A state is written before the step it names is taken, so that a
restarted aggregator reads what was under way: see ``recovery``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, insert, select, update

from .. import tables

OFFERED = "OFFERED"
CONFIRMING = "CONFIRMING"  # parts are being accepted
CONFIRMED = "CONFIRMED"  # every part is accepted
ABORTING = "ABORTING"  # a part failed: the others are being released
ABORTED = "ABORTED"
CANCELLING = "CANCELLING"  # the client cancelled it: every part is being cancelled
CANCELLED = "CANCELLED"
REJECTED = "REJECTED"  # never accepted: rejected, or a sibling was accepted
# what a restarted aggregator finishes or undoes
UNFINISHED = (CONFIRMING, ABORTING, CANCELLING)

# a part's state
PREPARED = "PREPARED"  # its offer holds its slot on its node


@dataclass
class PartRow:
    position: int
    name: str
    upstream: str
    remote_uuid: str
    remote_url: str
    state: str = PREPARED
    remote_offerset: str | None = None  # its offer set on its node


@dataclass
class CombinedRow:
    uuid: str
    offerset_uuid: str
    rank: int
    state: str
    expires_at: int
    modified_at: int
    document: dict[str, Any]
    messages: list[dict[str, Any]]
    parts: list[PartRow] = field(default_factory=list)


class CombinedStore:
    """On the aggregator's own database (``engine`` gives its engine when first used)."""

    def __init__(self, engine: Callable[[], Engine]):
        self._engine = engine

    @property
    def engine(self) -> Engine:
        return self._engine()

    def save(self, offerset: dict[str, Any], rows: list[CombinedRow]) -> None:
        """A combined offer set: its row and every combined offer with its parts, at once."""
        with self.engine.begin() as c:
            c.execute(insert(tables.offer_set), [offerset])
            for row in rows:
                c.execute(insert(tables.combined), [{
                    "uuid": row.uuid, "offerset_uuid": row.offerset_uuid, "rank": row.rank,
                    "state": row.state, "expires_at": row.expires_at,
                    "modified_at": row.modified_at, "document": row.document,
                    "messages": row.messages,
                }])  # fmt: skip
                c.execute(insert(tables.combined_part), [
                    {"combined_uuid": row.uuid, **p.__dict__} for p in row.parts
                ])  # fmt: skip

    def get(self, uuid: str) -> CombinedRow | None:
        rows = self._read(tables.combined.c.uuid == uuid)
        return rows[0] if rows else None

    def of_offerset(self, offerset_uuid: str) -> list[CombinedRow]:
        return self._read(tables.combined.c.offerset_uuid == offerset_uuid)

    def listed(
        self, remotes: list[tuple[str, str]], upstreams: set[str]
    ) -> dict[tuple[str, str], str | None]:
        """Of these (upstream, node offer set) a list shows, those of combined parts: each
        with the combined offer set it stands for in the list, or None where another part's
        stands for it. The one that stands for it is its first part (by rank, position) on one
        of ``upstreams`` (those listed), so a combined offer set is listed once, on one page."""
        if not remotes:
            return {}
        t, p = tables.combined, tables.combined_part
        with self.engine.connect() as c:
            hits = c.execute(
                select(p.c.upstream, p.c.remote_offerset, t.c.offerset_uuid)
                .join(t, t.c.uuid == p.c.combined_uuid)
                .where(p.c.remote_offerset.in_(sorted({uuid for _, uuid in remotes})))
            ).all()  # fmt: skip
            wanted = set(remotes)
            found = {(r[0], r[1]): r[2] for r in hits if (r[0], r[1]) in wanted}
            if not found:
                return {}
            firsts = c.execute(
                select(t.c.offerset_uuid, p.c.upstream, p.c.remote_offerset)
                .join(t, t.c.uuid == p.c.combined_uuid)
                .where(t.c.offerset_uuid.in_(sorted(set(found.values()))),
                       p.c.upstream.in_(sorted(upstreams)), p.c.remote_offerset.is_not(None))
                .order_by(t.c.offerset_uuid, t.c.rank, p.c.position)
            ).all()  # fmt: skip
        first: dict[str, tuple[str, str]] = {}
        for offerset_uuid, upstream, remote in firsts:
            first.setdefault(offerset_uuid, (upstream, remote))
        return {key: uuid if first.get(uuid) == key else None for key, uuid in found.items()}

    def unfinished(self) -> list[CombinedRow]:
        return self._read(tables.combined.c.state.in_(UNFINISHED))

    def _read(self, where: Any) -> list[CombinedRow]:
        t, p = tables.combined, tables.combined_part
        with self.engine.connect() as c:
            found = c.execute(select(t).where(where).order_by(t.c.rank)).all()
            if not found:
                return []
            parts = c.execute(
                select(p).where(p.c.combined_uuid.in_([r.uuid for r in found]))
                .order_by(p.c.combined_uuid, p.c.position)
            ).all()  # fmt: skip
        by_uuid = {r.uuid: CombinedRow(**r._mapping) for r in found}
        for part in parts:
            values = dict(part._mapping)
            by_uuid[values.pop("combined_uuid")].parts.append(PartRow(**values))
        return list(by_uuid.values())

    def move(
        self, uuid: str, old: tuple[str, ...], new: str, now: int, *,
        parts: str | None = None, note: list[dict[str, Any]] | None = None,
    ) -> bool:  # fmt: skip
        """Move a combined offer from one of ``old`` to ``new`` (and, with ``parts``, every
        part not yet ABORTED with it), in one transaction; False when it was not in ``old``
        (another request moved it first). ``note``: messages added to its own."""
        t = tables.combined
        with self.engine.begin() as c:
            row = c.execute(select(t.c.messages).where(t.c.uuid == uuid, t.c.state.in_(old)))
            found = row.first()
            if found is None:
                return False
            values: dict[str, Any] = {"state": new, "modified_at": now}
            if note:
                values["messages"] = list(found[0] or []) + note
            moved = c.execute(update(t).where(t.c.uuid == uuid, t.c.state.in_(old))
                              .values(**values))  # fmt: skip
            if moved.rowcount != 1:
                return False
            if parts is not None:
                p = tables.combined_part
                c.execute(update(p).where(p.c.combined_uuid == uuid, p.c.state != "ABORTED")
                          .values(state=parts))  # fmt: skip
            return True

    def set_part(self, uuid: str, position: int, state: str) -> None:
        p = tables.combined_part
        with self.engine.begin() as c:
            c.execute(update(p).where(p.c.combined_uuid == uuid, p.c.position == position)
                      .values(state=state))  # fmt: skip
