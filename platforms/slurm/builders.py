"""What the ``slurm`` platform sends to Slurm, as pure functions of the session
(``Execution``), the platform's options and what the platform read before (the partition, the
current time, the launcher template, the submitting user): the batch script and the ``sbatch``,
``scontrol``, ``squeue`` and ``scancel`` argument lists, so that a reviewer sees them without a
cluster (tests/test_platform_builders.py, snapshots in tests/snapshots/slurm/).

Each argument list starts with the program's name; ``bin_dir`` is the runner's business.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

from ..commands import image_locations
from ..contract import Execution, PlatformError
from .cluster import slurm_time
from .options import DOCKER, SlurmOptions, is_podman

SCRIPT = "job.sh"
OUTPUT_LOG = "output.log"

SHOW_PARTITIONS = ("scontrol", "show", "partition", "-o")
SHOW_NODES = ("scontrol", "show", "node", "-o")
SHOW_RESERVATIONS = ("scontrol", "show", "reservation", "-o")
# every job squeue knows, in any state: id, state, reason, name
LIST_JOBS = ("squeue", "-h", "-a", "-t", "all", "-o", "%i|%T|%r|%j")
LIST_JOB_NAMES = ("squeue", "-h", "-a", "-o", "%j")


def granted(execution: Execution, resource_class: str) -> int:
    """A granted amount, at least 1 (a job asks for at least one core)."""
    return max(int(execution.granted.get(resource_class) or 1), 1)


# resource class -> the GRES name Slurm counts it as
GRES_NAMES = {"gpus": "gpu", "fpgas": "fpga"}
_ACCELERATOR_TYPES = {"gpus": "gpu", "fpgas": "fpga"}


def gres(execution: Execution) -> str | None:
    """``--gres`` of the session's GPUs and FPGAs: ``gpu:a100:2,fpga:1``. The GRES type is the
    offered model (the pool's GPU_A100 trait, from the node's ``gpu:a100`` GRES), lower-cased;
    none when the offer names no single model."""
    items = []
    for resource_class, name in GRES_NAMES.items():
        count = int(execution.granted.get(resource_class) or 0)
        if count <= 0:
            continue
        models = _offered_models(execution, _ACCELERATOR_TYPES[resource_class])
        kind = models[0].lower() if len(models) == 1 else None
        items.append(f"{name}:{kind}:{count}" if kind else f"{name}:{count}")
    return ",".join(items) or None


def _offered_models(execution: Execution, accelerator_type: str) -> list[str]:
    for item in getattr(execution.compute, "accelerators", None) or []:
        if item.type == accelerator_type:
            return [m for m in item.model or [] if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", m)]
    return []


def job_minutes(end_at: int, now: float) -> int:
    """The job's time limit: the minutes left of the booked window, at least one."""
    return max(math.ceil((end_at - now) / 60), 1)


# --- scontrol ----------------------------------------------------------------------------------


def create_reservation(
    execution: Execution, options: SlurmOptions, *, partition: str, now: int
) -> list[str]:
    """``scontrol create reservation``: the session's cores on one node of ``partition``, from
    its preparation (or now, when that has passed) to its end, for ``reservation_user``."""
    args = [
        "scontrol",
        "create",
        "reservation",
        f"ReservationName={execution.name}",
        f"StartTime={slurm_time(max(execution.prepare_at, now))}",
        f"EndTime={slurm_time(execution.end_at)}",
        f"CoreCnt={granted(execution, 'cores')}",
        "NodeCnt=1",
        f"Users={options.reservation_user}",
        f"PartitionName={partition}",
    ]
    if options.reservation_flags:
        args.append(f"Flags={','.join(options.reservation_flags)}")
    return args


def show_reservation(name: str) -> list[str]:
    return [*SHOW_RESERVATIONS, name]


def extend_reservation(name: str, end_at: int) -> list[str]:
    return ["scontrol", "update", f"ReservationName={name}", f"EndTime={slurm_time(end_at)}"]


