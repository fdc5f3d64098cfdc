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

A ``jupyter-notebook`` executable runs the site's ``notebook_image`` (refused at request time
without one) as the same kind of container: ``prepare_executable`` finds the image, fetches the
notebook into ``workdir/notebook`` through the staging rules and makes the session's token;
``start`` runs the server (:mod:`platforms.notebooks`) with that directory as its root and its
port published; the connector's URL opens the notebook with the token. The token goes to podman
in its environment, never on a command line.

The ``podman run`` argument list and the others come from pure functions of the session in
:mod:`platforms.podman_args`; every podman call goes through ``LocalPlatform._run``
(:mod:`platforms.commands`), and a failing call is a ``PlatformError`` with podman's own
message.
"""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from datetime import timedelta
from functools import cached_property
from typing import Any, Literal

from pydantic import Field, model_validator

from broker_core.config import Duration, PoolConfig
from broker_core.kinds.base import Message, kind_uri, message
from broker_core.kinds.builtin import DockerContainer, ImagePlatform, Port, SimpleVolumeMount
from broker_core.kinds.request import ExecutionRequest

from . import notebooks
from .commands import ImageOptions, Outcome, Program, exists, find_image, image_locations
from .contract import (
    IDENTIFIED_DATA,
    WORK_PREFIX,
    Execution,
    Platform,
    PlatformError,
    WorkState,
    WorkStatus,
    executable_ports,
    platform_step,
    published_ports,
)
from .host import host_pool
from .podman_args import (
    CONTAINER_LOG,
    Mount,
    PortBinding,
    list_argv,
    mount,
    notebook_mount,
    notebook_run_argv,
    publish_host,
    remove_argv,
    run_argv,
    stop_argv,
    transport,
)

DOCKER = kind_uri("executable", "docker-container")
ACCEPTED = frozenset(
    {
        DOCKER,
        kind_uri("compute", "simple-compute-resource"),
        kind_uri("storage", "simple-storage-resource"),
        kind_uri("data", "simple-data-resource"),
        *IDENTIFIED_DATA,
    }
)
HTTP_CONNECTOR = "http-connector"
PORT_CONNECTOR = "port-connector"
OUTPUT_LOG = "output.log"


class LocalOptions(ImageOptions, notebooks.NotebookOptions):
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
        """The kinds it runs; jupyter-notebook only where the site configures its image."""
        if self.options.notebook_image:
            return ACCEPTED | {notebooks.NOTEBOOK}
        return ACCEPTED

    def validate(self, request: ExecutionRequest) -> list[Message]:
        messages = super().validate(request)
        messages += self.refuse_accelerators(request)
        if not self.options.allow_privileged:
            messages += self.refuse_privileged(request)
        notebook = notebooks.is_notebook(request.executable)
        if notebook and not self.options.notebook_image:
            messages.append(
                message(
                    "platform {platform} serves no Jupyter notebooks: the site has configured "
                    "no notebook_image for it",
                    level="WARN",
                    platform=self.name,
                )
            )
        ports = published_ports(request)
        if (ports or notebook) and self.options.network in ("none", "host"):
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
            key = (port.external_port, transport(port.protocol))
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

    def preparation_estimate(self, request: ExecutionRequest) -> timedelta:
        """As for any container, and for a notebook its image and the notebook's fetch."""
        estimate = super().preparation_estimate(request)
        if notebooks.is_notebook(request.executable):
            estimate += self.options.image_pull + self.options.data_staging
        return estimate

    # --- execution side ---------------------------------------------------------------------

    @platform_step
    def prepare_executable(self, execution: Execution) -> None:
        """Find or pull the image, check its digest, record its id in ``state["image_id"]``;
        for a notebook, the site's notebook image, the notebook fetched and a token made."""
        executable = execution.executable
        if notebooks.is_notebook(executable):
            self._prepare_notebook(execution)
            return
        if not isinstance(executable, DockerContainer):
            kind = executable.kind if executable else None
            raise PlatformError(f"platform {self.name} cannot run executables of kind {kind}")
        image = executable.image
        locations = image_locations(executable)
        if not image or not locations:
            raise PlatformError("the executable names no image location")

        found = find_image(
            self.podman, locations, pull=self.options.pull, pull_timeout=self.options.pull_timeout
        )
        info = self._inspect_image(found.ref)
        _check_digest(found.ref, info, image.digest)
        _check_platform(found.ref, info, image.platform)
        execution.state["image"] = found.ref
        execution.state["image_id"] = info.get("Id")
        execution.state["image_digest"] = info.get("Digest")
        execution.notes.append(found.note)

    @platform_step
    def start(self, execution: Execution) -> None:
        """Run the container; a no-op when the session's container exists already."""
        name = execution.name
        if exists(self.podman, "container", name):
            info = self._inspect_container(name)
            if "ports" not in execution.state:
                execution.state["ports"] = self._recover_ports(execution, info)
            if _status(info) in ("created", "configured", "initialized"):
                self._run("start", name)
            return

        image_id = execution.state.get("image_id")
        if not image_id or not exists(self.podman, "image", image_id):
            self.prepare_executable(execution)
            image_id = execution.state["image_id"]

        logs = (execution.workdir / "logs").resolve()
        logs.mkdir(parents=True, exist_ok=True)
        mounts = [self._mount(execution, volume) for volume in execution.volumes]
        ports = self._choose_ports(execution)
        notebook = notebooks.is_notebook(execution.executable)
        build = notebook_run_argv if notebook else run_argv
        if notebook:
            mounts.insert(0, self._notebook_mount(execution))
        args = build(
            execution,
            self.options,
            platform=self.name,
            image=image_id,
            ports=ports,
            mounts=mounts,
            logs=logs,
        )
        # the notebook's token reaches the container through podman's environment only
        env = notebooks.environment(notebooks.token_of(execution)) if notebook else None
        execution.state["ports"] = ports
        try:
            result = self._run(*args, env=env)
        except PlatformError:
            # a container podman created but could not start would make a retry a no-op
            self._run("rm", "-f", "-i", name, check=False)
            execution.state.pop("ports", None)
            raise
        execution.state["container_id"] = result.stdout.strip()
        execution.notes.append(f"container {name} started")

    @platform_step
    def poll(self, execution: Execution) -> WorkStatus:
        name = execution.name
        if not exists(self.podman, "container", name):
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

        ``url`` is there for HTTP and HTTPS ports only (with the port's ``path``); a
        notebook's carries the session's token, so that it opens the notebook.
        """
        host = self.options.connector_host or self.options.publish_host
        url_host = publish_host(host)
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
                token = execution.state.get(notebooks.TOKEN_STATE)
                if notebooks.is_notebook(execution.executable) and token:
                    connector["url"] = notebooks.connector_url(connector["url"], token)
            result.append(connector)
        return result

    @platform_step
    def stop(self, execution: Execution, reason: str) -> None:
        """``podman stop``; no error when the container is gone or has ended."""
        self._save_logs(execution)
        name = execution.name
        if exists(self.podman, "container", name):
            if _status(self._inspect_container(name)) not in ("exited", "stopped"):
                execution.state.setdefault("stopped", reason)
            self._run(*stop_argv(name, self.options), timeout=self._stop_seconds)
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
        result = self._run(*list_argv(self.name))
        return {n.strip() for n in result.stdout.splitlines() if n.strip().startswith(WORK_PREFIX)}

    @platform_step
    def remove_work(self, name: str) -> None:
        if not name.startswith(WORK_PREFIX):
            raise PlatformError(f"refusing to remove {name!r}: not an ebroker container")
        self._remove(name)

    # --- podman -----------------------------------------------------------------------------

    @cached_property
    def podman(self) -> Program:
        return Program(self.options.podman, self.options.command_timeout, name="podman")

    @property
    def _stop_seconds(self) -> float:
        """How long a stop or forced removal may take: podman waits ``stop_timeout`` first."""
        return self.options.stop_timeout + self.options.command_timeout

    def _run(
        self,
        *args: str,
        timeout: float | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> Outcome:
        """Run podman; a non-zero exit is a PlatformError with podman's message."""
        outcome = self.podman(*args, timeout=timeout, env=env)
        return outcome.checked() if check else outcome

    def _inspect_container(self, name: str) -> dict[str, Any]:
        return _first(self._run("container", "inspect", "--format", "json", name).stdout)

    def _inspect_image(self, ref: str) -> dict[str, Any]:
        return _first(self._run("image", "inspect", "--format", "json", ref).stdout)

    def _remove(self, name: str) -> None:
        self._run(*remove_argv(name, self.options), timeout=self._stop_seconds)

    # --- notebooks -------------------------------------------------------------------------

    def _prepare_notebook(self, execution: Execution) -> None:
        """The site's notebook image found (or pulled), the notebook fetched, a token made."""
        image = self.options.notebook_image
        if not image:
            raise PlatformError(f"platform {self.name} has no notebook_image configured")
        found = find_image(
            self.podman, [image], pull=self.options.pull, pull_timeout=self.options.pull_timeout
        )
        info = self._inspect_image(found.ref)
        execution.state["image"] = found.ref
        execution.state["image_id"] = info.get("Id")
        execution.state["image_digest"] = info.get("Digest")
        execution.notes.append(found.note)
        user = self.staging_user(execution)
        execution.notes += notebooks.fetch(execution, execution.staging, user)
        notebooks.token_of(execution)

    def _notebook_mount(self, execution: Execution) -> Mount:
        found = notebook_mount(execution)
        if not found.source.is_dir():
            raise PlatformError(f"the notebook was not fetched ({found.source} is missing)")
        return replace(found, source=found.source.resolve())

    # --- what podman run is given --------------------------------------------------------

    def _ports_of(self, execution: Execution) -> list[Port]:
        """The executable's ports: a notebook's is its server's, opening the notebook."""
        if notebooks.is_notebook(execution.executable):
            return [notebooks.port(execution.state.get(notebooks.ENTRY_STATE))]
        return executable_ports(execution.executable)

    def _choose_ports(self, execution: Execution) -> list[PortBinding]:
        """The published ports: the requested external port or a free one."""
        ports: list[PortBinding] = []
        for port in self._ports_of(execution):
            if not port.access:
                continue
            external = port.external_port
            ports.append(
                {
                    "internal": port.internal_port,
                    "external": external
                    or _free_port(self.options.publish_host, transport(port.protocol)),
                    "protocol": port.protocol,
                    "path": port.path,
                }
            )
        return ports

    def _recover_ports(self, execution: Execution, info: dict[str, Any]) -> list[PortBinding]:
        """The published ports of an existing container (state lost in a crash)."""
        bindings = (info.get("HostConfig") or {}).get("PortBindings") or {}
        ports: list[PortBinding] = []
        for port in self._ports_of(execution):
            key = f"{port.internal_port}/{transport(port.protocol)}"
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

    def _mount(self, execution: Execution, volume: SimpleVolumeMount) -> Mount:
        """A volume's mount, its source checked to be there and resolved (podman needs an
        absolute path, and takes a relative one for a named volume)."""
        found = mount(execution, volume)
        if not found.source.exists():
            raise PlatformError(
                f"volume {found.target}: {found.resource} was not prepared "
                f"({found.source} is missing)"
            )
        return replace(found, source=found.source.resolve())

    # --- logs -------------------------------------------------------------------------------

    def _save_logs(self, execution: Execution) -> None:
        """Write the plain output (``output.log``) from podman's log file in the workdir; a
        notebook's token is left out (a server may log a URL that carries it)."""
        logs = execution.workdir / "logs"
        source = logs / CONTAINER_LOG
        if not source.exists():
            return
        target = logs / OUTPUT_LOG
        partial = logs / f".{OUTPUT_LOG}.partial"
        token = execution.state.get(notebooks.TOKEN_STATE)
        try:
            with source.open(errors="replace") as lines, partial.open("w") as out:
                for line in lines:
                    out.write(notebooks.scrub(_log_text(line), token))
            partial.replace(target)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise PlatformError(f"cannot save the container's output: {exc}") from None


# --- helpers -----------------------------------------------------------------------------------


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


def _log_text(line: str) -> str:
    """The output in one line of a k8s-file log: ``<time> <stream> <F|P> <text>``."""
    parts = line.rstrip("\n").split(" ", 3)
    if len(parts) < 3:
        return line
    text = parts[3] if len(parts) == 4 else ""
    return text if parts[2] == "P" else text + "\n"
