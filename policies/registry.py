"""Policy plugins, discovered through the ``ebroker.policies`` entry point group."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import ValidationError

from broker_core.config import ConfigError, PolicyConfig, describe_errors

from .contract import Policy, PolicyHost

ENTRY_POINT_GROUP = "ebroker.policies"


def policy_types() -> dict[str, Any]:
    """Policy types by name, loaded only when a config uses them."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def build_policies(configs: list[PolicyConfig], host: PolicyHost | None) -> list[Policy]:
    """The configured policies, each built with ``host`` (None: only checking the config)."""
    types = policy_types()
    policies: list[Policy] = []
    for index, config in enumerate(configs):
        cls = types.get(config.type)
        if cls is None:
            raise ConfigError(
                f"policies.{index}.type: unknown policy type {config.type!r} "
                f"(installed: {', '.join(sorted(types)) or 'none'})"
            )
        if isinstance(cls, EntryPoint):
            cls = cls.load()
        try:
            policies.append(cls(config.name, config.options, host))
        except ValidationError as exc:
            raise ConfigError(
                describe_errors(
                    exc,
                    "the configuration",
                    ("policies", index, "options"),
                    model=getattr(cls, "options_model", None),
                )
            ) from None
    return policies
