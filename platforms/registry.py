"""Platform plugins, discovered through the ``ebroker.platforms`` entry point group."""

from __future__ import annotations

from importlib.metadata import entry_points

from pydantic import ValidationError

from broker_core.config import ConfigError, PlatformConfig, describe_errors

from .contract import Platform

ENTRY_POINT_GROUP = "ebroker.platforms"


def platform_types() -> dict[str, type[Platform]]:
    from .simulated import SimulatedPlatform

    types: dict[str, type[Platform]] = {"simulated": SimulatedPlatform}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in types:
            types[ep.name] = ep.load()
    return types


def build_platforms(configs: list[PlatformConfig]) -> list[Platform]:
    types = platform_types()
    platforms = []
    for index, config in enumerate(configs):
        cls = types.get(config.type)
        if cls is None:
            raise ConfigError(
                f"platforms.{index}.type: unknown platform type {config.type!r} "
                f"(installed: {', '.join(sorted(types))})"
            )
        try:
            platforms.append(cls(config))
        except ValidationError as exc:
            raise ConfigError(
                describe_errors(exc, "the configuration", ("platforms", index, "options"))
            ) from None
    return platforms
