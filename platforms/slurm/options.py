"""The ``slurm`` platform's options, and the launchers they configure: which command runs a
session's executable inside the batch script, by kind."""

from __future__ import annotations

import os
import re
import string
from collections.abc import Callable

from pydantic import Field, field_validator

from broker_core.config import ConfigError
from broker_core.kinds.base import kind_uri
from broker_core.kinds.builtin import KINDS

from ..commands import ImageOptions
from ..contract import IDENTIFIED_DATA

DOCKER = kind_uri("executable", "docker-container")
SINGULARITY = kind_uri("executable", "singularity-container")
RESOURCE_KINDS = frozenset(
    {
        kind_uri("compute", "simple-compute-resource"),
        kind_uri("storage", "simple-storage-resource"),
        kind_uri("data", "simple-data-resource"),
        kind_uri("volume", "simple-volume-mount"),
        *IDENTIFIED_DATA,
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
    {"name", "cores", "memory", "gpus", "env", "volumes", "entrypoint", "image", "command"}
    | {"workdir"}
)


class SlurmConfigError(ConfigError, ValueError):
    """The platform's configuration does not match the cluster."""


class SlurmOptions(ImageOptions):
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


def launchers(options: SlurmOptions, installed: Callable[[str], bool]) -> dict[str, str]:
    """Kind URI → launcher template: the defaults with the configured ones over them. The
    default singularity launcher runs ``singularity`` where only that is ``installed``."""
    merged: dict[str, str | None] = {EXECUTABLE_NAMES[k]: v for k, v in DEFAULT_LAUNCHERS.items()}
    for kind, template in options.launchers.items():
        merged[EXECUTABLE_NAMES.get(kind, kind)] = template
    found = {k: v for k, v in merged.items() if v is not None}
    configured = {EXECUTABLE_NAMES.get(k, k) for k in options.launchers}
    if (
        SINGULARITY in found
        and SINGULARITY not in configured
        and not installed("apptainer")
        and installed("singularity")
    ):
        found[SINGULARITY] = found[SINGULARITY].replace("apptainer", "singularity", 1)
    return found


def program_of(template: str) -> str | None:
    """The program a launcher template runs (its first word), or None when that is a
    placeholder (e.g. a template that is just ``{command}``)."""
    first = template.strip().split(maxsplit=1)[0] if template.strip() else ""
    if not first or "{" in first:
        return None
    return first


def is_podman(template: str) -> bool:
    program = program_of(template)
    return program is not None and os.path.basename(program) == "podman"
