"""What plain offers (:mod:`.service`) and recurring series (:mod:`.series`) share between
their search and their stored answer: the pools a search reads, the caller's hold lock, the
offer set's row, its sessions' rows and records, the freeing of the holds an answer replaces,
and a stored NO. One copy, so the two answers cannot drift apart."""

from __future__ import annotations

import time
import uuid as uuidlib
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session

from ..booking import holds, ledger
from ..booking.pools import PoolView, Slot
from ..broker import Broker
from ..config import UNITS
from ..db.tables import OfferSet
from ..kinds.base import Message, Range, message
from ..kinds.request import ExecutionRequest
from ..observability.metrics import OFFER_SETS
from ..pricing import price_lists, quote_slot
from ..schedule import instant
from ..sessions import store
from ..sessions.record import Components, Grant, SessionRecord, own_pool_name
from ..sessions.views import render_offerset
from . import accelerators, fairness
from .context import SearchContext


def lock_claimant(context: SearchContext, session: Session, fair: fairness.Claimant) -> bool:
    """Take the caller's (and project's) lock and the replaced offer set's, then read again
    what they hold: concurrent requests of one caller cannot both take the last of a limit,
    and the replaced holds are freed as they are now. True when the replaced holds changed
    since the search (its slots must be searched again)."""
    sqlite = context.broker.db.is_sqlite
    holds.lock_scopes(session, fair.lock_keys, sqlite=sqlite)
    holds.lock_offer_sets(session, fair.replaced, sqlite=sqlite)
    searched = fair.discount
    now = int(time.time())
    fair.read(session, now, replace=holds.held_of(session, fair.replaced))
    fair.refuse_or_raise(context.demand, context.preparation, now)  # a 429 when others took it
    context.verdict.discount = fair.discount
    return fair.discount != searched


def drained_notes(pools: list[PoolView]) -> list[Message]:
    """Why the drained pools among those a request may use were not searched, and what else
    would work: the other pools, or none (then the reasons say no more than this)."""
    drained = [p for p in pools if p.drain is not None]
    if not drained:
        return []
    others = sorted(p.name for p in pools if p.drain is None)
    notes = []
    for pool in drained:
        drain = pool.drain
        assert drain is not None
        notes.append(message(
            "pool {pool} is drained since {since}" + (" ({reason})" if drain.reason else "")
            + ": it takes no new sessions; "
            + ("other pools open to you: {others}" if others else
               "no other pool of this node is open to you: ask again once it is undrained, "
               "or ask another node"),
            level="WARN", pool=pool.name, since=instant(drain.since),
            **({"reason": drain.reason} if drain.reason else {}),
            **({"others": ", ".join(others)} if others else {}),
        ))  # fmt: skip
    return notes


def pool_sets(broker: Broker, platform: Any, pools: list[PoolView]) -> list[list[PoolView]]:
    """Each pool alone and, where the platform's pools are shares of the same machines, all of
    them together (one booking drawing on several, in the configured order)."""
    sets = [[p] for p in pools]
    if platform.config.combine_pools and len(pools) > 1:
        names = broker.pool_names.get(platform.name, [])
        order = {ledger.pool_key(platform.name, name): i for i, name in enumerate(names)}
        sets.append(sorted(pools, key=lambda p: order.get(p.name, len(order))))
    return sets


def add_external_claims(platform: Any, pools: list[PoolView], first: int, last: int) -> None:
    """Count what the platform has given away outside the broker (its own reservations,
    maintenance windows) as firm usage of its pools."""
    by_pool: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    for claim in platform.external_claims(first, last):
        by_pool.setdefault(
            (ledger.pool_key(platform.name, claim.pool), claim.resource_class), []
        ).append((claim.start, claim.end, claim.amount))
    for view in pools:
        view.add_external({c: by_pool.get((view.name, c), []) for c in view.usage})


