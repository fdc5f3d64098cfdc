"""The broker node's parts, assembled once (``broker_core.node.build_broker``) and handed to
every service function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .booking.cache import UsageCache
from .config import NodeConfig
from .db.engine import Database
from .identity import ANONYMOUS, Identity
from .kinds.registry import KindRegistry
from .offers.fairness import ProbeRate

if TYPE_CHECKING:
    from platforms.contract import Platform
    from policies.contract import Policy

    from .auth import Authenticator
    from .notifications.templates import Templates


@dataclass
class Broker:
    config: NodeConfig
    db: Database
    registry: KindRegistry
    platforms: list[Platform]
    usage_cache: UsageCache = field(default_factory=UsageCache)
    policies: list[Policy] = field(default_factory=list)
    # each platform's pool names in configured order, as synced at start-up (asking a platform
    # for its pools may be slow: Slurm runs sinfo)
    pool_names: dict[str, list[str]] = field(default_factory=dict)
    authenticator: Authenticator | None = field(default=None, repr=False)
    # found at start-up: pools that their confirmed bookings overbook (the bookings stand)
    capacity_warnings: list[str] = field(default_factory=list)
    # probe answers per caller in this process (offers.fairness)
    probe_rate: ProbeRate = field(default_factory=ProbeRate, repr=False)
    # set by the lifecycle runner of this process: look for due sessions now
    wake_lifecycle: Callable[[], None] | None = field(default=None, repr=False)
    # the e-mail templates, compiled and tried at start-up (``notifications.templates``)
    mail_templates: Templates | None = field(default=None, repr=False)

    def session_changed(self) -> None:
        if self.wake_lifecycle is not None:
            self.wake_lifecycle()

    def close(self) -> None:
        """Free the database connections and what the policies hold (threads, sessions)."""
        for policy in self.policies:
            close = getattr(policy, "close", None)
            if close is not None:
                close()
        self.db.dispose()

    def is_admin(self, identity: Identity) -> bool:
        return identity.in_any(self.config.auth.admin_groups)

    def may_release(self, identity: Identity) -> bool:
        """A service (an aggregator's own credential) may read and release any session."""
        return identity.in_any(self.config.auth.service_groups)

    def may_see(self, identity: Identity, owner: str | None) -> bool:
        """Only a session's owner, or a member of an admin group, may see or change it."""
        return (owner or ANONYMOUS) == identity.owner or self.is_admin(identity)

    @property
    def base_url(self) -> str:
        return self.config.base_url