def extend_job(execution: Execution, job_id: str, end_at: int) -> list[str]:
    """``scontrol update JobId``: the minutes from the booked end to ``end_at`` added to the
    job's time limit."""
    minutes = max(-(-(end_at - execution.end_at) // 60), 1)
    return ["scontrol", "update", f"JobId={job_id}", f"TimeLimit=+{minutes}"]


def show_job(job_id: str) -> list[str]:
    return ["scontrol", "show", "job", "-o", job_id]


def delete_reservation(name: str) -> list[str]:
    return ["scontrol", "delete", "reservation", name]


# --- squeue and scancel ------------------------------------------------------------------------


def find_job(name: str) -> list[str]:
    """``squeue``: the ids of the jobs named ``name``, in any state."""
    return ["squeue", "-h", "-a", "-t", "all", "--name", name, "-o", "%i"]


def cancel_job(job_id: str) -> list[str]:
    return ["scancel", job_id]


def cancel_named(name: str) -> list[str]:
    return ["scancel", "--name", name]


# --- sbatch and the batch script ---------------------------------------------------------------


def sbatch(
    execution: Execution, options: SlurmOptions, *, partition: str, minutes: int, user: str
) -> list[str]:
    """``sbatch``: the session's script as one task on one node in its reservation, for
    ``minutes``, with its granted cores, memory and GPUs/FPGAs (``--gres``; Slurm 22.05
    reservations cannot hold GRES, so the broker's booking table is what keeps the devices
    for its sessions), its output in ``logs/output.log``;
    ``user`` is who submits (the job runs as ``reservation_user``)."""
    name = execution.name
    args = [
        "sbatch",
        "--parsable",
        "--job-name",
        name,
        "--reservation",
        name,
        "--partition",
        partition,
        "--time",
        str(minutes),
        "--nodes",
        "1",
        "--ntasks",
        "1",
        "--cpus-per-task",
        str(granted(execution, "cores")),
        "--output",
        str(execution.workdir / "logs" / OUTPUT_LOG),
        "--chdir",
        str(execution.workdir),
        f"--export={options.export}",
    ]
    memory = execution.granted.get("memory")
    if memory:
        args += ["--mem", f"{int(memory)}G"]
    devices = gres(execution)
    if devices:
        args.append(f"--gres={devices}")
    if options.reservation_user != user:
        args.append(f"--uid={options.reservation_user}")
    args.append(str(script_path(execution)))
    return args


def script_path(execution: Execution) -> Path:
    return execution.workdir / SCRIPT


def job_script(execution: Execution, template: str, *, platform: str) -> str:
    """The batch script: the launcher ``template`` filled in for the session, run in the
    background so that a TERM from Slurm (cancel, time limit) reaches it and, for podman,
    removes its container."""
    command = re.sub(r" {2,}", " ", template.format_map(launcher_values(execution)))
    lines = [
        "#!/bin/bash",
        f"# ebroker session {execution.session} on platform {platform}",
        f"# booked window: {slurm_time(execution.start_at)} .. {slurm_time(execution.end_at)}",
        "set -u",
    ]
    if is_podman(template):
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


def launcher_values(execution: Execution) -> dict[str, str]:
    """The launcher templates' placeholders for the session, each quoted for the shell: the
    image is the one prepared (``state["image"]``), else the first location."""
    executable = execution.executable
    docker = (executable.kind if executable else "") == DOCKER
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
        volumes.append(f"{flag} {shlex.quote(f'{source}:{volume.path}:{mode}')}")
    entrypoint = getattr(executable, "entrypoint", None)
    if entrypoint and docker:
        value = entrypoint if isinstance(entrypoint, str) else json.dumps(entrypoint)
        entrypoint_arg = f"--entrypoint {shlex.quote(value)}"
    else:
        entrypoint_arg = ""
    locations = image_locations(executable)
    image = execution.state.get("image") or (locations[0] if locations else "")
    command = getattr(executable, "command", None) or []
    return {
        "name": shlex.quote(execution.name),
        "cores": str(granted(execution, "cores")),
        "memory": str(granted(execution, "memory")),
        "gpus": str(int(execution.granted.get("gpus") or 0)),  # e.g. --device nvidia.com/gpu=all
        "env": env,
        "volumes": " ".join(volumes),
        "entrypoint": entrypoint_arg,
        "image": shlex.quote(image) if image else "",
        "command": " ".join(shlex.quote(str(part)) for part in command),
        "workdir": shlex.quote(str(execution.workdir)),
    }
