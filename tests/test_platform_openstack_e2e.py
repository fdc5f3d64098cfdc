"""The openstack platform end to end, through real node processes and their HTTP API, against a
real OpenStack: by default the one ``.ci/setup-openstack.sh`` runs on this machine (Keystone,
Placement, Glance, Neutron and Nova with its fake virt driver, Blazar), through the official
openstacksdk, unmodified.

- request (pools read from the real Placement) → accept → a real Nova server ACTIVE, with its
  private flavor and security group → COMPLETED at the window's end, the server, flavor and
  security group gone, the console log the session's log (a VM session and a container
  session side by side);
- cancel mid-session; SIGKILL of the node mid-session and a restart;
- a stray server of an ended session removed by reconciliation;
- "No valid host" for a flavor larger than any host, failing the session with Nova's fault;
- a server booted by hand, outside ebroker, shrinking what is offered;
- with Blazar: a lease per accepted session, the server booted into its reservation, a server
  without the reservation's hint refused on the reserved host, an extension moving the lease's
  end, a cancel removing it.

Another cloud: ``OS_CLOUD=<cloud in clouds.yaml>`` (with ``OS_CLIENT_CONFIG_FILE`` when the file
is not in openstacksdk's search path) runs the same tests there; ``EBROKER_OS_TEST_IMAGE``
(default ``tiny-raw``) and ``EBROKER_OS_TEST_NETWORK`` (default ``ebroker-test-net``, made when
missing) name what the servers boot. The credentials need the admin role (Placement, flavors,
Blazar hosts). The Blazar test runs where the cloud has a reservation service.
"""

from __future__ import annotations

import base64
import gzip
import os
import struct
import subprocess
import threading
import time
import uuid as uuids
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openstack
import pytest
import yaml

from broker_core.config import PlatformConfig
from broker_core.kinds.base import kind_uri
from platforms import notebooks
from platforms.contract import Platform, work_name
from platforms.openstack.kinds import VIRTUAL_MACHINE
from platforms.registry import build_platforms
from tests.conftest import COMPUTE, DOCKER, unavailable
from tests.nodes import Node, start_node
from tests.openstack_cloud import CLOUD, CLOUDS_FILE, IMAGE, admin_connection
from tests.test_platforms_e2e import CANCEL, FAST, messages, wait_phase
from tests.test_platforms_e2e import book as book_on

BOOKED: list[str] = []  # every session the tests booked, so that nothing is left behind

pytestmark = pytest.mark.slow  # real node processes and a real cloud

NETWORK = os.environ.get("EBROKER_OS_TEST_NETWORK", "ebroker-test-net")
# an external network routed to NETWORK, for floating IPs (made, with its router, when missing)
FLOATING_POOL = os.environ.get("EBROKER_OS_TEST_FLOATING_POOL", "ebroker-test-public")
STORAGE = kind_uri("storage", "simple-storage-resource")
DATA = kind_uri("data", "simple-data-resource")
VOLUME = kind_uri("volume", "simple-volume-mount")
NOTEBOOK = kind_uri("executable", "jupyter-notebook")
RESERVATION = {"service_type": "reservation", "interface": "public"}


def ssh_key() -> str:
    name = b"ssh-ed25519"
    blob = struct.pack(">I", len(name)) + name + struct.pack(">I", 32) + bytes(range(32))
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} tester@example.org"


