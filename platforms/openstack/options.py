"""The ``openstack`` platform's options, validated where the node's config is read, so that a
mistake is a ``check-config`` error naming the key rather than a failure at the first session."""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from broker_core.config import NAME_PATTERN, Duration
from broker_core.kinds.request import ExecutionRequest

from ..contract import PreparationOptions
from ..notebooks import NotebookOptions

FlavorPolicy = Literal["smallest-fitting", "private-per-session"]
# the executable kinds a server can be built for, by their kind name
KIND_NAMES = ("docker-container", "virtual-machine", "jupyter-notebook")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InlineAuth(Strict):
    """Keystone credentials given in the node's config (instead of a ``clouds.yaml`` cloud):
    a password, or an application credential (preferred: it is scoped and revocable)."""

    auth_url: str = Field(min_length=1, pattern=r"^https?://")
    username: str | None = Field(default=None, min_length=1)
    password: str | None = Field(default=None, min_length=1)
    project_name: str | None = Field(default=None, min_length=1)
    project_id: str | None = Field(default=None, min_length=1)
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    application_credential_id: str | None = Field(default=None, min_length=1)
    application_credential_secret: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_method(self) -> InlineAuth:
        app = self.application_credential_id or self.application_credential_secret
        password = self.username or self.password
        if app and password:
            raise ValueError(
                "auth takes a username and password or an application credential, not both"
            )
        if app and not (self.application_credential_id and self.application_credential_secret):
            raise ValueError(
                "an application credential needs both application_credential_id and "
                "application_credential_secret"
            )
        if not app:
            if not (self.username and self.password):
                raise ValueError(
                    "auth needs username and password (or application_credential_id and "
                    "application_credential_secret)"
                )
            if not (self.project_name or self.project_id):
                raise ValueError("password auth needs project_name or project_id")
        return self

    @property
    def auth_type(self) -> str:
        return "v3applicationcredential" if self.application_credential_id else "password"

    def keystone(self) -> dict[str, str]:
        """The ``auth`` section as keystoneauth takes it (unset keys left out)."""
        fields = self.model_dump(exclude_none=True)
        if self.application_credential_id:
            for key in ("user_domain_name", "project_domain_name"):
                fields.pop(key, None)
        return fields


class PoolSpec(Strict):
    """One pool: the compute hosts of a host aggregate, or of an availability zone (or, with
    neither, every compute host of the region)."""

    name: str = Field(pattern=NAME_PATTERN, description="the pool's name")
    aggregate: str | None = Field(default=None, min_length=1, description="a host aggregate")
    availability_zone: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_of(self) -> PoolSpec:
        if self.aggregate and self.availability_zone:
            raise ValueError(
                f"pool {self.name}: give an aggregate or an availability_zone, not both"
            )
        return self


class Images(Strict):
    """The Glance image (name or id) each executable kind boots; a kind without an image is
    refused. ``virtual-machine`` sessions name their image among ``vm_images``; notebooks
    boot ``notebook_image`` (an image with a notebook server and cloud-init)."""

    docker_container: str | None = Field(
        default=None, min_length=1, description="an image with a container runtime and cloud-init"
    )
    vm_images: dict[str, str] = Field(
        default_factory=dict,
        max_length=256,
        description="the images a virtual-machine session may ask for: its name -> Glance image",
    )
    vm_default: str | None = Field(
        default=None, min_length=1, description="the vm_images entry of a VM that names none"
    )

    @model_validator(mode="after")
    def _default_known(self) -> Images:
        if self.vm_default and self.vm_default not in self.vm_images:
            raise ValueError(
                f"images.vm_default {self.vm_default!r} is not one of images.vm_images "
                f"({', '.join(sorted(self.vm_images)) or 'none given'})"
            )
        return self


class SecurityDefaults(Strict):
    """Every session gets a security group of its own opening only its requested ports (and
    SSH for VM sessions), from ``ingress_cidrs``; egress is Neutron's default (all)."""

    ingress_cidrs: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"], min_length=1)
    ssh_port: int = Field(default=22, ge=1, le=65535)
    open_ssh_for_vms: bool = True

    @field_validator("ingress_cidrs")
    @classmethod
    def _cidrs(cls, cidrs: list[str]) -> list[str]:
        for cidr in cidrs:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR, e.g. 192.0.2.0/24") from None
        return cidrs


class BlazarOptions(Strict):
    """Blazar reservations: each accepted session gets a lease (an instance reservation of
    its flavor's size, or a host reservation of a whole host) for its booked window."""

    enabled: bool = False
    reservation: Literal["physical:host", "virtual:instance"] = "physical:host"
    activation: Duration = Field(
        default=timedelta(seconds=30),
        description="how long Blazar takes to start a lease (its manager's next passes): "
        "booked in front of the session, with its preparation",
    )
    active_timeout: Duration = Field(
        default=timedelta(seconds=60), description="how long a lease may take to become ACTIVE"
    )


