"""The platform plugin contract, booking side.

A platform tells the node which pools of capacity it offers, which kinds it can run, whether a
particular request is acceptable (with messages saying why not) and how long preparation takes
before the booked start (image pulls, data staging). The execution side (prepare, start, poll,
release) is added with the session lifecycle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import timedelta
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from broker_core.config import InventoryConfig, PlatformConfig, PoolConfig
from broker_core.kinds.base import Message, message
from broker_core.kinds.request import ExecutionRequest


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Platform(ABC):
    """Base class of platform plugins, registered under the ``ebroker.platforms`` entry points."""

    options_model: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, config: PlatformConfig):
        self.name = config.name
        self.config = config
        self.options = self.options_model.model_validate(config.options)

    @abstractmethod
    def pools(self) -> list[PoolConfig]:
        """The pools of capacity this platform offers for booking."""

    @abstractmethod
    def accepted_kinds(self) -> frozenset[str]:
        """Kind URIs of the components this platform can provide."""

    def validate(self, request: ExecutionRequest) -> list[Message]:
        """Reasons this platform cannot serve the request; empty when it can."""
        accepted = self.accepted_kinds()
        refused = sorted({c.kind for c in request.components()} - accepted)
        return [
            message(
                "platform {platform} does not accept {kind}",
                level="WARN",
                platform=self.name,
                kind=kind,
            )
            for kind in refused
        ]

    @abstractmethod
    def preparation_estimate(self, request: ExecutionRequest) -> timedelta:
        """How long before the available start preparation must begin."""


def inventory(total: int, **kwargs: object) -> InventoryConfig:
    return InventoryConfig(total=total, **kwargs)  # type: ignore[arg-type]
