"""The objects a session is made of on Kubernetes, as pure functions of the typed session
(``Execution``) and the platform's options: a Job with one pod, a PersistentVolumeClaim per
storage resource, a Service and an Ingress for published ports, and a notebook's token in a
Secret. Nothing here talks to a cluster, so every manifest is shown by a snapshot test and
validated against the API's schema.

The pod's main container comes from the executable's kind (``EXECUTABLES``): the image it runs,
the container, and the ports it publishes. ``docker-container`` and ``jupyter-notebook`` are
built here; each registers an ``ExecutableKind`` and gets the same pod, volumes, staging,
security, Service, Ingress and connectors around it.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from broker_core.kinds.base import Component, kind_uri
from broker_core.kinds.builtin import DockerContainer, Port

from .. import notebooks, remote_staging
from ..contract import Execution, PlatformError, executable_ports, uuid_of
from .options import KubernetesOptions, NodeGroup

SESSION_LABEL = "ebroker.session"
PLATFORM_LABEL = "ebroker.platform"
COMPONENT_LABEL = "ebroker.component"
MAIN = "main"
STAGE_MOUNT = "/stage"
GPU = "nvidia.com/gpu"
DOCKER = kind_uri("executable", "docker-container")
Manifest = dict[str, Any]


def labels(platform: str, session: str) -> dict[str, str]:
    """What finds a session's objects again: its uuid and the platform that made them."""
    return {SESSION_LABEL: session, PLATFORM_LABEL: platform}


def selector(platform: str, session: str | None = None) -> str:
    """A label selector for one session's objects, or for all of this platform's."""
    found = f"{PLATFORM_LABEL}={platform}"
    return f"{SESSION_LABEL}={session},{found}" if session else f"{SESSION_LABEL},{found}"


def _metadata(
    execution: Execution, platform: str, options: KubernetesOptions, name: str, **extra: str
) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": options.namespace,
        "labels": {**labels(platform, execution.session), **extra},
    }


# --- storage -----------------------------------------------------------------------------------


def pvc_name(execution: Execution, storage: Component) -> str:
    return f"{execution.name}-{uuid_of(storage)}"


def storage_size(execution: Execution, storage: Component) -> int:
    """GiB of one storage resource: its granted size, else the session's storage shared out."""
    size = getattr(storage, "size", None)
    amount = (size.max if size.max is not None else size.min) if size else None
    if amount:
        return int(amount)
    total = execution.granted.get("storage") or 1
    return max(int(total) // max(len(execution.storage), 1), 1)


def pvc_manifest(
    execution: Execution, storage: Component, options: KubernetesOptions, platform: str
) -> Manifest:
    spec: dict[str, Any] = {
        "accessModes": [options.storage_access_mode],
        "resources": {"requests": {"storage": f"{storage_size(execution, storage)}Gi"}},
    }
    if options.storage_class:
        spec["storageClassName"] = options.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(
            execution,
            platform,
            options,
            pvc_name(execution, storage),
            **{COMPONENT_LABEL: uuid_of(storage)},
        ),
        "spec": spec,
    }


def _storage_of(execution: Execution, data: Component) -> Component:
    wanted = getattr(data, "storage", None)
    for storage in execution.storage:
        if wanted in (uuid_of(storage), storage.name):
            return storage
    raise PlatformError(
        f"data {data.name or uuid_of(data)} names no storage resource of the session ({wanted!r})"
    )


def _volume_name(execution: Execution, storage: Component) -> str:
    return f"storage-{execution.storage.index(storage)}"


# --- data staging ------------------------------------------------------------------------------


def file_name(location: str) -> str:
    """The name a downloaded location keeps: its last path segment, made safe."""
    last = unquote(urlsplit(location).path).rstrip("/").rsplit("/", 1)[-1]
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", last).lstrip(".")
    return safe[:200] or "data"


