"""The accounting view: an identity's or a project's allocations and usage."""

from __future__ import annotations

import time
from typing import Any

from policies.allocations import Allocations
from policies.contract import Identity

from .broker import Broker
from .errors import NotFound
from .sessions.usage import own_usage


def _allocations(broker: Broker) -> Allocations | None:
    return next((p for p in broker.policies if isinstance(p, Allocations)), None)


def usage_report(broker: Broker, identity: Identity) -> dict[str, Any]:
    """The caller: who the node takes them for, what they used, and their projects."""
    policy = _allocations(broker)
    now = int(time.time())
    with broker.db.read() as session:
        projects = (
            [policy.report(session, name, now) for name in policy.member_of(identity)]
            if policy
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
    policy = _allocations(broker)
    if (
        policy is None
        or name not in policy.projects
        or not (broker.is_admin(identity) or policy.may_see(identity, name))
    ):
        raise NotFound("project", name)
    with broker.db.read() as session:
        return policy.report(session, name, int(time.time()))
