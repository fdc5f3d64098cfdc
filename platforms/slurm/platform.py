"""The ``slurm`` platform's steps: each reads the cluster through the runner, decides with the
pure functions of :mod:`.cluster` and sends what :mod:`.builders` makes."""

from __future__ import annotations

import contextlib
import getpass
import os
import re
import shutil
import time
from functools import cached_property
from pathlib import Path
from typing import Any

from broker_core.config import PoolConfig
from broker_core.kinds.base import KIND_PREFIX, Message, message
from broker_core.kinds.request import ExecutionRequest

from ..commands import find_image, image_locations
from ..contract import (
    WORK_PREFIX,
    Execution,
    ExternalClaim,
    Platform,
    PlatformError,
    WorkState,
    WorkStatus,
    platform_step,
    published_ports,
)
from . import builders
from .cluster import (
    Partition,
    default_partition,
    is_live,
    job_status,
    live_status,
    parse_jobs,
    parse_records,
    partition_pools,
    pool_map,
    read_partitions,
    reservation_claims,
    slurm_time,
)
from .options import RESOURCE_KINDS, SINGULARITY, SlurmOptions, is_podman, launchers, program_of
from .runner import GONE, NO_RESERVATION, SlurmCommands, TimedCache

LAYOUT_SECONDS = 60.0
PROGRAM_SECONDS = 60.0


