"""What the openstack platform sends, without a cloud: the server's create request, the flavor,
the security group's rules, the cloud-init user data of each executable kind, the Blazar lease
and the connectors, each a pure function of a fixed session and options, compared with a
snapshot in ``tests/snapshots/openstack`` (``EBROKER_UPDATE_SNAPSHOTS=1`` rewrites them). Then
the cloud readings as pure functions (pools from Placement inventories, allocation ratios,
reserved amounts, share, aggregates and zones, others' allocations, the quota, Blazar leases),
the options' refusals and the ``virtual-machine`` kind's rules.

That the platform sends exactly these to a real cloud is tested end to end in
tests/test_platform_openstack_e2e.py.
"""

from __future__ import annotations

import base64
import gzip
import json
import random
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from broker_core.config import InventoryConfig, PoolConfig
from broker_core.kinds.base import MinMax, kind_uri
from broker_core.kinds.builtin import SimpleDataResource, SimpleVolumeMount
from broker_core.kinds.registry import load_registry
from broker_core.staging.rules import StagingRules
from platforms import notebooks, remote_staging
from platforms.contract import Execution, PlatformError
from platforms.openstack import builders, cluster
from platforms.openstack.kinds import VIRTUAL_MACHINE, VirtualMachine, ssh_key_problem
from platforms.openstack.options import OpenStackOptions
from tests.test_platform_builders import check_snapshot

SESSION = "7c3e2a10-5b4d-4e6f-8a9b-0c1d2e3f4a5b"
STORAGE_UUID = "7c3e2a10-0000-4000-8000-000000000001"
DATA_UUID = "7c3e2a10-0000-4000-8000-000000000002"
WORKDIR = Path("/srv/ebroker/sessions") / SESSION
START = 1_900_000_000  # 2030-03-17T17:46:40Z
DOCKER = kind_uri("executable", "docker-container")
NOTEBOOK = kind_uri("executable", "jupyter-notebook")
COMPUTE = kind_uri("compute", "simple-compute-resource")
STORAGE = kind_uri("storage", "simple-storage-resource")
TOKEN = "fixed-token-for-the-snapshot"


def ssh_key(kind: str = "ssh-ed25519") -> str:
    """A well-formed OpenSSH public key line (its key bytes are fixed, not a real key)."""
    name = kind.encode()
    blob = struct.pack(">I", len(name)) + name + struct.pack(">I", 32) + bytes(range(32))
    return f"{kind} {base64.b64encode(blob).decode()} astro@example.org"


OPTIONS = OpenStackOptions.model_validate(
    {
        "cloud": "site",
        "network": "sessions",
        "flavor_policy": "private-per-session",
        "root_disk": 10,
        "images": {
            "docker_container": "debian-12-podman",
            "vm_images": {"debian-12": "debian-12-generic", "alma-9": "alma-9-genericcloud"},
            "vm_default": "debian-12",
        },
        "notebook_image": "debian-12-jupyter",
        "security": {"ingress_cidrs": ["192.0.2.0/24", "2001:db8::/32"]},
        "key_name": "site-admins",
    }
)


def session(executable: Any, storage: bool = True) -> Execution:
    return Execution(
        session=SESSION,
        executable=executable,
        compute={
            "kind": COMPUTE,
            "meta": {"uuid": "7c3e2a10-0000-4000-8000-0000000000c0"},
            "volumes": [{"path": "/results", "mode": "READWRITE", "resource": "results"}]
            if storage
            else [],
        },
        storage=[{"kind": STORAGE, "meta": {"uuid": STORAGE_UUID, "name": "results"}}]
        if storage
        else [],
        data=[],
        granted={"cores": 4, "memory": 16, "storage": 20 if storage else 0},
        prepare_at=START - 120,
        start_at=START,
        end_at=START + 7200,
        workdir=WORKDIR,
        pools=["default"],
    )


