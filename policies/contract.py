"""The policy contract: who is asking (:class:`Identity`), what they ask for
(:class:`PolicyRequest`) and what one policy says about it (:class:`Decision`).

Every configured policy is asked about every request; :func:`combine` merges their answers so
that all must allow: pools are intersected, caps and durations take the smallest, time windows
are intersected, and a refusal by any policy refuses the request with that policy's messages.
Policies are plugins (entry point group ``ebroker.policies``); a plugin class is built with
``cls(name, options, node)`` and must validate its options itself (a pydantic model), raising
``pydantic.ValidationError`` so the node reports the offending key at start-up.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from broker_core.booking.timeline import Usage
from broker_core.kinds.base import Message, message

if TYPE_CHECKING:
    from broker_core.broker import Broker


log = logging.getLogger(__name__)
ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Identity:
    """Who is asking: a verified token's subject and groups, or the anonymous caller."""

    subject: str
    groups: frozenset[str] = frozenset()
    issuer: str | None = None  # the configured issuer's short name
    claims: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    # the names a configured group list may use for these groups (``issuer:group``, and the
    # bare names that cannot be mistaken for another issuer's); see policies.identity.groups.
    # None: computed from the groups with no other issuer known
    memberships: frozenset[str] | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def anonymous(self) -> bool:
        return self.issuer is None

    @property
    def owner(self) -> str:
        """The owner recorded on sessions: the subject, qualified by its issuer so two issuers'
        subjects can never collide."""
        return ANONYMOUS if self.issuer is None else f"{self.issuer}:{self.subject}"

    def in_any(self, groups: Iterable[str]) -> bool:
        """Whether a configured list of group names (``egi:site-admins``, or bare) names one
        of this caller's groups."""
        names = self.memberships
        if names is None:
            names = memberships(self.issuer, self.groups, ())
        return not names.isdisjoint(groups)


ANONYMOUS_IDENTITY = Identity(subject=ANONYMOUS)


def memberships(
    issuer: str | None, groups: Iterable[str], issuers: Collection[str]
) -> frozenset[str]:
    """The names under which a configured list may name these groups of ``issuer`` (one of
    ``issuers``, the configured ones): each group qualified by it, and each bare group unless it
    reads as another issuer's qualified name (issuer ``b`` saying ``a:admins`` is not issuer
    ``a`` saying ``admins``)."""
    if issuer is None:
        return frozenset()
    found = set()
    for group in groups:
        found.add(f"{issuer}:{group}")
        prefix, colon, _ = group.partition(":")
        if not (colon and prefix in issuers and prefix != issuer):
            found.add(group)
    return frozenset(found)


@dataclass(frozen=True)
class Amount:
    min: int
    max: int


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
    amounts: dict[str, Amount]  # resource class -> requested min/max (after defaults)
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


@runtime_checkable
class Policy(Protocol):
    """A policy plugin. ``evaluate`` is called in a worker thread for every request; it must
    not raise for a request it dislikes (that is a ``Decision.deny``), only for its own faults."""

    name: str

    def evaluate(self, request: PolicyRequest) -> Decision: ...


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


def admit(policy: Policy, session: Any, row: Any, now: int) -> list[Message]:
    """Ask a policy whether an offer may still be accepted (see ``PolicyBase.admit``); one that
    fails refuses, and the details go to the log."""
    check = getattr(policy, "admit", None)
    if check is None:
        return []
    try:
        return check(session, row, now)
    except Exception:
        log.exception("policy %s failed to check an accept", policy.name)
        return [message("policy {policy} could not check the accept (an internal error was "
                        "logged)", level="WARN", policy=policy.name)]  # fmt: skip


class PolicyBase:
    """Convenience base: keeps the name, options and node a plugin is built with."""

    def __init__(self, name: str, options: dict[str, Any], node: Broker | None):
        self.name = name
        self.node = node

    def admit(self, session: Any, row: Any, now: int) -> list[Message]:
        """Reasons the accepted session ``row`` (its booking just CONFIRMED, inside the
        accepting transaction, with the pools locked) must not be accepted after all; policies
        that count accepted sessions re-check here what concurrent accepts may have used up."""
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
