"""What a cluster has to offer, as pure functions of the API's objects (nodes, pods, quotas):
the pools the node books (per node group, the Ready and schedulable nodes' allocatable
resources times ``share``, capped by the namespace's ResourceQuota), and what is taken from
them outside the broker (pods ebroker did not start, nodes gone since the pools were read)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from broker_core.config import InventoryConfig, PoolConfig

from .. import drift
from ..contract import ExternalClaim
from .manifests import GPU, PLATFORM_LABEL
from .options import KubernetesOptions, NodeGroup, Toleration

Obj = dict[str, Any]
GIB = 2**30
# resource class -> the node/pod resource it is read from, and the unit it is counted in
RESOURCES = {
    "cores": ("cpu", 1),
    "memory": ("memory", GIB),
    "gpus": (GPU, 1),
    "storage": ("ephemeral-storage", GIB),
}
# ResourceQuota keys that bound what pods may request, per class
QUOTA_KEYS = {
    "cores": ("requests.cpu", "cpu", "limits.cpu"),
    "memory": ("requests.memory", "memory", "limits.memory"),
    "gpus": (f"requests.{GPU}", f"limits.{GPU}"),
    "storage": ("requests.storage",),
}
ENDED = ("Succeeded", "Failed")
_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
}


def quantity(text: Any) -> float:
    """A Kubernetes quantity (``3800m``, ``16Gi``, ``16384Ki``, ``1e3``) as a number."""
    value = str(text).strip()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * _SUFFIXES[suffix]
    return float(value)


def resource_names(group: NodeGroup) -> dict[str, tuple[str, float]]:
    """Resource class -> the node/pod resource it is read from and its unit, with the group's
    extended resources for its accelerators (``devices``)."""
    names: dict[str, tuple[str, float]] = {c: v for c, v in RESOURCES.items() if c != "gpus"}
    names.update({c: (name, 1) for c, name in group.devices.items()})
    return names


def amounts(
    resources: dict[str, Any], names: dict[str, tuple[str, float]] = RESOURCES
) -> dict[str, float]:
    """Node or pod resources, by resource class, in the pools' units (cores, GiB, GPUs)."""
    found = {}
    for cls, (key, unit) in names.items():
        if key in resources:
            found[cls] = quantity(resources[key]) / unit
    return found


def ready(node: Obj) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def tolerated(taint: Obj, tolerations: list[Toleration]) -> bool:
    for t in tolerations:
        if t.effect and t.effect != taint.get("effect"):
            continue
        if t.operator == "Exists" and t.key in (None, taint.get("key")):
            return True
        if t.key == taint.get("key") and (t.value or "") == (taint.get("value") or ""):
            return True
    return False


def left_out(node: Obj, group: NodeGroup) -> str | None:
    """Why a node of the group cannot take its pods now (None: it can)."""
    if (node.get("spec") or {}).get("unschedulable"):
        return "cordoned"
    if not ready(node):
        return "NotReady"
    for taint in (node.get("spec") or {}).get("taints") or []:
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerated(
            taint, group.tolerations
        ):
            return f"tainted {taint.get('key')}"
    return None


def in_group(node: Obj, group: NodeGroup) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in group.selector.items())


def pod_requests(pod: Obj, names: dict[str, tuple[str, float]] = RESOURCES) -> dict[str, float]:
    """A pod's effective requests: its containers' sum, or its largest init container's."""
    spec = pod.get("spec") or {}
    total: dict[str, float] = {}

    def requested(container: Obj) -> dict[str, float]:
        return amounts((container.get("resources") or {}).get("requests") or {}, names)

    for container in spec.get("containers") or []:
        for cls, value in requested(container).items():
            total[cls] = total.get(cls, 0) + value
    for container in spec.get("initContainers") or []:
        for cls, value in requested(container).items():
            total[cls] = max(total.get(cls, 0), value)
    for cls, value in amounts(spec.get("overhead") or {}, names).items():
        total[cls] = total.get(cls, 0) + value
    total.pop("storage", None)  # ephemeral storage requests are rare and not booked
    return total


