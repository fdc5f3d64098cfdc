"""The cloud as the platform talks to it: one openstacksdk connection per process and
credentials (keystoneauth renews its token when it expires), and the readings ``cluster`` turns
into pools (Placement providers with their inventories and allocations, Nova aggregates and
limits, Blazar leases). openstacksdk is synchronous: every call here blocks, and the platform's
steps run in the engine's worker threads."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import openstack
import openstack.config
from openstack.connection import Connection

from ..contract import WORK_PREFIX, PlatformError
from .builders import PLATFORM_KEY, SESSION_KEY
from .cluster import Aggregate, Lease, Provider, Quota, VolumeReading
from .options import OpenStackOptions

log = logging.getLogger(__name__)
PLACEMENT = "1.14"  # root_provider_uuid in provider listings
RESERVATION = {"service_type": "reservation", "interface": "public"}
_CONNECTIONS: dict[str, Connection] = {}
_LOCK = threading.Lock()
Obj = dict[str, Any]


def _key(options: OpenStackOptions) -> str:
    return json.dumps(
        {
            "cloud": options.cloud,
            "file": options.clouds_file,
            "auth": options.auth.model_dump() if options.auth else None,
            "region": options.region,
            "interface": options.interface,
        },
        sort_keys=True,
    )


def connect(options: OpenStackOptions) -> Connection:
    """The process's connection for these credentials, made at the first call."""
    key = _key(options)
    with _LOCK:
        conn = _CONNECTIONS.get(key)
        if conn is None:
            conn = _CONNECTIONS[key] = _new_connection(options)
        return conn


def _new_connection(options: OpenStackOptions) -> Connection:
    if options.cloud:
        files = [options.clouds_file] if options.clouds_file else None
        config = openstack.config.OpenStackConfig(config_files=files, load_envvars=False)
        region = config.get_one(
            cloud=options.cloud, region_name=options.region, interface=options.interface
        )
        return Connection(config=region)
    assert options.auth is not None
    return openstack.connect(
        auth_type=options.auth.auth_type,
        auth=options.auth.keystone(),
        region_name=options.region,
        interface=options.interface,
        identity_api_version="3",
        load_yaml_config=False,
        load_envvars=False,
    )


def _json(response: Any, what: str) -> Obj:
    if response.status_code >= 400:
        raise PlatformError(f"{what}: HTTP {response.status_code}: {response.text[:300]}")
    return response.json() if response.content else {}


def _epoch(text: str | None) -> int:
    if not text:
        return 0
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return int(stamp.timestamp())


