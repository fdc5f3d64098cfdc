"""The node's own host as a pool, for platforms that run work on it (simulated, local) and
have no pools configured."""

from __future__ import annotations

import os
import shutil

from broker_core.config import PoolConfig

from .contract import inventory


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
