"""Who is asking: the caller as the node knows it once their credentials are verified.

Authentication (:mod:`broker_core.auth`) makes an :class:`Identity`; everything after it (the
policies, the owner checks on sessions, the accounting view) only reads one. It lives here, in
core, because it is neither an authentication detail nor a policy's.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Identity:
    """Who is asking: a verified token's subject and groups, or the anonymous caller."""

    subject: str
    groups: frozenset[str] = frozenset()
    issuer: str | None = None  # the configured issuer's short name
    claims: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    # the names a configured group list may use for these groups (``issuer:group``, and the
    # bare names that cannot be mistaken for another issuer's); see broker_core.auth.groups.
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
