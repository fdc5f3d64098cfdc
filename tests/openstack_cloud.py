"""The cloud the OpenStack tests run against: by default the one ``.ci/setup-openstack.sh``
runs on this machine; ``OS_CLOUD`` (and ``OS_CLIENT_CONFIG_FILE``) name another, and
``EBROKER_OS_TEST_IMAGE`` the image its servers boot."""

from __future__ import annotations

import os
from pathlib import Path

import openstack

from tests.conftest import unavailable

CI_CLOUDS = "/tmp/ci-openstack/clouds.yaml"
CLOUD = os.environ.get("OS_CLOUD", "ci-openstack")
CLOUDS_FILE = os.environ.get("OS_CLIENT_CONFIG_FILE", CI_CLOUDS)
IMAGE = os.environ.get("EBROKER_OS_TEST_IMAGE", "tiny-raw")


def admin_connection() -> openstack.connection.Connection:
    """An authorized connection to the cloud, whose compute API answers (else the test is
    unavailable, which CI turns into a failure)."""
    if not Path(CLOUDS_FILE).is_file():
        unavailable(f"no clouds.yaml at {CLOUDS_FILE} (run .ci/setup-openstack.sh)")
    os.environ["OS_CLIENT_CONFIG_FILE"] = CLOUDS_FILE
    try:
        connection = openstack.connect(cloud=CLOUD)
        connection.authorize()
        list(connection.compute.servers(limit=1))
    except Exception as exc:
        unavailable(f"OpenStack cloud {CLOUD} unreachable: {type(exc).__name__}: {exc}")
    return connection