def fetcher(
    name: str,
    fetch: remote_staging.Fetch,
    target: tuple[str, str],
    execution: Execution,
    options: KubernetesOptions,
    file: str | None = None,
) -> Manifest:
    """An init container downloading one location as the staging rules judged it (pinned to
    its address, bounded) into ``target``: (volume name, directory under ``STAGE_MOUNT``)."""
    volume, directory = target
    return {
        "name": name,
        "image": options.stager_image,
        "imagePullPolicy": options.pull_policy,
        "command": remote_staging.fetch_command(fetch, execution.staging, directory, file),
        "resources": resources(execution),
        "securityContext": container_security(options, privileged=False),
        "volumeMounts": [{"name": volume, "mountPath": STAGE_MOUNT}],
    }


def stager_containers(execution: Execution, options: KubernetesOptions) -> list[Manifest]:
    """One init container per data resource, downloading its location (a dataset's files,
    one after the other) into its storage's claim (at ``<data uuid>/<file name>``) before the
    main container starts."""
    containers = []
    for index, data in enumerate(execution.data):
        several = remote_staging.fetches_of(execution, data)
        storage = _storage_of(execution, data)
        target = (_volume_name(execution, storage), f"{STAGE_MOUNT}/{uuid_of(data)}")
        container = fetcher(f"stage-{index}", several[0], target, execution, options)
        if len(several) > 1:
            container["command"] = remote_staging.fetches_command(
                several, execution.staging, target[1]
            )
        containers.append(container)
    return containers


# --- the pod -----------------------------------------------------------------------------------


def resources(execution: Execution) -> dict[str, dict[str, str]]:
    """Requests equal to limits (the Guaranteed class): the granted cores and GiB. The pod's
    main container gets its devices too (``with_devices``); an init container needs none."""
    amounts: dict[str, str] = {}
    if execution.granted.get("cores"):
        amounts["cpu"] = str(execution.granted["cores"])
    if execution.granted.get("memory"):
        amounts["memory"] = f"{execution.granted['memory']}Gi"
    return {"requests": dict(amounts), "limits": dict(amounts)}


def device_amounts(execution: Execution, group: NodeGroup) -> dict[str, str]:
    """The granted GPUs and FPGAs as the node group's extended resources (``devices``:
    nvidia.com/gpu unless configured otherwise), which a device plugin hands to the pod."""
    return {
        name: str(execution.granted[c])
        for c, name in group.devices.items()
        if execution.granted.get(c)
    }


def with_devices(container: Manifest, execution: Execution, group: NodeGroup) -> Manifest:
    """The container, its requests and limits with the granted devices."""
    devices = device_amounts(execution, group)
    if devices:
        limits = container.setdefault("resources", {})
        for key in ("requests", "limits"):
            limits.setdefault(key, {}).update(devices)
    return container


def container_security(options: KubernetesOptions, privileged: bool) -> Manifest:
    if privileged:
        return {
            "privileged": True,
            "allowPrivilegeEscalation": True,
            "runAsNonRoot": False,
            "runAsUser": 0,
        }
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": options.security.read_only_root_filesystem,
        "runAsNonRoot": True,
    }


