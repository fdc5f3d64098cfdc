"""The ``local`` platform against real podman (rootful, see .ci/setup-podman.sh).

Every test runs real containers from ``localhost/busybox``; each session has its own uuid and
every container a test makes is removed in the fixture's teardown.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from broker_core.config import PlatformConfig
from broker_core.kinds.base import kind_uri
from broker_core.kinds.builtin import KINDS
from broker_core.kinds.registry import KindRegistry
from broker_core.kinds.request import parse_request
from broker_core.staging.rules import StagingRules
from platforms.contract import Execution, PlatformError, WorkState, WorkStatus
from platforms.local import LocalPlatform
from platforms.podman_args import run_argv
from tests.conftest import unavailable

IMAGE = "localhost/busybox"
DOCKER = kind_uri("executable", "docker-container")
COMPUTE = kind_uri("compute", "simple-compute-resource")
STORAGE = kind_uri("storage", "simple-storage-resource")
DATA = kind_uri("data", "simple-data-resource")


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module", autouse=True)
def podman_works() -> None:
    if shutil.which("podman") is None:
        unavailable("podman is not installed (run .ci/setup-podman.sh)")
    try:
        result = podman("run", "--rm", IMAGE, "/bin/busybox", "true")
    except (OSError, subprocess.TimeoutExpired) as exc:
        unavailable(f"podman does not run: {exc}")
        return
    if result.returncode != 0:
        unavailable(f"podman cannot run {IMAGE} (run .ci/setup-podman.sh): {result.stderr}")


@pytest.fixture
def names() -> Iterator[list[str]]:
    """Containers to remove after the test, whatever happened."""
    made: list[str] = []
    yield made
    if made:
        podman("rm", "-f", "-i", "-t", "0", *made)


@pytest.fixture
def make_platform() -> Callable[..., LocalPlatform]:
    def make(**options: Any) -> LocalPlatform:
        options = {"stop_timeout": 1, **options}
        name = f"local-test-{uuid.uuid4().hex[:8]}"
        return LocalPlatform(PlatformConfig(name=name, type="local", options=options))

    return make


@pytest.fixture
def platform(make_platform: Callable[..., LocalPlatform]) -> LocalPlatform:
    return make_platform()


@pytest.fixture
def make_execution(tmp_path: Path, names: list[str]) -> Callable[..., Execution]:
    def make(
        command: list[str] | None = None,
        volumes: list[dict[str, Any]] | None = None,
        storage: list[dict[str, Any]] | None = None,
        data: list[dict[str, Any]] | None = None,
        **executable: Any,
    ) -> Execution:
        session = str(uuid.uuid4())
        now = int(time.time())
        execution = Execution(
            session=session,
            executable={
                "kind": DOCKER,
                "meta": {"uuid": str(uuid.uuid4())},
                "image": {"locations": [IMAGE]},
                **({"command": command} if command is not None else {}),
                **executable,
            },
            compute={
                "kind": COMPUTE,
                "meta": {"uuid": str(uuid.uuid4())},
                "volumes": volumes or [],
            },
            storage=storage or [],
            data=data or [],
            granted={"cores": 1, "memory": 1},
            prepare_at=now,
            start_at=now,
            end_at=now + 3600,
            workdir=tmp_path / session,
            # the data resources' sources are in tmp_path: the node's data directory here
            staging=StagingRules(file_roots=(str(tmp_path.resolve()),)),
        )
        execution.workdir.mkdir(parents=True)
        names.append(execution.name)
        return execution

    return make


def data_resource(tmp_path: Path, name: str, files: dict[str, str]) -> dict[str, Any]:
    source = tmp_path / f"source-{name}"
    source.mkdir()
    for file, text in files.items():
        (source / file).write_text(text)
    return {
        "kind": DATA,
        "meta": {"uuid": str(uuid.uuid4()), "name": name},
        "location": source.as_uri(),
    }


def storage_resource(name: str) -> dict[str, Any]:
    return {"kind": STORAGE, "meta": {"uuid": str(uuid.uuid4()), "name": name}}


def prepare(platform: LocalPlatform, execution: Execution) -> None:
    """The engine's preparation steps, in its order."""
    for storage in execution.storage:
        platform.prepare_storage(execution, storage)
    for data in execution.data:
        platform.stage_data(execution, data)
    platform.prepare_executable(execution)


def wait_for(
    platform: LocalPlatform, execution: Execution, *states: WorkState, timeout: float = 15
) -> WorkStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = platform.poll(execution)
        if status.state in states or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def container_exists(name: str) -> bool:
    return podman("container", "exists", name).returncode == 0


# --- preparation ------------------------------------------------------------------------------


