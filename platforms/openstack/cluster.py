"""What a cloud has to offer, as pure functions of what its APIs return: the pools the node books
(per host aggregate or availability zone, the compute hosts' Placement inventories, times their
allocation ratios, less ``reserved``, times ``share``, capped by the project's quota), and what
is taken from them outside the broker (Placement allocations of consumers that are not
ebroker's servers, Blazar leases that ebroker did not make).

Compute API microversions from 2.88 on no longer report hypervisor sizes: Placement is the
source. A compute host is a root resource provider; accelerators (``PGPU``, ``VGPU``, the
``gpu_classes`` given) may sit on its child providers and count for the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from broker_core.config import InventoryConfig, PoolConfig

from .. import drift
from ..contract import WORK_PREFIX, ExternalClaim
from .options import OpenStackOptions, PoolSpec

Obj = dict[str, Any]
# Placement resource class -> (pool resource class, units of it per pool unit)
BASE_CLASSES = {"VCPU": ("cores", 1), "MEMORY_MB": ("memory", 1024), "DISK_GB": ("storage", 1)}
GPU_CLASSES = ("PGPU", "VGPU")
DEFAULT_ZONE = "nova"  # where hosts in no zone's aggregate are


@dataclass(frozen=True)
class Provider:
    """A resource provider as read from Placement: its inventories and, per consumer, its
    allocations (``GET /resource_providers/{uuid}/inventories`` and ``.../allocations``)."""

    uuid: str
    name: str
    root: str  # the root provider's uuid (itself for a compute host)
    inventories: dict[str, Obj] = field(default_factory=dict)
    allocations: dict[str, dict[str, int]] = field(default_factory=dict)  # consumer -> amounts


@dataclass(frozen=True)
class Aggregate:
    """A Nova host aggregate: its hosts, and its availability zone when it defines one."""

    name: str
    hosts: tuple[str, ...]
    availability_zone: str | None = None


@dataclass(frozen=True)
class Quota:
    """The project's compute limits (None: unlimited) and what the project uses of them."""

    cores: int | None = None
    ram_mb: int | None = None
    cores_used: int = 0
    ram_used_mb: int = 0
    gigabytes: float | None = None  # Cinder's, per pool, where storage is volumes
    gigabytes_used: float = 0


@dataclass(frozen=True)
class Lease:
    """A Blazar lease as far as capacity goes: its window, and what it holds (whole hosts by
    hypervisor name, or instances of a size)."""

    id: str
    name: str
    status: str
    start: int
    end: int
    hosts: tuple[str, ...] = ()
    instances: int = 0
    vcpus: int = 0
    memory_mb: int = 0
    disk_gb: int = 0

    @property
    def ours(self) -> bool:
        return self.name.startswith(WORK_PREFIX)


@dataclass(frozen=True)
class VolumeReading:
    """Cinder, where storage resources are volumes: its backend pools' capacity and what is
    allocated on them (every project's), ebroker's own volumes, and the project's
    ``gigabytes`` quota (None or negative: unlimited) with its use."""

    total_gb: float
    allocated_gb: float
    ours_gb: float
    quota_gb: float | None = None
    quota_used_gb: float = 0


@dataclass
class PoolReading:
    """One pool as read now."""

    name: str
    hosts: list[str] = field(default_factory=list)
    total: dict[str, float] = field(default_factory=dict)  # capacity of its hosts
    largest: dict[str, float] = field(default_factory=dict)  # of one host
    foreign: dict[str, float] = field(default_factory=dict)  # allocations not ebroker's
    foreign_consumers: int = 0
    ours: dict[str, float] = field(default_factory=dict)  # allocations of ebroker's servers


def classes(gpu_classes: tuple[str, ...] = ()) -> dict[str, tuple[str, int]]:
    """Placement resource class -> (pool class, unit), with the site's accelerator classes."""
    found = dict(BASE_CLASSES)
    for name in (*GPU_CLASSES, *gpu_classes):
        found[name] = ("gpus", 1)
    return found


def capacity(inventory: Obj) -> float:
    """What Placement lets be allocated of one inventory: (total - reserved) * ratio."""
    total = float(inventory.get("total") or 0)
    reserved = float(inventory.get("reserved") or 0)
    ratio = float(inventory.get("allocation_ratio") or 1.0)
    return max(total - reserved, 0) * ratio


def hosts_of(spec: PoolSpec, aggregates: list[Aggregate], all_hosts: list[str]) -> list[str]:
    """The compute hosts a pool draws on: its aggregate's, its zone's, or all of them."""
    if spec.aggregate:
        return sorted({h for a in aggregates if a.name == spec.aggregate for h in a.hosts})
    if spec.availability_zone:
        zoned = {h for a in aggregates if a.availability_zone for h in a.hosts}
        if spec.availability_zone == DEFAULT_ZONE:
            return sorted(set(all_hosts) - zoned)
        return sorted(
            {
                h
                for a in aggregates
                if a.availability_zone == spec.availability_zone
                for h in a.hosts
            }
        )
    return sorted(all_hosts)