def refuse(
    broker: Broker,
    document: Any,
    reasons: list[Message],
    now: int,
    owner: str | None,
    reason: str = "request",
) -> dict[str, Any]:
    """Store and render a NO; ``reason`` is its class for the metrics (request, policy,
    holds)."""
    OFFER_SETS.labels("NO", reason).inc()
    with broker.db.write(durable=False) as session:
        offerset = store_refusal(session, document, reasons, now, owner)
    return render_offerset(offerset, [], broker.base_url)


def store_refusal(
    session: Session, document: Any, reasons: list[Message], now: int, owner: str | None
) -> OfferSet:
    offerset = _offerset_row("NO", document, reasons, now, now, owner)
    session.add(offerset)
    return offerset


def yes_offerset_row(context: SearchContext) -> tuple[Any, int]:
    """The row of a YES offer set and when its holds expire, keyed for fair holds: the one
    start of every offer set that holds (plain offers and series)."""
    now = context.now
    expires = now + int(context.broker.config.offers.hold.total_seconds())
    offerset = _offerset_row(
        "YES", context.document, context.verdict.notes, now, expires, context.owner
    )
    if context.fair is not None:
        offerset.request_key = context.fair.request_key
    return offerset, expires


def _offerset_row(
    result: str,
    document: Any,
    messages: list[Message],
    now: int,
    expires: int,
    owner: str | None,
) -> OfferSet:
    return OfferSet(
        uuid=str(uuidlib.uuid4()),
        result=result,
        owner=owner,
        created_at=now,
        expires_at=expires,
        document={
            "meta": {"messages": [m.model_dump(exclude_none=True) for m in messages]},
            "request": _meta_of(document),
        },
    )


def _meta_of(document: Any) -> dict[str, Any]:
    meta = document.get("meta") if isinstance(document, dict) else None
    return {"meta": meta} if isinstance(meta, dict) else {}


def components(request: ExecutionRequest) -> dict[str, Any]:
    """The request's components as wire documents, dumped once for all the offers."""

    def dump(component: Any) -> dict[str, Any]:
        return component.model_dump(mode="json", exclude_none=True)

    return {
        "executable": dump(request.executable),
        "compute": dump(request.compute) if request.compute else None,
        "storage": [dump(s) for s in request.storage],
        "data": [dump(d) for d in request.data],
    }


INSERT_OFFERSET = insert(OfferSet.__table__)  # type: ignore[arg-type]


def session_record(
    context: SearchContext, components: dict[str, Any], slot: Slot
) -> SessionRecord:
    """The offered session: the request's components, each with a uuid of its own and the
    amounts granted (the slot's; classes no pool tracks are granted what was asked, and not
    booked), and the node's quote for the slot."""
    broker, request = context.broker, context.request

    def own(doc: dict[str, Any]) -> dict[str, Any]:
        """A copy of a dumped component with a uuid of its own."""
        return {**doc, "meta": {**doc.get("meta", {}), "uuid": str(uuidlib.uuid4())}}

    shares = _share(slot.totals.get("storage", 0), context.demand.storage_sizes)
    asked = components["compute"] or {}
    granted = {
        c: int(slot.totals[c] if c in slot.totals else (asked.get(c) or {}).get("max") or 0)
        for c in ("cores", "memory")
    }
    granted["storage"] = sum(shares)
    needs = context.demand.accelerators
    granted.update({n.resource_class: slot.totals.get(n.resource_class, 0) for n in needs})
    compute = (
        own(asked)
        if components["compute"]
        else {
            "kind": broker.registry.find_by_name("simple-compute-resource", "compute"),
            "meta": {"uuid": str(uuidlib.uuid4())},
        }
    )
    for c in ("cores", "memory"):
        if c in slot.totals:
            compute[c] = {"min": granted[c], "max": granted[c]}
    if needs:
        compute["accelerators"] = accelerators.offered(needs, slot.pools, slot.totals)
    storage = [own(s) for s in components["storage"]]
    for doc, size in zip(storage, shares, strict=True):
        doc["size"] = {"min": size, "max": size}
    data = _link_storage(broker, [own(d) for d in components["data"]], storage)
    names = {p.id: p.name for p in slot.pools}
    pools = sorted(names.values())
    offered = ", ".join(f"{v} {UNITS.get(c, c)}" for c, v in slot.totals.items())
    quoted = quote_slot(price_lists(broker.config), slot)
    return SessionRecord(
        name=request.meta.name if request.meta and request.meta.name else None,
        site=broker.config.site.name,
        components=Components(
            executable=own(components["executable"]), compute=compute, storage=storage, data=data
        ),
        allocations=[
            Grant(pool_id=p, pool=own_pool_name(names.get(p, "")), resource_class=c, amount=a)
            for p, c, a in slot.allocations
        ],
        granted=granted,
        pools=[own_pool_name(n) for n in pools],
        costs=quoted.costs,
        metrics=quoted.metrics,
        probe=context.probe,
        data_staging=list(context.data_staging)
        if any(s is not None for s in context.data_staging)
        else [],
        notify=request.notify,
        messages=[message("offered {granted} on {pools}", granted=offered, pools=", ".join(pools))],
    )


