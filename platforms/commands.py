"""The programs platforms drive (podman, Slurm's commands), run one way: stdin closed, a
timeout, output read up to a bound, and a failure that says which command failed and why, as a
``PlatformError`` for the session. Also finding a container image with podman, which the
``local`` platform and the ``slurm`` platform's podman launcher both do."""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from broker_core.kinds.base import Component

from .contract import PreparationOptions
from .errors import PlatformError

# a command writing more than this is stopped and fails: its answer would be read half
OUTPUT_BYTES = 64 * 2**20
ERROR_CHARS = 600  # of a failure's message in the session's messages
CHUNK = 65536

PullPolicy = Literal["missing", "always", "never"]


def describe(argv: Sequence[str]) -> str:
    """How messages name a command: the program and up to two words after it that are not
    options or values (``scontrol create reservation``, ``podman run``, ``sbatch``)."""
    words = [os.path.basename(argv[0])]
    for arg in argv[1:3]:
        if arg.startswith("-") or "=" in arg:
            break
        words.append(arg)
    return " ".join(words)


@dataclass(frozen=True)
class Outcome:
    """What one command did: its exit code and output (decoded, bad bytes replaced)."""

    what: str  # as ``describe`` names it
    code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    @property
    def error(self) -> str:
        """The command's own message on one line: stderr, else stdout; podman's warnings
        (``time=...`` lines) dropped before its error, and its ``Error:`` prefix."""
        text = next((t.strip() for t in (self.stderr, self.stdout) if t.strip()), "")
        lines = [line.strip().removeprefix("Error: ") for line in text.splitlines()]
        lines = [line for line in lines if line and not line.startswith("time=")] or lines
        return " ".join(" ".join(lines).split())

    def failure(self) -> PlatformError:
        error = self.error or "no message"
        if len(error) > ERROR_CHARS:
            error = "…" + error[-(ERROR_CHARS - 1) :]  # the reason comes last
        return PlatformError(f"{self.what} failed (exit {self.code}): {error}")

    def checked(self) -> Outcome:
        """This outcome, or its failure raised when the command did not exit 0."""
        if not self.ok:
            raise self.failure()
        return self


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    name: str | None = None,
    limit: int = OUTPUT_BYTES,
    env: Mapping[str, str] | None = None,
) -> Outcome:
    """Run ``argv`` (its first word the program's path) and wait for it, at most ``timeout``
    seconds; ``name`` is the program as messages name it (default: the path's last part).
    ``env`` is added to this process's environment for the command: a secret passed that way
    (``podman run --env NAME``) is on no command line.
    A command that cannot start, does not end in time or writes more than ``limit`` bytes on
    either stream is a PlatformError; one that exits non-zero is an ``Outcome`` to judge."""
    program = name or os.path.basename(argv[0])
    what = describe([program, *argv[1:]])
    try:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **env} if env else None,
        )
    except FileNotFoundError:
        raise PlatformError(f"{program} not found: {argv[0]!r}") from None
    except OSError as exc:
        raise PlatformError(f"{what} could not run: {exc}") from None
    with process:
        try:
            stdout, stderr = _read(process, time.monotonic() + timeout, limit)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise PlatformError(f"{what} did not answer within {timeout:g} s") from None
        except _TooLong:
            process.kill()
            process.wait()
            raise PlatformError(f"{what} wrote more than {limit} bytes") from None
    return Outcome(
        what,
        process.returncode,
        stdout.decode(errors="replace"),
        stderr.decode(errors="replace"),
    )


class _TooLong(Exception):
    pass


def _read(process: subprocess.Popen[bytes], deadline: float, limit: int) -> tuple[bytes, bytes]:
    """Both streams to their end and the exit, by ``deadline``, each at most ``limit`` bytes."""
    assert process.stdout is not None and process.stderr is not None
    output = {process.stdout.fileno(): bytearray(), process.stderr.fileno(): bytearray()}
    with selectors.DefaultSelector() as selector:
        for fd in output:
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(process.args, 0)
            for key, _ in selector.select(left):
                data = os.read(key.fd, CHUNK)
                if not data:
                    selector.unregister(key.fd)
                    continue
                output[key.fd] += data
                if len(output[key.fd]) > limit:
                    raise _TooLong
    process.wait(max(deadline - time.monotonic(), 0))
    return bytes(output[process.stdout.fileno()]), bytes(output[process.stderr.fileno()])


@dataclass(frozen=True)
class Program:
    """One program with the timeout its commands get unless told otherwise."""

    path: str
    timeout: float
    name: str | None = None  # as messages name it; default: the path's last part

    def __call__(
        self, *args: str, timeout: float | None = None, env: Mapping[str, str] | None = None
    ) -> Outcome:
        return run([self.path, *args], timeout=timeout or self.timeout, name=self.name, env=env)


# --- container images ------------------------------------------------------------------------


class ImageOptions(PreparationOptions):
    """The options of the platforms that pull container images (``find_image``)."""

    pull_timeout: float = Field(default=1800, gt=0, description="seconds per image pull")


@dataclass(frozen=True)
class Image:
    """An image podman has: its local name, and whether it was pulled just now."""

    ref: str
    pulled: bool

    @property
    def note(self) -> str:
        return f"image {self.ref} {'pulled' if self.pulled else 'ready'}"


def image_locations(executable: Component | None) -> list[str]:
    """The image locations of a container executable, in order, blank ones left out."""
    image = getattr(executable, "image", None)
    return [loc for loc in (image.locations if image else []) if loc.strip()]


def local_ref(location: str) -> str:
    """An image location as podman names it locally (without a transport prefix)."""
    for prefix in ("docker://", "containers-storage:"):
        if location.startswith(prefix):
            return location[len(prefix) :]
    return location


def exists(podman: Program, what: Literal["image", "container"], ref: str) -> bool:
    """``podman image exists`` / ``podman container exists``: exit 1 is no, other exits fail."""
    outcome = podman(what, "exists", ref)
    if outcome.code in (0, 1):
        return outcome.ok
    raise outcome.failure()


def find_image(
    podman: Program, locations: Sequence[str], *, pull: PullPolicy, pull_timeout: float
) -> Image:
    """The first of ``locations`` podman has (not looked for when ``pull`` is always), else the
    first it can pull (none pulled when ``pull`` is never)."""
    if pull != "always":
        for location in locations:
            ref = local_ref(location)
            if exists(podman, "image", ref):
                return Image(ref, pulled=False)
        if pull == "never":
            raise PlatformError(
                f"image {', '.join(locations)} not present on this host "
                "and the pull policy is 'never'"
            )
    errors: list[str] = []
    for location in locations:
        try:
            podman("pull", "-q", location, timeout=pull_timeout).checked()
        except PlatformError as exc:
            errors.append(f"cannot pull the image {location}: {exc}")
            continue
        return Image(local_ref(location), pulled=True)
    raise PlatformError("no image location could be found or pulled: " + "; ".join(errors))
