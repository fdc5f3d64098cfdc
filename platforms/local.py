"""The ``local`` platform: sessions run as podman containers on the node's own host.

Booking side: pools come from the config, or one pool the size of the host. It accepts
docker-container executables with simple compute, storage and data resources, and refuses
privileged containers unless ``allow_privileged`` is set.

Execution side, per session (everything is named ``ebroker-<session uuid>`` and labelled
``ebroker.session=<uuid>`` and ``ebroker.platform=<platform name>``):

- ``prepare_executable`` finds the image locally or pulls it (``pull``: missing, always or
  never; each of ``image.locations`` in order), checks ``image.digest`` when one is given, and
  records the image id in ``Execution.state`` so the container runs exactly the image checked.
- ``start`` runs the container detached with the granted cores and memory, the environment,
  entrypoint and command, the published ports (``-p publish_host:external:internal/proto``, a
  free port when no external port was asked for) and the volume mounts (storage and data
  directories of the session's workdir, ``ro`` or ``rw``). Starting an existing container is a
  no-op. The container's log is written by podman (``k8s-file`` driver) to
  ``workdir/logs/container.log``, so it survives the container; ``output.log`` next to it is
  the plain output (stdout and stderr), refreshed by ``poll``, ``logs``, ``stop`` and
  ``release``.
- ``poll`` maps the container's state: created → PENDING, running → RUNNING, exited 0 →
  SUCCEEDED, exited N → FAILED ("exited with code N"), no container → MISSING.
- ``stop`` is ``podman stop -t stop_timeout``; ``release`` removes the container (the workdir
  with its logs stays). Both are idempotent.
- ``list_work`` lists this platform's labelled containers in any state, ``remove_work``
  removes one.

Every podman call goes through ``LocalPlatform._podman``; a failing call is a
``PlatformError`` with podman's own message.
"""

from __future__ import annotations

import json
import socket
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from broker_core.config import Duration, PoolConfig
from broker_core.kinds.base import Message, kind_uri, message
from broker_core.kinds.builtin import DockerContainer, ImagePlatform, SimpleVolumeMount
from broker_core.kinds.request import ExecutionRequest

from .contract import (
    WORK_PREFIX,
    Execution,
    Platform,
    PlatformError,
    PreparationOptions,
    WorkState,
    WorkStatus,
    executable_ports,
    platform_step,
    published_ports,
)
from .host import host_pool

SESSION_LABEL = "ebroker.session"
PLATFORM_LABEL = "ebroker.platform"
DOCKER = kind_uri("executable", "docker-container")
ACCEPTED = frozenset(
    {
        DOCKER,
        kind_uri("compute", "simple-compute-resource"),
        kind_uri("storage", "simple-storage-resource"),
        kind_uri("data", "simple-data-resource"),
    }
)
HTTP_CONNECTOR = "http-connector"
PORT_CONNECTOR = "port-connector"
CONTAINER_LOG = "container.log"
OUTPUT_LOG = "output.log"
ERROR_CHARS = 600


class LocalOptions(PreparationOptions):
    podman: str = Field(default="podman", min_length=1, description="the podman binary")
    publish_host: str = Field(
        default="127.0.0.1", min_length=1, description="the host address ports are published on"
    )
    connector_host: str | None = Field(
        default=None, description="the host name in connector URLs; default: publish_host"
    )
    network: str = Field(
        default="bridge",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$",
        description="podman network mode (bridge, none, host, or a network name)",
    )
    pull: Literal["missing", "always", "never"] = "missing"
    base_preparation: Duration = Field(default=timedelta(seconds=5))
    allow_privileged: bool = False
    stop_timeout: int = Field(default=10, ge=0, le=3600, description="seconds before SIGKILL")
    storage_path: str = Field(default=".", description="where the host pool's free disk is read")
    command_timeout: float = Field(default=120, gt=0, description="seconds per podman call")
    pull_timeout: float = Field(default=1800, gt=0, description="seconds per image pull")
    log_max_size: str | None = Field(
        default=None,
        pattern=r"^[0-9]+[kKmMgG]?[bB]?$",
        description="podman's k8s-file log max-size (e.g. 100m); default: unlimited",
    )

    @model_validator(mode="after")
    def _default_connector_host(self) -> LocalOptions:
        if self.connector_host is None:
            self.connector_host = self.publish_host
        return self