def pod_security(options: KubernetesOptions) -> Manifest:
    security: dict[str, Any] = {
        "runAsNonRoot": True,
        "runAsUser": options.security.run_as_user,
        "runAsGroup": options.security.run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    if options.security.fs_group is not None:
        security["fsGroup"] = options.security.fs_group
    return security


def _transport(protocol: str) -> str:
    return "UDP" if protocol.upper() == "UDP" else "TCP"


def port_name(port: Port) -> str:
    return f"{_transport(port.protocol).lower()}-{port.internal_port}"


def volume_mounts(execution: Execution) -> list[Manifest]:
    """The request's ``compute.volumes``: a storage resource's claim, or the directory a data
    resource was staged into (a sub-path of its storage's claim)."""
    mounts = []
    for volume in execution.volumes:
        path, resource = volume.path or "", volume.resource or ""
        if not path.startswith("/"):
            raise PlatformError(f"volume {path!r}: the path must be absolute")
        mount: dict[str, Any] = {
            "mountPath": path,
            "readOnly": (volume.mode or "READONLY").upper() != "READWRITE",
        }
        storage = next((s for s in execution.storage if resource in (uuid_of(s), s.name)), None)
        data = next((d for d in execution.data if resource in (uuid_of(d), d.name)), None)
        if storage is not None:
            mount["name"] = _volume_name(execution, storage)
        elif data is not None:
            mount["name"] = _volume_name(execution, _storage_of(execution, data))
            mount["subPath"] = uuid_of(data)
        else:
            raise PlatformError(f"volume {path}: no storage or data resource {resource!r}")
        mounts.append(mount)
    return mounts


def docker_image(execution: Execution, options: KubernetesOptions) -> str:
    """The image a ``docker-container`` runs: its first location (the cluster pulls it; a
    cluster cannot try several), pinned to ``image.digest`` when one is given."""
    image = getattr(execution.executable, "image", None)
    locations = [loc for loc in (image.locations if image else []) if loc.strip()]
    if not locations:
        raise PlatformError("the executable names no image location")
    ref = locations[0].strip().removeprefix("docker://")
    if image is not None and image.digest and "@" not in ref:
        digest = image.digest if ":" in image.digest else f"sha256:{image.digest}"
        ref = f"{ref}@{digest}"
    return ref


def docker_ports(execution: Execution) -> list[Port]:
    return executable_ports(execution.executable)


def docker_container(execution: Execution, options: KubernetesOptions, image: str) -> Manifest:
    """The main container of a ``docker-container`` executable: Docker's entrypoint is the
    container's ``command``, Docker's command its ``args``."""
    executable = execution.executable
    if not isinstance(executable, DockerContainer):
        raise PlatformError("the executable is not a docker-container")
    if executable.privileged and not options.allow_privileged:
        raise PlatformError("this platform does not run privileged containers")
    container: dict[str, Any] = {
        "name": MAIN,
        "image": image,
        "imagePullPolicy": options.pull_policy,
    }
    entrypoint = executable.entrypoint
    if entrypoint:
        container["command"] = [entrypoint] if isinstance(entrypoint, str) else list(entrypoint)
    if executable.command:
        container["args"] = list(executable.command)
    environment = executable.environment or {}
    for key in environment:
        if not re.fullmatch(r"[-._a-zA-Z][-._a-zA-Z0-9]*", key):
            raise PlatformError(f"invalid environment variable name {key!r}")
    if environment:
        container["env"] = [{"name": k, "value": v} for k, v in sorted(environment.items())]
    ports = [
        {"containerPort": p.internal_port, "protocol": _transport(p.protocol)}
        for p in executable_ports(executable)
    ]
    if ports:
        container["ports"] = ports
    container["resources"] = resources(execution)
    container["securityContext"] = container_security(options, executable.privileged)
    mounts = volume_mounts(execution)
    if mounts:
        container["volumeMounts"] = mounts
    return container


def _nothing(*_: Any) -> list[Manifest]:
    return []


@dataclass(frozen=True)
class ExecutableKind:
    """How one executable kind runs as the pod's main container (named ``MAIN``), and what
    else it needs around it: init containers run before the session's data stagers, pod
    volumes, and objects of its own (a Secret) made before the Job and removed at release."""

    image: Callable[[Execution, KubernetesOptions], str]
    container: Callable[[Execution, KubernetesOptions, str], Manifest]
    ports: Callable[[Execution], list[Port]]  # all of them; those with ``access`` are published
    init_containers: Callable[[Execution, KubernetesOptions], list[Manifest]] = _nothing
    volumes: Callable[[Execution], list[Manifest]] = _nothing
    objects: Callable[[Execution, KubernetesOptions, str], list[Manifest]] = _nothing


# --- jupyter-notebook --------------------------------------------------------------------------
# The site's notebook-server image (``notebook_image``) serving ``notebooks.ROOT``, an emptyDir
# the init container ``FETCHER`` downloads the notebook into (as data is staged); the token in a
# Secret of the session's name, given to the server through ``valueFrom.secretKeyRef`` so that it
# is in no pod spec; a writable home (an emptyDir) for a non-root user. Behind an Ingress path
# the server's ``base_url`` is that path, so the connector's URL reaches it unchanged.

NOTEBOOK = notebooks.NOTEBOOK
FETCHER = "fetch-notebook"
NOTEBOOK_VOLUME = "notebook"
HOME_VOLUME = "notebook-home"
NOTEBOOK_HOME = "/home/ebroker"  # HOME and TMPDIR of the server: the image's may be read-only


def notebook_location(execution: Execution) -> str:
    executable = execution.executable
    location = (getattr(executable, "location", None) or "").strip()
    if not notebooks.is_notebook(executable) or not location:
        raise PlatformError("the jupyter-notebook executable names no location")
    if urlsplit(location).scheme not in ("http", "https"):
        raise PlatformError(
            f"the notebook's location {location[:200]}: only http(s) locations can be "
            "fetched into a pod"
        )
    return location


def notebook_file(execution: Execution) -> str:
    """The name the notebook is saved under in ``notebooks.ROOT`` (made safe, as data's)."""
    return file_name(notebook_location(execution))


def notebook_entry(execution: Execution) -> str | None:
    """The notebook the connector opens: the fetched file when the location names a
    notebook (``notebooks.entry_from_location``), else none (the file list)."""
    location = notebook_location(execution)
    name = file_name(location)
    return name if notebooks.entry_from_location(location) and name.endswith(".ipynb") else None


def notebook_image(execution: Execution, options: KubernetesOptions) -> str:
    if not options.notebook_image:
        raise PlatformError(
            "this platform serves no Jupyter notebooks: the site has configured no notebook_image"
        )
    return options.notebook_image


def notebook_ports(execution: Execution) -> list[Port]:
    return [notebooks.port(notebook_entry(execution))]


def notebook_base_url(execution: Execution, options: KubernetesOptions) -> str:
    """Where the server serves: the Ingress path when there is one, else the root."""
    if options.ingress is None:
        return "/"
    return ingress_path(execution, options, notebook_ports(execution)[0])


def token_secret(execution: Execution, options: KubernetesOptions, platform: str) -> Manifest:
    """The session's token (``notebooks.token_of``), read by the server's container only."""
    token = notebooks.token_of(execution).encode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(execution, platform, options, execution.name),
        "type": "Opaque",
        "immutable": True,
        "data": {notebooks.TOKEN_ENV: base64.b64encode(token).decode()},
    }


