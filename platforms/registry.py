"""Platform plugins, discovered through the ``ebroker.platforms`` entry point group."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import ValidationError

from broker_core.config import ConfigError, PlatformConfig, describe_errors

from .contract import Platform

ENTRY_POINT_GROUP = "ebroker.platforms"


def platform_types() -> dict[str, Any]:
    """Platform types by name: entry points, loaded only when a config uses them (so one
    broken plugin cannot stop nodes that do not use it)."""
    from .simulated import SimulatedPlatform

    types: dict[str, Any] = {"simulated": SimulatedPlatform}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        types.setdefault(ep.name, ep)
    return types


def build_platforms(configs: list[PlatformConfig]) -> list[Platform]:
    types = platform_types()
    platforms = []
    for index, config in enumerate(configs):
        cls = types.get(config.type)
        if isinstance(cls, EntryPoint):
            cls = cls.load()
        if cls is None:
            raise ConfigError(
                f"platforms.{index}.type: unknown platform type {config.type!r} "
                f"(installed: {', '.join(sorted(types))})"
            )
        try:
            platforms.append(cls(config))
        except ValidationError as exc:
            raise ConfigError(
                describe_errors(
                    exc,
                    "the configuration",
                    ("platforms", index, "options"),
                    model=getattr(cls, "options_model", None),
                )
            ) from None
    return platforms
