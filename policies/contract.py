"""The policy contract: who is asking (:class:`Identity`), what they ask for
(:class:`PolicyRequest`), what one policy says about it (:class:`Decision`), and what a policy
may read of the node it runs in (:class:`PolicyHost`).

Every configured policy is asked about every request; :func:`combine` merges their answers so
that all must allow: pools are intersected, caps and durations take the smallest, time windows
are intersected, and a refusal by any policy refuses the request with that policy's messages.
Policies are plugins (entry point group ``ebroker.policies``); a plugin class is built with
``cls(name, options, host)`` and must validate its options itself (a pydantic model), raising
``pydantic.ValidationError`` so the node reports the offending key at start-up. ``host`` is the
node's :class:`PolicyHost` (None where a configuration is only checked): its configuration, its
clock and a :class:`UsageQuery` over the booking table, never the node's machinery itself.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from broker_core.booking.timeline import Claim, Usage
from broker_core.identity import (  # who is asking; plugins import these from their contract
    ANONYMOUS,  # noqa: F401
    ANONYMOUS_IDENTITY,  # noqa: F401
    Identity,
)
from broker_core.kinds.base import Message, Range, message

if TYPE_CHECKING:
    from collections.abc import Collection

    from broker_core.config import NodeConfig

log = logging.getLogger(__name__)

# The name policies used for a requested min/max before it became kinds.base.Range; kept so
# that a site's plugin written against it still imports.
Amount = Range


@dataclass(frozen=True)
class PoolRef:
    platform: str
    pool: str

    def __str__(self) -> str:
        return f"{self.platform}/{self.pool}"


@dataclass(frozen=True)
class PolicyRequest:
    """A summary of one request, as the policies see it."""

    identity: Identity
    amounts: dict[str, Range]  # resource class -> requested min/max (after defaults)
    duration: int  # seconds the session is to be available
    windows: list[tuple[int, int]] | None  # allowed available-start instants; None = ASAP
    pools: list[PoolRef]  # every pool the node could draw on
    kinds: dict[str, list[str]]  # category -> kind URIs used by the request
    now: int
    lookahead: int  # seconds: the node never offers a start later than now + lookahead
    project: str | None = None  # the project the client asked to charge, if any
    direct: bool = False
    # the caller's open offer sets this request replaces: their holds are freed with its claim,
    # so caps that count holds leave them out
    replaces: frozenset[str] = frozenset()
    # how many sessions of this shape the request books: a recurring series' occurrences (its
    # rule expanded from the earliest start asked for), each ``amounts`` for ``duration``, never
    # overlapping each other; quotas judge them all together (1: a single session)
    occurrences: int = 1

    def summary(self) -> dict[str, Any]:
        """A JSON summary, e.g. for a remote policy service."""
        return {
            "identity": {
                "subject": self.identity.subject,
                "issuer": self.identity.issuer,
                "groups": sorted(self.identity.groups),
                "anonymous": self.identity.anonymous,
            },
            "amounts": {c: {"min": a.min, "max": a.max} for c, a in self.amounts.items()},
            "duration": self.duration,
            "windows": [list(w) for w in self.windows] if self.windows is not None else None,
            "pools": [str(p) for p in self.pools],
            "kinds": self.kinds,
            "project": self.project,
            "direct": self.direct,
            **({"occurrences": self.occurrences} if self.occurrences > 1 else {}),
        }


@dataclass(frozen=True)
class Limit:
    """At every instant of a session, ``amount + usage`` of one class stays within ``cap``.

    ``usage`` is what already counts against the same cap (a project's running sessions, for
    a concurrency cap); None for a plain per-session cap. ``rule`` names the rule in messages.
    """

    resource_class: str
    cap: int
    rule: str
    usage: Usage | None = None

    def room(self, start: int, end: int) -> int:
        used = self.usage.peak(start, end) if self.usage is not None else 0
        return max(self.cap - used, 0)


@dataclass
class Decision:
    """One policy's answer. The defaults allow everything and restrict nothing."""

    allowed: bool = True
    messages: list[Message] = field(default_factory=list)
    pools: frozenset[PoolRef] | None = None  # the pools this identity may draw on; None = all
    limits: list[Limit] = field(default_factory=list)
    max_duration: int | None = None  # seconds
    # intervals [from, to) the whole available period of a session must lie in; None = any time
    windows: list[tuple[int, int]] | None = None
    project: str | None = None  # the project charged for the session

    @classmethod
    def deny(cls, template: str, **values: Any) -> Decision:
        return cls(allowed=False, messages=[message(template, level="WARN", **values)])


# --- what a policy may read of its node -------------------------------------------------------


class CommittedUse(NamedTuple):
    """One resource class of an accepted session not yet ended: ``amount`` over its available
    period [``start``, ``end``) (what allocations charge) and over its whole booking
    [``booked_start``, ``booked_end``), preparation included (what a concurrency cap counts).
    A named tuple: a policy reads one per accepted session and class for every request."""

    project: str
    resource_class: str
    amount: int
    start: int
    end: int
    booked_start: int
    booked_end: int


class UsageQuery(Protocol):
    """What the booking table says about projects' use, all read in one transaction."""

    def committed(self, projects: Collection[str]) -> list[CommittedUse]:
        """Every resource class of the projects' accepted sessions that have not ended."""
        ...

    def held(
        self, projects: Collection[str], resource_class: str, now: int, leave_out: Collection[str]
    ) -> list[Claim]:
        """The projects' open offers of one class, each offer set one group of alternatives
        (``Claim.group``), leaving out the offer sets in ``leave_out``."""
        ...

    def used_seconds(self, projects: Collection[str], resource_class: str, lo: int, hi: int) -> int:
        """Resource-seconds the projects' ended sessions used within [lo, hi)."""
        ...