def token_from_secret(secret: Manifest) -> str | None:
    """The token a Secret made by ``token_secret`` holds (for a start that finds it there)."""
    encoded = (secret.get("data") or {}).get(notebooks.TOKEN_ENV)
    try:
        return base64.b64decode(encoded, validate=True).decode() if encoded else None
    except ValueError:
        return None


def notebook_objects(
    execution: Execution, options: KubernetesOptions, platform: str
) -> list[Manifest]:
    return [token_secret(execution, options, platform)]


def notebook_volumes(execution: Execution) -> list[Manifest]:
    return [{"name": NOTEBOOK_VOLUME, "emptyDir": {}}, {"name": HOME_VOLUME, "emptyDir": {}}]


def notebook_fetcher(execution: Execution, options: KubernetesOptions) -> list[Manifest]:
    """The init container that downloads the notebook into the server's root directory."""
    file = notebook_file(execution)
    fetch = remote_staging.fetch_of(execution, execution.executable)  # type: ignore[arg-type]
    return [fetcher(FETCHER, fetch, (NOTEBOOK_VOLUME, STAGE_MOUNT), execution, options, file)]


def notebook_container(execution: Execution, options: KubernetesOptions, image: str) -> Manifest:
    """The notebook server as the pod's main container, as ``options.security.run_as_user``
    (so not ``--allow-root``), its token from the Secret."""
    base_url = notebook_base_url(execution, options)
    command = notebooks.server_command(execution, options, allow_root=False, base_url=base_url)
    mounts = volume_mounts(execution)
    for mount in mounts:
        if mount["mountPath"].rstrip("/") in (notebooks.ROOT, NOTEBOOK_HOME):
            raise PlatformError(
                f"volume {mount['mountPath']}: the notebook server's own directory is there"
            )
    token = {"secretKeyRef": {"name": execution.name, "key": notebooks.TOKEN_ENV}}
    return {
        "name": MAIN,
        "image": image,
        "imagePullPolicy": options.pull_policy,
        "command": command,
        "workingDir": notebooks.ROOT,
        "env": [
            {"name": notebooks.TOKEN_ENV, "valueFrom": token},
            {"name": "HOME", "value": NOTEBOOK_HOME},
            {"name": "TMPDIR", "value": NOTEBOOK_HOME},
        ],
        "ports": [{"name": "notebook", "containerPort": notebooks.PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": f"{base_url}api", "port": notebooks.PORT},
            "periodSeconds": 5,
        },
        "resources": resources(execution),
        "securityContext": {
            **container_security(options, privileged=False),
            "runAsUser": options.security.run_as_user,
            "runAsGroup": options.security.run_as_group,
        },
        "volumeMounts": [
            {"name": NOTEBOOK_VOLUME, "mountPath": notebooks.ROOT},
            {"name": HOME_VOLUME, "mountPath": NOTEBOOK_HOME},
            *mounts,
        ],
    }


EXECUTABLES: dict[str, ExecutableKind] = {
    DOCKER: ExecutableKind(docker_image, docker_container, docker_ports),
    NOTEBOOK: ExecutableKind(
        notebook_image,
        notebook_container,
        notebook_ports,
        init_containers=notebook_fetcher,
        volumes=notebook_volumes,
        objects=notebook_objects,
    ),
}


def executable_kind(execution: Execution) -> ExecutableKind:
    kind = execution.executable.kind if execution.executable else None
    found = EXECUTABLES.get(kind or "")
    if found is None:
        raise PlatformError(f"the kubernetes platform cannot run executables of kind {kind}")
    return found


def main_container(execution: Execution, options: KubernetesOptions, image: str) -> Manifest:
    return executable_kind(execution).container(execution, options, image)


def ports(execution: Execution) -> list[Port]:
    """The executable's published ports (``access: true``)."""
    return [p for p in executable_kind(execution).ports(execution) if p.access]


def pod_template(
    execution: Execution, options: KubernetesOptions, platform: str, image: str, group: NodeGroup
) -> Manifest:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": options.termination_grace,
        "securityContext": pod_security(options),
        "containers": [with_devices(main_container(execution, options, image), execution, group)],
    }
    kind = executable_kind(execution)
    init = [*kind.init_containers(execution, options), *stager_containers(execution, options)]
    if init:
        spec["initContainers"] = init
    volumes = [
        *kind.volumes(execution),
        *(
            {
                "name": _volume_name(execution, s),
                "persistentVolumeClaim": {"claimName": pvc_name(execution, s)},
            }
            for s in execution.storage
        ),
    ]
    if volumes:
        spec["volumes"] = volumes
    if group.selector:
        spec["nodeSelector"] = dict(group.selector)
    if group.tolerations:
        spec["tolerations"] = [t.model_dump(exclude_none=True) for t in group.tolerations]
    if options.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in options.image_pull_secrets]
    if options.service_account:
        spec["serviceAccountName"] = options.service_account
    return {"metadata": {"labels": labels(platform, execution.session)}, "spec": spec}