class VolumeOptions(Strict):
    """Storage resources as Cinder volumes (instead of a bigger root disk): one volume per
    storage resource, made at preparation, attached at boot, formatted and mounted by
    cloud-init, deleted at release. The pools' ``storage`` then comes from Cinder's backend
    pools (their capacity, split evenly over the node's pools, times ``share``), capped by the
    project's ``gigabytes`` quota."""

    enabled: bool = False
    volume_type: str | None = Field(default=None, min_length=1, description="a Cinder type")
    availability_zone: str | None = Field(default=None, min_length=1)
    ready_timeout: Duration = Field(
        default=timedelta(minutes=2), description="how long a new volume may take to be available"
    )


class OpenStackOptions(PreparationOptions, NotebookOptions):
    cloud: str | None = Field(
        default=None, min_length=1, description="a cloud of clouds.yaml (OS_CLIENT_CONFIG_FILE)"
    )
    clouds_file: str | None = Field(
        default=None, description="the clouds.yaml to read; default: openstacksdk's search path"
    )
    auth: InlineAuth | None = Field(default=None, description="inline Keystone credentials")
    region: str | None = Field(default=None, min_length=1)
    interface: Literal["public", "internal", "admin"] = "public"
    pools: list[PoolSpec] = Field(
        default_factory=lambda: [PoolSpec(name="default")],
        min_length=1,
        max_length=64,
        description="one pool per aggregate or availability zone; default: every compute host",
    )
    share: float = Field(default=1.0, gt=0, le=1, description="the fraction of each pool booked")
    gpu_classes: list[str] = Field(
        default_factory=list,
        max_length=32,
        description="Placement resource classes counted as GPUs, beside PGPU and VGPU",
    )
    flavor_policy: FlavorPolicy = "smallest-fitting"
    root_disk: int = Field(default=1, ge=0, le=65536, description="GiB of a private flavor's disk")
    images: Images = Field(default_factory=Images)
    network: str | None = Field(
        default=None,
        min_length=1,
        description="the Neutron network (name or id) servers get a port on; none: no network",
    )
    floating_ip_pool: str | None = Field(
        default=None, min_length=1, description="an external network to give servers a floating IP"
    )
    security: SecurityDefaults = Field(default_factory=SecurityDefaults)
    volumes: VolumeOptions = Field(default_factory=VolumeOptions)
    blazar: BlazarOptions = Field(default_factory=BlazarOptions)
    key_name: str | None = Field(
        default=None, min_length=1, description="a Nova keypair added to every server (admins)"
    )
    boot_timeout: Duration = Field(
        default=timedelta(minutes=5), description="how long a server may take to become ACTIVE"
    )
    reread_interval: Duration = Field(
        default=timedelta(minutes=1), description="how often Placement, quotas and leases are read"
    )
    console_lines: int = Field(default=2000, ge=1, le=100000, description="console log kept")

    @field_validator("gpu_classes")
    @classmethod
    def _gpu_classes(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(r"CUSTOM_[A-Z0-9_]{1,248}|[A-Z][A-Z0-9_]{0,254}", name):
                raise ValueError(f"{name!r} is not a Placement resource class, e.g. CUSTOM_A100")
        return names

    @field_validator("clouds_file")
    @classmethod
    def _clouds_file(cls, path: str | None) -> str | None:
        if path is not None and not Path(path).expanduser().is_file():
            raise ValueError(f"clouds.yaml file {path} does not exist")
        return path

    @field_validator("boot_timeout", "reread_interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OpenStackOptions:
        if bool(self.cloud) == bool(self.auth):
            raise ValueError(
                "give either cloud (a clouds.yaml cloud name) or auth (inline credentials)"
            )
        if self.clouds_file and not self.cloud:
            raise ValueError("clouds_file is read for cloud: give the cloud's name too")
        names = [p.name for p in self.pools]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"pools names must be unique; repeated: {', '.join(repeated)}")
        whole = [p.name for p in self.pools if not (p.aggregate or p.availability_zone)]
        if whole and len(self.pools) > 1:
            raise ValueError(
                f"pool {whole[0]} has no aggregate or availability_zone (every host): "
                "with more than one pool, each names its aggregate or zone"
            )
        if self.floating_ip_pool and not self.network:
            raise ValueError("floating_ip_pool needs network: a floating IP is bound to a port")
        return self

    def preparation_estimate(self, request: ExecutionRequest) -> timedelta:
        """The preparation, and the lease's activation where the site has Blazar."""
        estimate = self.estimate(request)
        return estimate + self.blazar.activation if self.blazar.enabled else estimate

    def image_for(self, kind: str, vm_image: str | None = None) -> str | None:
        """The Glance image a session of an executable kind boots (None: refused)."""
        if kind == "docker-container":
            return self.images.docker_container
        if kind == "jupyter-notebook":
            return self.notebook_image
        if kind == "virtual-machine":
            wanted = vm_image or self.images.vm_default
            return self.images.vm_images.get(wanted) if wanted else None
        return None

    def pool(self, name: str) -> PoolSpec | None:
        return next((p for p in self.pools if p.name == name), None)