def docker_session() -> Execution:
    return session(
        {
            "kind": DOCKER,
            "meta": {"uuid": "7c3e2a10-0000-4000-8000-0000000000e0"},
            "image": {
                "locations": ["docker.io/library/python:3.12"],
                "digest": "sha256:" + "a" * 64,
            },
            "entrypoint": ["python", "-u"],
            "command": ["-c", "print('hello, world')"],
            "environment": {"GREETING": "it's me", "THREADS": "4"},
            "network": {
                "ports": [
                    {"internal": {"port": 8080}, "protocol": "HTTP", "path": "/app"},
                    {"internal": {"port": 5432}, "external": {"port": 15432}, "protocol": "TCP"},
                    {"internal": {"port": 9000}, "access": False},
                ]
            },
        }
    )


def vm_session(user_data: str | None = None) -> Execution:
    document: dict[str, Any] = {
        "meta": {"uuid": "7c3e2a10-0000-4000-8000-0000000000e1"},
        "image": "alma-9",
        "ssh_public_key": ssh_key(),
    }
    if user_data:
        document["user_data"] = user_data
    return session(VirtualMachine.model_validate(document), storage=False)


def notebook_session() -> Execution:
    execution = session(
        {
            "kind": NOTEBOOK,
            "meta": {"uuid": "7c3e2a10-0000-4000-8000-0000000000e2"},
            "location": "https://example.org/analysis.ipynb",
        },
        storage=False,
    )
    execution.state[notebooks.TOKEN_STATE] = TOKEN
    execution.state[notebooks.ENTRY_STATE] = "analysis.ipynb"
    return execution


def text_of(body: dict[str, Any]) -> str:
    return json.dumps(body, indent=2, sort_keys=True) + "\n"


# --- snapshots ---------------------------------------------------------------------------------


def test_docker_user_data_matches_its_snapshot_and_is_cloud_config() -> None:
    text = builders.user_data(docker_session(), OPTIONS)
    check_snapshot("openstack/docker-user-data.yaml", text)
    document = yaml.safe_load(text)
    assert text.startswith("#cloud-config\n")
    files = {f["path"]: f for f in document["write_files"]}
    env = files["/etc/ebroker/container.env"]
    assert env["permissions"] == "0600" and "GREETING=it's me\n" in env["content"]
    script = files["/usr/local/sbin/ebroker-run"]["content"]
    # the digest pins the image; published ports only; the storage on the root disk
    assert "docker.io/library/python:3.12@sha256:" in script
    assert "-p 8080:8080/tcp -p 15432:5432/tcp" in script and "9000" not in script
    assert f"-v /srv/ebroker/storage/{STORAGE_UUID}:/results:rw" in script
    assert builders.EXIT_MARK in script and script.rstrip().endswith("poweroff")


def test_data_is_fetched_before_the_container_and_mounted_into_it() -> None:
    execution = docker_session()
    execution.data = [
        SimpleDataResource.model_validate(
            {"meta": {"uuid": DATA_UUID, "name": "cube"}, "location": "https://192.0.2.7/c.fits"}
        )
    ]
    assert execution.compute is not None
    execution.compute.volumes.append(  # type: ignore[union-attr]
        SimpleVolumeMount.model_validate({"path": "/in", "resource": "cube"})
    )
    fetch = remote_staging.Fetch(DATA_UUID, "cube", "https://192.0.2.7/c.fits", "c.fits",
                                 "192.0.2.7", 443, "192.0.2.7")  # fmt: skip
    rules = StagingRules(max_bytes=2**30, max_redirects=0)
    text = builders.user_data(execution, OPTIONS, fetches=[fetch], rules=rules)
    check_snapshot("openstack/docker-user-data-with-data.yaml", text)
    document = yaml.safe_load(text)
    # one command: the container runs only when every download succeeded
    assert document["runcmd"] == [
        ["sh", "-c", f"{builders.STAGE_SCRIPT} && /usr/local/sbin/ebroker-run"]
    ]
    files = {f["path"]: f["content"] for f in document["write_files"]}
    stage = files[builders.STAGE_SCRIPT]
    assert "--resolve 192.0.2.7:443:192.0.2.7" in stage and "--max-redirs 0" in stage
    assert "--max-filesize 1073741824" in stage
    assert f"-v /srv/ebroker/data/{DATA_UUID}:/in:ro" in files["/usr/local/sbin/ebroker-run"]