def deadline(execution: Execution, started_at: int) -> int:
    """``activeDeadlineSeconds`` of a Job that started at ``started_at``: the booked end."""
    return max(execution.end_at - started_at, 1)


def job_manifest(
    execution: Execution,
    options: KubernetesOptions,
    platform: str,
    image: str,
    group: NodeGroup,
    now: int,
) -> Manifest:
    """The session's work: a Job with one pod that is never restarted, ending with the booked
    window."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(execution, platform, options, execution.name),
        "spec": {
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "activeDeadlineSeconds": deadline(execution, now),
            "template": pod_template(execution, options, platform, image, group),
        },
    }


# --- connectors --------------------------------------------------------------------------------


def service_manifest(
    execution: Execution, options: KubernetesOptions, platform: str
) -> Manifest | None:
    """A Service for the published ports (``access: true``), none when there are none."""
    published = ports(execution)
    if not published:
        return None
    service_ports = []
    for port in published:
        entry: dict[str, Any] = {
            "name": port_name(port),
            "protocol": _transport(port.protocol),
            "port": port.external_port or port.internal_port,
            "targetPort": port.internal_port,
        }
        if options.service_type == "NodePort" and port.external_port:
            entry["nodePort"] = port.external_port
        service_ports.append(entry)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(execution, platform, options, execution.name),
        "spec": {
            "type": options.service_type,
            "selector": labels(platform, execution.session),
            "ports": service_ports,
        },
    }


def http_ports(execution: Execution) -> list[Port]:
    return [p for p in ports(execution) if p.protocol.upper() in ("HTTP", "HTTPS")]


def ingress_host(execution: Execution, options: KubernetesOptions) -> str:
    assert options.ingress is not None
    return options.ingress.host.replace("{session}", execution.name)


def ingress_path(execution: Execution, options: KubernetesOptions, port: Port) -> str:
    """The path a port is reached on: the prefix (a host per session), or the prefix and the
    session's name (one host), and the port when the session publishes several."""
    assert options.ingress is not None
    path = options.ingress.path_prefix.rstrip("/")
    if not options.ingress.per_session_host:
        path += f"/{execution.name}"
    if len(http_ports(execution)) > 1:
        path += f"/{port.internal_port}"
    return path + "/"