class PolicyHost(Protocol):
    """What a policy may read of the node it runs in: its configuration, its clock, and the
    booking table through a :class:`UsageQuery` (``with host.usage() as usage: ...``)."""

    @property
    def config(self) -> NodeConfig: ...

    def now(self) -> int:
        """Epoch seconds."""
        ...

    def usage(self) -> AbstractContextManager[UsageQuery]: ...


@dataclass(frozen=True)
class Accepted:
    """The offer being accepted, as :meth:`PolicyBase.admit` sees it."""

    uuid: str
    owner: str
    project: str | None  # the project charged (the policies' ``Decision.project``)
    prepare_at: int  # its booking starts here: preparation in front of the available period
    start_at: int  # the available period [start_at, end_at), epoch seconds
    end_at: int
    amounts: dict[str, int]  # what its booking claims of each resource class, over its pools
    # a recurring series, accepted as one act: every occurrence's (prepare_at, start_at,
    # end_at), each claiming ``amounts`` (the fields above are the first's); () for one session
    occurrences: tuple[tuple[int, int, int], ...] = ()

    @property
    def windows(self) -> tuple[tuple[int, int, int], ...]:
        """Every booked (prepare_at, start_at, end_at) of what is accepted: a policy that
        judges these judges a series whole."""
        return self.occurrences or ((self.prepare_at, self.start_at, self.end_at),)


# --- the plugin ---------------------------------------------------------------------------------


@runtime_checkable
class Policy(Protocol):
    """A policy plugin. ``evaluate`` is called in a worker thread for every request; it must
    not raise for a request it dislikes (that is a ``Decision.deny``), only for its own faults."""

    name: str

    def evaluate(self, request: PolicyRequest) -> Decision: ...


@runtime_checkable
class Accounts(Protocol):
    """A policy that keeps projects' accounts (the ``allocations`` plugin): the node's accounting
    endpoints (``/accounting``, ``/projects/{name}``) ask the first configured one."""

    def member_of(self, identity: Identity) -> list[str]:
        """The projects the identity is a member of, in configured order."""
        ...

    def has_project(self, project: str) -> bool: ...

    def may_see(self, identity: Identity, project: str) -> bool: ...

    def report(self, usage: UsageQuery, project: str, now: int) -> dict[str, Any]:
        """The project's allocations and their use, as the accounting endpoints answer them."""
        ...


def evaluate(policy: Policy, request: PolicyRequest) -> Decision:
    """Ask a policy about a request; one that fails refuses (fail closed), and the client is
    told which one without the details, which go to the log."""
    try:
        return policy.evaluate(request)
    except Exception:
        log.exception("policy %s failed to evaluate a request", policy.name)
        return Decision.deny(
            "policy {policy} could not decide (an internal error was logged); the request is "
            "refused until it can", policy=policy.name,
        )  # fmt: skip


def admit(policy: Policy, accepted: Accepted, usage: UsageQuery, now: int) -> list[Message]:
    """Ask a policy whether an offer may still be accepted (see ``PolicyBase.admit``); one that
    fails refuses, and the details go to the log."""
    check = getattr(policy, "admit", None)
    if check is None:
        return []
    try:
        return check(accepted, usage, now)
    except Exception:
        log.exception("policy %s failed to check an accept", policy.name)
        return [message("policy {policy} could not check the accept (an internal error was "
                        "logged)", level="WARN", policy=policy.name)]  # fmt: skip


class PolicyBase:
    """Convenience base: keeps the name and host a plugin is built with."""

    def __init__(self, name: str, options: dict[str, Any], host: PolicyHost | None):
        self.name = name
        self.host = host

    def admit(self, accepted: Accepted, usage: UsageQuery, now: int) -> list[Message]:
        """Reasons the ``accepted`` offer (its booking just CONFIRMED, inside the accepting
        transaction, with the pools locked; ``usage`` reads in that transaction, so it sees this
        and every earlier accept) must not be accepted after all; policies that count accepted
        sessions re-check here what concurrent accepts may have used up. A recurring series is
        asked about once, with every occurrence confirmed (``accepted.windows``)."""
        return []

    def close(self) -> None:
        """Free what the policy holds (connections, threads) when the node stops."""


def intersect_windows(
    a: list[tuple[int, int]] | None, b: list[tuple[int, int]] | None
) -> list[tuple[int, int]] | None:
    """The instants in both lists of [from, to) intervals (None means unrestricted)."""
    if a is None:
        return b
    if b is None:
        return a
    out = []
    for a0, a1 in a:
        for b0, b1 in b:
            lo, hi = max(a0, b0), min(a1, b1)
            if lo < hi:
                out.append((lo, hi))
    return sorted(out)


def combine(decisions: list[Decision]) -> Decision:
    """All must allow: the narrowest of every restriction, and every policy's messages."""
    result = Decision()
    for d in decisions:
        result.messages.extend(d.messages)
        if not d.allowed:
            result.allowed = False
        if d.pools is not None:
            result.pools = d.pools if result.pools is None else result.pools & d.pools
        result.limits.extend(d.limits)
        if d.max_duration is not None:
            result.max_duration = (
                d.max_duration
                if result.max_duration is None
                else min(result.max_duration, d.max_duration)
            )
        result.windows = intersect_windows(result.windows, d.windows)
        if d.project is not None and result.project is None:
            result.project = d.project
    return result