def test_vm_user_data_matches_its_snapshots_plain_and_with_the_users_own() -> None:
    plain = builders.user_data(vm_session(), OPTIONS)
    check_snapshot("openstack/vm-user-data.yaml", plain)
    assert yaml.safe_load(plain)["ssh_authorized_keys"] == [ssh_key()]
    theirs = "#cloud-config\npackages: [htop]\n"
    both = builders.user_data(vm_session(theirs), OPTIONS)
    check_snapshot("openstack/vm-user-data-multipart.txt", both)
    assert both.count("Content-Type: text/cloud-config") == 2 and "packages: [htop]" in both


def test_notebook_user_data_matches_its_snapshot_and_keeps_the_token_off_the_command() -> None:
    files = {"analysis.ipynb": b'{"cells": [], "nbformat": 4}'}
    text = builders.user_data(notebook_session(), OPTIONS, files)
    check_snapshot("openstack/notebook-user-data.yaml", text)
    document = yaml.safe_load(text)
    written = {f["path"]: f for f in document["write_files"]}
    assert written[builders.NOTEBOOK_TOKEN_FILE]["permissions"] == "0600"
    assert TOKEN in written[builders.NOTEBOOK_TOKEN_FILE]["content"]
    unit = written["/etc/systemd/system/ebroker-notebook.service"]["content"]
    assert TOKEN not in unit and f"--NotebookApp.port={notebooks.PORT}" in unit
    notebook = written[f"{notebooks.ROOT}/analysis.ipynb"]
    assert gzip.decompress(base64.b64decode(notebook["content"])) == files["analysis.ipynb"]


def test_the_server_request_matches_its_snapshot() -> None:
    execution = docker_session()
    body = builders.server_request(
        execution,
        OPTIONS,
        "cloud",
        flavor_id="flavor-1",
        image_id="image-1",
        network_id="net-1",
        security_group=execution.name,
        user_data_text="#cloud-config\n{}\n",
        availability_zone="zone-a",
        reservation="reservation-1",
    )
    check_snapshot("openstack/server-request.json", text_of(body))
    assert body["metadata"] == {"ebroker.session": SESSION, "ebroker.platform": "cloud"}
    bare = builders.server_request(
        execution,
        OPTIONS.model_copy(update={"key_name": None}),
        "cloud",
        flavor_id="f",
        image_id="i",
        network_id=None,
        security_group=None,
        user_data_text="",
    )
    assert bare["networks"] == "none" and "security_groups" not in bare
    assert "scheduler_hints" not in bare and "key_name" not in bare


VOLUMES = OPTIONS.model_copy(
    update={"volumes": OPTIONS.volumes.model_copy(update={"enabled": True, "volume_type": "ssd"})}
)


