"""The accounting view: an identity's or a project's allocations and usage, as the policy
that keeps projects' accounts (``policies.contract.Accounts``, e.g. ``allocations``) reports
them."""

from __future__ import annotations

import time
from typing import Any

from policies.contract import Accounts

from .broker import Broker
from .errors import NotFound
from .identity import Identity
from .policy_host import BookingUsage
from .sessions.usage import own_usage


def _accounts(broker: Broker) -> Accounts | None:
    return next((p for p in broker.policies if isinstance(p, Accounts)), None)


def usage_report(broker: Broker, identity: Identity) -> dict[str, Any]:
    """The caller: who the node takes them for, what they used, and their projects."""
    accounts = _accounts(broker)
    now = int(time.time())
    with broker.db.read() as session:
        usage = BookingUsage(session)
        projects = (
            [accounts.report(usage, name, now) for name in accounts.member_of(identity)]
            if accounts
            else []
        )
        used = own_usage(session, identity.owner)
    return {
        "identity": {
            "owner": identity.owner,
            "subject": identity.subject,
            "issuer": identity.issuer,
            "groups": sorted(identity.groups),
            "admin": broker.is_admin(identity),
        },
        "used_hours": used,
        "projects": projects,
    }


def project_report(broker: Broker, identity: Identity, name: str) -> dict[str, Any]:
    """A project's allocations and usage, for its members, those of the projects above it,
    and admins; anyone else is told there is no such project."""
    accounts = _accounts(broker)
    if (
        accounts is None
        or not accounts.has_project(name)
        or not (broker.is_admin(identity) or accounts.may_see(identity, name))
    ):
        raise NotFound("project", name)
    with broker.db.read() as session:
        return accounts.report(BookingUsage(session), name, int(time.time()))