def compute_hosts(providers: list[Provider]) -> list[str]:
    """The names of the root providers with a VCPU inventory: the compute hosts."""
    return sorted(p.name for p in providers if p.uuid == p.root and "VCPU" in p.inventories)


def read_pools(
    providers: list[Provider],
    aggregates: list[Aggregate],
    ours: set[str],
    options: OpenStackOptions,
    gpu_classes: tuple[str, ...] = (),
) -> list[PoolReading]:
    """Each configured pool's hosts, their capacity and what others' consumers hold of it;
    ``ours`` are the server ids (Placement consumers) ebroker made."""
    known = classes(gpu_classes)
    names = {p.uuid: p.name for p in providers if p.uuid == p.root}
    hosts = compute_hosts(providers)
    readings = []
    for spec in options.pools:
        reading = PoolReading(spec.name, hosts_of(spec, aggregates, hosts))
        members = set(reading.hosts)
        per_host: dict[str, dict[str, float]] = {}
        foreign: set[str] = set()
        for provider in providers:
            host = names.get(provider.root)
            if host not in members:
                continue
            sizes = per_host.setdefault(host, {})
            for rc, inventory in provider.inventories.items():
                if rc not in known:
                    continue
                cls, unit = known[rc]
                sizes[cls] = sizes.get(cls, 0) + capacity(inventory) / unit
            for consumer, amounts in provider.allocations.items():
                into = reading.ours if consumer in ours else reading.foreign
                if consumer not in ours:
                    foreign.add(consumer)
                for rc, amount in amounts.items():
                    if rc in known:
                        cls, unit = known[rc]
                        into[cls] = into.get(cls, 0) + amount / unit
        for sizes in per_host.values():
            for cls, value in sizes.items():
                reading.total[cls] = reading.total.get(cls, 0) + value
                reading.largest[cls] = max(reading.largest.get(cls, 0), value)
        reading.foreign_consumers = len(foreign)
        readings.append(reading)
    return readings


def quota_caps(quota: Quota) -> dict[str, float]:
    """The project's limits as pool amounts (cores, GiB)."""
    caps: dict[str, float] = {}
    if quota.cores is not None and quota.cores >= 0:
        caps["cores"] = quota.cores
    if quota.ram_mb is not None and quota.ram_mb >= 0:
        caps["memory"] = quota.ram_mb / 1024
    if quota.gigabytes is not None and quota.gigabytes >= 0:
        caps["storage"] = quota.gigabytes
    return caps


def with_volumes(
    readings: list[PoolReading], volumes: VolumeReading, quota: Quota
) -> tuple[list[PoolReading], Quota]:
    """The pools' ``storage`` from Cinder instead of the hosts' disks: its capacity split
    evenly over the pools (a volume is on no host; the split keeps pools from booking the
    same gigabytes twice), others' allocations taken off, and the quota split likewise."""
    n = max(len(readings), 1)
    for reading in readings:
        reading.total["storage"] = volumes.total_gb / n
        reading.largest["storage"] = volumes.total_gb / n
        reading.foreign["storage"] = max(volumes.allocated_gb - volumes.ours_gb, 0) / n
        reading.ours["storage"] = volumes.ours_gb / n
    unlimited = volumes.quota_gb is None or volumes.quota_gb < 0
    split = Quota(
        cores=quota.cores,
        ram_mb=quota.ram_mb,
        cores_used=quota.cores_used,
        ram_used_mb=quota.ram_used_mb,
        gigabytes=None if unlimited else volumes.quota_gb / n,  # type: ignore[operator]
        gigabytes_used=volumes.quota_used_gb / n,
    )
    return readings, split


def _floor(value: float) -> int:
    return max(math.floor(value + 1e-9), 0)


def shares(
    reading: PoolReading, options: OpenStackOptions, caps: dict[str, float]
) -> dict[str, int]:
    """What the pool offers for booking: its share of its hosts, within the quota."""
    sizes = {cls: _floor(value * options.share) for cls, value in reading.total.items()}
    sizes.setdefault("cores", 0)
    for cls, cap in caps.items():
        if cls in sizes:
            sizes[cls] = min(sizes[cls], _floor(cap))
    return sizes


def pool_config(
    reading: PoolReading, options: OpenStackOptions, caps: dict[str, float]
) -> PoolConfig:
    """The pool as booked: a session is one server on one host, so ``max_unit`` is the
    largest host's share."""
    inventories = {}
    for cls, total in shares(reading, options, caps).items():
        largest = _floor(reading.largest.get(cls, 0) * options.share)
        unit = min(largest, total)
        inventories[cls] = InventoryConfig(total=total, max_unit=unit or None)
    return PoolConfig(name=reading.name, inventories=inventories)  # type: ignore[arg-type]