def test_storage_as_volumes_made_attached_at_boot_and_mounted_before_the_work() -> None:
    execution = docker_session()
    (storage,) = execution.storage
    storage.size = MinMax(min=20, max=20)  # as offered: the granted size
    request = builders.volume_request(execution, storage, VOLUMES, "cloud")
    assert (request["size"], request["volume_type"]) == (20, "ssd")
    assert request["metadata"] == {
        "ebroker.session": SESSION, "ebroker.platform": "cloud", "ebroker.storage": STORAGE_UUID,
    }  # fmt: skip
    # the storage is no longer on the root disk
    assert builders.flavor_spec(execution, VOLUMES).disk == VOLUMES.root_disk
    volume = builders.Volume(STORAGE_UUID, "0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0")
    body = builders.server_request(
        execution, VOLUMES, "cloud", flavor_id="f", image_id="image-1", network_id=None,
        security_group=None, user_data_text="", volumes=[volume],
    )  # fmt: skip
    root, data = body["block_device_mapping"]
    assert (root["uuid"], root["boot_index"], root["source_type"]) == ("image-1", 0, "image")
    assert (data["uuid"], data["boot_index"], data["delete_on_termination"]) == (
        volume.id, -1, False,
    )  # fmt: skip
    text = builders.user_data(execution, VOLUMES, volumes=[volume])
    check_snapshot("openstack/docker-user-data-with-volume.yaml", text)
    document = yaml.safe_load(text)
    assert document["runcmd"] == [
        ["sh", "-c", f"{builders.VOLUME_SCRIPT} && /usr/local/sbin/ebroker-run"]
    ]
    script = {f["path"]: f["content"] for f in document["write_files"]}[builders.VOLUME_SCRIPT]
    assert f"attach {volume.id} /srv/ebroker/storage/{STORAGE_UUID}" in script
    assert "virtio-$short" in script and "mkfs.ext4" in script
    console = f"[  3.1] ebroker-staging-failed={STORAGE_UUID} volume\n"
    assert builders.staging_failure(console, execution) == (
        "the server could not format or mount the volume of storage results"
    )


def test_a_storage_without_a_booked_size_stays_on_the_root_disk() -> None:
    execution = docker_session()
    (storage,) = execution.storage
    storage.size = None  # e.g. the storage the offer made for a data resource
    assert builders.volume_size(execution, storage) == 0


def test_pools_storage_from_cinder_split_over_the_pools_within_the_quota() -> None:
    readings = [cluster.PoolReading("a", total={"storage": 700}), cluster.PoolReading("b")]
    volumes = cluster.VolumeReading(
        total_gb=1000, allocated_gb=300, ours_gb=100, quota_gb=400, quota_used_gb=250
    )
    readings, quota = cluster.with_volumes(readings, volumes, cluster.Quota())
    a, b = readings
    assert a.total["storage"] == b.total["storage"] == 500  # not the hosts' disks
    assert a.foreign["storage"] == 100  # others' 200 GiB, split
    options = opts()
    caps = cluster.quota_caps(quota)
    assert caps["storage"] == 200
    assert cluster.pool_config(a, options, caps).inventories["storage"].total == 200
    # the quota's other use: 250 in use, 100 of it ebroker's: 75 per pool
    assert cluster.available(a, options, caps, quota)["storage"] == 125
    unlimited = cluster.VolumeReading(total_gb=10, allocated_gb=0, ours_gb=0, quota_gb=-1)
    _, quota = cluster.with_volumes([cluster.PoolReading("a")], unlimited, cluster.Quota())
    assert "storage" not in cluster.quota_caps(quota)


def test_flavor_and_security_rules_match_their_snapshots() -> None:
    execution = docker_session()
    flavor = builders.private_flavor(execution, OPTIONS, "cloud")
    # 4 cores, 16 GiB, the site's root disk plus the 20 GiB of granted storage
    assert (flavor["vcpus"], flavor["ram"], flavor["disk"]) == (4, 16384, 30)
    assert flavor["is_public"] is False
    check_snapshot("openstack/flavor.json", text_of(flavor))
    rules = builders.security_rules(execution, OPTIONS, "group-1")
    check_snapshot("openstack/security-rules.json", text_of({"rules": rules}))
    opened = {(r["port_range_min"], r["remote_ip_prefix"], r["ethertype"]) for r in rules}
    assert opened == {
        (port, cidr, kind)
        for port in (8080, 15432)
        for cidr, kind in (("192.0.2.0/24", "IPv4"), ("2001:db8::/32", "IPv6"))
    }
    vm_rules = builders.security_rules(vm_session(), OPTIONS, "group-1")
    assert {r["port_range_min"] for r in vm_rules} == {22}


