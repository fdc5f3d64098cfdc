"""The kinds every node understands, from the IVOA ExecutionBroker v1.0 data model.

Further kinds arrive through the ``ebroker.kinds`` entry point group; see ``registry``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from .base import Component, MinMax, Strict, kind_uri

EXEC = "executable"


def _kind(category: str, name: str) -> Any:
    """A pydantic field pinned to one canonical kind URI."""
    return Field(default=kind_uri(category, name))


# --- executables -------------------------------------------------------------------------------


class ImagePlatform(Strict):
    architecture: str | None = Field(default=None, max_length=64)
    os: str | None = Field(default=None, max_length=64)


class ContainerImage(Strict):
    locations: list[str] = Field(min_length=1, max_length=32)
    digest: str | None = Field(default=None, max_length=256)
    platform: ImagePlatform | None = None

    @field_validator("locations")
    @classmethod
    def _non_empty(cls, locations: list[str]) -> list[str]:
        for location in locations:
            if not location.strip() or len(location) > 2048:
                raise ValueError("image locations must be non-empty strings of at most 2048 chars")
        return locations


def _port_object(value: Any) -> Any:
    """A bare port number (this node's earlier form, and documents stored in it) is the
    schema's ``{port: N}``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return {"port": value}
    return value


class InternalPort(Strict):
    """The port on the container to publish (the schema's DockerInternalPort)."""

    port: int = Field(ge=1, le=65535)


class ExternalPort(Strict):
    """The port (and, once known, the addresses) it is reachable on from outside (the
    schema's DockerExternalPort); a client may ask for a particular port number."""

    port: int | None = Field(default=None, ge=1, le=65535)
    addresses: list[str] | None = Field(default=None, max_length=64)


class Port(Strict):
    internal: InternalPort
    external: ExternalPort | None = None
    protocol: Literal["TCP", "UDP", "HTTP", "HTTPS"] = "TCP"
    path: str | None = Field(default=None, max_length=2048)
    access: bool = True

    @field_validator("internal", "external", mode="before")
    @classmethod
    def _objects(cls, value: Any) -> Any:
        return _port_object(value)

    @property
    def internal_port(self) -> int:
        return self.internal.port

    @property
    def external_port(self) -> int | None:
        """The external port number asked for, if any."""
        return self.external.port if self.external else None


class Network(Strict):
    ports: list[Port] = Field(default_factory=list, max_length=64)


class DockerContainer(Component):
    CATEGORY = EXEC
    NAME = "docker-container"
    kind: Literal[kind_uri(EXEC, "docker-container")] = _kind(EXEC, "docker-container")  # type: ignore[valid-type]
    image: ContainerImage
    command: list[str] | None = Field(default=None, max_length=1024)
    entrypoint: str | list[str] | None = None
    environment: dict[str, str] | None = None
    privileged: bool = False
    network: Network | None = None


class SingularityContainer(Component):
    CATEGORY = EXEC
    NAME = "singularity-container"
    kind: Literal[kind_uri(EXEC, "singularity-container")] = _kind(EXEC, "singularity-container")  # type: ignore[valid-type]
    image: ContainerImage
    command: list[str] | None = Field(default=None, max_length=1024)
    environment: dict[str, str] | None = None


class JupyterNotebook(Component):
    CATEGORY = EXEC
    NAME = "jupyter-notebook"
    kind: Literal[kind_uri(EXEC, "jupyter-notebook")] = _kind(EXEC, "jupyter-notebook")  # type: ignore[valid-type]
    location: str = Field(min_length=1, max_length=2048)


# --- volumes and compute -----------------------------------------------------------------------


class SimpleVolumeMount(Component):
    CATEGORY = "volume"
    NAME = "simple-volume-mount"
    kind: Literal[kind_uri("volume", "simple-volume-mount")] = _kind(
        "volume", "simple-volume-mount"
    )  # type: ignore[valid-type]
    path: str = Field(min_length=1, max_length=1024, pattern=r"^/")
    mode: Literal["READONLY", "READWRITE"] = "READONLY"
    resource: str = Field(min_length=1, max_length=256)


class SimpleComputeResource(Component):
    CATEGORY = "compute"
    NAME = "simple-compute-resource"
    kind: Literal[kind_uri("compute", "simple-compute-resource")] = _kind(  # type: ignore[valid-type]
        "compute", "simple-compute-resource"
    )
    cores: MinMax | None = None
    memory: MinMax | None = None
    volumes: list[SimpleVolumeMount] = Field(default_factory=list, max_length=64)


# --- storage and data --------------------------------------------------------------------------


class SimpleStorageResource(Component):
    CATEGORY = "storage"
    NAME = "simple-storage-resource"
    kind: Literal[kind_uri("storage", "simple-storage-resource")] = _kind(  # type: ignore[valid-type]
        "storage", "simple-storage-resource"
    )
    size: MinMax | None = None


class DataComponent(Component):
    """Data resources name the storage they are staged into (by its meta.name)."""

    storage: str | None = Field(default=None, max_length=256)


class SimpleDataResource(DataComponent):
    CATEGORY = "data"
    NAME = "simple-data-resource"
    kind: Literal[kind_uri("data", "simple-data-resource")] = _kind("data", "simple-data-resource")  # type: ignore[valid-type]
    location: str = Field(min_length=1, max_length=4096)


class S3DataResource(DataComponent):
    CATEGORY = "data"
    NAME = "S3-data-resource"
    kind: Literal[kind_uri("data", "S3-data-resource")] = _kind("data", "S3-data-resource")  # type: ignore[valid-type]
    endpoint: str = Field(min_length=1, max_length=2048)
    template: str | None = Field(default=None, max_length=2048)
    bucket: str = Field(min_length=1, max_length=256)
    object: str = Field(min_length=1, max_length=4096)


ObjectType = Literal["FILE", "CONTAINER", "DATASET"]


class RucioDataResource(DataComponent):
    """Flat in this model; the schema's nested ``rucio: {endpoint, scope, object, type}`` block
    is flattened on input (``object`` -> ``objectname``, ``type`` -> ``objecttype``)."""

    CATEGORY = "data"
    NAME = "rucio-data-resource"
    kind: Literal[kind_uri("data", "rucio-data-resource")] = _kind("data", "rucio-data-resource")  # type: ignore[valid-type]
    endpoint: str | None = Field(default=None, max_length=2048)
    scope: str = Field(min_length=1, max_length=256)
    objectname: str = Field(min_length=1, max_length=1024)
    objecttype: ObjectType | None = None


class IvoaDataLink(Strict):
    """A row of DataLink metadata (the schema's IvoaDataLinkItem)."""

    ID: str | None = Field(default=None, max_length=4096)
    access_url: str | None = Field(default=None, max_length=4096)
    service_def: str | None = Field(default=None, max_length=1024)
    error_message: str | None = Field(default=None, max_length=4096)
    description: str | None = Field(default=None, max_length=4096)
    semantics: str | None = Field(default=None, max_length=1024)
    content_type: str | None = Field(default=None, max_length=256)
    content_length: int | None = Field(default=None, ge=0)
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
    ivoid: str = Field(min_length=1, max_length=2048)
    obscore: dict[str, Any] | None = None
    datalink: str | IvoaDataLink | None = Field(default=None, union_mode="left_to_right")

    @field_validator("datalink")
    @classmethod
    def _datalink_length(cls, value: str | IvoaDataLink | None) -> str | IvoaDataLink | None:
        if isinstance(value, str) and len(value) > 4096:
            raise ValueError("datalink URLs are at most 4096 characters")
        return value


class SkaoReplica(Strict):
    rsename: str = Field(min_length=1, max_length=256)
    dataurl: str = Field(min_length=1, max_length=4096)


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
    namespace: str = Field(min_length=1, max_length=256)
    objectname: str = Field(min_length=1, max_length=1024)
    objecttype: ObjectType | None = None
    datasize: int | None = Field(default=None, ge=0)
    checksum: SkaoChecksum | None = None
    replicas: list[SkaoReplica] = Field(default_factory=list, max_length=64)
    ivoid: str | None = Field(default=None, min_length=1, max_length=2048)
    obscore: dict[str, Any] | None = None
    datalink: str | IvoaDataLink | None = Field(default=None, union_mode="left_to_right")


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