@pytest.fixture(scope="module")
def conn() -> Iterator[openstack.connection.Connection]:
    """An admin connection to the cloud, with the test network and image there."""
    connection = admin_connection()
    if connection.image.find_image(IMAGE) is None:
        unavailable(f"image {IMAGE} is not in cloud {CLOUD}")
    network = connection.network.find_network(NETWORK)
    if network is None:
        network = connection.network.create_network(name=NETWORK)
        connection.network.create_subnet(
            name=f"{NETWORK}-subnet",
            network_id=network.id,
            ip_version=4,
            cidr="10.98.0.0/24",
            enable_dhcp=False,
        )
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def floating_pool(conn) -> str:
    """The external network floating IPs come from, routed to the test network (on the CI
    cloud, Neutron's router plugin without an L3 agent: the API is real, nothing is wired)."""
    if not any(e.alias == "router" for e in conn.network.extensions()):
        unavailable("the cloud has no Neutron L3 API (routers, floating IPs)")
    public = conn.network.find_network(FLOATING_POOL)
    if public is None:
        public = conn.network.create_network(
            name=FLOATING_POOL,
            is_router_external=True,
            provider_network_type="flat",
            provider_physical_network="public",
        )
    if not list(conn.network.subnets(network_id=public.id)):
        conn.network.create_subnet(
            name=f"{FLOATING_POOL}-subnet",
            network_id=public.id,
            ip_version=4,
            cidr="203.0.113.0/24",
            gateway_ip="203.0.113.1",
            enable_dhcp=False,
        )
    router = conn.network.find_router(f"{NETWORK}-router")
    if router is None:
        router = conn.network.create_router(
            name=f"{NETWORK}-router", external_gateway_info={"network_id": public.id}
        )
    subnet = conn.network.find_subnet(f"{NETWORK}-subnet")
    attached = {
        fixed["subnet_id"]
        for port in conn.network.ports(device_id=router.id)
        for fixed in port.fixed_ips
    }
    if subnet is not None and subnet.id not in attached:
        conn.network.add_interface_to_router(router, subnet_id=subnet.id)
    return FLOATING_POOL


def options(**extra: Any) -> dict[str, Any]:
    return {
        **FAST,
        "cloud": CLOUD,
        "clouds_file": CLOUDS_FILE,
        "network": NETWORK,
        "flavor_policy": "private-per-session",
        "images": {"docker_container": IMAGE, "vm_images": {"tiny": IMAGE}, "vm_default": "tiny"},
        "reread_interval": "PT1S",
        "boot_timeout": "PT60S",
        **extra,
    }


def make_site(
    tmp_path: Path,
    platform_options: dict[str, Any],
    node: dict[str, Any] | None = None,
    **platform: Any,
) -> dict[str, Any]:
    config = {"name": "cloud", "type": "openstack", "options": platform_options, **platform}
    node_config = {
        "site": {"name": "e2e-openstack"},
        "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
        "offers": {"granularity": "PT1S", "max_offers": 2},
        "holds": {"anonymous": {}},  # the tests ask as one anonymous caller, without limit
        "lifecycle": {
            "workdir": str(tmp_path / "sessions"),
            "poll_interval": "PT1S",
            "reconcile_interval": "PT2S",
        },
        "platforms": [config],
        **(node or {}),
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(node_config))
    (inspector,) = build_platforms([PlatformConfig.model_validate(config)])
    return {"config": path, "tmp": tmp_path, "platform": inspector}


def book(node: Node, doc: dict[str, Any]) -> str:
    uuid = book_on(node, doc)
    BOOKED.append(uuid)
    return uuid


def clean(site: dict[str, Any]) -> None:
    """Never leave work behind, whatever failed: everything of the sessions booked here."""
    made = {work_name(uuid) for uuid in BOOKED}
    for name in (site["platform"].list_work() or set()) & made:
        site["platform"].remove_work(name)


@pytest.fixture
def site(conn, tmp_path: Path) -> Iterator[dict[str, Any]]:
    site = make_site(tmp_path, options())
    yield {**site, "conn": conn}
    clean(site)


@pytest.fixture
def node(site: dict[str, Any]) -> Iterator[Node]:
    node = start_node(site["config"], site["tmp"], "node")
    yield node
    node.stop()


def vm_request(duration: str = "PT15S", cores: int = 1, memory: int = 1) -> dict[str, Any]:
    return {
        "executable": {"kind": VIRTUAL_MACHINE, "image": "tiny", "ssh_public_key": ssh_key()},
        "compute": {
            "kind": COMPUTE,
            "cores": {"min": cores, "max": cores},
            "memory": {"min": memory, "max": memory},
        },
        "schedule": {"requested": {"duration": duration}},
    }


def container_request(duration: str = "PT15S") -> dict[str, Any]:
    return {
        "executable": {
            "kind": DOCKER,
            "image": {"locations": ["docker.io/library/nginx:1.27"]},
            "network": {"ports": [{"internal": {"port": 80}, "protocol": "HTTP"}]},
        },
        "compute": {"kind": COMPUTE, "cores": {"min": 2, "max": 2}, "memory": {"min": 2, "max": 2}},
        "schedule": {"requested": {"duration": duration}},
    }