def test_blazar_leases_match_their_snapshots() -> None:
    execution = docker_session()
    host = builders.lease_request(execution, OPTIONS, now=START - 3600, hosts=["c1", "c2"])
    check_snapshot("openstack/lease-host.json", text_of(host))
    assert host["start_date"] == "2030-03-17 17:44"  # the preparation start
    assert host["end_date"] == "2030-03-17 19:47"  # the window's end, rounded up to the minute
    instance_options = OPTIONS.model_copy(
        update={"blazar": OPTIONS.blazar.model_copy(update={"reservation": "virtual:instance"})}
    )
    instance = builders.lease_request(execution, instance_options, now=START - 130)
    check_snapshot("openstack/lease-instance.json", text_of(instance))
    assert instance["start_date"] == "now"  # within the minute: Blazar refuses the past
    assert instance["reservations"][0]["vcpus"] == 4


def test_connectors_match_their_snapshot() -> None:
    addresses = {
        "sessions": [
            {"version": 4, "addr": "10.0.0.5", "OS-EXT-IPS:type": "fixed"},
            {"version": 6, "addr": "fd00::5", "OS-EXT-IPS:type": "fixed"},
            {"version": 4, "addr": "203.0.113.7", "OS-EXT-IPS:type": "floating"},
        ]
    }
    found = {
        "docker": builders.connectors(docker_session(), OPTIONS, addresses),
        "vm": builders.connectors(vm_session(), OPTIONS, addresses),
        "notebook": builders.connectors(notebook_session(), OPTIONS, addresses),
    }
    check_snapshot("openstack/connectors.json", text_of(found))
    assert found["vm"][-1]["url"] == "ssh://203.0.113.7"  # the floating IP is preferred
    assert found["notebook"][0]["url"].endswith(f"/notebooks/analysis.ipynb?token={TOKEN}")
    assert builders.connectors(docker_session(), OPTIONS, {}) == []


# --- the builders' choices ---------------------------------------------------------------------


def test_the_smallest_fitting_public_flavor_is_chosen() -> None:
    spec = builders.FlavorSpec
    flavors = [
        builders.Flavor("1", "m1.large", spec(4, 8192, 20)),
        builders.Flavor("2", "m1.medium", spec(2, 4096, 20)),
        builders.Flavor("3", "m1.medium-more-ram", spec(2, 8192, 20)),
        builders.Flavor("4", "secret", spec(2, 4096, 20), public=False),
        builders.Flavor("5", "ebroker-other-session", spec(2, 4096, 20)),
        builders.Flavor("6", "tiny", spec(1, 512, 1)),
    ]
    assert builders.smallest_fitting(flavors, spec(2, 4096, 10)).name == "m1.medium"
    assert builders.smallest_fitting(flavors, spec(2, 6000, 10)).name == "m1.medium-more-ram"
    assert builders.smallest_fitting(flavors, spec(8, 1024, 1)) is None


def test_user_data_larger_than_nova_takes_is_refused() -> None:
    big = {"analysis.ipynb": random.Random(1).randbytes(100_000)}  # gzip cannot shrink it
    with pytest.raises(PlatformError, match="more than Nova's"):
        builders.user_data(notebook_session(), OPTIONS, big)


def test_the_exit_code_is_read_from_the_last_mark_on_the_console() -> None:
    console = f"boot\n{builders.EXIT_MARK}0\nreboot\n[  12.0] {builders.EXIT_MARK}3\nhalt\n"
    assert builders.exit_code(console) == 3
    assert builders.exit_code("FAKE CONSOLE OUTPUT\n") is None


def test_a_singularity_container_has_no_server_kind() -> None:
    execution = session(
        {
            "kind": kind_uri("executable", "singularity-container"),
            "meta": {"uuid": "x"},
            "image": {"locations": ["x"]},
        }
    )
    with pytest.raises(PlatformError, match="cannot run"):
        builders.user_data(execution, OPTIONS)


