"""The podman argument lists of the ``local`` platform, as pure functions of the session
(``Execution``), the platform's options and what the platform found out before (the image id,
the ports it chose, the mounts' resolved sources, the log directory), so that a reviewer sees
what is sent without podman (tests/test_platform_builders.py, snapshots in tests/snapshots/).

The lists start after the program: ``podman`` itself is ``LocalOptions.podman``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypedDict

from broker_core.kinds.builtin import DockerContainer, SimpleVolumeMount

from . import notebooks
from .contract import Execution
from .errors import PlatformError

if TYPE_CHECKING:
    from .local import LocalOptions

SESSION_LABEL = "ebroker.session"
PLATFORM_LABEL = "ebroker.platform"
CONTAINER_LOG = "container.log"


class PortBinding(TypedDict):
    """A published port as ``Execution.state["ports"]`` keeps it."""

    internal: int
    external: int
    protocol: str
    path: str | None


@dataclass(frozen=True)
class Mount:
    """A volume mount: the session's storage or data directory, where it goes, and how."""

    resource: str  # the volume's resource (a storage or data uuid or name)
    source: Path
    target: str
    mode: Literal["ro", "rw"]

    @property
    def spec(self) -> str:
        return f"{self.source}:{self.target}:{self.mode}"


def mount(execution: Execution, volume: SimpleVolumeMount) -> Mount:
    """A volume of the session as a mount of one of its storage or data directories."""
    resource = volume.resource or ""
    target = volume.path or ""
    source = execution.mount_source(resource)
    if source is None:
        raise PlatformError(f"volume {target}: no storage or data resource {resource!r}")
    if not target.startswith("/") or ":" in target or ":" in str(source):
        raise PlatformError(f"volume {target}: cannot mount {source} there")
    mode: Literal["ro", "rw"] = "rw" if (volume.mode or "READONLY").upper() == "READWRITE" else "ro"
    return Mount(resource, source, target, mode)


def transport(protocol: str) -> str:
    return "udp" if str(protocol).upper() == "UDP" else "tcp"


def publish_host(host: str) -> str:
    """A host address as ``-p`` takes it (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def run_argv(
    execution: Execution,
    options: LocalOptions,
    *,
    platform: str,
    image: str,
    ports: list[PortBinding],
    mounts: list[Mount],
    logs: Path,
) -> list[str]:
    """``podman run``: detached, named and labelled for the session, with the granted cores
    and memory, its environment, published ports, mounts, entrypoint and command, and the log
    written by podman into ``logs`` (so it outlives the container)."""
    executable = execution.executable
    if not isinstance(executable, DockerContainer):
        raise PlatformError(f"platform {platform} runs docker containers only")
    args = _session_args(execution, options, platform=platform, logs=logs)
    if executable.privileged:
        if not options.allow_privileged:
            raise PlatformError(f"platform {platform} does not run privileged containers")
        args.append("--privileged")
    for key, value in (executable.environment or {}).items():
        if not key or "=" in key or "\0" in key:
            raise PlatformError(f"invalid environment variable name {key!r}")
        args += ["-e", f"{key}={value}"]
    args += _publish_args(ports, options) + _mount_args(mounts)
    entrypoint = executable.entrypoint
    if isinstance(entrypoint, list):
        args += ["--entrypoint", json.dumps([str(part) for part in entrypoint])]
    elif isinstance(entrypoint, str):
        args += ["--entrypoint", entrypoint]
    args.append(image)
    args += [str(part) for part in executable.command or []]
    return args


def notebook_run_argv(
    execution: Execution,
    options: LocalOptions,
    *,
    platform: str,
    image: str,
    ports: list[PortBinding],
    mounts: list[Mount],
    logs: Path,
) -> list[str]:
    """``podman run`` of a ``jupyter-notebook`` session: the session's container as for a
    docker container, running the site's notebook server (``notebooks.server_command``) in
    ``notebooks.ROOT``, the fetched notebook's directory mounted read-write there (the first
    of ``mounts``), the token named for podman to take from its own environment (so it is on no
    command line: ``LocalPlatform`` passes it to podman)."""
    if not notebooks.is_notebook(execution.executable):
        raise PlatformError(f"platform {platform}: not a jupyter-notebook session")
    args = _session_args(execution, options, platform=platform, logs=logs)
    args += ["--env", notebooks.TOKEN_ENV, "--workdir", notebooks.ROOT]
    args += _publish_args(ports, options) + _mount_args(mounts)
    return [*args, image, *notebooks.server_command(execution, options)]


def notebook_mount(execution: Execution) -> Mount:
    """The fetched notebook's directory as the server's root, read-write (work is saved)."""
    source = notebooks.notebook_dir(execution)
    return Mount(notebooks.DIRECTORY, source, notebooks.ROOT, "rw")


def _session_args(
    execution: Execution, options: LocalOptions, *, platform: str, logs: Path
) -> list[str]:
    """What every session's container is run with: name, labels, network, log, limits."""
    args = [
        "run",
        "-d",
        "--name",
        execution.name,
        "--label",
        f"{SESSION_LABEL}={execution.session}",
        "--label",
        f"{PLATFORM_LABEL}={platform}",
        "--network",
        options.network,
        "--log-driver",
        "k8s-file",
        "--log-opt",
        f"path={logs / CONTAINER_LOG}",
        "--stop-timeout",
        str(options.stop_timeout),
    ]
    if options.log_max_size:
        args += ["--log-opt", f"max-size={options.log_max_size}"]
    cores = execution.granted.get("cores")
    if cores:
        args += ["--cpus", str(cores)]
    memory = execution.granted.get("memory")
    if memory:
        args += ["--memory", f"{memory}g"]
    return args


def _publish_args(ports: list[PortBinding], options: LocalOptions) -> list[str]:
    args: list[str] = []
    for port in ports:
        args += [
            "-p",
            f"{publish_host(options.publish_host)}:{port['external']}:"
            f"{port['internal']}/{transport(port['protocol'])}",
        ]
    return args


def _mount_args(mounts: list[Mount]) -> list[str]:
    return [arg for each in mounts for arg in ("-v", each.spec)]


def stop_argv(name: str, options: LocalOptions) -> list[str]:
    """``podman stop``: no error when the container is gone."""
    return ["stop", "-i", "-t", str(options.stop_timeout), name]


def remove_argv(name: str, options: LocalOptions) -> list[str]:
    """``podman rm``: forced, no error when the container is gone."""
    return ["rm", "-f", "-i", "-t", str(options.stop_timeout), name]


def list_argv(platform: str) -> list[str]:
    """``podman ps``: the names of this platform's session containers, in any state."""
    return [
        "ps",
        "-a",
        "--filter",
        f"label={SESSION_LABEL}",
        "--filter",
        f"label={PLATFORM_LABEL}={platform}",
        "--format",
        "{{.Names}}",
    ]
