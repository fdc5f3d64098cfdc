"""Group names tied to the issuer that asserted them.

A token's groups are the issuer's word about its own users, so a configured group list (admin
groups, a rule's ``groups:``) names a group as ``<issuer>:<group>``: ``egi:site-admins`` is the
``site-admins`` group of the configured issuer named ``egi`` and of no other, and
``basic:astro`` the ``astro`` group of the node's own Basic users. A bare ``site-admins`` means
that group whichever issuer asserts it; that is unambiguous only while a single issuer is
configured. With several, a bare name in ``auth.admin_groups`` stops start-up (a second issuer
saying ``site-admins`` would make its users admins of this node), and a bare name anywhere else
is accepted with a start-up warning.

A name is qualified only when the text before its first ``:`` is a configured issuer's name, so
group names that contain colons themselves (``urn:mace:egi.eu:group:vo``) stay bare names, and
can be qualified like any other (``egi:urn:mace:egi.eu:group:vo``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

from ..config import BASIC_ISSUER, AuthConfig, ConfigError, NodeConfig
from ..suggest import close_matches


def issuer_names(auth: AuthConfig) -> frozenset[str]:
    """The names that qualify a group: every configured issuer's, and ``basic`` for Basic users."""
    names = {issuer.name for issuer in auth.issuers}
    if auth.basic.users:
        names.add(BASIC_ISSUER)
    return frozenset(names)


def qualifier(name: str, issuers: Collection[str]) -> str | None:
    """The issuer a configured group name is qualified by; None for a bare name."""
    prefix, colon, _ = name.partition(":")
    return prefix if colon and prefix in issuers else None


# the lists that grant more than a caller's own: a name several issuers could claim stops start-up
PRIVILEGED = ("auth.admin_groups", "auth.service_groups")


def selector_lists(config: NodeConfig) -> Iterator[tuple[str, list[str]]]:
    """Every configured list that selects callers by group, with where it is: the admin groups,
    and every ``groups:`` list of string names outside the Basic users (whose groups are
    memberships, not selectors) - the policies' rules and members, and any other section."""
    yield "auth.admin_groups", list(config.auth.admin_groups)
    yield "auth.service_groups", list(config.auth.service_groups)
    data = config.model_dump(
        mode="json", exclude={"auth": {"admin_groups", "service_groups", "basic"}}
    )
    yield from _groups_in(data, "")


def _groups_in(value: Any, where: str) -> Iterator[tuple[str, list[str]]]:
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{where}.{key}" if where else str(key)
            if key == "groups" and isinstance(item, list) and all(isinstance(g, str) for g in item):
                yield here, item
            else:
                yield from _groups_in(item, here)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _groups_in(item, f"{where}[{index}]")


def group_problems(config: NodeConfig) -> tuple[list[str], list[str]]:
    """(errors, warnings) about the configured group names: bare names where several issuers
    are trusted, and names whose qualifier looks like a misspelt issuer."""
    issuers = issuer_names(config.auth)
    trusted = sorted(issuer.name for issuer in config.auth.issuers)
    errors: list[str] = []
    warnings: list[str] = []
    for where, names in selector_lists(config):
        for index, name in enumerate(names):
            at = f"{where}[{index}]"
            if qualifier(name, issuers) is not None:
                continue
            prefix, colon, rest = name.partition(":")
            close = close_matches(prefix, issuers) if colon else []
            if close:
                warnings.append(
                    f"{at}: {name!r} names no configured issuer {prefix!r}, so it is read as "
                    f"a group of that whole name from any issuer; did you mean "
                    f"'{close[0]}:{rest}'?"
                )
                continue
            if len(trusted) < 2:
                continue
            qualified = " or ".join(f"'{issuer}:{name}'" for issuer in trusted)
            text = (
                f"{at}: {name!r} names no issuer, and issuers {', '.join(trusted)} are trusted: "
                f"a {name!r} group from any of them would count; write {qualified}"
            )
            if where in PRIVILEGED:
                errors.append(text)
            else:
                warnings.append(text)
    return errors, warnings


def check_group_names(config: NodeConfig) -> list[str]:
    """The start-up warnings about configured group names; ConfigError for an admin group that
    several issuers could claim."""
    errors, warnings = group_problems(config)
    if errors:
        lines = "\n".join(f"  {e}" for e in errors)
        raise ConfigError(f"invalid configuration: admin groups must name their issuer:\n{lines}")
    return warnings