def wait_all_running(node: Node, uuids: list[str], seconds: float = 60) -> None:
    """Until every session runs (side by side: none may end before the others run)."""
    deadline = time.monotonic() + seconds
    while True:
        docs = [httpx.get(f"{node.url}/sessions/{u}", timeout=30).json() for u in uuids]
        phases = [d["phase"] for d in docs]
        if all(p == "RUNNING" for p in phases):
            return
        ended = [d for d in docs if d["phase"] in ("RELEASING", "COMPLETED", "FAILED", "CANCELLED")]
        assert not ended and time.monotonic() < deadline, [messages(d) for d in docs]
        time.sleep(0.3)


def servers_of(conn: Any, uuid: str) -> list[Any]:
    return list(conn.compute.servers(details=True, name=f"^{work_name(uuid)}$"))


def left_on_platform(platform: Platform, uuid: str) -> set[str]:
    return {name for name in platform.list_work() or set() if name == work_name(uuid)}


def wait_gone(platform: Platform, uuid: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while left_on_platform(platform, uuid):
        assert time.monotonic() < deadline, "the session's server, flavor or group outlived it"
        time.sleep(0.5)


def wait_server(conn: Any, server: Any, status: str) -> Any:
    failures = ["ERROR"] if status != "ERROR" else ["ACTIVE"]
    return conn.compute.wait_for_server(server, status=status, failures=failures, interval=1,
                                        wait=120)  # fmt: skip


def placement_capacity(conn: Any, resource_class: str = "VCPU") -> int:
    """The cloud's vCPUs (or another class) as Placement gives them, read here on our own:
    (total - reserved) x allocation ratio over the compute hosts."""
    total = 0.0
    for rp in conn.placement.get("/resource_providers", microversion="1.14").json()[
        "resource_providers"
    ]:
        inventories = conn.placement.get(f"/resource_providers/{rp['uuid']}/inventories").json()
        vcpu = inventories["inventories"].get(resource_class)
        if vcpu and rp["uuid"] == rp["root_provider_uuid"]:
            total += (vcpu["total"] - vcpu["reserved"]) * vcpu["allocation_ratio"]
    return int(total)


def test_sessions_boot_servers_and_complete_at_the_windows_end(site, node):
    conn = site["conn"]
    (pool,) = site["platform"].pools()
    assert pool.inventories["cores"].total == placement_capacity(conn)  # read from Placement
    vm = book(node, vm_request("PT25S"))
    box = book(node, container_request("PT25S"))
    wait_all_running(node, [vm, box])
    (server,) = servers_of(conn, vm)
    assert server.status == "ACTIVE"
    assert server.metadata == {"ebroker.session": vm, "ebroker.platform": "cloud"}
    flavor = conn.compute.find_flavor(work_name(vm), is_public=None)
    assert (flavor.vcpus, flavor.ram, flavor.is_public) == (1, 1024, False)
    (box_server,) = servers_of(conn, box)
    group = conn.network.find_security_group(work_name(box))
    rules = group.security_group_rules
    opened = {r["port_range_min"] for r in rules if r["direction"] == "ingress"}
    assert opened == {80}  # only the requested port
    assert {g["name"] for g in box_server.security_groups} == {work_name(box)}
    vm_doc = httpx.get(f"{node.url}/sessions/{vm}", timeout=30).json()
    connectors = vm_doc.get("connectors") or []
    assert any(c.get("protocol") == "SSH" for c in connectors), vm_doc
    for uuid in (vm, box):
        doc = wait_phase(node, uuid, {"COMPLETED", "FAILED", "CANCELLED"}, 60)
        assert doc["phase"] == "COMPLETED", messages(doc) + node.output()[-3000:]
        assert "served its booked window" in messages(doc)
    for uuid in (vm, box):
        wait_gone(site["platform"], uuid)
        assert servers_of(conn, uuid) == []
        assert conn.compute.find_flavor(work_name(uuid), is_public=None) is None
        assert conn.network.find_security_group(work_name(uuid)) is None
    log = site["tmp"] / "sessions" / vm / "logs" / "output.log"
    assert log.is_file() and log.read_text().strip()  # the server's console log
    served = httpx.get(f"{node.url}/sessions/{vm}/logs", timeout=30)
    assert served.status_code == 200 and served.text == log.read_text()


def test_storage_data_and_a_floating_ip(conn, floating_pool, tmp_path):
    """The storage on the root disk, the data fetched by cloud-init as the staging rules judged
    it (pinned to its address), the floating IP in the connectors and gone with the session;
    a location the server cannot fetch refused at request time."""
    staging = {"staging": {"allow_networks": ["192.0.2.0/24"], "max_redirects": 1}}
    site = make_site(tmp_path, options(floating_ip_pool=floating_pool), node=staging)
    node = start_node(site["config"], site["tmp"], "node")
    try:
        doc = container_request("PT20S")
        doc["storage"] = [{"kind": STORAGE, "meta": {"name": "out"}, "size": {"min": 2, "max": 2}}]
        doc["data"] = [
            {"kind": DATA, "meta": {"name": "cube"}, "location": "http://192.0.2.10:8080/c.fits"}
        ]
        doc["compute"]["volumes"] = [
            {"kind": VOLUME, "path": "/out", "mode": "READWRITE", "resource": "out"},
            {"kind": VOLUME, "path": "/in", "resource": "cube"},
        ]
        uuid = book(node, doc)
        wait_phase(node, uuid, {"RUNNING"}, 60)
        (server,) = servers_of(conn, uuid)
        flavor = conn.compute.find_flavor(work_name(uuid), is_public=None)
        assert flavor.disk == 1 + 2  # the site's root disk and the storage
        user_data = base64.b64decode(conn.compute.get_server(server.id).user_data).decode()
        assert "--resolve 192.0.2.10:8080:192.0.2.10" in user_data
        assert "--max-redirs 1" in user_data and "http://192.0.2.10:8080/c.fits" in user_data
        deadline = time.monotonic() + 30
        while True:
            session = httpx.get(f"{node.url}/sessions/{uuid}", timeout=30).json()
            hosts = {c.get("host") for c in session.get("connectors") or []}
            if any(h and h.startswith("203.0.113.") for h in hosts):
                break
            assert time.monotonic() < deadline, (hosts, messages(session))
            time.sleep(0.5)
        (ip,) = conn.network.ips(description=work_name(uuid))
        ports = {p.id for p in conn.network.ports(device_id=server.id)}
        assert ip.port_id in ports and ip.floating_ip_address in hosts
        done = wait_phase(node, uuid, {"COMPLETED", "FAILED", "CANCELLED"}, 60)
        assert done["phase"] == "COMPLETED", messages(done)
        wait_gone(site["platform"], uuid)
        assert list(conn.network.ips(description=work_name(uuid))) == []
        local = {**container_request(), "data": [{"kind": DATA, "location": "file:///etc/hosts"}]}
        answer = httpx.post(f"{node.url}/requests", json=local, timeout=30).json()
        assert answer["result"] == "NO"
        assert "http(s)" in " ".join(m["message"] for m in answer["meta"]["messages"])
    finally:
        node.stop()
        clean(site)


@pytest.fixture(scope="module")
def cinder(conn) -> Any:
    """The cloud, with a block storage service (volumev3) that answers."""
    try:
        list(conn.block_storage.volumes(limit=1))
    except Exception as exc:
        unavailable(f"cloud {CLOUD} has no block storage that answers (run .ci/setup-cinder.sh): "
                    f"{type(exc).__name__}: {exc}")  # fmt: skip
    return conn


def volumes_of(conn: Any, uuid: str) -> list[Any]:
    return [
        v for v in conn.block_storage.volumes(details=True)
        if (v.metadata or {}).get("ebroker.session") == uuid
    ]  # fmt: skip


def test_storage_as_a_cinder_volume_attached_at_boot_and_gone_with_the_session(cinder, tmp_path):
    """With ``volumes.enabled``: the pool's storage is Cinder's capacity; a storage resource is
    a volume of its granted size, made at preparation, attached to the server at boot (and
    mounted by its user data), deleted with the session."""
    conn = cinder
    site = make_site(tmp_path, options(volumes={"enabled": True}))
    (pool,) = site["platform"].pools()
    capacity = sum(
        float(p.capabilities.get("total_capacity_gb") or 0)
        for p in conn.block_storage.backend_pools()
    )
    assert pool.inventories["storage"].total == min(int(capacity), 1000)  # quota: 1000 GiB
    node = start_node(site["config"], site["tmp"], "node")
    try:
        doc = vm_request("PT20S")
        doc["storage"] = [
            {"kind": STORAGE, "meta": {"name": "scratch"}, "size": {"min": 2, "max": 2}}
        ]
        doc["compute"]["volumes"] = [
            {"kind": VOLUME, "path": "/scratch", "mode": "READWRITE", "resource": "scratch"}
        ]
        uuid = book(node, doc)
        wait_phase(node, uuid, {"RUNNING"}, 90)
        (server,) = servers_of(conn, uuid)
        (volume,) = volumes_of(conn, uuid)
        assert (volume.size, volume.metadata["ebroker.platform"]) == (2, "cloud")
        volume = conn.block_storage.wait_for_status(volume, status="in-use", interval=1, wait=60)
        assert [a["server_id"] for a in volume.attachments] == [server.id]
        flavor = conn.compute.find_flavor(work_name(uuid), is_public=None)
        assert flavor.disk == 1  # the root disk only: the storage is the volume
        user_data = base64.b64decode(conn.compute.get_server(server.id).user_data).decode()
        assert f"attach {volume.id} /srv/ebroker/storage/" in user_data
        done = wait_phase(node, uuid, {"COMPLETED", "FAILED", "CANCELLED"}, 60)
        assert done["phase"] == "COMPLETED", messages(done)
        wait_gone(site["platform"], uuid, seconds=120)
        assert volumes_of(conn, uuid) == []
    finally:
        node.stop()
        clean(site)


def test_a_notebook_session_boots_its_server_with_the_notebook_and_its_token(conn, tmp_path):
    """The node fetches the notebook (from a data directory, within its staging rules) and
    writes it into the server's user data with the token in a root-only file; the connector
    opens it with that token; the server serves the window and is gone after it. (The fake
    virt driver runs no guest, so no notebook server answers here: the images are the site's.)"""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    notebook = folder / "analysis.ipynb"
    notebook.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    staging = {"staging": {"file_roots": [str(folder)]}}
    site = make_site(tmp_path, options(notebook_image=IMAGE), node=staging)
    node = start_node(site["config"], site["tmp"], "node")
    try:
        uuid = book(
            node,
            {
                "executable": {"kind": NOTEBOOK, "location": f"file://{notebook}"},
                "compute": {"kind": COMPUTE, "cores": {"min": 1, "max": 1}},
                "schedule": {"requested": {"duration": "PT15S"}},
            },
        )
        session = wait_phase(node, uuid, {"RUNNING"}, 60)
        (server,) = servers_of(conn, uuid)
        user_data = yaml.safe_load(
            base64.b64decode(conn.compute.get_server(server.id).user_data).decode()
        )
        files = {f["path"]: f for f in user_data["write_files"]}
        token = files["/etc/ebroker/notebook.env"]["content"].strip().split("=", 1)[1]
        assert files["/etc/ebroker/notebook.env"]["permissions"] == "0600"
        written = files[f"{notebooks.ROOT}/analysis.ipynb"]
        assert gzip.decompress(base64.b64decode(written["content"])) == notebook.read_bytes()
        unit = files["/etc/systemd/system/ebroker-notebook.service"]["content"]
        assert token not in unit  # the token is in the environment file only
        (connector,) = session["connectors"]
        assert connector["port"] == notebooks.PORT and connector["url"].endswith(f"?token={token}")
        assert "/notebooks/analysis.ipynb" in connector["url"]
        group = conn.network.find_security_group(work_name(uuid))
        opened = {r["port_range_min"] for r in group.security_group_rules}
        assert notebooks.PORT in opened
        done = wait_phase(node, uuid, {"COMPLETED", "FAILED", "CANCELLED"}, 60)
        assert done["phase"] == "COMPLETED", messages(done)
        wait_gone(site["platform"], uuid)
    finally:
        node.stop()
        clean(site)


def test_cancel_mid_session_removes_the_server(site, node):
    uuid = book(node, vm_request("PT5M"))
    wait_phase(node, uuid, {"RUNNING"}, 60)
    assert servers_of(site["conn"], uuid)
    r = httpx.post(f"{node.url}/sessions/{uuid}", json=CANCEL, timeout=30)
    assert r.status_code == 200 and r.json()["phase"] == "CANCELLED"
    wait_gone(site["platform"], uuid)
    doc = httpx.get(f"{node.url}/sessions/{uuid}", timeout=30).json()
    assert "stopped and removed" in messages(doc)


def test_sigkill_mid_session_then_restart_completes_and_leaves_the_cloud_clean(site):
    first = start_node(site["config"], site["tmp"], "first")
    try:
        uuid = book(first, vm_request("PT15S"))
        wait_phase(first, uuid, {"RUNNING"}, 60)
    finally:
        first.kill()  # SIGKILL: no shutdown handler runs
    assert servers_of(site["conn"], uuid), "the server should outlive the node"
    second = start_node(site["config"], site["tmp"], "second")
    try:
        doc = wait_phase(second, uuid, {"COMPLETED", "FAILED", "CANCELLED"}, 60)
        assert doc["phase"] == "COMPLETED", messages(doc) + second.output()[-3000:]
        wait_gone(site["platform"], uuid)
    finally:
        second.stop()


def test_reconciliation_removes_a_stray_server_of_an_ended_session(site, node):
    conn = site["conn"]
    uuid = book(node, vm_request("PT15S"))
    wait_phase(node, uuid, {"COMPLETED"}, 60)
    wait_gone(site["platform"], uuid)
    # someone (or a crash at the wrong moment) leaves a server of that session behind
    flavor = conn.compute.create_flavor(name=f"stray-{uuid[:8]}", vcpus=1, ram=512, disk=1)
    try:
        stray = conn.compute.create_server(
            name=work_name(uuid),
            flavor_id=flavor.id,
            image_id=conn.image.find_image(IMAGE).id,
            networks="none",
            metadata={"ebroker.session": uuid, "ebroker.platform": "cloud"},
        )
        wait_gone(site["platform"], uuid)
        conn.compute.wait_for_delete(stray, interval=1, wait=60)  # gone, not only going
    finally:
        conn.compute.delete_flavor(flavor)
    deadline = time.monotonic() + 60  # generous: the CI machine is busy
    while True:  # the note follows the removal (which waits for the server to be gone)
        doc = httpx.get(f"{node.url}/sessions/{uuid}", timeout=30).json()
        if "reconciliation removed stray work" in messages(doc):
            break
        assert time.monotonic() < deadline, messages(doc)
        time.sleep(0.5)
    assert doc["phase"] == "COMPLETED"


def test_no_valid_host_fails_the_session_with_novas_fault(conn, tmp_path):
    # the site gives servers a root disk larger than any host has: Nova cannot place them
    disk = placement_capacity(conn, "DISK_GB") * 2
    site = make_site(tmp_path, options(root_disk=disk))
    node = start_node(site["config"], tmp_path, "node")
    try:
        uuid = book(node, vm_request("PT1M"))
        doc = wait_phase(node, uuid, {"COMPLETED", "FAILED", "CANCELLED"}, 90)
        assert doc["phase"] == "FAILED", messages(doc)
        text = messages(doc)
        fault = text.split(f"server {work_name(uuid)} ERROR: ", 1)[1].split(" | ")[0]
        assert fault.strip() and fault != "no fault recorded", text  # Nova's own message
        wait_gone(site["platform"], uuid)
    finally:
        node.stop()
        clean(site)


def test_a_server_booted_outside_ebroker_shrinks_what_is_offered(site, node):
    conn = site["conn"]
    (pool,) = site["platform"].pools()
    cores = pool.inventories["cores"].total
    memory = min(pool.inventories["memory"].total, 4)
    whole = vm_request(cores=cores, memory=memory)
    r = httpx.post(f"{node.url}/requests", json=whole, timeout=30)
    assert r.status_code == 200 and r.json()["result"] == "YES", r.text
    taken = max(cores - 1, 1)
    flavor = conn.compute.create_flavor(name=f"external-{uuids.uuid4().hex[:8]}", vcpus=taken,
                                        ram=512, disk=1)  # fmt: skip
    external = None
    try:
        external = conn.compute.create_server(
            name=f"external-{uuids.uuid4().hex[:8]}",
            flavor_id=flavor.id,
            image_id=conn.image.find_image(IMAGE).id,
            networks="none",
        )
        wait_server(conn, external, "ACTIVE")
        deadline = time.monotonic() + 30
        while True:  # the node re-reads Placement every second
            r = httpx.post(f"{node.url}/requests", json=whole, timeout=30)
            assert r.status_code == 200, r.text
            if r.json()["result"] != "YES":
                break
            assert time.monotonic() < deadline, r.text
            time.sleep(1)
        small = vm_request(cores=cores - taken, memory=1)
        r = httpx.post(f"{node.url}/requests", json=small, timeout=30)
        assert r.status_code == 200 and r.json()["result"] == "YES", r.text
    finally:
        if external is not None:
            conn.compute.delete_server(external)
            conn.compute.wait_for_delete(external, interval=1, wait=120)
        conn.compute.delete_flavor(flavor)


def test_a_host_shrinking_under_a_running_session_is_noted(site, node):
    if CLOUD != "ci-openstack" or SETUP is None or not SETUP.is_file():
        pytest.skip("resizes the fake compute host: runs on the CI cloud only")
    uuid = book(node, vm_request("PT5M"))
    wait_phase(node, uuid, {"RUNNING"}, 60)
    try:
        restart_compute(FAKE_VCPUS="4")  # the admin takes half the host away
        deadline = time.monotonic() + 30
        while True:
            doc = httpx.get(f"{node.url}/sessions/{uuid}", timeout=30).json()
            if "shrank" in messages(doc):
                break
            assert time.monotonic() < deadline, messages(doc) + node.output()[-2000:]
            time.sleep(0.5)
        assert "pool default of cloud shrank: 4 of 8 cores" in messages(doc)
        assert "pool default shrank" in node.output()
    finally:
        restart_compute()
    r = httpx.post(f"{node.url}/sessions/{uuid}", json=CANCEL, timeout=30)
    assert r.status_code == 200
    wait_gone(site["platform"], uuid)


# --- Blazar ------------------------------------------------------------------------------------


def blazar(conn: Any, method: str, path: str, **kwargs: Any) -> Any:
    r = conn.session.request(path, method, endpoint_filter=RESERVATION, raise_exc=False, **kwargs)
    assert r.status_code < 400, f"{method} {path}: {r.status_code} {r.text[:300]}"
    return r.json() if r.content else None


# the shared script that runs the CI cloud, named by .ci/run (a clone alone has no ../shared)
_SETUP = os.environ.get("EBROKER_OPENSTACK_SETUP")
SETUP = Path(_SETUP) if _SETUP else None


def restart_compute(**sizes: str) -> None:
    """Restart the CI cloud's nova-compute (with other ``FAKE_*`` sizes of its fake host)."""
    env = {**os.environ, **sizes}
    assert SETUP is not None, "EBROKER_OPENSTACK_SETUP names the CI cloud's script"
    subprocess.run(["bash", str(SETUP), "restart-compute"], check=True, timeout=120,
                   capture_output=True, env=env)  # fmt: skip


def refresh_compute() -> None:
    """Blazar gives a host it manages a child resource provider in Placement and deletes it
    when the host leaves; nova-compute keeps the deleted provider in its cache (for
    ``resource_provider_association_refresh``, 300 s) and fails every build meanwhile. On the
    CI cloud, restart nova-compute so that it reads Placement again."""
    if CLOUD == "ci-openstack" and SETUP is not None and SETUP.is_file():
        restart_compute()


@pytest.fixture
def blazar_host(conn) -> Iterator[str]:
    """The compute host registered with Blazar (so only reservations boot on it), and
    unregistered afterwards, when no lease holds it any more. Another cloud's host is
    registered only with ``EBROKER_OS_TEST_BLAZAR=1``: it takes the host from other users."""
    if CLOUD != "ci-openstack" and os.environ.get("EBROKER_OS_TEST_BLAZAR") != "1":
        pytest.skip("registers a compute host with Blazar: opt in with EBROKER_OS_TEST_BLAZAR=1")
    try:
        conn.session.get_endpoint(**RESERVATION)
    except Exception as exc:
        unavailable(f"cloud {CLOUD} has no reservation service (Blazar): {exc}")
    hypervisor = next(conn.compute.hypervisors()).name
    hosts = blazar(conn, "GET", "/os-hosts")["hosts"]
    host = next((h for h in hosts if h["hypervisor_hostname"] == hypervisor), None)
    if host is None:
        host = blazar(conn, "POST", "/os-hosts", json={"name": hypervisor})["host"]
    yield hypervisor
    deadline = time.monotonic() + 60
    while True:
        r = conn.session.request(f"/os-hosts/{host['id']}", "DELETE", endpoint_filter=RESERVATION,
                                 raise_exc=False)  # fmt: skip
        if r.status_code < 400 or r.status_code == 404 or time.monotonic() > deadline:
            break
        time.sleep(1)
    refresh_compute()


def test_with_blazar_a_lease_per_session_the_host_refuses_others_extends_move_it(
    conn, tmp_path, blazar_host
):
    site = make_site(tmp_path, options(blazar={"enabled": True, "activation": "PT30S"}))
    node = start_node(site["config"], tmp_path, "node")
    outside = None
    try:
        uuid = book(node, vm_request("PT2M"))
        deadline = time.monotonic() + 30
        while True:  # the lease is made at acceptance, by the engine's first step
            leases = blazar(conn, "GET", "/leases")["leases"]
            mine = [x for x in leases if x["name"] == work_name(uuid)]
            if mine:
                break
            doc = httpx.get(f"{node.url}/sessions/{uuid}", timeout=30).json()
            assert time.monotonic() < deadline, messages(doc) + node.output()[-3000:]
            time.sleep(0.5)
        (lease,) = mine
        assert lease["reservations"][0]["resource_type"] == "physical:host"
        wait_phase(node, uuid, {"RUNNING"}, 90)
        (server,) = servers_of(conn, uuid)
        assert server.compute_host == blazar_host
        # a server without the reservation's hint is refused on the reserved host
        flavor = conn.compute.find_flavor(work_name(uuid), is_public=None)
        outside = conn.compute.create_server(
            name=f"outside-{uuid[:8]}",
            flavor_id=flavor.id,
            image_id=conn.image.find_image(IMAGE).id,
            networks="none",
        )
        assert wait_server(conn, outside, "ERROR").status == "ERROR"
        # extending the session moves the lease's end (Blazar keeps minutes)
        before = blazar(conn, "GET", f"/leases/{lease['id']}")["lease"]["end_date"]
        longer = {"kind": "uri:integer-delta-update", "path": "schedule.duration", "delta": 60}
        r = httpx.post(f"{node.url}/sessions/{uuid}", json=longer, timeout=30)
        assert r.status_code == 200, r.text
        after = blazar(conn, "GET", f"/leases/{lease['id']}")["lease"]["end_date"]
        assert after > before, (before, after)
        r = httpx.post(f"{node.url}/sessions/{uuid}", json=CANCEL, timeout=30)
        assert r.status_code == 200 and r.json()["phase"] == "CANCELLED"
        wait_gone(site["platform"], uuid)
        doc = httpx.get(f"{node.url}/sessions/{uuid}", timeout=30).json()
        assert f"Blazar lease {lease['id']} made" in messages(doc)
        leases = blazar(conn, "GET", "/leases")["leases"]
        assert not [x for x in leases if x["name"] == work_name(uuid)]
    finally:
        if outside is not None:
            conn.compute.delete_server(outside)
            conn.compute.wait_for_delete(outside, interval=1, wait=120)
        node.stop()
        clean(site)


def test_parallel_steps_share_one_connection(conn):
    """openstacksdk is called from the engine's worker threads: one connection per process
    and credentials, whatever the number of threads."""
    from platforms.openstack.client import connect
    from platforms.openstack.options import OpenStackOptions

    chosen = OpenStackOptions.model_validate(options())
    found: list[Any] = []
    threads = [threading.Thread(target=lambda: found.append(connect(chosen))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(c) for c in found}) == 1
    assert found[0].authorize()  # a token, from the shared session
