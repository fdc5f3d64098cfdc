"""The ``slurm`` platform: sessions run as batch jobs inside Slurm advance reservations.

Booking side:

- ``pools()`` reads the cluster (``scontrol show partition``/``node``): one pool per partition
  (or only ``partition`` when that option is set), named after the partition (lower-cased, other
  characters replaced by ``-``), with ``cores`` = floor(CPUs * ``share``) and ``memory`` =
  floor(MiB / 1024 * ``share``) GiB; ``max_unit`` is the largest node's share, because a session
  is one task on one node. A ``storage`` inventory is the free disk at ``storage_path`` (session
  workdirs live on the broker's host, which must share them with the compute nodes). Pools
  listed in the config are used as given, but each must name a partition.
- ``external_claims()`` turns the cluster's reservations that are not named ``ebroker-*`` into
  claims on their partition's pool: their ``CoreCnt`` and memory in proportion; a ``MAINT``
  reservation takes the whole pool.
- The kinds accepted are those with a launcher (``launchers``: kind name → command template
  run inside the batch script) whose program is installed, plus simple compute, storage and
  data resources. Privileged containers and published ports are refused: a batch job offers
  neither.

Execution side, per session (everything is named ``ebroker-<session uuid>``):

- ``reserve`` creates the reservation ``scontrol create reservation ReservationName=<name>
  StartTime=<max(prepare_at, now)> EndTime=<end_at> CoreCnt=<cores> NodeCnt=1
  Users=<reservation_user> PartitionName=<partition>`` (no flags unless
  ``reservation_flags``; Slurm 22.05 reserves CPUs, not memory).
- ``prepare_executable`` checks, for podman launchers, that an image location exists for
  podman (pulling it when it does not).
- ``start`` writes ``workdir/job.sh`` and submits it with ``sbatch --reservation <name>``; the
  output goes to ``workdir/logs/output.log``. The job id is kept in ``Execution.state``.
- ``poll`` reads ``squeue`` (cached for ``poll_cache_seconds``) and, for finished jobs,
  ``scontrol show job`` (accounting is not required).
- ``stop`` cancels the job; ``release`` cancels it and deletes the reservation.
- ``list_work``/``remove_work`` find and remove ``ebroker-*`` jobs and reservations.

Every Slurm command goes through ``SlurmPlatform._run``; a failing command is a
``PlatformError`` with the command's own message.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import math
import os
import re
import shlex
import shutil
import string
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from broker_core.config import ConfigError, PoolConfig
from broker_core.kinds.base import KIND_PREFIX, Component, Message, kind_uri, message
from broker_core.kinds.builtin import KINDS
from broker_core.kinds.request import ExecutionRequest

from .contract import (
    WORK_PREFIX,
    Execution,
    ExternalClaim,
    Platform,
    PlatformError,
    PreparationOptions,
    WorkState,
    WorkStatus,
    inventory,
    platform_step,
    published_ports,
)

DOCKER = kind_uri("executable", "docker-container")
SINGULARITY = kind_uri("executable", "singularity-container")
RESOURCE_KINDS = frozenset(
    {
        kind_uri("compute", "simple-compute-resource"),
        kind_uri("storage", "simple-storage-resource"),
        kind_uri("data", "simple-data-resource"),
        kind_uri("volume", "simple-volume-mount"),
    }
)
EXECUTABLE_NAMES = {k.NAME: k.kind_uri() for k in KINDS if k.CATEGORY == "executable"}

DEFAULT_LAUNCHERS: dict[str, str] = {
    "docker-container": (
        "podman run --rm --name {name} --cpus {cores} --memory {memory}g {env} {volumes} "
        "{entrypoint} {image} {command}"
    ),
    "singularity-container": "apptainer exec {env} {volumes} {image} {command}",
}
PLACEHOLDERS = frozenset(
    {"name", "cores", "memory", "env", "volumes", "entrypoint", "image", "command", "workdir"}
)
SCRIPT = "job.sh"
OUTPUT_LOG = "output.log"
ERROR_CHARS = 500
LAYOUT_SECONDS = 60.0
PROGRAM_SECONDS = 60.0

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
# messages of Slurm commands that mean "already done" for an idempotent step
GONE = ("Invalid job id", "already completing or completed", "Job has already finished")
NO_RESERVATION = ("Requested reservation is invalid", "not found")


class SlurmConfigError(ConfigError, ValueError):
    """The platform's configuration does not match the cluster."""


