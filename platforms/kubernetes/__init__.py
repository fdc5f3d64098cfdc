"""The ``kubernetes`` platform: a share of a cluster booked per node group, sessions run as
Jobs (see ``platform``), their objects built by pure functions (``manifests``)."""

from .options import KubernetesOptions
from .platform import KubernetesPlatform

__all__ = ["KubernetesOptions", "KubernetesPlatform"]