# --- the cloud readings ------------------------------------------------------------------------


def inventory(total: int, reserved: int = 0, ratio: float = 1.0) -> dict[str, Any]:
    return {"total": total, "reserved": reserved, "allocation_ratio": ratio, "max_unit": total}


def providers() -> list[cluster.Provider]:
    """Three compute hosts, c1 with a GPU on a child provider; others' and our servers."""
    return [
        cluster.Provider(
            "u1",
            "c1",
            "u1",
            {
                "VCPU": inventory(16, 2, 4.0),
                "MEMORY_MB": inventory(65536, 1024, 1.5),
                "DISK_GB": inventory(500),
            },
            {"ours-1": {"VCPU": 4, "MEMORY_MB": 8192}, "theirs-1": {"VCPU": 8, "MEMORY_MB": 4096}},
        ),
        cluster.Provider("u1-gpu", "c1_pci_0000_81_00_0", "u1", {"PGPU": inventory(2)}, {}),
        cluster.Provider(
            "u2",
            "c2",
            "u2",
            {"VCPU": inventory(8), "MEMORY_MB": inventory(16384), "DISK_GB": inventory(100)},
            {"theirs-2": {"VCPU": 2, "MEMORY_MB": 2048, "DISK_GB": 10}},
        ),
        cluster.Provider(
            "u3",
            "c3",
            "u3",
            {"VCPU": inventory(8), "MEMORY_MB": inventory(16384), "DISK_GB": inventory(100)},
        ),
        cluster.Provider("u4", "sharing-disk", "u4", {"DISK_GB": inventory(1000)}),
    ]


AGGREGATES = [
    cluster.Aggregate("gpu-hosts", ("c1",), availability_zone="gpu"),
    cluster.Aggregate("zone-b", ("c2",), availability_zone="b"),
]


def opts(**update: Any) -> OpenStackOptions:
    return OpenStackOptions.model_validate({"cloud": "site", **update})


def test_pools_are_placement_capacity_times_ratio_less_reserved_times_share() -> None:
    options = opts(
        share=0.5,
        pools=[
            {"name": "gpu", "aggregate": "gpu-hosts"},
            {"name": "zone-b", "availability_zone": "b"},
            {"name": "rest", "availability_zone": "nova"},
        ],
    )
    readings = cluster.read_pools(providers(), AGGREGATES, {"ours-1"}, options)
    by_name = {r.name: r for r in readings}
    assert [by_name[n].hosts for n in ("gpu", "zone-b", "rest")] == [["c1"], ["c2"], ["c3"]]
    # c1: (16 - 2) x 4 = 56 vCPUs, (65536 - 1024) x 1.5 MiB = 94.5 GiB, 2 GPUs from its child
    assert by_name["gpu"].total == {"cores": 56, "memory": 94.5, "storage": 500, "gpus": 2}
    assert by_name["gpu"].foreign == {"cores": 8, "memory": 4}  # theirs-1, not ours-1
    assert by_name["gpu"].ours == {"cores": 4, "memory": 8}
    pool = cluster.pool_config(by_name["gpu"], options, {})
    assert {c: (i.total, i.max_unit) for c, i in pool.inventories.items()} == {
        "cores": (28, 28),
        "memory": (47, 47),
        "storage": (250, 250),
        "gpus": (1, 1),
    }


def test_one_pool_of_every_compute_host_leaves_out_sharing_providers() -> None:
    (reading,) = cluster.read_pools(providers(), AGGREGATES, set(), opts())
    assert reading.hosts == ["c1", "c2", "c3"]
    pool = cluster.pool_config(reading, opts(), {})
    assert pool.inventories["cores"].total == 56 + 8 + 8
    assert pool.inventories["cores"].max_unit == 56  # one server is on one host


