"""The kinds every node understands, from the IVOA ExecutionBroker v1.0 data model.

Further kinds arrive through the ``ebroker.kinds`` entry point group; see ``registry``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from .base import Component, MinMax, Problem, Strict, kind_uri

EXEC = "executable"
PROTOCOLS = ("TCP", "UDP", "HTTP", "HTTPS")
MODES = ("READONLY", "READWRITE")
OBJECT_TYPES = ("FILE", "CONTAINER", "DATASET")
PORTS = (1, 65535)

# The standard's schema gives these fields types only: a value of the right type that breaks a
# rule (a port out of range, a protocol no platform speaks, a missing location) is well-formed,
# and answered NO with a message pointing at the field (``problems``), not refused with a 400.


def _missing(at: str, name: str, what: str) -> Problem:
    return Problem(f"{at}/{name}", "{name} is missing or empty; give " + what, {"name": name})


def _required(component: Any, at: str, **wanted: str) -> list[Problem]:
    """Problems for each named field that is absent or blank; ``wanted`` says what would do."""
    return [
        _missing(at, name, what)
        for name, what in wanted.items()
        if not (getattr(component, name) or "").strip()
    ]


def _one_of(at: str, value: str | None, allowed: tuple[str, ...], name: str) -> list[Problem]:
    if value is None or value in allowed:
        return []
    return [
        Problem(
            at,
            "{name} '{value}' is not known; {name} must be one of {allowed}",
            {"name": name, "value": value, "allowed": ", ".join(allowed)},
        )
    ]


def _port_problems(at: str, port: int | None, required: bool) -> list[Problem]:
    low, high = PORTS
    if port is None:
        if not required:
            return []
        return [Problem(at, "no port number; give the container's port, {low}..{high}",
                        {"low": str(low), "high": str(high)})]  # fmt: skip
    if low <= port <= high:
        return []
    return [
        Problem(
            at,
            "port {value} is out of range; a port must be {low}..{high}",
            {"value": str(port), "low": str(low), "high": str(high)},
        )
    ]


def _kind(category: str, name: str) -> Any:
    """A pydantic field pinned to one canonical kind URI."""
    return Field(default=kind_uri(category, name))


# --- executables -------------------------------------------------------------------------------


class ImagePlatform(Strict):
    architecture: str | None = Field(default=None, max_length=64)
    os: str | None = Field(default=None, max_length=64)


class ContainerImage(Strict):
    locations: list[str] = Field(default_factory=list, max_length=32)
    digest: str | None = Field(default=None, max_length=256)
    platform: ImagePlatform | None = None

    @field_validator("locations")
    @classmethod
    def _length(cls, locations: list[str]) -> list[str]:
        if any(len(location) > 2048 for location in locations):
            raise ValueError("image locations are at most 2048 characters")
        return locations

    def problems(self, at: str) -> list[Problem]:
        if not self.locations:
            return [
                Problem(
                    f"{at}/locations",
                    "the image has no locations; give at least one, e.g. "
                    "docker.io/library/python:3.12",
                )
            ]
        return [
            Problem(f"{at}/locations/{i}", "the image location is empty; give one, e.g. "
                    "docker.io/library/python:3.12")
            for i, location in enumerate(self.locations)
            if not location.strip()
        ]  # fmt: skip


def _port_object(value: Any) -> Any:
    """A bare port number (this node's earlier form, and documents stored in it) is the
    schema's ``{port: N}``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return {"port": value}
    return value


class InternalPort(Strict):
    """The port on the container to publish (the schema's DockerInternalPort)."""

    port: int | None = None


class ExternalPort(Strict):
    """The port (and, once known, the addresses) it is reachable on from outside (the
    schema's DockerExternalPort); a client may ask for a particular port number."""

    port: int | None = None
    addresses: list[str] | None = Field(default=None, max_length=64)


class Port(Strict):
    internal: InternalPort | None = None
    external: ExternalPort | None = None
    protocol: str = "TCP"
    path: str | None = Field(default=None, max_length=2048)
    access: bool = True

    @field_validator("internal", "external", mode="before")
    @classmethod
    def _objects(cls, value: Any) -> Any:
        return _port_object(value)

    @property
    def internal_port(self) -> int:
        """The container's port; a port without one is answered NO before anything is booked."""
        port = self.internal.port if self.internal else None
        if port is None:
            raise ValueError("a port without an internal port number cannot be published")
        return port

    def problems(self, at: str) -> list[Problem]:
        found = _port_problems(f"{at}/internal/port", self.internal and self.internal.port, True)
        found += _port_problems(f"{at}/external/port", self.external and self.external.port, False)
        return found + _one_of(f"{at}/protocol", self.protocol, PROTOCOLS, "protocol")

    @property
    def external_port(self) -> int | None:
        """The external port number asked for, if any."""
        return self.external.port if self.external else None


class Network(Strict):
    ports: list[Port] = Field(default_factory=list, max_length=64)

    def problems(self, at: str) -> list[Problem]:
        return [p for i, port in enumerate(self.ports) for p in port.problems(f"{at}/ports/{i}")]


def _image_problems(at: str, image: ContainerImage | None) -> list[Problem]:
    if image is None:
        return [Problem(at, "no image; give one with its locations, e.g. docker.io/library/python")]
    return image.problems(at)


class DockerContainer(Component):
    CATEGORY = EXEC
    NAME = "docker-container"
    kind: Literal[kind_uri(EXEC, "docker-container")] = _kind(EXEC, "docker-container")  # type: ignore[valid-type]
    image: ContainerImage | None = None
    command: list[str] | None = Field(default=None, max_length=1024)
    entrypoint: str | list[str] | None = None
    environment: dict[str, str] | None = None
    privileged: bool = False
    network: Network | None = None

    def problems(self, at: str) -> list[Problem]:
        found = _image_problems(f"{at}/image", self.image)
        return found + (self.network.problems(f"{at}/network") if self.network else [])


class SingularityContainer(Component):
    CATEGORY = EXEC
    NAME = "singularity-container"
    kind: Literal[kind_uri(EXEC, "singularity-container")] = _kind(EXEC, "singularity-container")  # type: ignore[valid-type]
    image: ContainerImage | None = None
    command: list[str] | None = Field(default=None, max_length=1024)
    environment: dict[str, str] | None = None

    def problems(self, at: str) -> list[Problem]:
        return _image_problems(f"{at}/image", self.image)


class JupyterNotebook(Component):
    CATEGORY = EXEC
    NAME = "jupyter-notebook"
    INTERACTIVE = True
    kind: Literal[kind_uri(EXEC, "jupyter-notebook")] = _kind(EXEC, "jupyter-notebook")  # type: ignore[valid-type]
    location: str | None = Field(default=None, max_length=2048)

    def problems(self, at: str) -> list[Problem]:
        return _required(self, at, location="the notebook's URL")


# --- volumes and compute -----------------------------------------------------------------------


class SimpleVolumeMount(Component):
    CATEGORY = "volume"
    NAME = "simple-volume-mount"
    kind: Literal[kind_uri("volume", "simple-volume-mount")] = _kind(
        "volume", "simple-volume-mount"
    )  # type: ignore[valid-type]
    path: str | None = Field(default=None, max_length=1024)
    mode: str = "READONLY"
    resource: str | None = Field(default=None, max_length=256)

    def problems(self, at: str) -> list[Problem]:
        found = _required(self, at, path="an absolute path in the container, e.g. /data")
        if self.path and self.path.strip() and not self.path.startswith("/"):
            found.append(
                Problem(f"{at}/path", "path '{value}' is relative; give an absolute path in the "
                        "container, starting with /, e.g. /{value}", {"value": self.path})
            )  # fmt: skip
        found += _one_of(f"{at}/mode", self.mode, MODES, "mode")
        return found + _required(
            self, at, resource="the meta.name of a data or storage resource of this request"
        )


ACCELERATOR_TYPES = ("gpu", "fpga")


class Accelerator(Strict):
    """Devices a session needs besides cores and memory (an ebroker extension of the simple
    compute resource): how many of one ``type``, optionally of one of some ``model``s and with
    at least ``memory.min`` GiB each. Pools name what they have as traits (GPU_A100,
    GPU_MEM_80G); ``offers.accelerators`` matches the two."""

    type: str | None = Field(default=None, max_length=64)
    count: MinMax | None = None
    model: list[str] | None = Field(default=None, max_length=16)
    memory: MinMax | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _one_model(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value  # `model: A100` is a list of one

    @field_validator("model")
    @classmethod
    def _model_length(cls, models: list[str] | None) -> list[str] | None:
        if models and any(len(m) > 64 for m in models):
            raise ValueError("accelerator models are at most 64 characters")
        return models

    def problems(self, at: str) -> list[Problem]:
        if self.type is None:
            found = [_missing(at, "type", "the kind of device: " + " or ".join(ACCELERATOR_TYPES))]
        else:
            found = _one_of(f"{at}/type", self.type, ACCELERATOR_TYPES, "type")
        found += self.count.problems(f"{at}/count") if self.count else []
        found += self.memory.problems(f"{at}/memory") if self.memory else []
        return found + [
            Problem(f"{at}/model/{i}", "the model is empty; give one such as A100, or leave "
                    "model out for any")
            for i, model in enumerate(self.model or [])
            if not model.strip() or not any(ch.isalnum() for ch in model)
        ]  # fmt: skip


def _accelerator_problems(at: str, accelerators: list[Accelerator]) -> list[Problem]:
    found = [p for i, a in enumerate(accelerators) for p in a.problems(f"{at}/{i}")]
    seen: dict[str, int] = {}
    for i, accelerator in enumerate(accelerators):
        if accelerator.type in seen:
            found.append(Problem(
                f"{at}/{i}/type", "a second {value} item (the first is item {first}); give one "
                "item per type, with every model that would do in its model list",
                {"value": str(accelerator.type), "first": str(seen[accelerator.type])},
            ))  # fmt: skip
        elif accelerator.type is not None:
            seen[accelerator.type] = i
    return found


class SimpleComputeResource(Component):
    CATEGORY = "compute"
    NAME = "simple-compute-resource"
    kind: Literal[kind_uri("compute", "simple-compute-resource")] = _kind(  # type: ignore[valid-type]
        "compute", "simple-compute-resource"
    )
    cores: MinMax | None = None
    memory: MinMax | None = None
    volumes: list[SimpleVolumeMount] = Field(default_factory=list, max_length=64)
    accelerators: list[Accelerator] | None = Field(default=None, max_length=8)

    def parts(self) -> list[Component]:
        return [self, *self.volumes]

    def problems(self, at: str) -> list[Problem]:
        found = self.cores.problems(f"{at}/cores") if self.cores else []
        found += self.memory.problems(f"{at}/memory") if self.memory else []
        found += _accelerator_problems(f"{at}/accelerators", self.accelerators or [])
        return found + [
            p for i, v in enumerate(self.volumes) for p in v.problems(f"{at}/volumes/{i}")
        ]


# --- storage and data --------------------------------------------------------------------------


class SimpleStorageResource(Component):
    CATEGORY = "storage"
    NAME = "simple-storage-resource"
    kind: Literal[kind_uri("storage", "simple-storage-resource")] = _kind(  # type: ignore[valid-type]
        "storage", "simple-storage-resource"
    )
    size: MinMax | None = None

    def problems(self, at: str) -> list[Problem]:
        return self.size.problems(f"{at}/size") if self.size else []


class DataComponent(Component):
    """Data resources name the storage they are staged into (by its meta.name)."""

    storage: str | None = Field(default=None, max_length=256)


class SimpleDataResource(DataComponent):
    CATEGORY = "data"
    NAME = "simple-data-resource"
    kind: Literal[kind_uri("data", "simple-data-resource")] = _kind("data", "simple-data-resource")  # type: ignore[valid-type]
    location: str | None = Field(default=None, max_length=4096)

    def problems(self, at: str) -> list[Problem]:
        return _required(self, at, location="the URL the data is fetched from")


class S3DataResource(DataComponent):
    CATEGORY = "data"
    NAME = "S3-data-resource"
    kind: Literal[kind_uri("data", "S3-data-resource")] = _kind("data", "S3-data-resource")  # type: ignore[valid-type]
    endpoint: str | None = Field(default=None, max_length=2048)
    template: str | None = Field(default=None, max_length=2048)
    bucket: str | None = Field(default=None, max_length=256)
    object: str | None = Field(default=None, max_length=4096)

    def problems(self, at: str) -> list[Problem]:
        return _required(
            self, at, endpoint="the S3 service's URL", bucket="the bucket's name",
            object="the object's key in the bucket",
        )  # fmt: skip


class RucioDataResource(DataComponent):
    """Flat in this model; the schema's nested ``rucio: {endpoint, scope, object, type}`` block
    is flattened on input (``object`` -> ``objectname``, ``type`` -> ``objecttype``)."""

    CATEGORY = "data"
    NAME = "rucio-data-resource"
    kind: Literal[kind_uri("data", "rucio-data-resource")] = _kind("data", "rucio-data-resource")  # type: ignore[valid-type]
    endpoint: str | None = Field(default=None, max_length=2048)
    scope: str | None = Field(default=None, max_length=256)
    objectname: str | None = Field(default=None, max_length=1024)
    objecttype: str | None = None

    def problems(self, at: str) -> list[Problem]:
        found = _required(self, at, scope="the Rucio scope", objectname="the object's name")
        return found + _one_of(f"{at}/objecttype", self.objecttype, OBJECT_TYPES, "objecttype")


class IvoaDataLink(Strict):
    """A row of DataLink metadata (the schema's IvoaDataLinkItem)."""

    ID: str | None = Field(default=None, max_length=4096)
    access_url: str | None = Field(default=None, max_length=4096)
    service_def: str | None = Field(default=None, max_length=1024)
    error_message: str | None = Field(default=None, max_length=4096)
    description: str | None = Field(default=None, max_length=4096)
    semantics: str | None = Field(default=None, max_length=1024)
    content_type: str | None = Field(default=None, max_length=256)
    content_length: int | None = None
    content_qualifier: str | None = Field(default=None, max_length=1024)
    local_semantics: str | None = Field(default=None, max_length=1024)
    link_auth: str | None = Field(default=None, max_length=256)
    link_authorized: str | None = Field(default=None, max_length=256)


class IvoaDataResource(DataComponent):
    """Flat in this model; the schema's nested ``ivoa: {ivoid, obscore, datalink}`` block is
    flattened on input. ``datalink`` is a URL (this node's form) or the schema's DataLink row."""

    CATEGORY = "data"
    NAME = "ivoa-data-resource"
    kind: Literal[kind_uri("data", "ivoa-data-resource")] = _kind("data", "ivoa-data-resource")  # type: ignore[valid-type]
    ivoid: str | None = Field(default=None, max_length=2048)
    obscore: dict[str, Any] | None = None
    datalink: str | IvoaDataLink | None = Field(default=None, union_mode="left_to_right")

    def problems(self, at: str) -> list[Problem]:
        found = _required(self, at, ivoid="the dataset's IVOA identifier, ivo://...")
        return found + _datalink_problems(f"{at}/datalink", self.datalink)

    @field_validator("datalink")
    @classmethod
    def _datalink_length(cls, value: str | IvoaDataLink | None) -> str | IvoaDataLink | None:
        if isinstance(value, str) and len(value) > 4096:
            raise ValueError("datalink URLs are at most 4096 characters")
        return value


def _datalink_problems(at: str, datalink: str | IvoaDataLink | None) -> list[Problem]:
    length = datalink.content_length if isinstance(datalink, IvoaDataLink) else None
    if length is None or length >= 0:
        return []
    return [Problem(f"{at}/content_length", "content_length {value} is negative; give the size "
                    "in bytes, 0 or more", {"value": str(length)})]  # fmt: skip


class SkaoReplica(Strict):
    """A known copy of the object: the RSE holding it, its URL there, or both (the schema asks
    for neither; a replica named by its RSE alone is found through the data lake)."""

    rsename: str | None = Field(default=None, max_length=256)
    dataurl: str | None = Field(default=None, max_length=4096)

    def problems(self, at: str) -> list[Problem]:
        if (self.rsename or "").strip() or (self.dataurl or "").strip():
            return []
        return [Problem(at, "the replica has neither an rsename nor a dataurl; give the RSE's "
                        "name, the replica's URL, or both")]  # fmt: skip


class SkaoChecksum(Strict):
    type: str | None = Field(default=None, max_length=64)
    value: str | None = Field(default=None, max_length=1024)


class SkaoDataResource(DataComponent):
    """Flat in this model; the schema's nested ``skao: {namespace, objectname, objecttype,
    datasize, checksum, replicas}`` and ``ivoa: {ivoid, obscore, datalink}`` blocks are
    flattened on input."""

    CATEGORY = "data"
    NAME = "skao-data-resource"
    kind: Literal[kind_uri("data", "skao-data-resource")] = _kind("data", "skao-data-resource")  # type: ignore[valid-type]
    namespace: str | None = Field(default=None, max_length=256)
    objectname: str | None = Field(default=None, max_length=1024)
    objecttype: str | None = None
    datasize: int | None = None
    checksum: SkaoChecksum | None = None
    replicas: list[SkaoReplica] = Field(default_factory=list, max_length=64)
    ivoid: str | None = Field(default=None, max_length=2048)
    obscore: dict[str, Any] | None = None
    datalink: str | IvoaDataLink | None = Field(default=None, union_mode="left_to_right")

    def problems(self, at: str) -> list[Problem]:
        found = _required(self, at, namespace="the SKAO namespace", objectname="the object's name")
        found += _one_of(f"{at}/objecttype", self.objecttype, OBJECT_TYPES, "objecttype")
        if self.datasize is not None and self.datasize < 0:
            template = "datasize {value} is negative; give the size in bytes, 0 or more"
            found.append(Problem(f"{at}/datasize", template, {"value": str(self.datasize)}))
        if self.ivoid is not None and not self.ivoid.strip():
            found.append(_missing(at, "ivoid", "the dataset's IVOA identifier, or leave it out"))
        found += _datalink_problems(f"{at}/datalink", self.datalink)
        for i, replica in enumerate(self.replicas):
            found += replica.problems(f"{at}/replicas/{i}")
        return found


KINDS: list[type[Component]] = [
    DockerContainer,
    SingularityContainer,
    JupyterNotebook,
    SimpleVolumeMount,
    SimpleComputeResource,
    SimpleStorageResource,
    SimpleDataResource,
    S3DataResource,
    RucioDataResource,
    IvoaDataResource,
    SkaoDataResource,
]
