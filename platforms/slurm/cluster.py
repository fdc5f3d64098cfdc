"""What the Slurm cluster says, read: ``scontrol show ... -o`` records, host lists,
partitions as pools, other reservations as claims on them, jobs' states as the session's work
status, and Slurm's times. Pure functions of the commands' output."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime

from broker_core.config import InventoryConfig, PoolConfig

from ..contract import WORK_PREFIX, ExternalClaim, PlatformError, WorkState, WorkStatus, inventory
from .options import SlurmConfigError

# Slurm job states (squeue %T / scontrol JobState) by what they mean for the session
PENDING_STATES = {
    "PENDING",
    "CONFIGURING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESV_DEL_HOLD",
}
RUNNING_STATES = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "SUSPENDED", "STOPPED"}
FAILED_STATES = {
    "FAILED": "failed",
    "TIMEOUT": "reached its time limit",
    "CANCELLED": "was cancelled",
    "OUT_OF_MEMORY": "ran out of memory",
    "NODE_FAIL": "lost its node (NODE_FAIL)",
    "BOOT_FAIL": "could not boot its node (BOOT_FAIL)",
    "DEADLINE": "missed its deadline",
    "PREEMPTED": "was preempted",
    "REVOKED": "was revoked",
    "SPECIAL_EXIT": "ended in SPECIAL_EXIT",
}

_KEY = re.compile(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:.]*)=")


def parse_records(text: str, key: str | None = None) -> list[dict[str, str]]:
    """``scontrol show ... -o`` output: one record per line of ``Key=Value`` pairs (values may
    contain spaces, e.g. ``OS=Linux 6.1 #1 SMP``); the first occurrence of a key wins."""
    records = []
    for line in text.splitlines():
        line = line.strip()
        matches = list(_KEY.finditer(line))
        if not matches:
            continue
        record: dict[str, str] = {}
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
            record.setdefault(match.group(1), line[match.end() : end].strip())
        if key is None or key in record:
            records.append(record)
    return records


def expand_hostlist(hostlist: str) -> list[str]:
    """``node[01-03,7],gpu1`` → node01, node02, node03, node7, gpu1."""
    hosts: list[str] = []
    for item in re.findall(r"[^,\[]*(?:\[[^\]]*\][^,\[]*)*", hostlist):
        item = item.strip()
        if not item or item in ("(null)", "None"):
            continue
        expanded = [""]
        for text, ranges in re.findall(r"([^\[]*)(?:\[([^\]]*)\])?", item):
            options = [text]
            if ranges:
                options = []
                for part in ranges.split(","):
                    lo, _, hi = part.partition("-")
                    if hi and lo.isdigit() and hi.isdigit():
                        width = len(lo)
                        options += [f"{text}{n:0{width}d}" for n in range(int(lo), int(hi) + 1)]
                    else:
                        options.append(f"{text}{part}")
            expanded = [e + o for e in expanded for o in options]
        hosts.extend(expanded)
    return hosts


def pool_name(partition: str) -> str:
    """A partition name as a pool name (``^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$``)."""
    name = re.sub(r"[^a-z0-9._-]+", "-", partition.lower())
    name = re.sub(r"^[^a-z0-9]+|[^a-z0-9]+$", "", name)[:64]
    name = re.sub(r"[^a-z0-9]+$", "", name)
    return name or "partition"


def split_list(value: str | None) -> list[str]:
    if not value or value in ("(null)", "None"):
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


def to_int(value: str | None) -> int:
    try:
        return int(str(value).split()[0])
    except (TypeError, ValueError, IndexError):
        return 0


# --- times -----------------------------------------------------------------------------------


def epoch(value: str | None) -> int | None:
    """A Slurm time (the controller's local time) in epoch seconds; None when it is none."""
    if not value:
        return None
    try:
        return int(datetime.strptime(value, "%Y-%m-%dT%H:%M:%S").timestamp())
    except ValueError:
        return None


def slurm_time(instant: float) -> str:
    """Slurm reads times in the controller's local time zone."""
    return datetime.fromtimestamp(int(instant)).strftime("%Y-%m-%dT%H:%M:%S")


# --- partitions as pools ---------------------------------------------------------------------


@dataclass
class Partition:
    name: str
    default: bool = False
    nodes: set[str] = field(default_factory=set)
    cpus: int = 0
    memory_mib: int = 0
    node_cpus: int = 0  # the largest node's
    node_memory_mib: int = 0
    # (GRES name, type or None) -> devices on the partition's nodes, and on its largest node
    gres: dict[tuple[str, str | None], int] = field(default_factory=dict)
    node_gres: dict[str, int] = field(default_factory=dict)  # GRES name -> the largest node's


# the GRES names booked as accelerator classes, and the prefix of the traits their types give
GRES_CLASSES = {"gpu": ("gpus", "GPU"), "fpga": ("fpgas", "FPGA")}


def parse_gres(value: str | None) -> dict[tuple[str, str | None], int]:
    """A node's ``Gres=gpu:a100:2(S:0-1),fpga:1``: (name, type) -> count; a GRES without a
    count is one device."""
    found: dict[tuple[str, str | None], int] = {}
    text = re.sub(r"\([^)]*\)", "", value or "")
    for item in split_list(text):
        parts = item.split(":")
        count = 1
        if len(parts) > 1 and parts[-1].isdigit():
            count = int(parts.pop())
        name, kind = parts[0], (parts[1] if len(parts) > 1 and parts[1] else None)
        found[(name, kind)] = found.get((name, kind), 0) + count
    return found


def read_partitions(partition_text: str, node_text: str) -> dict[str, Partition]:
    """The partitions with their nodes' CPUs and memory, from ``scontrol show partition -o``
    and ``scontrol show node -o``."""
    partitions: dict[str, Partition] = {}
    for record in parse_records(partition_text):
        name = record.get("PartitionName")
        if name:
            partitions[name] = Partition(name, default=record.get("Default") == "YES")
    for record in parse_records(node_text):
        node = record.get("NodeName")
        if not node:
            continue
        cpus = to_int(record.get("CPUEfctv")) or to_int(record.get("CPUTot"))
        memory = to_int(record.get("RealMemory"))
        gres = parse_gres(record.get("Gres"))
        for name in split_list(record.get("Partitions")):
            part = partitions.get(name)
            if part is None or node in part.nodes:
                continue
            part.nodes.add(node)
            part.cpus += cpus
            part.memory_mib += memory
            part.node_cpus = max(part.node_cpus, cpus)
            part.node_memory_mib = max(part.node_memory_mib, memory)
            per_name: dict[str, int] = {}
            for key, count in gres.items():
                part.gres[key] = part.gres.get(key, 0) + count
                per_name[key[0]] = per_name.get(key[0], 0) + count
            for gres_name, count in per_name.items():
                part.node_gres[gres_name] = max(part.node_gres.get(gres_name, 0), count)
    if not partitions:
        raise PlatformError("the Slurm cluster has no partitions")
    return partitions


def pool_map(
    partitions: dict[str, Partition],
    *,
    partition: str | None,
    configured: list[PoolConfig],
    platform: str,
) -> dict[str, str]:
    """Pool name → partition name, for the pools the platform offers: every partition, or
    only ``partition``; the ``configured`` pools when there are, each naming a partition."""
    names = sorted(partitions)
    if partition is not None:
        if partition not in partitions:
            raise SlurmConfigError(
                f"platform {platform}: options.partition {partition!r} is not "
                f"a partition of the Slurm cluster (partitions: {', '.join(names)})"
            )
        names = [partition]
    mapping: dict[str, str] = {}
    for name in names:
        pool = pool_name(name)
        while pool in mapping:
            pool = pool_name(f"{pool[:60]}-{len(mapping)}")
        mapping[pool] = name
    if not configured:
        return mapping
    chosen = {}
    for pool in configured:
        if pool.name not in mapping:
            raise SlurmConfigError(
                f"platform {platform}: pool {pool.name!r} is not a partition of the "
                f"Slurm cluster (pools from partitions: {', '.join(sorted(mapping))})"
            )
        chosen[pool.name] = mapping[pool.name]
    return chosen


def default_partition(partitions: dict[str, Partition]) -> str:
    for part in partitions.values():
        if part.default:
            return part.name
    if len(partitions) == 1:
        return next(iter(partitions))
    raise PlatformError("the Slurm cluster has no default partition; set options.partition")


def partition_pools(
    mapping: dict[str, str], partitions: dict[str, Partition], *, share: float, disk: int
) -> list[PoolConfig]:
    """One pool per partition: ``share`` of its cores and memory (GiB), at most one node's in
    one session, and ``disk`` GiB of storage; with its nodes' GPUs and FPGAs (GRES ``gpu`` and
    ``fpga``), whole, with a trait per GRES type (``gpu:a100`` -> GPU_A100)."""
    pools = []
    for pool, name in mapping.items():
        part = partitions[name]
        cores = math.floor(part.cpus * share + 1e-9)
        memory = math.floor(part.memory_mib / 1024 * share + 1e-9)
        node_cores = max(min(part.node_cpus, cores), 1)
        node_memory = max(min(math.floor(part.node_memory_mib / 1024), memory), 1)
        inventories = {
            "cores": inventory(cores, max_unit=node_cores),
            "memory": inventory(memory, max_unit=node_memory),
            "storage": inventory(disk),
        }
        inventories.update(accelerator_inventories(part, share))
        pools.append(
            PoolConfig(name=pool, inventories=inventories, traits=gres_traits(part))  # type: ignore[arg-type]
        )
    return pools


def accelerator_inventories(part: Partition, share: float) -> dict[str, InventoryConfig]:
    """The partition's GPUs and FPGAs: ``share`` of them, at most one node's in one session."""
    found = {}
    for gres_name, (resource_class, _) in GRES_CLASSES.items():
        total = sum(n for (name, _), n in part.gres.items() if name == gres_name)
        devices = math.floor(total * share + 1e-9)
        if devices > 0:
            largest = min(part.node_gres.get(gres_name, devices), devices)
            found[resource_class] = inventory(devices, max_unit=max(largest, 1))
    return found


def gres_traits(part: Partition) -> list[str]:
    """A trait per typed GPU/FPGA GRES of the partition: ``gpu:a100`` -> GPU_A100."""
    traits = set()
    for name, kind in part.gres:
        if name in GRES_CLASSES and kind:
            suffix = re.sub(r"[^A-Z0-9]+", "_", kind.upper()).strip("_")
            if suffix:
                traits.add(f"{GRES_CLASSES[name][1]}_{suffix}"[:255])
    return sorted(traits)


def reservation_claims(
    reservations: list[dict[str, str]],
    mapping: dict[str, str],
    partitions: dict[str, Partition],
    pools: list[PoolConfig],
    start: int,
    end: int,
) -> list[ExternalClaim]:
    """The reservations not made by the broker (``ebroker-*``) that overlap [start, end), as
    claims on their partition's pool: their ``CoreCnt`` (or nodes) and memory in proportion;
    a ``MAINT`` reservation takes the whole pool."""
    totals = {pool.name: pool.inventories for pool in pools}
    claims = []
    for resv in reservations:
        name = resv.get("ReservationName", "")
        if not name or name.startswith(WORK_PREFIX):
            continue
        r_start, r_end = epoch(resv.get("StartTime")), epoch(resv.get("EndTime"))
        if r_start is None or r_end is None or r_start >= end or r_end <= start:
            continue
        maint = "MAINT" in set(split_list(resv.get("Flags")))
        nodes = set(expand_hostlist(resv.get("Nodes", "")))
        partition = resv.get("PartitionName")
        reserved_cores = to_int(resv.get("CoreCnt"))
        for pool, part_name in mapping.items():
            part = partitions.get(part_name)
            if part is None or pool not in totals:
                continue
            if partition and partition != "(null)":
                if partition != part_name:
                    continue
            elif not nodes & part.nodes:
                continue
            inv = totals[pool]
            pool_cores = inv["cores"].total if "cores" in inv else 0
            pool_memory = inv["memory"].total if "memory" in inv else 0
            if maint:
                cores, memory = pool_cores, pool_memory
                reason = f"Slurm maintenance reservation {name}"
            else:
                core_count = reserved_cores or len(nodes & part.nodes) * part.node_cpus
                cores = min(core_count, pool_cores)
                fraction = min(core_count / part.cpus, 1.0) if part.cpus else 1.0
                memory = min(math.ceil(part.memory_mib / 1024 * fraction), pool_memory)
                reason = f"Slurm reservation {name}"
            for resource_class, amount in (("cores", cores), ("memory", memory)):
                if amount > 0:
                    claims.append(
                        ExternalClaim(pool, resource_class, amount, r_start, r_end, reason)
                    )
    return claims


# --- jobs ------------------------------------------------------------------------------------


def parse_jobs(text: str) -> dict[str, tuple[str, str, str]]:
    """Job id → (state, reason, name), from ``squeue -o %i|%T|%r|%j``."""
    jobs = {}
    for line in text.splitlines():
        parts = line.strip().split("|", 3)
        if len(parts) == 4:
            jobs[parts[0]] = (parts[1], parts[2], parts[3])
    return jobs


def is_live(state: str) -> bool:
    return state in PENDING_STATES or state in RUNNING_STATES


def live_status(job_id: str, state: str, reason: str) -> WorkStatus:
    if state in PENDING_STATES:
        why = f": {reason}" if reason and reason != "None" else ""
        return WorkStatus(WorkState.PENDING, message=f"Slurm job {job_id} is pending{why}")
    return WorkStatus(WorkState.RUNNING, message=f"Slurm job {job_id} is {state.lower()}")


def exit_code(value: str | None) -> tuple[int, int]:
    """``ExitCode=code:signal``."""
    code, _, signal = (value or "0:0").partition(":")
    return to_int(code), to_int(signal)


def job_status(job_id: str, record: dict[str, str], stopped: str | None) -> WorkStatus:
    """A job's status from its ``scontrol show job -o`` record; ``stopped`` is why the broker
    cancelled it, if it did."""
    state = record.get("JobState", "UNKNOWN").split()[0]
    reason = record.get("Reason", "None")
    if is_live(state):
        return live_status(job_id, state, reason)
    code, signal = exit_code(record.get("ExitCode"))
    exit_as = code if not signal else 128 + signal
    if state == "COMPLETED":
        return WorkStatus(WorkState.SUCCEEDED, exit_code=0, message=f"Slurm job {job_id} completed")
    if state == "CANCELLED" and stopped:
        text = f"Slurm job {job_id} was stopped: {stopped}"
    else:
        text = f"Slurm job {job_id} {FAILED_STATES.get(state, f'ended in state {state}')}"
        if state == "FAILED" and code and not signal:
            text += f" with exit code {code}"
        elif signal:
            text += f" (signal {signal})"
        if reason not in ("None", "NonZeroExitCode", ""):
            text += f" ({reason})"
    return WorkStatus(WorkState.FAILED, exit_code=exit_as, message=text)