def available(
    reading: PoolReading, options: OpenStackOptions, caps: dict[str, float], quota: Quota
) -> dict[str, int]:
    """What the pool can give ebroker now: its share, less what others' consumers hold beyond
    the part left to them, and within what the quota leaves after the project's other use."""
    result = {}
    for cls, share in shares(reading, options, {}).items():
        left = _floor(reading.total.get(cls, 0) - reading.foreign.get(cls, 0))
        value = min(share, left)
        if cls in caps:
            others = _quota_others(cls, quota, reading)
            value = min(value, _floor(caps[cls] - others))
        result[cls] = max(value, 0)
    return result


def _quota_others(cls: str, quota: Quota, reading: PoolReading) -> float:
    """What the project uses of a quota outside ebroker's servers (in this pool's reading)."""
    used = {
        "cores": quota.cores_used,
        "memory": quota.ram_used_mb / 1024,
        "storage": quota.gigabytes_used,
    }.get(cls, 0)
    return max(used - reading.ours.get(cls, 0), 0)


def lease_amounts(
    lease: Lease, reading: PoolReading, host_sizes: dict[str, dict[str, float]]
) -> dict[str, float]:
    """What a lease holds of a pool: its reserved hosts in the pool, whole; its instances at
    their size."""
    held: dict[str, float] = {}
    for host in lease.hosts:
        if host in reading.hosts:
            for cls, value in host_sizes.get(host, {}).items():
                held[cls] = held.get(cls, 0) + value
    if lease.instances:
        held["cores"] = held.get("cores", 0) + lease.instances * lease.vcpus
        held["memory"] = held.get("memory", 0) + lease.instances * lease.memory_mb / 1024
        if lease.disk_gb:
            held["storage"] = held.get("storage", 0) + lease.instances * lease.disk_gb
    return held


def claims(
    baseline: list[PoolConfig],
    readings: list[PoolReading],
    options: OpenStackOptions,
    caps: dict[str, float],
    quota: Quota,
    leases: list[Lease],
    host_sizes: dict[str, dict[str, float]],
    start: int,
    end: int,
) -> list[ExternalClaim]:
    """What the pools booked at start-up lack over [start, end): now (others' servers, hosts
    gone, the quota), one claim per pool and class; and each lease not ebroker's over its own
    window, where it overlaps."""
    by_name = {r.name: r for r in readings}
    found = []
    for pool in baseline:
        reading = by_name.get(pool.name)
        if reading is None:
            continue
        now = available(reading, options, caps, quota)
        for cls, inventory in pool.inventories.items():
            lost = inventory.capacity - now.get(cls, 0)
            if lost > 0:
                found.append(ExternalClaim(pool.name, cls, lost, start, end, reason(reading)))
        for lease in leases:
            if lease.ours or lease.end <= start or lease.start >= end:
                continue
            if lease.status in ("TERMINATED", "DELETED", "ERROR"):
                continue
            for cls, amount in lease_amounts(lease, reading, host_sizes).items():
                if cls in pool.inventories and amount > 0:
                    found.append(
                        ExternalClaim(
                            pool.name,
                            cls,
                            math.ceil(amount - 1e-9),
                            max(lease.start, start),
                            min(lease.end, end),
                            f"Blazar lease {lease.name or lease.id} ({lease.status})",
                        )
                    )
    return found


def reason(reading: PoolReading) -> str:
    parts = [f"{len(reading.hosts)} compute host(s)"]
    if reading.foreign_consumers:
        parts.append(f"{reading.foreign_consumers} server(s) or consumer(s) not ebroker's")
    return f"cloud, pool {reading.name}: " + "; ".join(parts)


def shrinkage(
    baseline: list[PoolConfig],
    readings: list[PoolReading],
    options: OpenStackOptions,
    caps: dict[str, float],
) -> dict[str, str]:
    """Pools whose hosts now give less than was booked at start-up: pool -> what it lacks."""
    now = {r.name: (shares(r, options, caps), reason(r)) for r in readings}
    return drift.shrinkage(baseline, now)


def host_sizes(
    providers: list[Provider], gpu_classes: tuple[str, ...] = ()
) -> dict[str, dict[str, float]]:
    """Each compute host's capacity by pool class (a whole-host lease holds all of it)."""
    known = classes(gpu_classes)
    names = {p.uuid: p.name for p in providers if p.uuid == p.root}
    sizes: dict[str, dict[str, float]] = {}
    for provider in providers:
        host = names.get(provider.root)
        if host is None:
            continue
        for rc, inventory in provider.inventories.items():
            if rc in known:
                cls, unit = known[rc]
                entry = sizes.setdefault(host, {})
                entry[cls] = entry.get(cls, 0) + capacity(inventory) / unit
    return sizes