def foreign(pod: Obj, platform: str) -> bool:
    """A pod that holds resources and that this platform did not start."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    phase = (pod.get("status") or {}).get("phase")
    return labels.get(PLATFORM_LABEL) != platform and phase not in ENDED


@dataclass
class GroupReading:
    """One node group as read now."""

    name: str
    nodes: list[str] = field(default_factory=list)
    traits: list[str] = field(default_factory=list)  # the group's, as configured
    left_out: dict[str, str] = field(default_factory=dict)  # node -> why
    total: dict[str, float] = field(default_factory=dict)  # allocatable of the usable nodes
    largest: dict[str, float] = field(default_factory=dict)  # of one usable node
    foreign: dict[str, float] = field(default_factory=dict)  # requests of others' pods
    foreign_pods: int = 0


def read_groups(
    nodes: list[Obj], pods: list[Obj], options: KubernetesOptions, platform: str
) -> list[GroupReading]:
    readings = []
    for group in options.node_groups:
        reading = GroupReading(group.name, traits=list(group.traits))
        names = resource_names(group)
        for node in nodes:
            if not in_group(node, group):
                continue
            name = node["metadata"]["name"]
            why = left_out(node, group)
            if why:
                reading.left_out[name] = why
                continue
            reading.nodes.append(name)
            allocatable = (node.get("status") or {}).get("allocatable") or {}
            for cls, value in amounts(allocatable, names).items():
                reading.total[cls] = reading.total.get(cls, 0) + value
                reading.largest[cls] = max(reading.largest.get(cls, 0), value)
        usable = set(reading.nodes)
        for pod in pods:
            if (pod.get("spec") or {}).get("nodeName") in usable and foreign(pod, platform):
                reading.foreign_pods += 1
                for cls, value in pod_requests(pod, names).items():
                    reading.foreign[cls] = reading.foreign.get(cls, 0) + value
        readings.append(reading)
    return readings


def quota_caps(quotas: list[Obj]) -> dict[str, float]:
    """The smallest hard limit of the namespace's quotas, per class."""
    caps: dict[str, float] = {}
    for quota in quotas:
        hard = (quota.get("status") or {}).get("hard") or (quota.get("spec") or {}).get("hard")
        for cls, keys in QUOTA_KEYS.items():
            for key in keys:
                if key in (hard or {}):
                    unit = GIB if cls in ("memory", "storage") else 1
                    caps[cls] = min(caps.get(cls, math.inf), quantity(hard[key]) / unit)
    return caps


def _floor(value: float) -> int:
    return max(math.floor(value + 1e-9), 0)


def shares(
    reading: GroupReading, options: KubernetesOptions, caps: dict[str, float]
) -> dict[str, int]:
    """What the group offers for booking: its share of the usable nodes, within the quota."""
    classes = [*RESOURCES, *(c for c in reading.total if c not in RESOURCES)]
    sizes = {cls: _floor(reading.total.get(cls, 0) * options.share) for cls in classes}
    if options.storage_total is not None:
        sizes["storage"] = options.storage_total
    for cls, cap in caps.items():
        if cls in sizes:
            sizes[cls] = min(sizes[cls], _floor(cap))
    for device in ("gpus", "fpgas"):  # a group without devices has no inventory of them
        if not reading.total.get(device):
            sizes.pop(device, None)
    return sizes


def pool_config(
    reading: GroupReading, options: KubernetesOptions, caps: dict[str, float]
) -> PoolConfig:
    inventories = {}
    for cls, total in shares(reading, options, caps).items():
        largest = _floor(reading.largest.get(cls, 0)) if cls != "storage" else total
        unit = min(largest, total) if cls != "storage" else None
        inventories[cls] = InventoryConfig(total=total, max_unit=unit or None)
    return PoolConfig(name=reading.name, inventories=inventories, traits=reading.traits)  # type: ignore[arg-type]


def available(
    reading: GroupReading,
    options: KubernetesOptions,
    caps: dict[str, float],
    namespace_foreign: dict[str, float],
) -> dict[str, int]:
    """What the group can give ebroker now: its share, less what others' pods take beyond
    the part left to them, and within what the quota leaves after others' pods in the
    namespace."""
    now = shares(reading, options, {})
    result = {}
    for cls, share in now.items():
        if cls == "storage":
            result[cls] = share
            continue
        left = _floor(reading.total.get(cls, 0) - reading.foreign.get(cls, 0))
        value = min(share, left)
        if cls in caps:
            value = min(value, _floor(caps[cls] - namespace_foreign.get(cls, 0)))
        result[cls] = max(value, 0)
    return result


def claims(
    baseline: list[PoolConfig],
    readings: list[GroupReading],
    options: KubernetesOptions,
    caps: dict[str, float],
    namespace_foreign: dict[str, float],
    start: int,
    end: int,
) -> list[ExternalClaim]:
    """What the pools booked at start-up lack now, over [start, end): one claim per pool
    and class, its reason saying why (nodes left out, others' pods, the quota)."""
    by_name = {r.name: r for r in readings}
    found = []
    for pool in baseline:
        reading = by_name.get(pool.name)
        if reading is None:
            continue
        now = available(reading, options, caps, namespace_foreign)
        for cls, inventory in pool.inventories.items():
            lost = inventory.capacity - now.get(cls, 0)
            if lost > 0:
                found.append(ExternalClaim(pool.name, cls, lost, start, end, reason(reading)))
    return found


def reason(reading: GroupReading) -> str:
    parts = [f"{len(reading.nodes)} node(s) usable"]
    if reading.left_out:
        parts.append(
            "left out: " + ", ".join(f"{n} ({w})" for n, w in sorted(reading.left_out.items()))
        )
    if reading.foreign_pods:
        parts.append(f"{reading.foreign_pods} pod(s) not started by ebroker")
    return f"cluster, node group {reading.name}: " + "; ".join(parts)


def shrinkage(
    baseline: list[PoolConfig],
    readings: list[GroupReading],
    options: KubernetesOptions,
    caps: dict[str, float],
) -> dict[str, str]:
    """Pools whose nodes now give less than was booked at start-up: pool -> what it lacks."""
    now = {r.name: (shares(r, options, caps), reason(r)) for r in readings}
    return drift.shrinkage(baseline, now)
