"""How the ``slurm`` platform runs Slurm's commands (through :mod:`platforms.commands`): the
programs from ``bin_dir``, and the failures an idempotent step expects ("already gone") as
None; and the short-lived cache of what the cluster said."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..commands import Program, run

SLURM_PROGRAMS = frozenset({"scontrol", "sbatch", "squeue", "scancel", "sinfo"})
# messages of Slurm commands that mean "already done" for an idempotent step
GONE = ("Invalid job id", "already completing or completed", "Job has already finished")
NO_RESERVATION = ("Requested reservation is invalid", "not found")


class SlurmCommands:
    """Slurm's commands (and podman, for images), each with the configured timeout."""

    def __init__(self, bin_dir: str | None, timeout: float):
        self.bin_dir = bin_dir
        self.timeout = timeout

    def program(self, name: str) -> str:
        if self.bin_dir and name in SLURM_PROGRAMS:
            return str(Path(self.bin_dir) / name)
        return shutil.which(name) or name

    def __call__(
        self, argv: Sequence[str], *, ok: tuple[str, ...] = (), timeout: float | None = None
    ) -> str | None:
        """Run one command (``argv[0]`` a program's name); its stdout, or None when it failed
        with one of the ``ok`` messages. Any other failure is a PlatformError with the
        command's own message."""
        outcome = run(
            [self.program(argv[0]), *argv[1:]], timeout=timeout or self.timeout, name=argv[0]
        )
        if outcome.ok:
            return outcome.stdout
        error = outcome.error.lower()
        if any(text.lower() in error for text in ok):
            return None
        raise outcome.failure()

    def podman(self) -> Program:
        return Program(self.program("podman"), self.timeout, name="podman")


class TimedCache:
    """Values kept for a while: the cluster's layout, its jobs and reservations."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float, Any]] = {}

    def get(self, key: str, ttl: float, load: Callable[[], Any]) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._values.get(key)
            if hit is not None and now - hit[0] < ttl:
                return hit[1]
        value = load()
        with self._lock:
            self._values[key] = (time.monotonic(), value)
        return value

    def forget(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._values.pop(key, None)