class LocalPlatform(Platform):
    options_model = LocalOptions
    options: LocalOptions

    # --- booking side -----------------------------------------------------------------------

    def pools(self) -> list[PoolConfig]:
        return self.config.pools or [host_pool(self.options.storage_path)]

    def accepted_kinds(self) -> frozenset[str]:
        return ACCEPTED

    def validate(self, request: ExecutionRequest) -> list[Message]:
        messages = super().validate(request)
        if not self.options.allow_privileged:
            messages += self.refuse_privileged(request)
        ports = published_ports(request)
        if ports and self.options.network in ("none", "host"):
            messages.append(
                message(
                    "platform {platform} cannot publish ports with network mode {network}",
                    level="WARN",
                    platform=self.name,
                    network=self.options.network,
                )
            )
        seen: set[tuple[int, str]] = set()
        for port in ports:
            if port.external_port is None:
                continue
            key = (port.external_port, _transport(port.protocol))
            if key in seen:
                messages.append(
                    message(
                        "external port {port} is requested twice",
                        level="WARN",
                        port=port.external_port,
                    )
                )
            seen.add(key)
        return messages

    # --- execution side ---------------------------------------------------------------------

    @platform_step
    def prepare_executable(self, execution: Execution) -> None:
        """Find or pull the image, check its digest, record its id in ``state["image_id"]``."""
        executable = execution.executable
        if not isinstance(executable, DockerContainer):
            kind = executable.kind if executable else None
            raise PlatformError(f"platform {self.name} cannot run executables of kind {kind}")
        image = executable.image
        locations = list(image.locations) if image else []
        if not image or not locations:
            raise PlatformError("the executable names no image location")

        chosen, pulled = self._find_image(locations)
        info = self._inspect_image(chosen)
        _check_digest(chosen, info, image.digest)
        _check_platform(chosen, info, image.platform)
        execution.state["image"] = chosen
        execution.state["image_id"] = info.get("Id")
        execution.state["image_digest"] = info.get("Digest")
        execution.notes.append(f"image {chosen} {'pulled' if pulled else 'ready'}")

    @platform_step
    def start(self, execution: Execution) -> None:
        """Run the container; a no-op when the session's container exists already."""
        name = execution.name
        if self._container_exists(name):
            info = self._inspect_container(name)
            if "ports" not in execution.state:
                execution.state["ports"] = self._recover_ports(execution, info)
            if _status(info) in ("created", "configured", "initialized"):
                self._podman("start", name)
            return

        image_id = execution.state.get("image_id")
        if not image_id or not self._image_exists(image_id):
            self.prepare_executable(execution)
            image_id = execution.state["image_id"]

        ports = self._choose_ports(execution)
        args = self._run_args(execution, ports, image_id)
        execution.state["ports"] = ports
        try:
            result = self._podman(*args)
        except PlatformError:
            # a container podman created but could not start would make a retry a no-op
            self._podman("rm", "-f", "-i", name, check=False)
            execution.state.pop("ports", None)
            raise
        execution.state["container_id"] = result.stdout.strip()
        execution.notes.append(f"container {name} started")

    @platform_step
    def poll(self, execution: Execution) -> WorkStatus:
        name = execution.name
        if not self._container_exists(name):
            self._save_logs(execution)
            return WorkStatus(WorkState.MISSING, message=f"no container {name}")
        info = self._inspect_container(name)
        status = _status(info)
        state = info.get("State") or {}
        if status in ("created", "configured", "initialized"):
            return WorkStatus(WorkState.PENDING)
        if status in ("running", "paused", "stopping", "restarting") or state.get("Running"):
            return WorkStatus(WorkState.RUNNING)
        self._save_logs(execution)
        code = state.get("ExitCode")
        code = code if isinstance(code, int) else -1
        if code == 0:
            return WorkStatus(WorkState.SUCCEEDED, exit_code=0, message="exited with code 0")
        text = f"exited with code {code}"
        if state.get("OOMKilled"):
            text += " (killed: out of memory)"
        if state.get("Error"):
            text += f" ({state['Error']})"
        if execution.state.get("stopped"):
            text += f" (stopped: {execution.state['stopped']})"
        return WorkStatus(WorkState.FAILED, exit_code=code, message=text)

    @platform_step
    def connectors(self, execution: Execution) -> list[dict[str, Any]]:
        """One connector per published port, from ``state["ports"]``::

            {"kind": "http-connector", "protocol": "HTTP", "host": "127.0.0.1",
             "port": 18080, "internal": 8080, "url": "http://127.0.0.1:18080/path"}
            {"kind": "port-connector", "protocol": "TCP", "host": "127.0.0.1",
             "port": 15432, "internal": 5432}

        ``url`` is there for HTTP and HTTPS ports only (with the port's ``path``).
        """
        host = self.options.connector_host or self.options.publish_host
        url_host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        result: list[dict[str, Any]] = []
        for port in execution.state.get("ports") or []:
            protocol = port["protocol"]
            connector: dict[str, Any] = {
                "kind": HTTP_CONNECTOR if protocol in ("HTTP", "HTTPS") else PORT_CONNECTOR,
                "protocol": protocol,
                "host": host,
                "port": port["external"],
                "internal": port["internal"],
            }
            if protocol in ("HTTP", "HTTPS"):
                path = port.get("path") or "/"
                path = path if path.startswith("/") else f"/{path}"
                connector["url"] = f"{protocol.lower()}://{url_host}:{port['external']}{path}"
            result.append(connector)
        return result

    @platform_step
    def stop(self, execution: Execution, reason: str) -> None:
        """``podman stop``; no error when the container is gone or has ended."""
        self._save_logs(execution)
        name = execution.name
        if self._container_exists(name):
            if _status(self._inspect_container(name)) not in ("exited", "stopped"):
                execution.state.setdefault("stopped", reason)
            self._podman(
                "stop",
                "-i",
                "-t",
                str(self.options.stop_timeout),
                name,
                timeout=self.options.stop_timeout + self.options.command_timeout,
            )
        self._save_logs(execution)

    @platform_step
    def release(self, execution: Execution) -> None:
        """Remove the container; the workdir with the logs stays."""
        self._save_logs(execution)
        self._remove(execution.name)
        self._save_logs(execution)

    @platform_step
    def logs(self, execution: Execution) -> str | None:
        self._save_logs(execution)
        return super().logs(execution)

    @platform_step
    def list_work(self) -> set[str] | None:
        result = self._podman(
            "ps",
            "-a",
            "--filter",
            f"label={SESSION_LABEL}",
            "--filter",
            f"label={PLATFORM_LABEL}={self.name}",
            "--format",
            "{{.Names}}",
        )
        return {n.strip() for n in result.stdout.splitlines() if n.strip().startswith(WORK_PREFIX)}

    @platform_step
    def remove_work(self, name: str) -> None:
        if not name.startswith(WORK_PREFIX):
            raise PlatformError(f"refusing to remove {name!r}: not an ebroker container")
        self._remove(name)

    # --- podman -----------------------------------------------------------------------------

    def _podman(
        self, *args: str, timeout: float | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run podman; a non-zero exit is a PlatformError with podman's message."""
        command = [self.options.podman, *args]
        limit = timeout if timeout is not None else self.options.command_timeout
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=limit,
                stdin=subprocess.DEVNULL,
            )
        except FileNotFoundError:
            raise PlatformError(f"podman not found: {self.options.podman!r}") from None
        except subprocess.TimeoutExpired:
            raise PlatformError(f"podman {args[0]} timed out after {limit:g} s") from None
        except OSError as exc:
            raise PlatformError(f"cannot run podman {args[0]}: {exc}") from None
        if check and result.returncode != 0:
            raise PlatformError(f"podman {args[0]} failed: {_trim(result.stderr, result.stdout)}")
        return result

    def _container_exists(self, name: str) -> bool:
        result = self._podman("container", "exists", name, check=False)
        if result.returncode in (0, 1):
            return result.returncode == 0
        raise PlatformError(f"podman container exists failed: {_trim(result.stderr)}")

    def _image_exists(self, ref: str) -> bool:
        result = self._podman("image", "exists", ref, check=False)
        if result.returncode in (0, 1):
            return result.returncode == 0
        raise PlatformError(f"podman image exists failed: {_trim(result.stderr)}")

    def _inspect_container(self, name: str) -> dict[str, Any]:
        return _first(self._podman("container", "inspect", "--format", "json", name).stdout)

    def _inspect_image(self, ref: str) -> dict[str, Any]:
        return _first(self._podman("image", "inspect", "--format", "json", ref).stdout)

    def _remove(self, name: str) -> None:
        self._podman(
            "rm",
            "-f",
            "-i",
            "-t",
            str(self.options.stop_timeout),
            name,
            timeout=self.options.stop_timeout + self.options.command_timeout,
        )

    def _find_image(self, locations: list[str]) -> tuple[str, bool]:
        """The first location present locally or pulled, by the pull policy; and if pulled."""
        policy = self.options.pull
        if policy != "always":
            for location in locations:
                ref = _local_ref(location)
                if self._image_exists(ref):
                    return ref, False
            if policy == "never":
                raise PlatformError(
                    f"image {', '.join(locations)} not present on this host "
                    "and the pull policy is 'never'"
                )
        errors: list[str] = []
        for location in locations:
            try:
                self._podman("pull", "-q", location, timeout=self.options.pull_timeout)
            except PlatformError as exc:
                errors.append(f"{location}: {exc}")
                continue
            return _local_ref(location), True
        raise PlatformError("cannot pull the image: " + "; ".join(errors))

    # --- run arguments ----------------------------------------------------------------------

    def _choose_ports(self, execution: Execution) -> list[dict[str, Any]]:
        """The published ports: the requested external port or a free one."""
        ports: list[dict[str, Any]] = []
        for port in executable_ports(execution.executable):
            if not port.access:
                continue
            external = port.external_port
            ports.append(
                {
                    "internal": port.internal_port,
                    "external": external
                    or _free_port(self.options.publish_host, _transport(port.protocol)),
                    "protocol": port.protocol,
                    "path": port.path,
                }
            )
        return ports

    def _recover_ports(self, execution: Execution, info: dict[str, Any]) -> list[dict[str, Any]]:
        """The published ports of an existing container (state lost in a crash)."""
        bindings = (info.get("HostConfig") or {}).get("PortBindings") or {}
        ports = []
        for port in executable_ports(execution.executable):
            key = f"{port.internal_port}/{_transport(port.protocol)}"
            for binding in bindings.get(key) or []:
                if str(binding.get("HostPort") or "").isdigit():
                    ports.append(
                        {
                            "internal": port.internal_port,
                            "external": int(binding["HostPort"]),
                            "protocol": port.protocol,
                            "path": port.path,
                        }
                    )
                    break
        return ports

    def _run_args(self, execution: Execution, ports: list[dict[str, Any]], image: str) -> list[str]:
        executable = execution.executable
        if not isinstance(executable, DockerContainer):
            raise PlatformError(f"platform {self.name} runs docker containers only")
        logs = (execution.workdir / "logs").resolve()
        logs.mkdir(parents=True, exist_ok=True)
        args = [
            "run",
            "-d",
            "--name",
            execution.name,
            "--label",
            f"{SESSION_LABEL}={execution.session}",
            "--label",
            f"{PLATFORM_LABEL}={self.name}",
            "--network",
            self.options.network,
            "--log-driver",
            "k8s-file",
            "--log-opt",
            f"path={logs / CONTAINER_LOG}",
            "--stop-timeout",
            str(self.options.stop_timeout),
        ]
        if self.options.log_max_size:
            args += ["--log-opt", f"max-size={self.options.log_max_size}"]
        cores = execution.granted.get("cores")
        if cores:
            args += ["--cpus", str(cores)]
        memory = execution.granted.get("memory")
        if memory:
            args += ["--memory", f"{memory}g"]
        if executable.privileged:
            if not self.options.allow_privileged:
                raise PlatformError(f"platform {self.name} does not run privileged containers")
            args.append("--privileged")
        for key, value in (executable.environment or {}).items():
            if not key or "=" in key or "\0" in key:
                raise PlatformError(f"invalid environment variable name {key!r}")
            args += ["-e", f"{key}={value}"]
        for port in ports:
            args += [
                "-p",
                f"{_publish_host(self.options.publish_host)}:{port['external']}:"
                f"{port['internal']}/{_transport(port['protocol'])}",
            ]
        for volume in execution.volumes:
            args += ["-v", _volume(execution, volume)]
        entrypoint = executable.entrypoint
        if isinstance(entrypoint, list):
            args += ["--entrypoint", json.dumps([str(part) for part in entrypoint])]
        elif isinstance(entrypoint, str):
            args += ["--entrypoint", entrypoint]
        args.append(image)
        args += [str(part) for part in executable.command or []]
        return args

    # --- logs -------------------------------------------------------------------------------

    def _save_logs(self, execution: Execution) -> None:
        """Write the plain output (``output.log``) from podman's log file in the workdir."""
        logs = execution.workdir / "logs"
        source = logs / CONTAINER_LOG
        if not source.exists():
            return
        target = logs / OUTPUT_LOG
        partial = logs / f".{OUTPUT_LOG}.partial"
        try:
            with source.open(errors="replace") as lines, partial.open("w") as out:
                for line in lines:
                    out.write(_log_text(line))
            partial.replace(target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise PlatformError(f"cannot save the container's output: {exc}") from None


# --- helpers -----------------------------------------------------------------------------------


def _trim(*texts: str) -> str:
    text = next((t.strip() for t in texts if t and t.strip()), "") or "no message"
    lines = [line.removeprefix("Error: ").strip() for line in text.splitlines() if line.strip()]
    # podman's warnings come before the error; the error is what matters
    errors = [line for line in lines if not line.startswith("time=")] or lines
    text = " ".join(errors)
    return text if len(text) <= ERROR_CHARS else "…" + text[-ERROR_CHARS:]


def _first(output: str) -> dict[str, Any]:
    try:
        documents = json.loads(output)
    except ValueError as exc:
        raise PlatformError(f"podman inspect gave no JSON: {exc}") from None
    if isinstance(documents, list) and documents and isinstance(documents[0], dict):
        return documents[0]
    if isinstance(documents, dict):
        return documents
    raise PlatformError("podman inspect found nothing")


def _status(info: dict[str, Any]) -> str:
    return str((info.get("State") or {}).get("Status") or "unknown").lower()


def _local_ref(location: str) -> str:
    """An image location as podman names it locally (without a transport prefix)."""
    for prefix in ("docker://", "containers-storage:"):
        if location.startswith(prefix):
            return location[len(prefix) :]
    return location


def _check_digest(ref: str, info: dict[str, Any], digest: str | None) -> None:
    if not digest:
        return
    wanted = digest.strip().lower()
    if ":" not in wanted:
        wanted = f"sha256:{wanted}"
    found = {str(info.get("Digest") or "").lower()}
    found |= {str(d).rsplit("@", 1)[-1].lower() for d in info.get("RepoDigests") or []}
    found.discard("")
    if wanted not in found:
        have = ", ".join(sorted(found)) or "none"
        raise PlatformError(f"image {ref} has digest {have}, not the requested {digest}")


def _check_platform(ref: str, info: dict[str, Any], platform: ImagePlatform | None) -> None:
    for key, field in (("architecture", "Architecture"), ("os", "Os")):
        wanted = getattr(platform, key, None)
        have = info.get(field)
        if wanted and have and str(wanted).lower() != str(have).lower():
            raise PlatformError(f"image {ref} is for {key} {have}, not the requested {wanted}")


def _transport(protocol: str) -> str:
    return "udp" if str(protocol).upper() == "UDP" else "tcp"


def _publish_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _free_port(host: str, transport: str) -> int:
    """A port nobody listens on now (the kernel's choice)."""
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, kind) as sock:
            sock.bind((host.strip("[]"), 0))
            return int(sock.getsockname()[1])
    except OSError as exc:
        raise PlatformError(f"cannot find a free port on {host}: {exc}") from None


def _volume(execution: Execution, volume: SimpleVolumeMount) -> str:
    resource = volume.resource or ""
    path = volume.path or ""
    source = execution.mount_source(resource)
    if source is None:
        raise PlatformError(f"volume {path}: no storage or data resource {resource!r}")
    if not path.startswith("/") or ":" in path or ":" in str(source):
        raise PlatformError(f"volume {path}: cannot mount {source} there")
    if not source.exists():
        raise PlatformError(f"volume {path}: {resource} was not prepared ({source} is missing)")
    mode = "rw" if (volume.mode or "READONLY").upper() == "READWRITE" else "ro"
    return f"{Path(source).resolve()}:{path}:{mode}"


def _log_text(line: str) -> str:
    """The output in one line of a k8s-file log: ``<time> <stream> <F|P> <text>``."""
    parts = line.rstrip("\n").split(" ", 3)
    if len(parts) < 3:
        return line
    text = parts[3] if len(parts) == 4 else ""
    return text if parts[2] == "P" else text + "\n"
