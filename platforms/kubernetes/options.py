"""The ``kubernetes`` platform's options, validated where the node's config is read, so that a
mistake is a ``check-config`` error naming the key rather than a failure at the first session."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from broker_core.config import NAME_PATTERN, Duration, Trait

from ..contract import PreparationOptions
from ..notebooks import NotebookOptions

# label keys (an optional DNS-subdomain prefix and a name) and values, as the API checks them
LABEL_NAME = r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
LABEL_KEY = re.compile(rf"^([a-z0-9]([a-z0-9.-]{{0,251}}[a-z0-9])?/)?{LABEL_NAME}$")
LABEL_VALUE = re.compile(rf"^({LABEL_NAME})?$")
DNS_LABEL = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$"
# an extended resource a device plugin advertises (nvidia.com/gpu, amd.com/gpu, xilinx.com/...)
EXTENDED_RESOURCE = rf"^[a-z0-9]([a-z0-9.-]{{0,251}}[a-z0-9])?/{LABEL_NAME}$"
DEFAULT_DEVICES = {"gpus": "nvidia.com/gpu"}
PULL_POLICIES = {"missing": "IfNotPresent", "always": "Always", "never": "Never"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Toleration(Strict):
    """A pod toleration, as the Kubernetes API writes it."""

    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        if self.key is None and self.operator != "Exists":
            raise ValueError("a toleration without a key must have operator Exists")
        if self.tolerationSeconds is not None and self.effect != "NoExecute":
            raise ValueError("tolerationSeconds applies to effect NoExecute only")
        return self


def _labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        if not LABEL_KEY.match(key):
            raise ValueError(f"{key!r} is not a Kubernetes label key")
        if not LABEL_VALUE.match(value):
            raise ValueError(f"{value!r} (label {key}) is not a Kubernetes label value")
    return labels


class NodeGroup(Strict):
    """One pool: the nodes carrying all of ``selector``'s labels; its pods get the same labels
    as a node selector, and ``tolerations`` for the taints of those nodes."""

    name: str = Field(pattern=NAME_PATTERN, description="the pool's name")
    selector: dict[str, str] = Field(default_factory=dict, description="node labels")
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    devices: dict[Literal["gpus", "fpgas"], Annotated[str, Field(pattern=EXTENDED_RESOURCE)]] = (
        Field(
            default_factory=lambda: dict(DEFAULT_DEVICES),
            description="the extended resource each accelerator class is counted and requested "
            "as, e.g. {gpus: amd.com/gpu}; default {gpus: nvidia.com/gpu}",
        )
    )
    traits: list[Trait] = Field(
        default_factory=list,
        max_length=64,
        description="the pool's traits (GPU_A100, GPU_MEM_80G): what its devices are, for "
        "requests naming a model or a memory; select the nodes that have them with selector, "
        "e.g. {nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB}",
    )

    _selector = field_validator("selector")(_labels)


class IngressOptions(Strict):
    """An Ingress for the sessions' HTTP ports: a host per session (``host`` with
    ``{session}`` in it), or one host with a path per session under ``path_prefix``."""

    class_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN)
    host: str = Field(min_length=1, max_length=253, description="e.g. {session}.apps.example.org")
    path_prefix: str = Field(default="/", max_length=256)
    tls_secret: str | None = Field(default=None, pattern=DNS_SUBDOMAIN)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("host")
    @classmethod
    def _host(cls, host: str) -> str:
        sample = host.replace("{session}", "ebroker-0")
        if "{" in sample or "}" in sample:
            raise ValueError("the only placeholder of ingress.host is {session}")
        if not re.fullmatch(r"(\*\.)?[a-z0-9]([a-z0-9.-]*[a-z0-9])?", sample):
            raise ValueError(f"{host!r} is not a DNS host name (lower case, no port)")
        return host

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if not prefix.startswith("/") or any(c in prefix for c in " ?#{}"):
            raise ValueError("path_prefix must be an absolute URL path, e.g. /sessions")
        return prefix

    @property
    def per_session_host(self) -> bool:
        return "{session}" in self.host


class SecurityDefaults(Strict):
    """What every session's pod runs as: by default what the ``restricted`` Pod Security
    Standard admits."""

    run_as_user: int = Field(default=1000, ge=1)
    run_as_group: int = Field(default=1000, ge=0)
    fs_group: int | None = Field(default=1000, ge=0)
    read_only_root_filesystem: bool = False


class KubernetesOptions(PreparationOptions, NotebookOptions):
    """The platform's options; the ``notebook_*`` ones (``NotebookOptions``) say which image
    serves ``jupyter-notebook`` sessions, which must run as a non-root user
    (``security.run_as_user``)."""

    kubeconfig: str | None = Field(
        default=None, description="a kubeconfig file; default: ~/.kube/config or in-cluster"
    )
    in_cluster: bool = Field(default=False, description="use the pod's service account")
    context: str | None = Field(default=None, min_length=1, description="a kubeconfig context")
    namespace: str = Field(default="ebroker", pattern=DNS_LABEL)
    node_groups: list[NodeGroup] = Field(
        default_factory=lambda: [NodeGroup(name="default")],
        min_length=1,
        max_length=64,
        description="one pool per group; default: one pool of every node",
    )
    share: float = Field(default=1.0, gt=0, le=1, description="fraction of each group booked")
    storage_class: str | None = Field(default=None, pattern=DNS_SUBDOMAIN)
    storage_access_mode: Literal["ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"] = (
        "ReadWriteOnce"
    )
    storage_total: int | None = Field(
        default=None, ge=1, description="GiB per pool; default: the nodes' ephemeral storage"
    )
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    connector_host: str | None = Field(
        default=None, description="the host in NodePort connectors (a node's address)"
    )
    ingress: IngressOptions | None = None
    pull: Literal["missing", "always", "never"] = "missing"
    image_pull_secrets: list[str] = Field(default_factory=list, max_length=16)
    stager_image: str = Field(
        default="docker.io/curlimages/curl:8.11.1",
        min_length=1,
        description="the init container image that downloads data resources (sh and curl)",
    )
    security: SecurityDefaults = Field(default_factory=SecurityDefaults)
    allow_privileged: bool = False
    service_account: str | None = Field(default=None, pattern=DNS_SUBDOMAIN)
    termination_grace: int = Field(default=10, ge=0, le=3600, description="seconds to stop")
    pending_timeout: Duration = Field(
        default=timedelta(minutes=2),
        description="how long a pod may stay unscheduled after the booked start",
    )
    reread_interval: Duration = Field(
        default=timedelta(minutes=1), description="how often nodes, pods and quotas are re-read"
    )
    watch: bool = Field(default=True, description="watch the sessions' pods instead of polling")
    request_timeout: float = Field(default=30, gt=0, le=600, description="seconds per API call")

    @field_validator("kubeconfig")
    @classmethod
    def _kubeconfig(cls, path: str | None) -> str | None:
        if path is not None and not Path(path).expanduser().is_file():
            raise ValueError(f"kubeconfig file {path} does not exist")
        return path

    @field_validator("image_pull_secrets")
    @classmethod
    def _secrets(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(DNS_SUBDOMAIN, name):
                raise ValueError(f"{name!r} is not a Secret name")
        return names

    @field_validator("pending_timeout", "reread_interval")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> KubernetesOptions:
        if self.in_cluster and (self.kubeconfig or self.context):
            raise ValueError(
                "in_cluster uses the pod's service account: give no kubeconfig or context with it"
            )
        names = [g.name for g in self.node_groups]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"node_groups names must be unique; repeated: {', '.join(repeated)}")
        if self.service_type == "NodePort" and not self.connector_host:
            raise ValueError(
                "service_type NodePort needs connector_host, the node address "
                "users reach the ports on"
            )
        return self

    @property
    def pull_policy(self) -> str:
        return PULL_POLICIES[self.pull]

    def group(self, pool: str) -> NodeGroup | None:
        return next((g for g in self.node_groups if g.name == pool), None)