def test_the_quota_caps_the_pools_and_others_use_of_it_is_a_claim() -> None:
    quota = cluster.Quota(cores=20, ram_mb=40960, cores_used=12, ram_used_mb=12288)
    caps = cluster.quota_caps(quota)
    assert caps == {"cores": 20, "memory": 40}
    options = opts(pools=[{"name": "b", "availability_zone": "b"}])
    (reading,) = cluster.read_pools(providers(), AGGREGATES, set(), options)
    baseline = [cluster.pool_config(reading, options, caps)]
    assert baseline[0].inventories["cores"].total == 8  # c2 is smaller than the quota
    claims = cluster.claims(baseline, [reading], options, caps, quota, [], {}, 0, 100)
    lost = {c.resource_class: c.amount for c in claims}
    # others hold 2 of c2's cores; the project's other use leaves 20 - 12 = 8 of the quota
    assert lost == {"cores": 2, "memory": 2, "storage": 10}
    assert all("not ebroker's" in c.reason for c in claims)
    assert cluster.quota_caps(cluster.Quota(cores=-1, ram_mb=None)) == {}


def test_leases_not_ebrokers_are_claims_over_their_window() -> None:
    options = opts()
    sizes = cluster.host_sizes(providers())
    readings = cluster.read_pools(providers(), AGGREGATES, {"ours-1"}, options)
    baseline = [
        PoolConfig(name="default", inventories={"cores": InventoryConfig(total=72)})  # type: ignore[dict-item]
    ]
    leases = [
        cluster.Lease("l1", "maintenance", "ACTIVE", 50, 150, hosts=("c2",)),
        cluster.Lease("l2", "ebroker-x", "ACTIVE", 0, 100, hosts=("c3",)),  # ours
        cluster.Lease("l3", "", "PENDING", 60, 70, instances=2, vcpus=3, memory_mb=2048),
        cluster.Lease("l4", "old", "TERMINATED", 0, 100, hosts=("c3",)),
        cluster.Lease("l5", "later", "PENDING", 200, 300, hosts=("c3",)),
    ]
    claims = cluster.claims(baseline, readings, options, {}, cluster.Quota(), leases, sizes, 0, 100)
    by_reason = {(c.reason, c.resource_class): (c.amount, c.start, c.end) for c in claims}
    assert by_reason == {
        (
            "cloud, pool default: 3 compute host(s); 2 server(s) or consumer(s) not ebroker's",
            "cores",
        ): (10, 0, 100),
        ("Blazar lease maintenance (ACTIVE)", "cores"): (8, 50, 100),
        ("Blazar lease l3 (PENDING)", "cores"): (6, 60, 70),
    }


def test_shrinkage_names_what_a_pool_lacks() -> None:
    options = opts()
    (reading,) = cluster.read_pools(providers(), AGGREGATES, set(), options)
    baseline = [cluster.pool_config(reading, options, {})]
    smaller = [p for p in providers() if p.name != "c3"]
    (now,) = cluster.read_pools(smaller, AGGREGATES, set(), options)
    shrunk = cluster.shrinkage(baseline, [now], options, {})
    assert shrunk["default"].startswith("64 of 72 cores, 110 of 126 memory, 600 of 700 storage")