class SlurmOptions(PreparationOptions):
    partition: str | None = Field(
        default=None,
        min_length=1,
        description="the partition sessions run in (and the only pool offered, when set); "
        "default: every partition is a pool, sessions run in the cluster's default partition",
    )
    share: float = Field(
        default=1.0, gt=0, le=1, description="fraction of each partition's CPUs and memory booked"
    )
    reservation_user: str = Field(
        default="root",
        pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*\$?$",
        description="the Unix user reservations are made for and jobs run as",
    )
    reservation_flags: list[str] = Field(
        default_factory=list,
        max_length=8,
        description="Flags= of the reservations, e.g. IGNORE_JOBS; default: none",
    )
    bin_dir: str | None = Field(
        default=None, description="where scontrol, sbatch, squeue and scancel are; default: PATH"
    )
    launchers: dict[str, str | None] = Field(
        default_factory=dict,
        description="kind name (or URI) → command template run in the batch script, merged over "
        "the defaults (null removes one); placeholders: " + ", ".join(sorted(PLACEHOLDERS)),
    )
    export: str = Field(
        default="PATH,HOME,LANG",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(,[A-Za-z_][A-Za-z0-9_]*)*$",
        description="broker environment variables passed to jobs (sbatch --export)",
    )
    poll_cache_seconds: float = Field(
        default=3.0, ge=0, le=300, description="how long squeue/reservation listings are reused"
    )
    command_timeout: float = Field(default=60, gt=0, description="seconds per Slurm command")
    pull_timeout: float = Field(default=1800, gt=0, description="seconds per image pull")
    storage_path: str = Field(default=".", description="where the storage pool's free disk is")

    @field_validator("reservation_flags")
    @classmethod
    def _flags(cls, flags: list[str]) -> list[str]:
        for flag in flags:
            if not re.fullmatch(r"[A-Z_]{1,32}", flag):
                raise ValueError(f"{flag!r} is not a Slurm reservation flag")
            if flag in {"MAINT", "DAILY", "WEEKLY", "WEEKDAY", "WEEKEND", "PURGE_COMP"}:
                raise ValueError(f"reservation flag {flag} does not fit one session's window")
        return flags

    @field_validator("launchers")
    @classmethod
    def _launchers(cls, launchers: dict[str, str | None]) -> dict[str, str | None]:
        for kind, template in launchers.items():
            if kind not in EXECUTABLE_NAMES and not kind.startswith(("http://", "https://")):
                raise ValueError(
                    f"launchers: {kind!r} is not an executable kind "
                    f"(known: {', '.join(sorted(EXECUTABLE_NAMES))}, or a kind URI)"
                )
            if template is None:
                continue
            if not template.strip():
                raise ValueError(f"launchers.{kind}: the template is empty")
            try:
                names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
            except ValueError as exc:
                raise ValueError(f"launchers.{kind}: {exc}") from None
            unknown = names - PLACEHOLDERS
            if unknown:
                raise ValueError(
                    f"launchers.{kind}: unknown placeholder(s) {', '.join(sorted(unknown))} "
                    f"(known: {', '.join(sorted(PLACEHOLDERS))})"
                )
        return launchers


@dataclass
class Partition:
    name: str
    default: bool = False
    nodes: set[str] = field(default_factory=set)
    cpus: int = 0
    memory_mib: int = 0
    node_cpus: int = 0  # the largest node's
    node_memory_mib: int = 0