def ingress_manifest(
    execution: Execution, options: KubernetesOptions, platform: str
) -> Manifest | None:
    """An Ingress to the HTTP(S) ports, where the site configures one."""
    ports = http_ports(execution)
    if options.ingress is None or not ports:
        return None
    host = ingress_host(execution, options)
    paths = [
        {
            "path": ingress_path(execution, options, port),
            "pathType": "Prefix",
            "backend": {
                "service": {
                    "name": execution.name,
                    "port": {"number": port.external_port or port.internal_port},
                }
            },
        }
        for port in ports
    ]
    metadata = _metadata(execution, platform, options, execution.name)
    if options.ingress.annotations:
        metadata["annotations"] = dict(options.ingress.annotations)
    spec: dict[str, Any] = {"rules": [{"host": host, "http": {"paths": paths}}]}
    if options.ingress.class_name:
        spec["ingressClassName"] = options.ingress.class_name
    if options.ingress.tls_secret:
        spec["tls"] = [{"hosts": [host], "secretName": options.ingress.tls_secret}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": spec,
    }


def connectors(
    execution: Execution,
    options: KubernetesOptions,
    service: Manifest | None,
    ingress: Manifest | None,
) -> list[dict[str, Any]]:
    """How the user reaches the published ports, from the Service (and Ingress) as the cluster
    has them: the node port, the load balancer's address, or the cluster-internal name; HTTP
    ports get a ``url``, through the Ingress when there is one (a notebook's with its token)."""
    if service is None:
        return []
    spec, status = service.get("spec") or {}, service.get("status") or {}
    by_name = {p.get("name"): p for p in spec.get("ports") or []}
    balancer = ((status.get("loadBalancer") or {}).get("ingress") or [{}])[0]
    result = []
    for port in ports(execution):
        live = by_name.get(port_name(port)) or {}
        kind = spec.get("type", "ClusterIP")
        if kind == "NodePort":
            host, number = options.connector_host, live.get("nodePort")
        elif kind == "LoadBalancer":
            host, number = balancer.get("hostname") or balancer.get("ip"), live.get("port")
        else:
            host = f"{execution.name}.{options.namespace}.svc.cluster.local"
            number = live.get("port")
        connector: dict[str, Any] = {
            "kind": "http-connector"
            if port.protocol.upper() in ("HTTP", "HTTPS")
            else "port-connector",
            "protocol": port.protocol.upper(),
            "host": host,
            "port": number,
            "internal": port.internal_port,
        }
        if connector["kind"] == "http-connector":
            path = "/" + (port.path or "").lstrip("/")
            if ingress is not None and options.ingress is not None:
                scheme = "https" if options.ingress.tls_secret else "http"
                base = ingress_path(execution, options, port).rstrip("/")
                connector["url"] = f"{scheme}://{ingress_host(execution, options)}{base}{path}"
            elif host and number:
                connector["url"] = f"{port.protocol.lower()}://{host}:{number}{path}"
            token = execution.state.get(notebooks.TOKEN_STATE)
            if "url" in connector and notebooks.is_notebook(execution.executable) and token:
                connector["url"] = notebooks.connector_url(connector["url"], token)
        result.append(connector)
    return result


def describe(manifest: Manifest) -> str:
    """``Kind/name``, for messages."""
    return f"{manifest.get('kind')}/{(manifest.get('metadata') or {}).get('name')}"