# --- options and the kind ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ({}, "either cloud"),
        (
            {
                "cloud": "a",
                "auth": {
                    "auth_url": "http://k",
                    "username": "u",
                    "password": "p",
                    "project_name": "x",
                },
            },
            "either cloud",
        ),
        ({"auth": {"auth_url": "http://k", "username": "u"}}, "username and password"),
        ({"auth": {"auth_url": "http://k", "username": "u", "password": "p"}}, "project_name"),
        ({"auth": {"auth_url": "http://k", "application_credential_id": "i"}}, "both"),
        (
            {"auth": {"auth_url": "k", "username": "u", "password": "p", "project_id": "x"}},
            "auth_url",
        ),
        ({"cloud": "a", "clouds_file": "/nonexistent/clouds.yaml"}, "does not exist"),
        ({"cloud": "a", "share": 0}, "share"),
        ({"cloud": "a", "flavor_policy": "largest"}, "flavor_policy"),
        (
            {"cloud": "a", "pools": [{"name": "x", "aggregate": "a", "availability_zone": "b"}]},
            "not both",
        ),
        (
            {"cloud": "a", "pools": [{"name": "x"}, {"name": "y", "aggregate": "a"}]},
            "each names",
        ),
        (
            {
                "cloud": "a",
                "pools": [{"name": "x", "aggregate": "a"}, {"name": "x", "aggregate": "b"}],
            },
            "unique",
        ),
        ({"cloud": "a", "images": {"vm_default": "x"}}, "vm_images"),
        ({"cloud": "a", "floating_ip_pool": "public"}, "needs network"),
        ({"cloud": "a", "security": {"ingress_cidrs": ["everywhere"]}}, "CIDR"),
        ({"cloud": "a", "gpu_classes": ["a100"]}, "resource class"),
        ({"cloud": "a", "boot_timeout": "PT0S"}, "positive"),
        ({"cloud": "a", "blazar": {"reservation": "physical:network"}}, "reservation"),
        ({"cloud": "a", "region_name": "x"}, "region_name"),
    ],
)
def test_bad_options_are_refused_saying_why(bad: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        OpenStackOptions.model_validate(bad)


def test_inline_auth_gives_keystoneauth_its_fields() -> None:
    password = opts(cloud=None, auth={"auth_url": "https://k:5000/v3", "username": "u",
                                      "password": "p", "project_name": "x"})  # fmt: skip
    assert password.auth is not None and password.auth.auth_type == "password"
    app = opts(cloud=None, auth={"auth_url": "https://k:5000/v3",
                                 "application_credential_id": "i",
                                 "application_credential_secret": "s"})  # fmt: skip
    assert app.auth is not None and app.auth.auth_type == "v3applicationcredential"
    assert app.auth.keystone() == {
        "auth_url": "https://k:5000/v3",
        "application_credential_id": "i",
        "application_credential_secret": "s",
    }


def test_images_per_kind() -> None:
    assert OPTIONS.image_for("docker-container") == "debian-12-podman"
    assert OPTIONS.image_for("virtual-machine") == "debian-12-generic"
    assert OPTIONS.image_for("virtual-machine", "alma-9") == "alma-9-genericcloud"
    assert OPTIONS.image_for("virtual-machine", "windows") is None
    assert OPTIONS.image_for("jupyter-notebook") == "debian-12-jupyter"


def test_the_virtual_machine_kind_is_registered_and_checks_its_fields() -> None:
    registry = load_registry()
    assert registry.model("executable", VIRTUAL_MACHINE) is VirtualMachine
    good = VirtualMachine.model_validate({"image": "debian-12", "ssh_public_key": ssh_key()})
    assert good.problems("/executable") == []
    bad = VirtualMachine.model_validate(
        {"image": "../etc", "ssh_public_key": "ssh-ed25519 notbase64!", "user_data": "echo hi"}
    )
    pointers = [p.pointer for p in bad.problems("/executable")]
    assert pointers == [
        "/executable/image/name",
        "/executable/ssh_public_key",
        "/executable/user_data",
    ]
    # the image by its name, as a string, an object, or the node's legacy reading of a string
    for image in ("debian-12", {"name": "debian-12"}, {"locations": ["debian-12"]}):
        assert VirtualMachine.model_validate({"image": image}).image_name == "debian-12"
    for kind in ("ssh-rsa", "ecdsa-sha2-nistp256"):
        assert ssh_key_problem(ssh_key(kind)) is None
    assert ssh_key_problem(ssh_key().replace("ssh-ed25519 ", "ssh-rsa ", 1)) is not None
    assert ssh_key_problem("ssh-dss AAAA") is not None
    assert ssh_key_problem(ssh_key() + "\n" + ssh_key()) is not None
