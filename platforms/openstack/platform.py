"""The ``openstack`` platform: a share of a cloud booked per host aggregate or availability zone,
each session one Nova server.

Booking side: ``pools()`` reads Placement (see ``cluster``); ``external_claims()`` re-reads
Placement, the project's limits and Blazar's leases every ``reread_interval`` and takes off the
pools what others' servers, lost hosts, the quota and others' leases hold; a pool that shrank
below what was read at start-up is logged, and noted in the messages of the sessions drawing on
it.

Execution side, everything named ``ebroker-<session uuid>`` and the server carrying metadata
``ebroker.session`` and ``ebroker.platform``, so every step finds what an earlier try made:
``reserve`` makes the Blazar lease (where enabled); ``stage_data`` judges each data resource's
location by the staging rules and pins its address, for cloud-init to fetch before the work
(``remote_staging``); storage is part of the server's root disk; ``prepare_executable`` finds
the image, chooses or makes the flavor, finds the network and makes the security group (for a
notebook, fetches the notebook within the staging rules); ``start`` boots the server with the kind's
cloud-init user data (and the lease's reservation hint); ``poll`` reads the server: BUILD is
pending, ACTIVE running until the booked window ends (a VM serves its window: that is its
completion), SHUTOFF the guest's work ended (its exit code from the console), ERROR a failure
with Nova's fault message; ``stop`` and ``release`` keep the console log as the session's log
and delete the server, then its security group, private flavor, floating IP and lease;
``extend`` moves the lease's end; ``list_work``/``remove_work`` serve reconciliation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

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
    executable_ports,
    platform_step,
    uuid_of,
    work_name,
)
from . import builders, cluster
from .client import Cloud
from .kinds import VIRTUAL_MACHINE, VirtualMachine
from .options import OpenStackOptions, PoolSpec

log = logging.getLogger(__name__)
DOCKER = kind_uri("executable", "docker-container")
RESOURCE_KINDS = frozenset(
    {
        kind_uri("compute", "simple-compute-resource"),
        kind_uri("storage", "simple-storage-resource"),
        kind_uri("volume", "simple-volume-mount"),
        kind_uri("data", "simple-data-resource"),
    }
)
OUTPUT_LOG = "output.log"
DELETE_WAIT = 120  # seconds a release waits for its server to be gone
FLAVOR_MARK = "ebroker session "
PENDING_STATES = ("BUILD", "REBUILD", "MIGRATING", "RESIZE", "VERIFY_RESIZE", "HARD_REBOOT")
GONE_STATES = ("DELETED", "SOFT_DELETED", "SHELVED_OFFLOADED")


class CloudUnreadable(ConfigError, PlatformError):
    """The pools cannot be read at start-up: the node stops with this message, not a trace."""


@dataclass
class Reading:
    """The cloud as read at one moment."""

    pools: list[cluster.PoolReading]
    caps: dict[str, float]
    quota: cluster.Quota
    leases: list[cluster.Lease]
    host_sizes: dict[str, dict[str, float]]


class OpenStackPlatform(Platform):
    options_model = OpenStackOptions
    options: OpenStackOptions

    def __init__(self, config: Any):
        super().__init__(config)
        self.cloud = Cloud(self.options, self.name)
        self._lock = threading.Lock()
        self._baseline: list[PoolConfig] | None = None
        self._reading: Reading | None = None
        self._read_at = 0.0
        self._drift = drift.Drift(self.name)

    # --- reading the cloud ------------------------------------------------------------------

    def _read(self) -> Reading:
        providers = self.cloud.providers()
        aggregates = self.cloud.aggregates()
        ours = {s.id for s in self.cloud.servers()}
        gpus = tuple(self.options.gpu_classes)
        pools = cluster.read_pools(providers, aggregates, ours, self.options, gpus)
        quota = self.cloud.quota()
        if self.options.volumes.enabled:
            pools, quota = cluster.with_volumes(pools, self.cloud.volume_capacity(), quota)
        leases = self.cloud.leases() if self.options.blazar.enabled else []
        return Reading(
            pools, cluster.quota_caps(quota), quota, leases, cluster.host_sizes(providers, gpus)
        )

    def _current(self) -> Reading:
        """The cloud as read at most ``reread_interval`` ago."""
        with self._lock:
            fresh = time.monotonic() - self._read_at < self.options.reread_interval.total_seconds()
            if self._reading is not None and fresh:
                return self._reading
        reading = self._read()
        with self._lock:
            self._reading, self._read_at = reading, time.monotonic()
            if self._baseline is not None:
                self._drift.update(
                    cluster.shrinkage(self._baseline, reading.pools, self.options, reading.caps)
                )
        return reading

    # --- booking side -----------------------------------------------------------------------

    @platform_step
    def pools(self) -> list[PoolConfig]:
        if self.config.pools:
            names = {p.name for p in self.options.pools}
            for pool in self.config.pools:
                if pool.name not in names:
                    raise PlatformError(
                        f"platform {self.name}: pool {pool.name!r} is not one "
                        f"of the options' pools ({', '.join(sorted(names))})"
                    )
            self._baseline = list(self.config.pools)
            return list(self.config.pools)
        try:
            reading = self._read()
        except Exception as exc:
            raise CloudUnreadable(
                f"platform {self.name}: cannot read the cloud's Placement, aggregates and "
                f"limits: {type(exc).__name__}: {exc}"
            ) from None
        for pool in reading.pools:
            if not pool.hosts:
                log.warning("platform %s: pool %s has no compute hosts", self.name, pool.name)
        pools = [cluster.pool_config(r, self.options, reading.caps) for r in reading.pools]
        with self._lock:
            self._reading, self._read_at, self._baseline = reading, time.monotonic(), pools
        return pools

    def accepted_kinds(self) -> frozenset[str]:
        """The executable kinds the site has an image for, and compute and storage."""
        kinds = set(RESOURCE_KINDS) | IDENTIFIED_DATA
        if self.options.images.docker_container:
            kinds.add(DOCKER)
        if self.options.images.vm_images:
            kinds.add(VIRTUAL_MACHINE)
        if self.options.notebook_image:
            kinds.add(notebooks.NOTEBOOK)
        return frozenset(kinds)

    def validate(self, request: ExecutionRequest) -> list[Message]:
        messages = super().validate(request)
        messages += self.refuse_accelerators(request)
        executable = request.executable
        if isinstance(executable, VirtualMachine):
            wanted = executable.image_name or self.options.images.vm_default
            if wanted is None:
                messages.append(
                    message(
                        "platform {platform} needs the VM's image, one of {images}",
                        level="WARN",
                        platform=self.name,
                        images=", ".join(sorted(self.options.images.vm_images)),
                    )
                )
            elif wanted not in self.options.images.vm_images:
                messages.append(
                    message(
                        "platform {platform} has no VM image {image}; it has {images}",
                        level="WARN",
                        platform=self.name,
                        image=wanted,
                        images=", ".join(sorted(self.options.images.vm_images)) or "none",
                    )
                )
        ports = executable_ports(executable) if executable is not None else []
        published = [p for p in ports if p.access]
        if (published or notebooks.is_notebook(executable)) and not self.options.network:
            messages.append(
                message(
                    "platform {platform} boots servers without a network: it publishes no ports",
                    level="WARN",
                    platform=self.name,
                )
            )
        seen: set[tuple[int, str]] = set()
        for port in published:
            try:
                number = builders.server_port(port)
            except ValueError:
                continue
            key = (number, "udp" if port.protocol.upper() == "UDP" else "tcp")
            if key in seen:
                messages.append(
                    message("port {port} is published twice", level="WARN", port=number)
                )
            seen.add(key)
        messages += remote_staging.request_messages(self.name, request)
        return messages

    def data_refusals(self, placements: Sequence[Placement | None]) -> list[Message]:
        """Identified data is fetched by the server: a mapping to the node's files is refused."""
        return remote_staging.placement_messages(self.name, placements)

    def preparation_estimate(self, request: ExecutionRequest) -> timedelta:
        return self.options.preparation_estimate(request)

    @platform_step
    def external_claims(self, start: int, end: int) -> list[ExternalClaim]:
        if self._baseline is None:
            self.pools()
        reading = self._current()
        assert self._baseline is not None
        return cluster.claims(
            self._baseline,
            reading.pools,
            self.options,
            reading.caps,
            reading.quota,
            reading.leases,
            reading.host_sizes,
            start,
            end,
        )

    # --- execution side ---------------------------------------------------------------------

    def _spec(self, execution: Execution) -> PoolSpec:
        for pool in execution.pools:
            spec = self.options.pool(pool)
            if spec is not None:
                return spec
        return self.options.pools[0]

    def _note_pool(self, execution: Execution) -> None:
        """A note, once per change, when a pool the session draws on has shrunk."""
        if self._baseline is not None:
            try:
                self._current()
            except Exception as exc:  # reading capacity never fails a session's step
                log.warning("platform %s: cannot re-read the cloud: %s", self.name, exc)
        self._drift.note(execution)

    @platform_step
    def reserve(self, execution: Execution) -> None:
        """A Blazar lease for the booked window, where the site has Blazar."""
        if not self.options.blazar.enabled or execution.state.get("lease_id"):
            return
        found = self._lease(execution.name)
        if found is None:
            hosts = None
            if self.options.blazar.reservation == "physical:host":
                reading = self._current()
                pool = next(
                    (p for p in reading.pools if p.name == self._spec(execution).name), None
                )
                hosts = pool.hosts if pool else None
            body = builders.lease_request(execution, self.options, int(time.time()), hosts)
            found = self.cloud.blazar("POST", "/leases", json=body)["lease"]
            execution.notes.append(
                f"Blazar lease {found['id']} made ({body['reservations'][0]['resource_type']}, "
                f"{body['start_date']} to {body['end_date']} UTC)"
            )
        execution.state["lease_id"] = found["id"]
        execution.state["reservation_id"] = found["reservations"][0]["id"]

    def _lease(self, name: str) -> dict[str, Any] | None:
        leases = self.cloud.blazar("GET", "/leases").get("leases") or []
        return next((lease for lease in leases if lease.get("name") == name), None)

    @platform_step
    def prepare_storage(self, execution: Execution, storage: Component) -> None:
        """A Cinder volume, where the site enables them (attached at boot, mounted by
        cloud-init); otherwise, and for a storage without a booked size (a data resource's
        own), part of the server's root disk (its flavor's size)."""
        label = storage.name or uuid_of(storage)
        if not self.options.volumes.enabled or builders.volume_size(execution, storage) == 0:
            execution.notes.append(f"storage {label} is part of the server's root disk")
            return
        conn = self.cloud.conn
        existing = [
            v
            for v in self.cloud.volumes(execution.session)
            if (v.metadata or {}).get(builders.VOLUME_KEY) == uuid_of(storage)
        ]
        if existing:
            volume = existing[0]
        else:
            body = builders.volume_request(execution, storage, self.options, self.name)
            volume = conn.block_storage.create_volume(**body)
            execution.notes.append(
                f"volume {volume.id} made for storage {label} ({body['size']} GiB)"
            )
        wait = self.options.volumes.ready_timeout.total_seconds()
        try:
            volume = conn.block_storage.wait_for_status(
                volume, status="available", failures=["error"], interval=1, wait=wait
            )
        except Exception as exc:
            raise PlatformError(
                f"volume {volume.id} of storage {label} is not available: {exc}"
            ) from None
        execution.state.setdefault("volumes", {})[uuid_of(storage)] = volume.id

    @platform_step
    def stage_data(self, execution: Execution, data: Component) -> None:
        """The server fetches its data itself, with cloud-init, before the work starts: here
        the location is judged by the staging rules and its address pinned, so that a refused
        one fails before the booked start."""
        remote_staging.prepare(execution, data)

    @platform_step
    def prepare_executable(self, execution: Execution) -> None:
        """Find the image, the flavor (or make the session's own), the network and the
        security group, so that what cannot boot fails before the booked start."""
        conn = self.cloud.conn
        kind = builders.kind_name(execution.executable)
        executable = execution.executable
        wanted = executable.image_name if isinstance(executable, VirtualMachine) else None
        image_name = self.options.image_for(kind, wanted)
        if image_name is None:
            raise PlatformError(f"platform {self.name} has no image for {kind} sessions")
        image = conn.image.find_image(image_name, ignore_missing=True)
        if image is None:
            raise PlatformError(f"image {image_name} is not in the cloud's image service")
        if image.status != "active":
            raise PlatformError(f"image {image_name} is {image.status}, not active")
        execution.state["image_id"] = image.id
        if kind == "jupyter-notebook":
            user = self.staging_user(execution)
            execution.notes += notebooks.fetch(execution, execution.staging, user)
            notebooks.token_of(execution)
        self._flavor(execution)
        if self.options.network:
            network = conn.network.find_network(self.options.network, ignore_missing=True)
            if network is None:
                raise PlatformError(f"network {self.options.network} is not in the cloud")
            execution.state["network_id"] = network.id
            self._security_group(execution)
        execution.notes.append(
            f"server {execution.name} will boot image {image_name} with flavor "
            f"{execution.state['flavor_name']}"
        )

    def _flavor(self, execution: Execution) -> None:
        conn = self.cloud.conn
        need = builders.flavor_spec(execution, self.options)
        if self.options.flavor_policy == "smallest-fitting":
            flavors = [
                builders.Flavor(
                    f.id, f.name, builders.FlavorSpec(f.vcpus, f.ram, f.disk), f.is_public
                )
                for f in conn.compute.flavors(details=True)
            ]
            chosen = builders.smallest_fitting(flavors, need)
            if chosen is None:
                raise PlatformError(
                    f"no flavor fits {need.vcpus} vCPUs, {need.ram} MiB RAM, {need.disk} GB disk"
                )
            execution.state.update(flavor_id=chosen.id, flavor_name=chosen.name, flavor_own=False)
            return
        body = builders.private_flavor(execution, self.options, self.name)
        flavor = conn.compute.find_flavor(execution.name, ignore_missing=True, is_public=None)
        if flavor is None:
            flavor = conn.compute.create_flavor(**body)
            execution.notes.append(
                f"flavor {execution.name} made ({need.vcpus} vCPUs, {need.ram} MiB, {need.disk} GB)"
            )
        project = conn.current_project_id
        if project:
            access = conn.compute.get_flavor_access(flavor)
            if project not in {a.get("tenant_id") for a in access}:
                conn.compute.flavor_add_tenant_access(flavor, project)
        execution.state.update(flavor_id=flavor.id, flavor_name=flavor.name, flavor_own=True)

    def _security_group(self, execution: Execution) -> None:
        conn = self.cloud.conn
        found = self.cloud.security_groups(execution.name)
        if found:
            group = found[0]
        else:
            group = conn.network.create_security_group(
                **builders.security_group(execution, self.name)
            )
        have = {
            (r.protocol, r.port_range_min, r.remote_ip_prefix)
            for r in conn.network.security_group_rules(security_group_id=group.id)
            if r.direction == "ingress"
        }
        for rule in builders.security_rules(execution, self.options, group.id):
            if (rule["protocol"], rule["port_range_min"], rule["remote_ip_prefix"]) not in have:
                conn.network.create_security_group_rule(**rule)
        execution.state["security_group_id"] = group.id

    def _reservation(self, execution: Execution) -> str | None:
        """The lease's reservation once the lease is ACTIVE (None without Blazar)."""
        lease_id = execution.state.get("lease_id")
        if not lease_id:
            return None
        deadline = time.monotonic() + self.options.blazar.active_timeout.total_seconds()
        while True:
            lease = self.cloud.blazar("GET", f"/leases/{lease_id}")["lease"]
            if lease["status"] == "ACTIVE":
                return str(lease["reservations"][0]["id"])
            if lease["status"] in ("ERROR", "TERMINATED") or time.monotonic() > deadline:
                raise PlatformError(f"Blazar lease {lease_id} is {lease['status']}, not ACTIVE")
            time.sleep(1)

    @platform_step
    def start(self, execution: Execution) -> None:
        """Boot the session's server; one already there is kept (a repeated start)."""
        if "flavor_id" not in execution.state:
            self.prepare_executable(execution)
        existing = self.cloud.servers(execution.session)
        if existing:
            execution.state["server_id"] = existing[0].id
            return
        reservation = self._reservation(execution)
        flavor_id = execution.state["flavor_id"]
        if reservation and self.options.blazar.reservation == "virtual:instance":
            flavor_id = reservation  # Blazar's flavor for the reserved instance
        files: dict[str, bytes] = {}
        if notebooks.is_notebook(execution.executable):
            folder = notebooks.notebook_dir(execution)
            files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
        remote_staging.prepare_missing(execution)
        volumes = [
            builders.Volume(storage, volume_id)
            for storage, volume_id in (execution.state.get("volumes") or {}).items()
        ]
        text = builders.user_data(
            execution,
            self.options,
            files,
            fetches=remote_staging.fetches(execution),
            rules=execution.staging,
            volumes=volumes,
        )
        body = builders.server_request(
            execution,
            self.options,
            self.name,
            flavor_id=flavor_id,
            image_id=execution.state["image_id"],
            network_id=execution.state.get("network_id"),
            security_group=execution.name if execution.state.get("security_group_id") else None,
            user_data_text=text,
            availability_zone=self._spec(execution).availability_zone,
            reservation=reservation,
            volumes=volumes,
        )
        server = self.cloud.conn.compute.create_server(**body)
        execution.state.update(server_id=server.id, booted_at=int(time.time()))
        execution.notes.append(f"server {execution.name} ({server.id}) is booting")
        self._note_pool(execution)

    def _server(self, execution: Execution) -> Any:
        server_id = execution.state.get("server_id")
        if server_id:
            server = self.cloud.conn.compute.find_server(server_id, ignore_missing=True)
            if server is not None:
                return server
        found = self.cloud.servers(execution.session)
        return found[0] if found else None

    @platform_step
    def poll(self, execution: Execution) -> WorkStatus:
        server = self._server(execution)
        status = self._status(execution, server)
        self._note_pool(execution)
        if status.state == WorkState.RUNNING and self.options.floating_ip_pool:
            self._floating_ip(execution, server)
        if status.state in (WorkState.SUCCEEDED, WorkState.FAILED):
            self._save_logs(execution, server)
        return status

    def _status(self, execution: Execution, server: Any) -> WorkStatus:
        now = int(time.time())
        if server is None or server.status in GONE_STATES:
            return WorkStatus(WorkState.MISSING, message=f"server {execution.name} is gone")
        state = server.status
        if state == "ERROR":
            fault = server.fault or {}
            text = fault.get("message") or "no fault recorded"
            return WorkStatus(WorkState.FAILED, message=f"server {execution.name} ERROR: {text}")
        if state in PENDING_STATES:
            booted = int(execution.state.get("booted_at") or now)
            limit = int(self.options.boot_timeout.total_seconds())
            if state == "BUILD" and now - booted > limit:
                return WorkStatus(
                    WorkState.FAILED, message=f"server {execution.name} still BUILD after {limit} s"
                )
            return WorkStatus(WorkState.PENDING, message=f"server {state}")
        if state == "SHUTOFF":
            console = self._console(server)
            failure = builders.staging_failure(console, execution)
            if failure is not None:
                return WorkStatus(WorkState.FAILED, message=failure)
            code = builders.exit_code(console)
            if code is None or code == 0:
                return WorkStatus(
                    WorkState.SUCCEEDED, exit_code=code, message="the server powered off"
                )
            return WorkStatus(
                WorkState.FAILED, exit_code=code, message=f"the work exited with code {code}"
            )
        if now >= execution.end_at:
            return WorkStatus(WorkState.SUCCEEDED, message="the server served its booked window")
        return WorkStatus(WorkState.RUNNING, message=f"server {state}")

    def _floating_ip(self, execution: Execution, server: Any) -> None:
        if execution.state.get("floating_ip_id"):
            return
        conn = self.cloud.conn
        pool = conn.network.find_network(self.options.floating_ip_pool, ignore_missing=True)
        if pool is None:
            raise PlatformError(f"floating IP pool {self.options.floating_ip_pool} is not found")
        ports = list(conn.network.ports(device_id=server.id))
        if not ports:
            return
        existing = list(conn.network.ips(port_id=ports[0].id))
        ip = (
            existing[0]
            if existing
            else conn.network.create_ip(
                floating_network_id=pool.id, port_id=ports[0].id, description=execution.name
            )
        )
        execution.state.update(floating_ip_id=ip.id, floating_ip=ip.floating_ip_address)
        execution.notes.append(f"floating IP {ip.floating_ip_address} for {execution.name}")

    @platform_step
    def connectors(self, execution: Execution) -> list[dict[str, Any]]:
        server = self._server(execution)
        if server is None:
            return []
        return builders.connectors(
            execution, self.options, server.addresses, execution.state.get("floating_ip")
        )

    @platform_step
    def stop(self, execution: Execution, reason: str) -> None:
        """Keep the console log, then delete the server (nothing left running)."""
        server = self._server(execution)
        if server is None:
            return
        self._save_logs(execution, server)
        self.cloud.conn.compute.delete_server(server, ignore_missing=True)
        execution.state.setdefault("stopped", reason)

    @platform_step
    def release(self, execution: Execution) -> None:
        """Delete everything of the session (server, floating IP, security group, private
        flavor, lease); the workdir with the console log stays."""
        server = self._server(execution)
        if server is not None:
            self._save_logs(execution, server)
        self._remove(execution.session)

    @platform_step
    def extend(self, execution: Execution, end_at: int) -> None:
        lease_id = execution.state.get("lease_id")
        if not lease_id:
            return
        end = builders.blazar_time(((end_at + 59) // 60) * 60)
        self.cloud.blazar("PUT", f"/leases/{lease_id}", json={"end_date": end})
        execution.notes.append(f"Blazar lease {lease_id} now ends {end} UTC")

    @platform_step
    def logs(self, execution: Execution) -> str | None:
        server = self._server(execution)
        if server is not None:
            self._save_logs(execution, server)
        return super().logs(execution)

    @platform_step
    def list_work(self) -> set[str] | None:
        found = {work_name(s.metadata[builders.SESSION_KEY]) for s in self.cloud.servers()}
        found |= {f.name for f in self._own_flavors()}
        found |= {g.name for g in self.cloud.security_groups()}
        if self.options.floating_ip_pool:
            found |= {ip.description for ip in self._own_ips()}
        if self.options.volumes.enabled:
            found |= {work_name(v.metadata[builders.SESSION_KEY]) for v in self.cloud.volumes()}
        if self.options.blazar.enabled:
            leases = self.cloud.blazar("GET", "/leases").get("leases") or []
            found |= {x["name"] for x in leases if (x.get("name") or "").startswith(WORK_PREFIX)}
        return found

    @platform_step
    def remove_work(self, name: str) -> None:
        if not name.startswith(WORK_PREFIX):
            raise PlatformError(f"refusing to remove {name!r}: not ebroker's work")
        self._remove(name[len(WORK_PREFIX) :])

    # --- helpers ----------------------------------------------------------------------------

    def _own_flavors(self, name: str | None = None) -> list[Any]:
        mark = f" of platform {self.name}"
        return [
            f
            for f in self.cloud.flavors()
            if f.name.startswith(WORK_PREFIX)
            and (name is None or f.name == name)
            and (f.description or "").startswith(FLAVOR_MARK)
            and (f.description or "").endswith(mark)
        ]

    def _remove_volumes(self, session: str) -> None:
        """Delete the session's volumes once their server has let them go (a detach follows
        the server's deletion)."""
        storage = self.cloud.conn.block_storage
        for volume in self.cloud.volumes(session):
            if volume.status == "in-use":
                storage.wait_for_status(
                    volume, status="available", failures=["error"], interval=1, wait=DELETE_WAIT
                )
            storage.delete_volume(volume, ignore_missing=True)
        for volume in self.cloud.volumes(session):
            storage.wait_for_delete(volume, interval=1, wait=DELETE_WAIT)

    def _own_ips(self, name: str | None = None) -> list[Any]:
        """The project's floating IPs that ebroker took, by their description (a session's
        name), of one session or of all."""
        conn = self.cloud.conn
        filters = {"description": name} if name else {}
        return [
            ip
            for ip in conn.network.ips(project_id=conn.current_project_id, **filters)
            if (ip.description or "").startswith(WORK_PREFIX)
            and (name is None or ip.description == name)
        ]

    def _remove(self, session: str) -> None:
        conn = self.cloud.conn
        name = work_name(session)
        servers = self.cloud.servers(session)
        if self.options.floating_ip_pool:  # clouds without L3 have no floating IP API
            for ip in self._own_ips(name):
                conn.network.delete_ip(ip, ignore_missing=True)
        for server in servers:
            conn.compute.delete_server(server, ignore_missing=True)
        for server in servers:
            conn.compute.wait_for_delete(server, interval=1, wait=DELETE_WAIT)
        if self.options.volumes.enabled:
            self._remove_volumes(session)
        for group in self.cloud.security_groups(name):
            conn.network.delete_security_group(group, ignore_missing=True)
        for flavor in self._own_flavors(name):
            conn.compute.delete_flavor(flavor, ignore_missing=True)
        if self.options.blazar.enabled:
            lease = self._lease(name)
            if lease is not None:
                self.cloud.blazar("DELETE", f"/leases/{lease['id']}")

    def _console(self, server: Any) -> str:
        try:
            out = self.cloud.conn.compute.get_server_console_output(
                server, length=self.options.console_lines
            )
        except Exception as exc:  # a server without a console still has a status
            log.info("platform %s: no console output for %s: %s", self.name, server.id, exc)
            return ""
        return str(out.get("output") or "")

    def _save_logs(self, execution: Execution, server: Any) -> None:
        """The server's console log into ``workdir/logs/output.log``, where it outlives the
        server."""
        if server is None or server.status in ("BUILD", *GONE_STATES):
            return
        text = self._console(server)
        if not text:
            return
        logs = execution.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        partial = logs / f".{OUTPUT_LOG}.partial"
        partial.write_text(text)
        partial.replace(Path(logs / OUTPUT_LOG))