class SlurmPlatform(Platform):
    options_model = SlurmOptions
    options: SlurmOptions

    def __init__(self, config: Any):
        super().__init__(config)
        self._cache = TimedCache()
        self._pool_partitions: dict[str, str] = {}

    @cached_property
    def _run(self) -> SlurmCommands:
        return SlurmCommands(self.options.bin_dir, self.options.command_timeout)

    # --- reading the cluster ----------------------------------------------------------------

    def _partitions(self) -> dict[str, Partition]:
        return self._cache.get("layout", LAYOUT_SECONDS, self._read_partitions)

    def _read_partitions(self) -> dict[str, Partition]:
        return read_partitions(
            self._run(builders.SHOW_PARTITIONS) or "", self._run(builders.SHOW_NODES) or ""
        )

    def _pool_map(self) -> dict[str, str]:
        """Pool name → partition name, for the pools this platform offers."""
        mapping = pool_map(
            self._partitions(),
            partition=self.options.partition,
            configured=list(self.config.pools),
            platform=self.name,
        )
        self._pool_partitions = mapping
        return mapping

    def _default_partition(self) -> str:
        if self.options.partition is not None:
            return self.options.partition
        return default_partition(self._partitions())

    def _reservations(self) -> list[dict[str, str]]:
        def load() -> list[dict[str, str]]:
            out = self._run(builders.SHOW_RESERVATIONS) or ""
            return parse_records(out, key="ReservationName")

        return self._cache.get("reservations", self.options.poll_cache_seconds, load)

    def _jobs(self) -> dict[str, tuple[str, str, str]]:
        """Job id → (state, reason, name) of every job squeue knows, cached briefly."""
        return self._cache.get(
            "jobs",
            self.options.poll_cache_seconds,
            lambda: parse_jobs(self._run(builders.LIST_JOBS) or ""),
        )

    # --- booking side -----------------------------------------------------------------------

    def pools(self) -> list[PoolConfig]:
        mapping = self._pool_map()
        if self.config.pools:
            return list(self.config.pools)
        disk = max(shutil.disk_usage(self.options.storage_path).free // 2**30, 1)
        return partition_pools(mapping, self._partitions(), share=self.options.share, disk=disk)

    def _launchers(self) -> dict[str, str]:
        """Kind URI → launcher template: the defaults with the configured ones over them."""
        return launchers(self.options, self._which)

    def _which(self, program: str) -> bool:
        return self._cache.get(
            f"which:{program}", PROGRAM_SECONDS, lambda: shutil.which(program) is not None
        )

    def _launcher_problem(self, kind: str, template: str) -> str | None:
        program = program_of(template)
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
        return reservation_claims(reservations, mapping, partitions, self._pool_sizes(), start, end)

    def _pool_sizes(self) -> list[PoolConfig]:
        return self._cache.get("pools", LAYOUT_SECONDS, self.pools)

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
        out = self._run(builders.show_reservation(name), ok=NO_RESERVATION)
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
        args = builders.create_reservation(execution, self.options, partition=partition, now=now)
        self._run(args, ok=("Duplicate reservation name",))
        self._cache.forget("reservations")
        execution.state["reservation"] = name
        execution.state["partition"] = partition
        execution.notes.append(
            f"Slurm reservation {name}: {builders.granted(execution, 'cores')} cores in "
            f"partition {partition} from {slurm_time(max(execution.prepare_at, now))} "
            f"to {slurm_time(execution.end_at)}"
        )

    @platform_step
    def extend(self, execution: Execution, end_at: int) -> None:
        """Move the reservation's end and the job's time limit to the new end."""
        name = execution.state.get("reservation")
        if name and self._reservation_exists(name):
            self._run(builders.extend_reservation(name, end_at))
            self._cache.forget("reservations")
        job_id = execution.state.get("job_id")
        if job_id:
            self._run(
                builders.extend_job(execution, str(job_id), end_at),
                ok=("Invalid job id", "Job has already finished"),
            )
        execution.notes.append(f"Slurm: {name or 'the session'} extended to {slurm_time(end_at)}")

    def staging_user(self, execution: Execution) -> str | None:
        """Data is staged as the job's user (``reservation_user``)."""
        return self.options.reservation_user

    @platform_step
    def prepare_executable(self, execution: Execution) -> None:
        """For a podman launcher: the image, found or pulled, in ``state["image"]``."""
        kind = execution.executable.kind if execution.executable else None
        template = self._launchers().get(kind or "")
        if template is None:
            raise PlatformError(f"platform {self.name} has no launcher for {kind}")
        locations = image_locations(execution.executable)
        if not is_podman(template) or not locations:
            if locations:
                execution.notes.append(
                    f"image {locations[0]} is not checked: the {_short(kind)} launcher "
                    "does not use podman"
                )
            return
        found = find_image(
            self._run.podman(), locations, pull="missing", pull_timeout=self.options.pull_timeout
        )
        execution.state["image"] = found.ref
        execution.notes.append(found.note)

    def _job_by_name(self, name: str) -> str | None:
        ids = (self._run(builders.find_job(name)) or "").split()
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
        (execution.workdir / "logs").mkdir(parents=True, exist_ok=True)
        _write(builders.script_path(execution), self._script(execution))
        minutes = builders.job_minutes(execution.end_at, now)
        args = builders.sbatch(
            execution,
            self.options,
            partition=self._partition_of(execution),
            minutes=minutes,
            user=_current_user(),
        )
        out = self._run(args) or ""
        job_id = out.strip().split(";")[0]
        if not job_id.isdigit():
            raise PlatformError(f"sbatch answered {out.strip()[:200]!r}, not a job id")
        execution.state["job_id"] = job_id
        self._cache.forget("jobs")
        execution.notes.append(
            f"Slurm job {job_id} submitted in reservation {name} for {minutes} minutes"
        )

    def _script(self, execution: Execution) -> str:
        kind = execution.executable.kind if execution.executable else ""
        template = self._launchers().get(kind)
        if template is None:
            raise PlatformError(f"platform {self.name} has no launcher for {kind}")
        return builders.job_script(execution, template, platform=self.name)

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
        if live is not None and is_live(live[0]):
            return live_status(job_id, live[0], live[1])
        out = self._run(builders.show_job(job_id), ok=("Invalid job id",))
        records = parse_records(out or "", key="JobId")
        if not records:
            return WorkStatus(
                WorkState.MISSING, message=f"Slurm job {job_id} is no longer known to Slurm"
            )
        return job_status(job_id, records[0], execution.state.get("stopped"))

    def _cancel(self, execution: Execution) -> None:
        job_id = execution.state.get("job_id")
        if job_id:
            self._run(builders.cancel_job(str(job_id)), ok=GONE)
        else:
            self._run(builders.cancel_named(execution.name), ok=GONE)
        self._cache.forget("jobs")

    @platform_step
    def stop(self, execution: Execution, reason: str) -> None:
        execution.state.setdefault("stopped", reason)
        self._cancel(execution)

    @platform_step
    def release(self, execution: Execution) -> None:
        self._cancel(execution)
        if execution.state.get("job_id"):
            # a job submitted again after a crash would have the same name
            self._run(builders.cancel_named(execution.name), ok=GONE)
        self._run(builders.delete_reservation(execution.name), ok=NO_RESERVATION)
        self._cache.forget("reservations")
        execution.state.pop("reservation", None)

    @platform_step
    def list_work(self) -> set[str] | None:
        out = self._run(builders.LIST_JOB_NAMES) or ""
        names = {line.strip() for line in out.splitlines() if line.startswith(WORK_PREFIX)}
        reservations = parse_records(
            self._run(builders.SHOW_RESERVATIONS) or "", key="ReservationName"
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
        self._run(builders.cancel_named(name), ok=GONE)
        self._run(builders.delete_reservation(name), ok=NO_RESERVATION)
        self._cache.forget("jobs", "reservations")


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