class Cloud:
    """The API calls of one platform, on the process's shared connection."""

    def __init__(self, options: OpenStackOptions, platform: str):
        self.options = options
        self.platform = platform

    @property
    def conn(self) -> Connection:
        return connect(self.options)

    # --- Placement, Nova, Blazar readings ---------------------------------------------------

    def placement(self, path: str) -> Obj:
        response = self.conn.placement.get(path, microversion=PLACEMENT, raise_exc=False)
        return _json(response, f"placement GET {path}")

    def providers(self) -> list[Provider]:
        found = []
        for rp in self.placement("/resource_providers")["resource_providers"]:
            uuid = rp["uuid"]
            inventories = self.placement(f"/resource_providers/{uuid}/inventories")
            allocations = self.placement(f"/resource_providers/{uuid}/allocations")
            found.append(
                Provider(
                    uuid=uuid,
                    name=rp["name"],
                    root=rp.get("root_provider_uuid") or uuid,
                    inventories=inventories.get("inventories") or {},
                    allocations={
                        consumer: dict(entry.get("resources") or {})
                        for consumer, entry in (allocations.get("allocations") or {}).items()
                    },
                )
            )
        return found

    def aggregates(self) -> list[Aggregate]:
        return [
            Aggregate(
                name=a.name,
                hosts=tuple(a.hosts or ()),
                availability_zone=a.availability_zone
                or (a.metadata or {}).get("availability_zone"),
            )
            for a in self.conn.compute.aggregates()
        ]

    def quota(self) -> Quota:
        absolute = self.conn.compute.get_limits().absolute
        return Quota(
            cores=absolute.total_cores,
            ram_mb=absolute.total_ram,
            cores_used=absolute.total_cores_used or 0,
            ram_used_mb=absolute.total_ram_used or 0,
        )

    def volume_capacity(self) -> VolumeReading:
        """Cinder's backend pools (admin: scheduler stats), this platform's volumes, and the
        project's ``gigabytes`` quota with its use."""
        storage = self.conn.block_storage
        total = allocated = 0.0
        for pool in storage.backend_pools():
            capabilities = pool.capabilities or {}
            total += float(capabilities.get("total_capacity_gb") or 0)
            allocated += float(capabilities.get("allocated_capacity_gb") or 0)
        quota = storage.get_quota_set(self.conn.current_project_id, usage=True)
        usage = (getattr(quota, "usage", None) or {}).get("gigabytes") or {}
        used = usage.get("in_use", 0) if isinstance(usage, dict) else usage
        ours = sum(float(v.size or 0) for v in self.volumes())
        return VolumeReading(total, allocated, ours, quota.gigabytes, float(used or 0))

    def blazar(self, method: str, path: str, **kwargs: Any) -> Obj:
        response = self.conn.session.request(
            path, method, endpoint_filter=RESERVATION, raise_exc=False, **kwargs
        )
        if method == "DELETE" and response.status_code == 404:
            return {}
        return _json(response, f"Blazar {method} {path}")

    def leases(self) -> list[Lease]:
        """Every lease, with the hosts its host reservations hold."""
        raw = self.blazar("GET", "/leases").get("leases") or []
        held: dict[str, list[str]] = {}
        if any(r.get("resource_type") == "physical:host" for x in raw for r in x["reservations"]):
            names = {
                str(h["id"]): h.get("hypervisor_hostname") or h.get("name")
                for h in self.blazar("GET", "/os-hosts").get("hosts") or []
            }
            for allocation in self.blazar("GET", "/os-hosts/allocations").get("allocations") or []:
                for reservation in allocation.get("reservations") or []:
                    held.setdefault(reservation["lease_id"], []).append(
                        names.get(str(allocation["resource_id"]), "")
                    )
        found = []
        for lease in raw:
            instances = [
                r for r in lease.get("reservations") or []
                if r.get("resource_type") == "virtual:instance"
            ]  # fmt: skip
            size = instances[0] if instances else {}
            found.append(
                Lease(
                    id=lease["id"],
                    name=lease.get("name") or "",
                    status=lease.get("status") or "",
                    start=_epoch(lease.get("start_date")),
                    end=_epoch(lease.get("end_date")),
                    hosts=tuple(h for h in held.get(lease["id"], []) if h),
                    instances=sum(int(r.get("amount") or 0) for r in instances),
                    vcpus=int(size.get("vcpus") or 0),
                    memory_mb=int(size.get("memory_mb") or 0),
                    disk_gb=int(size.get("disk_gb") or 0),
                )
            )
        return found

    # --- the platform's own objects ---------------------------------------------------------

    def servers(self, session: str | None = None) -> list[Any]:
        """This platform's servers (of one session), found by name and metadata."""
        name = f"^{WORK_PREFIX}{session}$" if session else f"^{WORK_PREFIX}"
        return [
            s
            for s in self.conn.compute.servers(details=True, name=name)
            if (s.metadata or {}).get(PLATFORM_KEY) == self.platform
            and (session is None or (s.metadata or {}).get(SESSION_KEY) == session)
        ]

    def volumes(self, session: str | None = None) -> list[Any]:
        """This platform's Cinder volumes (of one session), found by their metadata."""
        return [
            v
            for v in self.conn.block_storage.volumes(details=True)
            if (v.metadata or {}).get(PLATFORM_KEY) == self.platform
            and (session is None or (v.metadata or {}).get(SESSION_KEY) == session)
        ]

    def flavors(self) -> list[Any]:
        return list(self.conn.compute.flavors(details=True, is_public=None))

    def security_groups(self, name: str | None = None) -> list[Any]:
        marker = f"of platform {self.platform}"
        groups = self.conn.network.security_groups(**({"name": name} if name else {}))
        return [
            g
            for g in groups
            if g.name.startswith(WORK_PREFIX) and (g.description or "").endswith(marker)
        ]
