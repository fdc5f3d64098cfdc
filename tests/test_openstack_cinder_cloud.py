"""Cinder volumes for Nova servers on a real cloud, through the official openstacksdk: what the
openstack platform relies on to give a session's storage resource a volume on its server.
By default the cloud is the CI one (``.ci/setup-openstack.sh`` then ``.ci/setup-cinder.sh``:
Nova's fake virt driver, Cinder's NFS driver on a local directory).

- a 1 GiB volume made beforehand → ``available``; a server booted with it as a data volume
  (``source_type: volume``, ``boot_index: -1``, ``delete_on_termination: false``) and with a
  blank volume Nova makes itself (``source_type: blank``, ``delete_on_termination: true``) →
  ACTIVE, both volumes ``in-use`` on it; the server deleted → the first volume ``available``
  again, the blank one deleted by Nova;
- a volume attached to a running server and detached again (``os-volume_attachments``);
- Nova refuses a data volume in ``block_device_mapping_v2`` without the image's own entry
  (``boot_index: 0``), even with ``imageRef``.

Another cloud: ``OS_CLOUD`` and ``OS_CLIENT_CONFIG_FILE``, as for
tests/test_platform_openstack_e2e.py; ``EBROKER_OS_TEST_IMAGE`` (default ``tiny-raw``) names
the image. The servers are booted without a network (``networks: none``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import openstack
import pytest
from openstack import exceptions

from tests.conftest import unavailable
from tests.openstack_cloud import CLOUD, IMAGE, admin_connection

pytestmark = pytest.mark.slow  # a real cloud: servers and volumes come and go

WAIT = {"interval": 0.5, "wait": 120}
PREFIX = "ebroker-cinder-test-"


@pytest.fixture(scope="module")
def conn() -> Iterator[openstack.connection.Connection]:
    """An admin connection to a cloud with Compute and Block Storage v3 in its catalog."""
    connection = admin_connection()
    try:
        list(connection.block_storage.volumes(limit=1))
    except Exception as exc:
        unavailable(
            f"cloud {CLOUD} has no block storage (volumev3) that answers "
            f"(run .ci/setup-cinder.sh): {type(exc).__name__}: {exc}"
        )
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def boot(conn) -> Iterator[dict[str, Any]]:
    """What the servers boot: the test image and a flavor of their own."""
    image = conn.image.find_image(IMAGE)
    if image is None:
        unavailable(f"image {IMAGE} is not in cloud {CLOUD}")
    flavor = conn.compute.create_flavor(
        name=f"{PREFIX}{uuid.uuid4().hex[:8]}", vcpus=1, ram=512, disk=1, is_public=False
    )
    yield {"image_id": image.id, "flavor_id": flavor.id, "networks": "none"}
    conn.compute.delete_flavor(flavor)


@pytest.fixture
def made(conn) -> Iterator[dict[str, list[Any]]]:
    """Servers and volumes a test made, deleted afterwards whatever happened (servers first:
    a volume in use cannot be deleted)."""
    things: dict[str, list[Any]] = {"servers": [], "volumes": []}
    yield things
    for server in things["servers"]:
        conn.compute.delete_server(server, ignore_missing=True)
        conn.compute.wait_for_delete(server, **WAIT)
    for volume in things["volumes"]:
        try:
            volume = conn.block_storage.wait_for_status(
                volume, status="available", failures=["error"], **WAIT
            )
        except exceptions.NotFoundException:
            continue
        conn.block_storage.delete_volume(volume, ignore_missing=True)
        conn.block_storage.wait_for_delete(volume, **WAIT)


def image_disk(image_id: str) -> dict[str, Any]:
    """The image's own entry, which block_device_mapping_v2 needs beside any data volume."""
    return {
        "boot_index": 0,
        "uuid": image_id,
        "source_type": "image",
        "destination_type": "local",
        "delete_on_termination": True,
    }


def new_volume(conn, made, size: int = 1):
    volume = conn.block_storage.create_volume(size=size, name=f"{PREFIX}{uuid.uuid4().hex[:8]}")
    made["volumes"].append(volume)
    return conn.block_storage.wait_for_status(
        volume, status="available", failures=["error"], **WAIT
    )