def test_prepare_executable_finds_the_local_image(
    platform: LocalPlatform, make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(["/bin/busybox", "true"])
    platform.prepare_executable(execution)
    assert execution.state["image"] == IMAGE
    assert execution.state["image_id"]
    assert f"image {IMAGE} ready" in execution.notes
    # the digest podman reports is accepted, with or without its algorithm
    digest = execution.state["image_digest"]
    execution.executable.image.digest = digest
    platform.prepare_executable(execution)
    execution.executable.image.digest = digest.removeprefix("sha256:")
    platform.prepare_executable(execution)


def test_prepare_tries_locations_in_order(
    make_platform: Callable[..., LocalPlatform], make_execution: Callable[..., Execution]
) -> None:
    platform = make_platform(pull="never")
    execution = make_execution(["/bin/busybox", "true"])
    execution.executable.image.locations = [f"localhost/missing-{uuid.uuid4().hex}", IMAGE]
    platform.prepare_executable(execution)
    assert execution.state["image"] == IMAGE


def test_missing_image_with_pull_never_is_an_error(
    make_platform: Callable[..., LocalPlatform], make_execution: Callable[..., Execution]
) -> None:
    platform = make_platform(pull="never")
    execution = make_execution(["/bin/busybox", "true"])
    missing = f"localhost/missing-{uuid.uuid4().hex}"
    execution.executable.image.locations = [missing]
    with pytest.raises(PlatformError, match="not present on this host"):
        platform.prepare_executable(execution)


def test_failed_pull_is_an_error(
    platform: LocalPlatform, make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(["/bin/busybox", "true"])
    # nothing listens on 127.0.0.1:1: the pull fails at once
    execution.executable.image.locations = [f"127.0.0.1:1/missing-{uuid.uuid4().hex}"]
    with pytest.raises(PlatformError, match="cannot pull the image"):
        platform.prepare_executable(execution)


def test_wrong_digest_is_an_error(
    platform: LocalPlatform, make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(["/bin/busybox", "true"])
    execution.executable.image.digest = "sha256:" + "0" * 64
    with pytest.raises(PlatformError, match="not the requested sha256:0000"):
        platform.prepare_executable(execution)
    # nothing runs from an image that failed its check
    execution.state.clear()
    with pytest.raises(PlatformError, match="digest"):
        platform.start(execution)
    assert not container_exists(execution.name)


# --- running ----------------------------------------------------------------------------------


def test_run_to_success_with_output_in_logs(
    platform: LocalPlatform, make_execution: Callable[..., Execution], tmp_path: Path
) -> None:
    data = data_resource(tmp_path, "inputs", {"x": "staged data\n"})
    execution = make_execution(
        ["/bin/busybox", "sh", "-c", "echo hello; cat /data/x; sleep 1"],
        volumes=[{"path": "/data", "mode": "READONLY", "resource": "inputs"}],
        data=[data],
    )
    prepare(platform, execution)
    platform.start(execution)
    assert platform.poll(execution).state == WorkState.RUNNING
    status = wait_for(platform, execution, WorkState.SUCCEEDED, WorkState.FAILED)
    assert status == WorkStatus(WorkState.SUCCEEDED, exit_code=0, message="exited with code 0")
    assert platform.logs(execution) == "hello\nstaged data\n"

    platform.release(execution)
    assert not container_exists(execution.name)
    assert platform.poll(execution).state == WorkState.MISSING
    # the output is kept in the workdir after the container is gone
    assert (execution.workdir / "logs" / "output.log").read_text() == "hello\nstaged data\n"
    assert platform.logs(execution) == "hello\nstaged data\n"


def test_non_zero_exit_fails_with_the_code(
    platform: LocalPlatform, make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(["/bin/busybox", "sh", "-c", "echo oops >&2; exit 3"])
    prepare(platform, execution)
    platform.start(execution)
    status = wait_for(platform, execution, WorkState.SUCCEEDED, WorkState.FAILED)
    assert status.state == WorkState.FAILED
    assert status.exit_code == 3
    assert status.message == "exited with code 3"
    assert platform.logs(execution) == "oops\n"


def test_environment_entrypoint_and_command(
    platform: LocalPlatform, make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(
        ['echo "$GREETING $0 $1"; printf no-newline', "first", "second"],
        entrypoint=["/bin/busybox", "sh", "-c"],
        environment={"GREETING": "hello there"},
    )
    prepare(platform, execution)
    platform.start(execution)
    assert wait_for(platform, execution, WorkState.SUCCEEDED).state == WorkState.SUCCEEDED
    assert platform.logs(execution) == "hello there first second\nno-newline"


def test_string_entrypoint(
    platform: LocalPlatform, make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(["echo", "from", "busybox"], entrypoint="/bin/busybox")
    prepare(platform, execution)
    platform.start(execution)
    assert wait_for(platform, execution, WorkState.SUCCEEDED).state == WorkState.SUCCEEDED
    assert platform.logs(execution) == "from busybox\n"


def test_published_port_is_reachable_through_the_connector(
    platform: LocalPlatform, make_execution: Callable[..., Execution], tmp_path: Path
) -> None:
    page = "<h1>staged page</h1>\n"
    data = data_resource(tmp_path, "site", {"index.html": page})
    execution = make_execution(
        ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"],
        volumes=[{"path": "/www", "mode": "READONLY", "resource": data["meta"]["uuid"]}],
        data=[data],
        network={"ports": [{"internal": 8080, "protocol": "HTTP", "path": "/index.html"}]},
    )
    prepare(platform, execution)
    platform.start(execution)
    [connector] = platform.connectors(execution)
    port = execution.state["ports"][0]["external"]
    assert connector == {
        "kind": "http-connector",
        "protocol": "HTTP",
        "host": "127.0.0.1",
        "port": port,
        "internal": 8080,
        "url": f"http://127.0.0.1:{port}/index.html",
    }
    body = None
    deadline = time.monotonic() + 10
    while body is None:
        try:
            with urllib.request.urlopen(connector["url"], timeout=2) as response:
                body = response.read().decode()
        except (urllib.error.URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert body == page
    assert platform.poll(execution).state == WorkState.RUNNING
    # after a crash that lost the state, start finds the container and its ports again
    del execution.state["ports"]
    platform.start(execution)
    assert platform.connectors(execution) == [connector]
    platform.stop(execution, "end of the booked window")
    platform.release(execution)
    assert not container_exists(execution.name)


def test_readonly_volume_is_read_only(
    platform: LocalPlatform, make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(
        ["/bin/busybox", "sh", "-c", "touch /rw/written && ! touch /ro/written"],
        volumes=[
            {"path": "/ro", "mode": "READONLY", "resource": "scratch"},
            {"path": "/rw", "mode": "READWRITE", "resource": "results"},
        ],
        storage=[storage_resource("scratch"), storage_resource("results")],
    )
    prepare(platform, execution)
    platform.start(execution)
    status = wait_for(platform, execution, WorkState.SUCCEEDED, WorkState.FAILED)
    assert status.state == WorkState.SUCCEEDED, platform.logs(execution)
    assert "Read-only file system" in (platform.logs(execution) or "")
    results, scratch = execution.storage[1], execution.storage[0]
    assert (execution.storage_path(results) / "written").exists()
    assert not (execution.storage_path(scratch) / "written").exists()


def test_start_twice_is_a_no_op(
    platform: LocalPlatform, make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(["/bin/busybox", "sleep", "30"])
    prepare(platform, execution)
    platform.start(execution)
    first = execution.state["container_id"]
    platform.start(execution)
    assert execution.state["container_id"] == first
    result = podman("ps", "-a", "-q", "--no-trunc", "--filter", f"name=^{execution.name}$")
    assert result.stdout.split() == [first]
    # what podman was given is what the builder makes (tests/test_platform_builders.py)
    created = podman("container", "inspect", "--format", "{{json .Config.CreateCommand}}", first)
    assert json.loads(created.stdout)[1:] == run_argv(
        execution,
        platform.options,
        platform=platform.name,
        image=execution.state["image_id"],
        ports=[],
        mounts=[],
        logs=(execution.workdir / "logs").resolve(),
    )
    limits = podman(
        "container",
        "inspect",
        "--format",
        "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}",
        execution.name,
    )
    assert limits.stdout.split() == [str(10**9), str(2**30)]


def test_stop_ends_a_long_sleep_and_release_removes_it(
    platform: LocalPlatform, make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(["/bin/busybox", "sh", "-c", "echo started; sleep 60"])
    prepare(platform, execution)
    platform.start(execution)
    assert wait_for(platform, execution, WorkState.RUNNING).state == WorkState.RUNNING
    began = time.monotonic()
    platform.stop(execution, "cancelled")
    assert time.monotonic() - began < 5
    status = platform.poll(execution)
    assert status.state == WorkState.FAILED
    assert status.message is not None and "stopped: cancelled" in status.message
    platform.stop(execution, "cancelled")  # idempotent
    platform.release(execution)
    platform.release(execution)  # idempotent
    result = podman("ps", "-a", "-q", "--filter", f"name=^{execution.name}$")
    assert result.returncode == 0 and result.stdout.strip() == ""
    platform.stop(execution, "after release")  # no container: still no error
    assert platform.logs(execution) == "started\n"


def test_list_work_and_remove_work(
    platform: LocalPlatform,
    make_platform: Callable[..., LocalPlatform],
    make_execution: Callable[..., Execution],
) -> None:
    execution = make_execution(["/bin/busybox", "sleep", "30"])
    prepare(platform, execution)
    platform.start(execution)
    assert platform.list_work() == {execution.name}
    # another local platform's containers are not this one's strays
    assert make_platform().list_work() == set()
    platform.remove_work(execution.name)
    assert platform.list_work() == set()
    assert not container_exists(execution.name)
    platform.remove_work(execution.name)  # idempotent
    with pytest.raises(PlatformError, match="not an ebroker container"):
        platform.remove_work("somebody-else")


def test_port_in_use_is_an_error_and_leaves_no_container(
    platform: LocalPlatform, make_execution: Callable[..., Execution]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        execution = make_execution(
            ["/bin/busybox", "sleep", "30"],
            network={"ports": [{"internal": 8080, "external": port}]},
        )
        prepare(platform, execution)
        with pytest.raises(PlatformError, match="podman run failed"):
            platform.start(execution)
    assert not container_exists(execution.name)
    assert "ports" not in execution.state


def test_unknown_volume_resource_is_an_error(
    platform: LocalPlatform, make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(
        ["/bin/busybox", "true"],
        volumes=[{"path": "/data", "mode": "READONLY", "resource": "nowhere"}],
    )
    prepare(platform, execution)
    with pytest.raises(PlatformError, match="no storage or data resource 'nowhere'"):
        platform.start(execution)
    assert not container_exists(execution.name)


def test_poll_without_a_container_is_missing(
    platform: LocalPlatform, make_execution: Callable[..., Execution]
) -> None:
    execution = make_execution(["/bin/busybox", "true"])
    assert platform.poll(execution).state == WorkState.MISSING
    assert platform.connectors(execution) == []
    assert platform.logs(execution) is None


# --- booking side and options -----------------------------------------------------------------


def request(**executable: Any) -> Any:
    document = {
        "executable": {"kind": DOCKER, "image": {"locations": [IMAGE]}, **executable},
        "compute": {"kind": COMPUTE, "cores": {"min": 1}},
    }
    parsed = parse_request(document, KindRegistry(KINDS))
    assert parsed.request is not None
    return parsed.request


def test_validate_refuses_privileged_by_default(
    platform: LocalPlatform, make_platform: Callable[..., LocalPlatform]
) -> None:
    assert platform.validate(request()) == []
    [refusal] = platform.validate(request(privileged=True))
    assert refusal.level == "WARN"
    assert "privileged" in refusal.template
    assert make_platform(allow_privileged=True).validate(request(privileged=True)) == []


def test_validate_refuses_ports_without_a_network(
    make_platform: Callable[..., LocalPlatform],
) -> None:
    platform = make_platform(network="none")
    assert platform.validate(request()) == []
    [refusal] = platform.validate(request(network={"ports": [{"internal": 80}]}))
    assert "cannot publish ports" in refusal.template


def test_accepted_kinds_and_estimate(platform: LocalPlatform) -> None:
    assert DOCKER in platform.accepted_kinds()
    assert kind_uri("executable", "singularity-container") not in platform.accepted_kinds()
    assert kind_uri("executable", "jupyter-notebook") not in platform.accepted_kinds()
    estimate = platform.preparation_estimate(request())
    assert estimate == platform.options.base_preparation + platform.options.image_pull
    [pool] = platform.pools()
    assert pool.name == "host" and "cores" in pool.inventories


def test_options(make_platform: Callable[..., LocalPlatform]) -> None:
    platform = make_platform(publish_host="0.0.0.0")
    assert platform.options.connector_host == "0.0.0.0"
    platform = make_platform(publish_host="0.0.0.0", connector_host="node.example.org")
    assert platform.options.connector_host == "node.example.org"
    with pytest.raises(ValidationError):
        make_platform(pulll="never")
    with pytest.raises(ValidationError):
        make_platform(pull="sometimes")


def test_missing_podman_binary_is_a_platform_error(
    make_platform: Callable[..., LocalPlatform], make_execution: Callable[..., Execution]
) -> None:
    platform = make_platform(podman="/nonexistent/podman")
    execution = make_execution(["/bin/busybox", "true"])
    with pytest.raises(PlatformError, match="podman not found"):
        platform.prepare_executable(execution)
    with pytest.raises(PlatformError, match="podman not found"):
        platform.poll(execution)
    with pytest.raises(PlatformError, match="podman not found"):
        platform.list_work()
