"""The ``simulated`` platform: real bookings, nothing executed.

It is the embedded default, so a node runs anywhere with no other service. Its pools come from
the config, or are sized from the host when none are configured.
"""

from __future__ import annotations

import os
import shutil
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from broker_core.config import PoolConfig
from broker_core.kinds.builtin import KINDS
from broker_core.kinds.request import ExecutionRequest

from .contract import Platform, inventory


class SimulatedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_preparation: timedelta = Field(default=timedelta(seconds=10))
    image_pull: timedelta = Field(default=timedelta(seconds=30))
    data_staging: timedelta = Field(default=timedelta(seconds=60), description="per data resource")
    storage_path: str = "."


class SimulatedPlatform(Platform):
    options_model = SimulatedOptions
    options: SimulatedOptions

    def pools(self) -> list[PoolConfig]:
        return self.config.pools or [host_pool(self.options.storage_path)]

    def accepted_kinds(self) -> frozenset[str]:
        return frozenset(k.kind_uri() for k in KINDS)

    def preparation_estimate(self, request: ExecutionRequest) -> timedelta:
        estimate = self.options.base_preparation
        if hasattr(request.executable, "image"):
            estimate += self.options.image_pull
        return estimate + self.options.data_staging * len(request.data)


def host_pool(storage_path: str = ".") -> PoolConfig:
    """One pool the size of this host: its cores, its memory and free disk, in GiB."""
    cores = os.cpu_count() or 1
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**30
    except (ValueError, OSError, AttributeError):
        memory = 4
    disk = shutil.disk_usage(storage_path).free // 2**30
    return PoolConfig(
        name="host",
        inventories={
            "cores": inventory(cores),
            "memory": inventory(max(memory, 1)),
            "storage": inventory(max(disk, 1)),
        },
    )