def _link_storage(
    broker: Broker, data: list[dict[str, Any]], storage: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each data resource names its storage by uuid, as the standard's answers do; a data
    resource that names none gets a storage resource of its own (appended to ``storage``; no
    size is booked for it), as the standard's brokers make one."""
    uuids = {(s.get("meta") or {}).get("name"): s["meta"]["uuid"] for s in storage}
    for doc in data:
        target = doc.get("storage")
        if isinstance(target, str) and target in uuids:
            doc["storage"] = uuids[target]
        elif not target:
            made = {
                "kind": broker.registry.find_by_name("simple-storage-resource", "storage"),
                "meta": {"uuid": str(uuidlib.uuid4())},
            }
            storage.append(made)
            doc["storage"] = made["meta"]["uuid"]
    return data


def _share(total: int, sizes: list[Range]) -> list[int]:
    """Split granted storage over the storage resources: each its min, the rest in order."""
    shares = [r.min for r in sizes]
    spare = total - sum(shares)
    for i, r in enumerate(sizes):
        extra = min(spare, r.max - r.min)
        shares[i] += extra
        spare -= extra
    return shares



def session_row(
    context: SearchContext,
    offerset: OfferSet,
    expires: int,
    slot: Slot,
    record: SessionRecord,
    *,
    phase: str,
    due_at: int | None = None,
    uuid: str | None = None,
    series_uuid: str | None = None,
) -> dict[str, Any]:
    """The row of one offered session (a plain offer, a series or an occurrence), for a bulk
    insert (``store.insert_many``)."""
    now = context.now
    row: dict[str, Any] = {
        "uuid": uuid or str(uuidlib.uuid4()), "offerset_uuid": offerset.uuid, "phase": phase,
        "platform": slot.pools[0].platform, "owner": context.owner,
        "project": context.verdict.project, "created_at": now, "modified_at": now,
        "expires_at": expires, "prepare_at": slot.prepare_at, "start_at": slot.start_at,
        "end_at": slot.end_at, "generation": 0, "due_at": due_at, "record": record.stored(),
        "series_uuid": series_uuid,
    }  # fmt: skip
    return row


def release_replaced(
    context: SearchContext,
    session: Session,
    slots: list[Slot],
    generations: dict[int, int],
    claims: ledger.Claims,
) -> None:
    """Expire the offer sets this answer replaces and free their holds (but on the pools it
    claimed, where the claim counted them already), adding what was freed to ``claims``."""
    fair = context.fair
    if fair is None or not fair.replaced:
        return
    claimed = {pool_id for slot in slots for pool_id, _, _ in slot.allocations}
    store.expire_offer_sets(session, sorted(fair.replacing.offer_sets()), context.now)
    freed = holds.release_replaced(session, fair.replacing, generations, claimed, context.now)
    for pool_id, *row in freed:
        claims.setdefault(pool_id, []).append(tuple(row))  # type: ignore[arg-type]
