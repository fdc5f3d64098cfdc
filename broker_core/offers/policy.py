"""Ask every policy about a request and narrow the demand to what they allow.

The policies see a summary (:class:`policies.contract.PolicyRequest`); their combined
:class:`~policies.contract.Decision` then shapes the search: fewer pools, smaller maxima,
a shorter duration limit, fewer start times, and caps that vary over time (a project's
concurrency cap) for the engine to honour slot by slot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from policies.contract import (
    Decision,
    Limit,
    PolicyRequest,
    PoolRef,
    combine,
    evaluate,
)

from ..broker import Broker
from ..config import UNITS
from ..identity import Identity
from ..kinds.base import Message, Range, message
from ..kinds.request import ExecutionRequest
from ..schedule import format_seconds
from .demand import Demand


@dataclass
class Verdict:
    """The policies' combined answer, applied: the demand to search, or reasons to refuse."""

    demand: Demand
    refusals: list[Message] = field(default_factory=list)
    pools: frozenset[str] | None = None  # "platform/pool" names open to the caller; None = all
    limits: list[Limit] = field(default_factory=list)  # caps that vary over time
    project: str | None = None
    notes: list[Message] = field(default_factory=list)  # what the policies said when allowing
    # the starts the policies permit (inclusive intervals), whatever the request asked; None = any
    permitted: list[tuple[int, int]] | None = None
    # the node's hold limits (see .fairness): caps per pool (a share a caller may hold), and the
    # holds of the offer set the request replaces, which the search does not count
    pool_caps: list[Any] = field(default_factory=list)
    discount: dict[tuple[int, str], list[tuple[int, int, int]]] = field(default_factory=dict)


def consult(
    broker: Broker,
    identity: Identity,
    request: ExecutionRequest,
    demand: Demand,
    *,
    project: str | None,
    direct: bool,
    now: int,
    replaces: Iterable[str] = (),
    occurrences: int = 1,
) -> Verdict:
    """``replaces``: the caller's open offer sets this request replaces; their holds count
    against no cap. ``occurrences``: the sessions a recurring series books, which quotas
    count together."""
    if not broker.policies:
        return Verdict(demand)
    summary = PolicyRequest(
        identity=identity,
        amounts=dict(demand.amounts),
        duration=demand.duration,
        windows=demand.windows,
        pools=[
            PoolRef(platform, pool)
            for platform, names in broker.pool_names.items()
            for pool in names
        ],
        kinds=_kinds(request),
        now=now,
        lookahead=int(broker.config.offers.lookahead.total_seconds()),
        project=project,
        direct=direct,
        replaces=frozenset(replaces),
        occurrences=occurrences,
    )
    decision = combine([evaluate(policy, summary) for policy in broker.policies])
    return apply(decision, demand, now, summary.lookahead)


def apply(decision: Decision, demand: Demand, now: int, lookahead: int) -> Verdict:
    """Narrow ``demand`` to ``decision``; refusals when nothing of it is left."""
    pools = None if decision.pools is None else frozenset(str(p) for p in decision.pools)
    verdict = Verdict(demand, pools=pools, project=decision.project)
    if not decision.allowed:
        verdict.refusals = decision.messages or [
            message("a policy of this node refused the request", level="WARN")
        ]
        return verdict
    refusals: list[Message] = []
    if decision.max_duration is not None and demand.duration > decision.max_duration:
        refusals.append(message(
            "the policies of this node allow sessions of at most {maximum}; {requested} requested",
            level="WARN", maximum=format_seconds(decision.max_duration),
            requested=format_seconds(demand.duration),
        ))  # fmt: skip
    amounts = dict(demand.amounts)
    for limit in decision.limits:
        if limit.usage is not None:
            verdict.limits.append(limit)
            continue
        wanted = amounts.get(limit.resource_class)
        if wanted is None:
            continue
        if wanted.min > limit.cap:
            refusals.append(message(
                "{rule} allows at most {cap} {unit} per session; {needed} needed",
                level="WARN", rule=limit.rule, cap=limit.cap,
                unit=UNITS.get(limit.resource_class, limit.resource_class), needed=wanted.min,
            ))  # fmt: skip
        amounts[limit.resource_class] = Range(wanted.min, min(wanted.max, limit.cap))
    windows = demand.windows
    if decision.windows is not None:
        anytime = [(now, now + lookahead)]
        verdict.permitted = _allowed_starts(decision.windows, anytime, demand.duration)
        asked = windows if windows is not None else anytime
        windows = _allowed_starts(decision.windows, asked, demand.duration)
        if not windows:
            refusals.append(message(
                "the policies of this node allow no start in the requested window "
                "that leaves the whole {duration} inside the times they permit",
                level="WARN", duration=format_seconds(demand.duration),
            ))  # fmt: skip
    if pools is not None and not pools:
        refusals.append(message("no pool of this node is open to you", level="WARN"))
    if refusals:
        verdict.refusals = decision.messages + refusals
        return verdict
    verdict.demand = replace(demand, amounts=amounts, windows=windows)
    verdict.notes = list(decision.messages)
    return verdict


def _allowed_starts(
    allowed: list[tuple[int, int]], requested: list[tuple[int, int]], duration: int
) -> list[tuple[int, int]]:
    """The requested start instants (inclusive intervals) from which a session of
    ``duration`` lies wholly inside one of the ``allowed`` [from, to) intervals."""
    starts = [(a, b - duration) for a, b in allowed if b - duration >= a]
    out = []
    for r0, r1 in requested:
        for s0, s1 in starts:
            lo, hi = max(r0, s0), min(r1, s1)
            if lo <= hi:
                out.append((lo, hi))
    return sorted(out)


def _kinds(request: ExecutionRequest) -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {}
    for component in request.components():
        category = component.kind.rsplit("/", 2)[-2] if "/" in component.kind else "component"
        kinds.setdefault(category, []).append(component.kind)
    return kinds