def attachments(volume) -> dict[str, str]:
    """server id → device of a volume's attachments, as Cinder reports them."""
    return {a["server_id"]: a["device"] for a in volume.attachments}


def test_volumes_at_boot_data_volume_kept_blank_volume_deleted(conn, boot, made) -> None:
    data = new_volume(conn, made)
    assert (data.size, data.status, data.attachments) == (1, "available", [])
    server = conn.compute.create_server(
        name=f"{PREFIX}boot",
        **boot,
        block_device_mapping=[
            image_disk(boot["image_id"]),
            {
                "boot_index": -1,
                "uuid": data.id,
                "source_type": "volume",
                "destination_type": "volume",
                "delete_on_termination": False,
            },
            {
                "boot_index": -1,
                "source_type": "blank",
                "destination_type": "volume",
                "volume_size": 2,
                "delete_on_termination": True,
            },
        ],
    )
    made["servers"].append(server)
    server = conn.compute.wait_for_server(server, status="ACTIVE", **WAIT)

    on_server = {a.id: a.delete_on_termination for a in server.attached_volumes}
    assert on_server.pop(data.id) is False
    (blank_id, blank_deleted_with_server) = on_server.popitem()
    assert blank_deleted_with_server is True and not on_server
    data = conn.block_storage.get_volume(data.id)
    blank = conn.block_storage.get_volume(blank_id)
    assert (data.status, blank.status, blank.size) == ("in-use", "in-use", 2)
    assert list(attachments(data)) == [server.id] == list(attachments(blank))
    devices = {a.volume_id: a.device for a in conn.compute.volume_attachments(server)}
    assert devices == {
        data.id: attachments(data)[server.id],
        blank.id: attachments(blank)[server.id],
    }

    conn.compute.delete_server(server)
    conn.compute.wait_for_delete(server, **WAIT)
    data = conn.block_storage.wait_for_status(
        data, status="available", failures=["error", "error_detaching"], **WAIT
    )
    assert data.attachments == []
    conn.block_storage.wait_for_delete(blank, **WAIT)  # Nova deleted the volume it made

    conn.block_storage.delete_volume(data)
    conn.block_storage.wait_for_delete(data, **WAIT)


def test_volume_attached_to_a_running_server_and_detached(conn, boot, made) -> None:
    server = conn.compute.create_server(name=f"{PREFIX}attach", **boot)
    made["servers"].append(server)
    volume = new_volume(conn, made)
    server = conn.compute.wait_for_server(server, status="ACTIVE", **WAIT)

    attachment = conn.compute.create_volume_attachment(server, volume)
    assert attachment.volume_id == volume.id
    volume = conn.block_storage.wait_for_status(
        volume, status="in-use", failures=["error", "error_attaching", "available"], **WAIT
    )
    assert attachments(volume) == {server.id: attachment.device}
    assert [a.volume_id for a in conn.compute.volume_attachments(server)] == [volume.id]
    server = conn.compute.get_server(server.id)
    assert [a.id for a in server.attached_volumes] == [volume.id]

    conn.compute.delete_volume_attachment(server, volume)
    volume = conn.block_storage.wait_for_status(
        volume, status="available", failures=["error", "error_detaching"], **WAIT
    )
    assert volume.attachments == []
    assert list(conn.compute.volume_attachments(server)) == []


def test_a_data_volume_needs_the_images_own_entry(conn, boot, made) -> None:
    volume = new_volume(conn, made)
    data_only = [
        {
            "boot_index": -1,
            "uuid": volume.id,
            "source_type": "volume",
            "destination_type": "volume",
            "delete_on_termination": False,
        }
    ]
    with pytest.raises(exceptions.BadRequestException, match="Boot sequence"):
        made["servers"].append(
            conn.compute.create_server(
                name=f"{PREFIX}refused", **boot, block_device_mapping=data_only
            )
        )
    assert conn.block_storage.get_volume(volume.id).status == "available"