class SlurmPlatform(Platform):
    options_model = SlurmOptions
    options: SlurmOptions

    def __init__(self, config: Any):
        super().__init__(config)
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, Any]] = {}
        self._pool_partitions: dict[str, str] = {}

    # --- running commands -------------------------------------------------------------------

    def _program(self, name: str) -> str:
        if self.options.bin_dir and name in ("scontrol", "sbatch", "squeue", "scancel", "sinfo"):
            return str(Path(self.options.bin_dir) / name)
        return shutil.which(name) or name

    def _run(
        self, *args: str, ok: tuple[str, ...] = (), timeout: float | None = None
    ) -> str | None:
        """Run one command; its stdout, or None when it failed with one of the ``ok``
        messages (e.g. "already gone" for an idempotent step). Any other failure is a
        PlatformError with the command's own message."""
        argv = [self._program(args[0]), *args[1:]]
        words = [args[0]]
        for arg in args[1:3]:
            if arg.startswith("-") or "=" in arg:
                break
            words.append(arg)
        what = " ".join(words)
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=timeout or self.options.command_timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except FileNotFoundError:
            raise PlatformError(f"{args[0]} not found (bin_dir: {self.options.bin_dir})") from None
        except subprocess.TimeoutExpired:
            raise PlatformError(
                f"{what} did not answer within {timeout or self.options.command_timeout:g} s"
            ) from None
        except OSError as exc:
            raise PlatformError(f"{what} could not run: {exc}") from None
        if done.returncode == 0:
            return done.stdout
        error = " ".join((done.stderr.strip() or done.stdout.strip()).split())
        if any(text.lower() in error.lower() for text in ok):
            return None
        if len(error) > ERROR_CHARS:
            error = error[: ERROR_CHARS - 3] + "..."
        raise PlatformError(f"{what} failed (exit {done.returncode}): {error or 'no message'}")

    def _cached(self, key: str, ttl: float, load: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < ttl:
                return hit[1]
        value = load()
        with self._lock:
            self._cache[key] = (time.monotonic(), value)
        return value

    def _forget(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._cache.pop(key, None)

    # --- reading the cluster ----------------------------------------------------------------

    def _partitions(self) -> dict[str, Partition]:
        return self._cached("layout", LAYOUT_SECONDS, self._read_partitions)

    def _read_partitions(self) -> dict[str, Partition]:
        partitions: dict[str, Partition] = {}
        for record in parse_records(self._run("scontrol", "show", "partition", "-o") or ""):
            name = record.get("PartitionName")
            if name:
                partitions[name] = Partition(name, default=record.get("Default") == "YES")
        for record in parse_records(self._run("scontrol", "show", "node", "-o") or ""):
            node = record.get("NodeName")
            if not node:
                continue
            cpus = _int(record.get("CPUEfctv")) or _int(record.get("CPUTot"))
            memory = _int(record.get("RealMemory"))
            for name in _split_list(record.get("Partitions")):
                part = partitions.get(name)
                if part is None or node in part.nodes:
                    continue
                part.nodes.add(node)
                part.cpus += cpus
                part.memory_mib += memory
                part.node_cpus = max(part.node_cpus, cpus)
                part.node_memory_mib = max(part.node_memory_mib, memory)
        if not partitions:
            raise PlatformError("the Slurm cluster has no partitions")
        return partitions

    def _pool_map(self) -> dict[str, str]:
        """Pool name → partition name, for the pools this platform offers."""
        partitions = self._partitions()
        names = sorted(partitions)
        if self.options.partition is not None:
            if self.options.partition not in partitions:
                raise SlurmConfigError(
                    f"platform {self.name}: options.partition {self.options.partition!r} is not "
                    f"a partition of the Slurm cluster (partitions: {', '.join(names)})"
                )
            names = [self.options.partition]
        mapping: dict[str, str] = {}
        for name in names:
            pool = pool_name(name)
            while pool in mapping:
                pool = pool_name(f"{pool[:60]}-{len(mapping)}")
            mapping[pool] = name
        if self.config.pools:
            configured = {}
            for pool in self.config.pools:
                if pool.name not in mapping:
                    raise SlurmConfigError(
                        f"platform {self.name}: pool {pool.name!r} is not a partition of the "
                        f"Slurm cluster (pools from partitions: {', '.join(sorted(mapping))})"
                    )
                configured[pool.name] = mapping[pool.name]
            mapping = configured
        self._pool_partitions = mapping
        return mapping

    def _default_partition(self) -> str:
        if self.options.partition is not None:
            return self.options.partition
        partitions = self._partitions()
        for part in partitions.values():
            if part.default:
                return part.name
        if len(partitions) == 1:
            return next(iter(partitions))
        raise PlatformError("the Slurm cluster has no default partition; set options.partition")

    def _reservations(self) -> list[dict[str, str]]:
        def load() -> list[dict[str, str]]:
            out = self._run("scontrol", "show", "reservation", "-o") or ""
            return parse_records(out, key="ReservationName")

        return self._cached("reservations", self.options.poll_cache_seconds, load)

    def _jobs(self) -> dict[str, tuple[str, str, str]]:
        """Job id → (state, reason, name) of every job squeue knows, cached briefly."""

        def load() -> dict[str, tuple[str, str, str]]:
            out = self._run("squeue", "-h", "-a", "-t", "all", "-o", "%i|%T|%r|%j") or ""
            jobs = {}
            for line in out.splitlines():
                parts = line.strip().split("|", 3)
                if len(parts) == 4:
                    jobs[parts[0]] = (parts[1], parts[2], parts[3])
            return jobs

        return self._cached("jobs", self.options.poll_cache_seconds, load)

    # --- booking side -----------------------------------------------------------------------

    def pools(self) -> list[PoolConfig]:
        mapping = self._pool_map()
        if self.config.pools:
            return list(self.config.pools)
        partitions = self._partitions()
        share = self.options.share
        disk = max(shutil.disk_usage(self.options.storage_path).free // 2**30, 1)
        pools = []
        for pool, name in mapping.items():
            part = partitions[name]
            cores = math.floor(part.cpus * share + 1e-9)
            memory = math.floor(part.memory_mib / 1024 * share + 1e-9)
            node_cores = max(min(part.node_cpus, cores), 1)
            node_memory = max(min(math.floor(part.node_memory_mib / 1024), memory), 1)
            pools.append(
                PoolConfig(
                    name=pool,
                    inventories={
                        "cores": inventory(cores, max_unit=node_cores),
                        "memory": inventory(memory, max_unit=node_memory),
                        "storage": inventory(disk),
                    },
                )
            )
        return pools

    def _launchers(self) -> dict[str, str]:
        """Kind URI → launcher template: the defaults with the configured ones over them."""
        merged: dict[str, str | None] = {
            EXECUTABLE_NAMES[k]: v for k, v in DEFAULT_LAUNCHERS.items()
        }
        for kind, template in self.options.launchers.items():
            merged[EXECUTABLE_NAMES.get(kind, kind)] = template
        launchers = {k: v for k, v in merged.items() if v is not None}
        configured = {EXECUTABLE_NAMES.get(k, k) for k in self.options.launchers}
        if (
            SINGULARITY in launchers
            and SINGULARITY not in configured
            and not self._which("apptainer")
            and self._which("singularity")
        ):
            launchers[SINGULARITY] = launchers[SINGULARITY].replace("apptainer", "singularity", 1)
        return launchers

    def _which(self, program: str) -> bool:
        return self._cached(
            f"which:{program}", PROGRAM_SECONDS, lambda: shutil.which(program) is not None
        )

    def _launcher_problem(self, kind: str, template: str) -> str | None:
        program = _program_of(template)
        if program is None or self._which(program):
            return None
        if kind == SINGULARITY and os.path.basename(program) in ("apptainer", "singularity"):
            return "neither apptainer nor singularity is installed"
        return f"{program} is not installed"

    def accepted_kinds(self) -> frozenset[str]:
        runnable = {
            kind
            for kind, template in self._launchers().items()
            if self._launcher_problem(kind, template) is None
        }
        return frozenset(runnable) | RESOURCE_KINDS

    def validate(self, request: ExecutionRequest) -> list[Message]:
        messages = []
        launchers = self._launchers()
        for kind in sorted(request.kinds() - self.accepted_kinds()):
            problem = self._launcher_problem(kind, launchers[kind]) if kind in launchers else None
            if problem:
                messages.append(
                    message(
                        "platform {platform} cannot run {kind}: {problem}",
                        level="WARN",
                        platform=self.name,
                        kind=_short(kind),
                        problem=problem,
                    )
                )
            else:
                messages.append(
                    message(
                        "platform {platform} does not accept {kind}",
                        level="WARN",
                        platform=self.name,
                        kind=kind,
                    )
                )
        messages += self.refuse_privileged(request)
        if published_ports(request):
            messages.append(
                message(
                    "platform {platform} runs batch jobs and cannot publish ports",
                    level="WARN",
                    platform=self.name,
                )
            )
        return messages

    def external_claims(self, start: int, end: int) -> list[ExternalClaim]:
        try:
            mapping = self._pool_partitions or self._pool_map()
            partitions = self._partitions()
            reservations = self._reservations()
        except PlatformError:
            raise
        except Exception as exc:
            raise PlatformError(f"slurm platform: cannot read reservations: {exc}") from exc
        totals = {pool.name: pool.inventories for pool in self._pool_sizes()}
        claims = []
        for resv in reservations:
            name = resv.get("ReservationName", "")
            if not name or name.startswith(WORK_PREFIX):
                continue
            r_start, r_end = _epoch(resv.get("StartTime")), _epoch(resv.get("EndTime"))
            if r_start is None or r_end is None or r_start >= end or r_end <= start:
                continue
            flags = set(_split_list(resv.get("Flags")))
            maint = "MAINT" in flags
            nodes = set(expand_hostlist(resv.get("Nodes", "")))
            partition = resv.get("PartitionName")
            reserved_cores = _int(resv.get("CoreCnt"))
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

    def _pool_sizes(self) -> list[PoolConfig]:
        return self._cached("pools", LAYOUT_SECONDS, self.pools)

    # --- execution side ---------------------------------------------------------------------

    def _partition_of(self, execution: Execution) -> str:
        """The partition a session runs in: the one it was reserved in, its pool's when the
        engine recorded one in ``state["pool"]``, else the default."""
        if execution.state.get("partition"):
            return str(execution.state["partition"])
        pool = execution.pools[0] if execution.pools else execution.state.get("pool")
        if pool:
            mapping = self._pool_partitions or self._pool_map()
            if pool in mapping:
                return mapping[pool]
        return self._default_partition()

    def _reservation_exists(self, name: str) -> bool:
        out = self._run("scontrol", "show", "reservation", "-o", name, ok=NO_RESERVATION)
        return out is not None and f"ReservationName={name} " in out + " "

    @platform_step
    def reserve(self, execution: Execution) -> None:
        name = execution.name
        now = int(time.time())
        if execution.end_at <= now:
            raise PlatformError(f"the booked window of {name} has already ended")
        if self._reservation_exists(name):
            execution.state["reservation"] = name
            execution.state.setdefault("partition", self._partition_of(execution))
            return
        partition = self._partition_of(execution)
        cores = _granted(execution, "cores")
        args = [
            "scontrol",
            "create",
            "reservation",
            f"ReservationName={name}",
            f"StartTime={_slurm_time(max(execution.prepare_at, now))}",
            f"EndTime={_slurm_time(execution.end_at)}",
            f"CoreCnt={cores}",
            "NodeCnt=1",
            f"Users={self.options.reservation_user}",
            f"PartitionName={partition}",
        ]
        if self.options.reservation_flags:
            args.append(f"Flags={','.join(self.options.reservation_flags)}")
        self._run(*args, ok=("Duplicate reservation name",))
        self._forget("reservations")
        execution.state["reservation"] = name
        execution.state["partition"] = partition
        execution.notes.append(
            f"Slurm reservation {name}: {cores} cores in partition {partition} from "
            f"{_slurm_time(max(execution.prepare_at, now))} to {_slurm_time(execution.end_at)}"
        )

    @platform_step
    def extend(self, execution: Execution, end_at: int) -> None:
        """Move the reservation's end and the job's time limit to the new end."""
        name = execution.state.get("reservation")
        if name and self._reservation_exists(name):
            self._run("scontrol", "update", f"ReservationName={name}",
                      f"EndTime={_slurm_time(end_at)}")  # fmt: skip
            self._forget("reservations")
        job_id = execution.state.get("job_id")
        if job_id:
            minutes = max(-(-(end_at - execution.end_at) // 60), 1)  # added to its limit
            self._run("scontrol", "update", f"JobId={job_id}", f"TimeLimit=+{minutes}",
                      ok=("Invalid job id", "Job has already finished"))  # fmt: skip
        execution.notes.append(f"Slurm: {name or 'the session'} extended to {_slurm_time(end_at)}")

    def staging_user(self, execution: Execution) -> str | None:
        """Data is staged as the job's user (``reservation_user``)."""
        return self.options.reservation_user

    @platform_step
    def prepare_executable(self, execution: Execution) -> None:
        kind = execution.executable.kind if execution.executable else None
        template = self._launchers().get(kind or "")
        if template is None:
            raise PlatformError(f"platform {self.name} has no launcher for {kind}")
        locations = _locations(execution.executable)
        if not _is_podman(template) or not locations:
            if locations:
                execution.notes.append(
                    f"image {locations[0]} is not checked: the {_short(kind)} launcher "
                    "does not use podman"
                )
            return
        for location in locations:
            exists = self._run("podman", "image", "exists", location, ok=("",))
            if exists is not None:
                execution.state["image"] = location
                execution.notes.append(f"image {location} is present")
                return
        errors = []
        for location in locations:
            try:
                self._run("podman", "pull", "--quiet", location, timeout=self.options.pull_timeout)
            except PlatformError as exc:
                errors.append(str(exc))
                continue
            execution.state["image"] = location
            execution.notes.append(f"pulled image {location}")
            return
        raise PlatformError(f"no image location could be found or pulled: {'; '.join(errors)}")

    def _job_by_name(self, name: str) -> str | None:
        out = self._run("squeue", "-h", "-a", "-t", "all", "--name", name, "-o", "%i") or ""
        ids = out.split()
        return ids[-1] if ids else None

    @platform_step
    def start(self, execution: Execution) -> None:
        name = execution.name
        if execution.state.get("job_id"):
            return
        job_id = self._job_by_name(name)
        if job_id:
            execution.state["job_id"] = job_id
            return
        now = time.time()
        if execution.end_at <= now:
            raise PlatformError(f"the booked window of {name} has already ended")
        if not self._reservation_exists(name):
            self.reserve(execution)
        execution.state.setdefault("reservation", name)
        logs = execution.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        script = execution.workdir / SCRIPT
        _write(script, self._script(execution))
        minutes = max(math.ceil((execution.end_at - now) / 60), 1)
        args = [
            "sbatch",
            "--parsable",
            "--job-name",
            name,
            "--reservation",
            name,
            "--partition",
            self._partition_of(execution),
            "--time",
            str(minutes),
            "--nodes",
            "1",
            "--ntasks",
            "1",
            "--cpus-per-task",
            str(_granted(execution, "cores")),
            "--output",
            str(logs / OUTPUT_LOG),
            "--chdir",
            str(execution.workdir),
            f"--export={self.options.export}",
        ]
        memory = execution.granted.get("memory")
        if memory:
            args += ["--mem", f"{int(memory)}G"]
        if self.options.reservation_user != _current_user():
            args.append(f"--uid={self.options.reservation_user}")
        out = self._run(*args, str(script)) or ""
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise PlatformError(f"sbatch answered {out.strip()[:200]!r}, not a job id")
        execution.state["job_id"] = job_id
        self._forget("jobs")
        execution.notes.append(
            f"Slurm job {job_id} submitted in reservation {name} for {minutes} minutes"
        )

    def _script(self, execution: Execution) -> str:
        kind = execution.executable.kind if execution.executable else ""
        template = self._launchers().get(kind)
        if template is None:
            raise PlatformError(f"platform {self.name} has no launcher for {kind}")
        command = re.sub(r" {2,}", " ", template.format_map(self._values(execution, kind)))
        lines = [
            "#!/bin/bash",
            f"# ebroker session {execution.session} on platform {self.name}",
            f"# booked window: {_slurm_time(execution.start_at)} .. "
            f"{_slurm_time(execution.end_at)}",
            "set -u",
        ]
        if _is_podman(template):
            lines.append(
                "_ebroker_cleanup() { podman rm --force --ignore --time 5 "
                f"{shlex.quote(execution.name)} >/dev/null 2>&1 || true; }}"
            )
        else:
            lines.append("_ebroker_cleanup() { :; }")
        lines += [
            "_ebroker_term() {",
            "  trap - TERM INT",
            '  kill -TERM "$_ebroker_child" 2>/dev/null',
            "  _ebroker_cleanup",
            '  wait "$_ebroker_child" 2>/dev/null',
            "  exit 143",
            "}",
            f"{command.strip()} &",
            "_ebroker_child=$!",
            "trap _ebroker_term TERM INT",
            'wait "$_ebroker_child"',
            "exit $?",
            "",
        ]
        return "\n".join(lines)

    def _values(self, execution: Execution, kind: str) -> dict[str, str]:
        executable = execution.executable
        docker = kind == DOCKER
        env = " ".join(
            f"--env {shlex.quote(f'{k}={v}')}"
            for k, v in (getattr(executable, "environment", None) or {}).items()
        )
        volumes = []
        for volume in execution.volumes:
            source = execution.mount_source(str(volume.resource))
            if source is None:
                raise PlatformError(
                    f"volume {volume.path}: resource {volume.resource!r} is not "
                    "a storage or data resource of the session"
                )
            mode = "rw" if volume.mode == "READWRITE" else "ro"
            flag = "-v" if docker else "--bind"
            spec = f"{source}:{volume.path}:{mode}"
            volumes.append(f"{flag} {shlex.quote(spec)}")
        entrypoint = getattr(executable, "entrypoint", None)
        if entrypoint and docker:
            value = entrypoint if isinstance(entrypoint, str) else json.dumps(entrypoint)
            entrypoint_arg = f"--entrypoint {shlex.quote(value)}"
        else:
            entrypoint_arg = ""
        locations = _locations(executable)
        image = execution.state.get("image") or (locations[0] if locations else "")
        command = getattr(executable, "command", None) or []
        return {
            "name": shlex.quote(execution.name),
            "cores": str(_granted(execution, "cores")),
            "memory": str(_granted(execution, "memory")),
            "env": env,
            "volumes": " ".join(volumes),
            "entrypoint": entrypoint_arg,
            "image": shlex.quote(image) if image else "",
            "command": " ".join(shlex.quote(str(part)) for part in command),
            "workdir": shlex.quote(str(execution.workdir)),
        }

    @platform_step
    def poll(self, execution: Execution) -> WorkStatus:
        job_id = execution.state.get("job_id")
        if not job_id:
            job_id = self._job_by_name(execution.name)
            if not job_id:
                return WorkStatus(WorkState.MISSING, message=f"no Slurm job {execution.name}")
            execution.state["job_id"] = job_id
        job_id = str(job_id)
        live = self._jobs().get(job_id)
        if live is not None and (live[0] in PENDING_STATES or live[0] in RUNNING_STATES):
            return _live_status(job_id, live[0], live[1])
        out = self._run("scontrol", "show", "job", "-o", job_id, ok=("Invalid job id",))
        records = parse_records(out or "", key="JobId")
        if not records:
            return WorkStatus(
                WorkState.MISSING, message=f"Slurm job {job_id} is no longer known to Slurm"
            )
        record = records[0]
        state = record.get("JobState", "UNKNOWN").split()[0]
        reason = record.get("Reason", "None")
        if state in PENDING_STATES or state in RUNNING_STATES:
            return _live_status(job_id, state, reason)
        code, signal = _exit_code(record.get("ExitCode"))
        exit_code = code if not signal else 128 + signal
        if state == "COMPLETED":
            return WorkStatus(
                WorkState.SUCCEEDED, exit_code=0, message=f"Slurm job {job_id} completed"
            )
        if state == "CANCELLED" and execution.state.get("stopped"):
            text = f"Slurm job {job_id} was stopped: {execution.state['stopped']}"
        else:
            text = f"Slurm job {job_id} {FAILED_STATES.get(state, f'ended in state {state}')}"
            if state == "FAILED" and code and not signal:
                text += f" with exit code {code}"
            elif signal:
                text += f" (signal {signal})"
            if reason not in ("None", "NonZeroExitCode", ""):
                text += f" ({reason})"
        return WorkStatus(WorkState.FAILED, exit_code=exit_code, message=text)

    def _cancel(self, execution: Execution) -> None:
        job_id = execution.state.get("job_id")
        if job_id:
            self._run("scancel", str(job_id), ok=GONE)
        else:
            self._run("scancel", "--name", execution.name, ok=GONE)
        self._forget("jobs")

    @platform_step
    def stop(self, execution: Execution, reason: str) -> None:
        execution.state.setdefault("stopped", reason)
        self._cancel(execution)

    @platform_step
    def release(self, execution: Execution) -> None:
        self._cancel(execution)
        if execution.state.get("job_id"):
            # a job submitted again after a crash would have the same name
            self._run("scancel", "--name", execution.name, ok=GONE)
        self._run("scontrol", "delete", "reservation", execution.name, ok=NO_RESERVATION)
        self._forget("reservations")
        execution.state.pop("reservation", None)

    @platform_step
    def list_work(self) -> set[str] | None:
        out = self._run("squeue", "-h", "-a", "-o", "%j") or ""
        names = {line.strip() for line in out.splitlines() if line.startswith(WORK_PREFIX)}
        reservations = parse_records(
            self._run("scontrol", "show", "reservation", "-o") or "", key="ReservationName"
        )
        names |= {
            r["ReservationName"]
            for r in reservations
            if r.get("ReservationName", "").startswith(WORK_PREFIX)
        }
        return names

    @platform_step
    def remove_work(self, name: str) -> None:
        if not name.startswith(WORK_PREFIX) or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise PlatformError(f"{name!r} is not the name of broker work")
        self._run("scancel", "--name", name, ok=GONE)
        self._run("scontrol", "delete", "reservation", name, ok=NO_RESERVATION)
        self._forget("jobs", "reservations")


# --- helpers ------------------------------------------------------------------------------------

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


def _split_list(value: str | None) -> list[str]:
    if not value or value in ("(null)", "None"):
        return []
    return [v.strip() for v in value.split(",") if v.strip()]


def _int(value: str | None) -> int:
    try:
        return int(str(value).split()[0])
    except (TypeError, ValueError, IndexError):
        return 0


def _epoch(value: str | None) -> int | None:
    if not value:
        return None
    try:
        return int(datetime.strptime(value, "%Y-%m-%dT%H:%M:%S").timestamp())
    except ValueError:
        return None


def _slurm_time(epoch: float) -> str:
    """Slurm reads times in the controller's local time zone."""
    return datetime.fromtimestamp(int(epoch)).strftime("%Y-%m-%dT%H:%M:%S")


def _exit_code(value: str | None) -> tuple[int, int]:
    code, _, signal = (value or "0:0").partition(":")
    return _int(code), _int(signal)


def _live_status(job_id: str, state: str, reason: str) -> WorkStatus:
    if state in PENDING_STATES:
        why = f": {reason}" if reason and reason != "None" else ""
        return WorkStatus(WorkState.PENDING, message=f"Slurm job {job_id} is pending{why}")
    return WorkStatus(WorkState.RUNNING, message=f"Slurm job {job_id} is {state.lower()}")


def _granted(execution: Execution, resource_class: str) -> int:
    return max(int(execution.granted.get(resource_class) or 1), 1)


def _locations(executable: Component | None) -> list[str]:
    image = getattr(executable, "image", None)
    return [loc for loc in (image.locations if image else []) if loc.strip()]


def _program_of(template: str) -> str | None:
    """The program a launcher template runs (its first word), or None when that is a
    placeholder (e.g. a template that is just ``{command}``)."""
    first = template.strip().split(maxsplit=1)[0] if template.strip() else ""
    if not first or "{" in first:
        return None
    return first


def _is_podman(template: str) -> bool:
    program = _program_of(template)
    return program is not None and os.path.basename(program) == "podman"


def _short(kind: str | None) -> str:
    if kind and kind.startswith(KIND_PREFIX):
        return kind[len(KIND_PREFIX) :].split("/")[-1].removesuffix(".yaml")
    return str(kind)


def _current_user() -> str:
    with contextlib.suppress(Exception):
        return getpass.getuser()
    return str(os.getuid())


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, path)
