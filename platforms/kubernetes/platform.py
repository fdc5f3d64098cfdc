"""The ``kubernetes`` platform: a share of a cluster booked per node group, each session a Job
with one pod in the platform's namespace.

Booking side: ``pools()`` reads the nodes (see ``cluster``); ``external_claims()`` re-reads
nodes, pods and quotas every ``reread_interval`` and takes off the pools what others' pods and
lost nodes hold; a pool that shrank below what was read at start-up is logged, and noted in the
messages of the sessions drawing on it.

Execution side, every object named ``ebroker-<session uuid>`` (claims
``ebroker-<session>-<storage uuid>``) and labelled ``ebroker.session`` and ``ebroker.platform``,
so every step finds what an earlier try made: ``prepare_storage`` makes a claim per storage
resource; ``stage_data`` checks what the init container will fetch; ``prepare_executable`` picks
the image (pinned to its digest when one is given); ``start`` makes the Job, the Service and the
Ingress; ``poll`` reads the pod (from the watch) and the Job; ``stop`` and ``release`` save the
output and delete the session's objects; ``extend`` moves the Job's ``activeDeadlineSeconds``;
``list_work``/``remove_work`` serve reconciliation.

A ``jupyter-notebook`` session (only where ``notebook_image`` is configured) is the same Job
running the site's notebook server, the notebook fetched by an init container, its token in a
Secret of the session's name (made by ``start``, removed by ``release``) and in the connector's
URL, never in a pod spec, and left out of the output the node keeps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from broker_core.config import ConfigError, PoolConfig
from broker_core.kinds.base import Component, Message, kind_uri, message
from broker_core.kinds.request import ExecutionRequest
from broker_core.staging.placement import Placement

from .. import drift, notebooks, remote_staging
from ..contract import (
    IDENTIFIED_DATA,
    WORK_PREFIX,
    Execution,
    ExternalClaim,
    Platform,
    PlatformError,
    WorkState,
    WorkStatus,
    platform_step,
    published_ports,
    uuid_of,
    work_name,
)
from . import cluster, manifests
from .client import WORK_KINDS, Kube
from .manifests import EXECUTABLES, MAIN, SESSION_LABEL
from .options import KubernetesOptions, NodeGroup
from .status import Seen, epoch, main_container_started, work_status
from .watcher import PodWatch

log = logging.getLogger(__name__)
RESOURCE_KINDS = frozenset(
    {
        kind_uri("compute", "simple-compute-resource"),
        kind_uri("storage", "simple-storage-resource"),
        kind_uri("data", "simple-data-resource"),
        kind_uri("volume", "simple-volume-mount"),
    }
)
OUTPUT_LOG = "output.log"
Obj = dict[str, Any]
NODE_PORTS = range(30000, 32768)


class ClusterUnreadable(ConfigError, PlatformError):
    """The pools cannot be read at start-up: the node stops with this message, not a trace."""


class KubernetesPlatform(Platform):
    options_model = KubernetesOptions
    options: KubernetesOptions

    def __init__(self, config: Any):
        super().__init__(config)
        self.kube = Kube(self.options)
        self._lock = threading.Lock()
        self._baseline: list[PoolConfig] | None = None
        self._read_at = 0.0
        self._claims_of: (
            tuple[list[cluster.GroupReading], dict[str, float], dict[str, float]] | None
        ) = None
        self._drift = drift.Drift(self.name)
        self._watch = PodWatch(self.kube, manifests.selector(self.name))

    # --- reading the cluster ----------------------------------------------------------------

    def _read(self) -> tuple[list[cluster.GroupReading], dict[str, float], dict[str, float]]:
        nodes, _ = self.kube.list("Node")
        pods, _ = self.kube.list(
            "Pod", fields="status.phase!=Succeeded,status.phase!=Failed", all_namespaces=True
        )
        quotas, _ = self.kube.list("ResourceQuota")
        readings = cluster.read_groups(nodes, pods, self.options, self.name)
        caps = cluster.quota_caps(quotas)
        in_namespace: dict[str, float] = {}
        for pod in pods:
            if (pod.get("metadata") or {}).get("namespace") == self.options.namespace and (
                cluster.foreign(pod, self.name)
            ):
                for cls, value in cluster.pod_requests(pod).items():
                    in_namespace[cls] = in_namespace.get(cls, 0) + value
        return readings, caps, in_namespace

    def _current(self) -> tuple[list[cluster.GroupReading], dict[str, float], dict[str, float]]:
        """The cluster as read at most ``reread_interval`` ago."""
        with self._lock:
            fresh = time.monotonic() - self._read_at < self.options.reread_interval.total_seconds()
            if self._claims_of is not None and fresh:
                return self._claims_of
        reading = self._read()
        with self._lock:
            self._claims_of, self._read_at = reading, time.monotonic()
            if self._baseline is not None:
                self._drift.update(
                    cluster.shrinkage(self._baseline, reading[0], self.options, reading[1])
                )
        return reading

    # --- booking side -----------------------------------------------------------------------

    @platform_step
    def pools(self) -> list[PoolConfig]:
        if self.config.pools:
            names = {g.name for g in self.options.node_groups}
            for pool in self.config.pools:
                if pool.name not in names:
                    raise PlatformError(
                        f"platform {self.name}: pool {pool.name!r} is not one "
                        f"of node_groups ({', '.join(sorted(names))})"
                    )
            groups = {g.name: g for g in self.options.node_groups}
            for pool in self.config.pools:
                missing = [
                    c for c in ("gpus", "fpgas")
                    if c in pool.inventories and c not in groups[pool.name].devices
                ]  # fmt: skip
                if missing:
                    raise PlatformError(
                        f"platform {self.name}: pool {pool.name!r} has {' and '.join(missing)} "
                        f"but node group {pool.name!r} names no devices for them (devices: "
                        "{gpus: nvidia.com/gpu, fpgas: <resource>})"
                    )
            # a pool given in the config takes its node group's traits unless it has its own
            configured = [
                p if p.traits else p.model_copy(update={"traits": groups[p.name].traits})
                for p in self.config.pools
            ]
            self._baseline = list(configured)
            return configured
        try:
            readings, caps, _ = self._read()
        except PlatformError as exc:
            raise ClusterUnreadable(
                f"platform {self.name}: cannot read the cluster's nodes, pods and quotas: {exc}"
            ) from None
        pools = [cluster.pool_config(r, self.options, caps) for r in readings]
        for reading in readings:
            if reading.left_out:
                log.warning("platform %s: %s", self.name, cluster.reason(reading))
        self._baseline = pools
        return pools

    def accepted_kinds(self) -> frozenset[str]:
        """The kinds it runs; jupyter-notebook only where the site configures its image."""
        kinds = frozenset(EXECUTABLES) | RESOURCE_KINDS | IDENTIFIED_DATA
        return kinds if self.options.notebook_image else kinds - {notebooks.NOTEBOOK}

    def validate(self, request: ExecutionRequest) -> list[Message]:
        messages = super().validate(request)
        if not self.options.allow_privileged:
            messages += self.refuse_privileged(request)
        messages += self._refuse_notebook(request)
        messages += remote_staging.request_messages(self.name, request)
        seen: set[tuple[int, str]] = set()
        for port in published_ports(request):
            external = port.external_port
            if external is None:
                continue
            if self.options.service_type == "NodePort" and external not in NODE_PORTS:
                messages.append(
                    message(
                        "external port {port} is outside the cluster's node ports (30000-32767)",
                        level="WARN",
                        port=external,
                    )
                )
            key = (external, "UDP" if port.protocol.upper() == "UDP" else "TCP")
            if key in seen:
                messages.append(
                    message("external port {port} is requested twice", level="WARN", port=external)
                )
            seen.add(key)
        return messages

    def data_refusals(self, placements: Sequence[Placement | None]) -> list[Message]:
        """Identified data is fetched by the pod: a mapping to the node's files is refused."""
        return remote_staging.placement_messages(self.name, placements)

    def _refuse_notebook(self, request: ExecutionRequest) -> list[Message]:
        executable = request.executable
        if not notebooks.is_notebook(executable):
            return []
        if not self.options.notebook_image:
            return [
                message(
                    "platform {platform} serves no Jupyter notebooks: the site has configured "
                    "no notebook_image for it",
                    level="WARN",
                    platform=self.name,
                )
            ]
        location = (getattr(executable, "location", None) or "").strip()
        if location and urlsplit(location).scheme not in ("http", "https"):
            return [
                message(
                    "platform {platform} fetches notebooks over http(s) only, not {location}",
                    level="WARN",
                    platform=self.name,
                    location=location[:200],
                )
            ]
        return []

    def preparation_estimate(self, request: ExecutionRequest) -> timedelta:
        """As for any container, and for a notebook its image and the notebook's fetch."""
        estimate = super().preparation_estimate(request)
        if notebooks.is_notebook(request.executable):
            estimate += self.options.image_pull + self.options.data_staging
        return estimate

    @platform_step
    def external_claims(self, start: int, end: int) -> list[ExternalClaim]:
        if self._baseline is None:
            self.pools()
        readings, caps, in_namespace = self._current()
        assert self._baseline is not None
        return cluster.claims(
            self._baseline, readings, self.options, caps, in_namespace, start, end
        )

    # --- execution side ---------------------------------------------------------------------

    def _group(self, execution: Execution) -> NodeGroup:
        for pool in execution.pools:
            group = self.options.group(pool)
            if group is not None:
                return group
        return self.options.node_groups[0]

    def _note_pool(self, execution: Execution) -> None:
        """A note, once per change, when a pool the session draws on has shrunk."""
        if self._baseline is not None:
            try:
                self._current()  # re-read the cluster when reread_interval has passed
            except PlatformError as exc:  # reading capacity never fails a session's step
                log.warning("platform %s: cannot re-read the cluster: %s", self.name, exc)
        self._drift.note(execution)

    @platform_step
    def prepare_storage(self, execution: Execution, storage: Component) -> None:
        manifest = manifests.pvc_manifest(execution, storage, self.options, self.name)
        _, made = self.kube.create(manifest)
        size = manifest["spec"]["resources"]["requests"]["storage"]
        where = self.options.storage_class or "the default storage class"
        if made:
            execution.notes.append(f"claim {manifest['metadata']['name']} made ({size} in {where})")

    @platform_step
    def stage_data(self, execution: Execution, data: Component) -> None:
        """Data is fetched by an init container of the session's pod: here its location is
        judged by the staging rules and its address pinned (``remote_staging``), and its
        storage checked, so that a bad one fails before the booked start."""
        remote_staging.prepare(execution, data)
        if all(uuid_of(d) in execution.state[remote_staging.STATE_KEY] for d in execution.data):
            manifests.stager_containers(execution, self.options)

    @platform_step
    def prepare_executable(self, execution: Execution) -> None:
        """Choose the image (the cluster pulls it when the pod starts) and build the main
        container once, so that what cannot run fails before the booked start."""
        kind = manifests.executable_kind(execution)
        if notebooks.is_notebook(execution.executable):
            manifests.notebook_location(execution)  # http(s) only
            remote_staging.prepare(execution, execution.executable, what="notebook")  # type: ignore[arg-type]
        ref = kind.image(execution, self.options)
        kind.container(execution, self.options, ref)
        kind.init_containers(execution, self.options)
        execution.state["image"] = ref
        execution.notes.append(f"the cluster pulls image {ref} ({self.options.pull_policy})")
        if notebooks.is_notebook(execution.executable):
            notebooks.token_of(execution)

    @platform_step
    def start(self, execution: Execution) -> None:
        """Make the executable's own objects (a notebook's Secret), the Job, Service and
        Ingress; those already there are kept (a repeated start), and a notebook's token is
        the one its Secret holds."""
        if "image" not in execution.state:
            self.prepare_executable(execution)
        remote_staging.prepare_missing(execution)
        now = int(time.time())
        job = manifests.job_manifest(
            execution,
            self.options,
            self.name,
            execution.state["image"],
            self._group(execution),
            now,
        )
        made = []
        for manifest in (
            *manifests.executable_kind(execution).objects(execution, self.options, self.name),
            job,
            manifests.service_manifest(execution, self.options, self.name),
            manifests.ingress_manifest(execution, self.options, self.name),
        ):
            if manifest is None:
                continue
            obj, new = self.kube.create(manifest)
            if manifest["kind"] == "Job":
                execution.state["job_uid"] = obj["metadata"].get("uid")
            if manifest["kind"] == "Secret" and not new:
                kept = manifests.token_from_secret(obj)
                if kept:  # the running server's token, whatever this start's state held
                    execution.state[notebooks.TOKEN_STATE] = kept
            if new:
                made.append(manifests.describe(manifest))
        if made:
            execution.notes.append(f"made {', '.join(made)} in namespace {self.options.namespace}")
        self._note_pool(execution)

    def _pod(self, execution: Execution) -> Obj | None:
        if self.options.watch:
            self._watch.ensure_running()
            live, pod = self._watch.pod(execution.session)
            if live:
                return pod
        pods, _ = self.kube.list("Pod", manifests.selector(self.name, execution.session))
        pods = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
        return pods[-1] if pods else None

    def _seen(self, execution: Execution) -> Seen:
        pod = self._pod(execution)
        phase = ((pod or {}).get("status") or {}).get("phase")
        job = None if phase == "Running" else self.kube.get("Job", execution.name)
        events: list[Obj] = []
        unscheduled = phase == "Pending" and any(
            c.get("type") == "PodScheduled" and c.get("status") == "False"
            for c in ((pod or {}).get("status") or {}).get("conditions") or []
        )
        if unscheduled or (pod is None and job is not None):
            about = (pod or job or {}).get("metadata") or {}
            events, _ = self.kube.list("Event", fields=f"involvedObject.name={about.get('name')}")
        return Seen(
            job,
            pod,
            events,
            int(time.time()),
            execution.start_at,
            int(self.options.pending_timeout.total_seconds()),
            execution.state.get("stopped"),
        )

    @platform_step
    def poll(self, execution: Execution) -> WorkStatus:
        seen = self._seen(execution)
        status = work_status(seen)
        self._note_pool(execution)
        if status.state in (WorkState.SUCCEEDED, WorkState.FAILED):
            self._save_logs(execution, seen.pod)
        return status

    @platform_step
    def connectors(self, execution: Execution) -> list[dict[str, Any]]:
        if not manifests.ports(execution):
            return []
        service = self.kube.get("Service", execution.name)
        ingress = self.kube.get("Ingress", execution.name) if self.options.ingress else None
        return manifests.connectors(execution, self.options, service, ingress)

    @platform_step
    def stop(self, execution: Execution, reason: str) -> None:
        """Save the output, then delete the Job and its pod (nothing left running)."""
        pod = self._pod(execution)
        self._save_logs(execution, pod)
        job = self.kube.get("Job", execution.name)
        if job is not None and not _finished(job):
            execution.state.setdefault("stopped", reason)
        self.kube.delete("Job", execution.name)
        for found in self._objects("Pod", execution.session):
            self.kube.delete("Pod", found["metadata"]["name"])

    @platform_step
    def release(self, execution: Execution) -> None:
        """Delete everything of the session (Job, pod, Service, Ingress, claims); the
        workdir with the output stays."""
        self._save_logs(execution, self._pod(execution))
        self._remove(execution.session)

    @platform_step
    def extend(self, execution: Execution, end_at: int) -> None:
        job = self.kube.get("Job", execution.name)
        if job is None:
            return
        status, metadata = job.get("status") or {}, job.get("metadata") or {}
        started = epoch(status.get("startTime")) or epoch(metadata.get("creationTimestamp"))
        deadline = max(end_at - (started or int(time.time())), 1)
        self.kube.patch("Job", execution.name, {"spec": {"activeDeadlineSeconds": deadline}})
        execution.notes.append(f"Job {execution.name} may now run {deadline} s")

    @platform_step
    def logs(self, execution: Execution) -> str | None:
        self._save_logs(execution, self._pod(execution))
        return super().logs(execution)

    @platform_step
    def list_work(self) -> set[str] | None:
        found = set()
        for kind in WORK_KINDS:
            for obj in self._objects(kind):
                session = (obj["metadata"].get("labels") or {}).get(SESSION_LABEL)
                if session:
                    found.add(work_name(session))
        return found

    @platform_step
    def remove_work(self, name: str) -> None:
        if not name.startswith(WORK_PREFIX):
            raise PlatformError(f"refusing to remove {name!r}: not ebroker's work")
        self._remove(name[len(WORK_PREFIX) :])

    # --- helpers ----------------------------------------------------------------------------

    def _objects(self, kind: str, session: str | None = None) -> list[Obj]:
        """This platform's objects of a kind (of one session), leaving out those going away."""
        items, _ = self.kube.list(kind, manifests.selector(self.name, session))
        return [o for o in items if not (o.get("metadata") or {}).get("deletionTimestamp")]

    def _remove(self, session: str) -> None:
        for kind in WORK_KINDS:
            for obj in self._objects(kind, session):
                self.kube.delete(kind, obj["metadata"]["name"])

    def _save_logs(self, execution: Execution, pod: Obj | None) -> None:
        """The main container's output into ``workdir/logs/output.log``, where it outlives the
        pod; a notebook's token is left out (a server may log a URL that carries it)."""
        if pod is None or not main_container_started(pod):
            return
        text = self.kube.log(pod["metadata"]["name"], MAIN)
        if text is None:
            return
        logs = execution.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        partial = logs / f".{OUTPUT_LOG}.partial"
        partial.write_text(notebooks.scrub(text, execution.state.get(notebooks.TOKEN_STATE)))
        partial.replace(Path(logs / OUTPUT_LOG))


def _finished(job: Obj) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )
