"""The container image (Containerfile, built by .ci/build-image.sh) run with podman, as the
charts run it: the files and environment a chart's Deployment gives its container (rendered
by tests/test_helm_charts.py's value sets), as the user, read-only root and capabilities of the
chart's securityContext. A node answers /node and offers a request; an aggregator in the same
pod federates it; ``ebroker check-config`` passes in the image on the configuration the charts
render (the production set's against the real PostgreSQL); the image's HEALTHCHECK passes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import unavailable
from tests.nodes import free_port
from tests.test_helm_charts import (
    AGGREGATOR,
    SAID,
    VALUE_SETS,
    PodFiles,
    existing_secrets,
    manifests_of,
    pod_files,
    render,
    render_templates,
    write_pod_files,
)

pytestmark = pytest.mark.slow

IMAGE = "localhost/ebroker:latest"
ROOT = Path(__file__).resolve().parents[1]
REQUEST = yaml.safe_load((ROOT / "examples" / "requests" / "01-minimal.yaml").read_text())
UID = 10001  # the image's user, the charts' runAsUser


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("podman") is None:
        unavailable("podman is not installed (run .ci/setup-podman.sh)")
    if podman("image", "exists", IMAGE).returncode != 0:
        unavailable(f"no image {IMAGE} (run .ci/build-image.sh)")
    return IMAGE


def run_argv(pod: PodFiles, places: dict[str, Path], *, name: str) -> list[str]:
    """``podman run`` as the chart's pod spec runs the container: its user, a read-only root,
    no capabilities, no privilege escalation, its volumes at their mount paths, its env."""
    argv = ["run", "--detach", "--name", name, "--user", f"{UID}:{UID}", "--read-only",
            "--cap-drop", "all", "--security-opt", "no-new-privileges"]  # fmt: skip
    for mount, place in places.items():
        if mount == "/tmp":
            argv += ["--tmpfs", "/tmp:rw,size=64m,mode=1777"]
        elif mount in pod.files:
            argv += ["--volume", f"{place}:{mount}:ro"]
        else:
            place.chmod(0o777)  # an emptyDir or a claim, writable by the pod's fsGroup
            argv += ["--volume", f"{place}:{mount}:rw"]
    for key, value in pod.env.items():
        argv += ["--env", f"{key}={value}"]
    return argv


def command_of(pod: PodFiles, image: str) -> list[str]:
    """The end of ``podman run``: the image and the container's args, after its command's
    program as the entrypoint when it has a command."""
    if not pod.command:
        return [image, *pod.args]
    return ["--entrypoint", pod.command[0], image, *pod.command[1:], *pod.args]


def readable(places: dict[str, Path]) -> None:
    """Secret and ConfigMap files as the kubelet makes them readable to the pod's group."""
    for place in places.values():
        place.chmod(0o755)
        for file in place.iterdir():
            file.chmod(0o644)


def fetch(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return answer.status, answer.read()


def get(url: str, timeout: float = 5) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, None


def post(url: str, document: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(document).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def wait_ready(url: str, container: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if get(f"{url}/health/ready", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    logs = podman("logs", container).stdout + podman("logs", container).stderr
    pytest.fail(f"{container} not ready at {url} in {seconds} s:\n{logs[-3000:]}")


@pytest.fixture
def pod_name(image: str) -> Iterator[str]:
    """A podman pod of the test's, removed with its containers afterwards."""
    name = f"ebroker-image-test-{uuid.uuid4().hex[:8]}"
    yield name
    podman("pod", "rm", "--force", "--ignore", "--time", "0", name)


def test_node_and_aggregator_serve_from_the_image(
    image: str, pod_name: str, tmp_path: Path
) -> None:
    node_port, aggregator_port = free_port(), free_port()
    made = podman("pod", "create", "--name", pod_name,
                  "--publish", f"127.0.0.1:{node_port}:8080",
                  "--publish", f"127.0.0.1:{aggregator_port}:8081")  # fmt: skip
    assert made.returncode == 0, made.stderr

    node = pod_files(render("node-minimal"), {})
    places = write_pod_files(node, tmp_path / "node")
    readable({m: p for m, p in places.items() if m in node.files})
    started = time.monotonic()
    run = podman(*run_argv(node, places, name=f"{pod_name}-node"), "--pod", pod_name,
                 image, *node.args)  # fmt: skip
    assert run.returncode == 0, run.stderr
    node_url = f"http://127.0.0.1:{node_port}"
    wait_ready(node_url, f"{pod_name}-node")
    ready_after = time.monotonic() - started

    status, described = get(f"{node_url}/node")
    assert status == 200 and described["site"]["name"] == "ebroker-node"
    status, offers = post(f"{node_url}/requests", REQUEST)
    assert status == 200 and offers["result"] == "YES", offers
    assert offers["offers"], offers

    # the aggregator chart's pod, on 8081 of the same pod, over the node on 8080
    values = {"containerPort": 8081,
              "config": {"upstreams": [{"name": "node", "url": "http://127.0.0.1:8080"}]}}
    aggregator = pod_files(manifests_of(render_templates(AGGREGATOR, values)), {})
    places = write_pod_files(aggregator, tmp_path / "aggregator")
    readable({m: p for m, p in places.items() if m in aggregator.files})
    run = podman(*run_argv(aggregator, places, name=f"{pod_name}-aggregator"), "--pod", pod_name,
                 image, *aggregator.args)  # fmt: skip
    assert run.returncode == 0, run.stderr
    aggregator_url = f"http://127.0.0.1:{aggregator_port}"
    wait_ready(aggregator_url, f"{pod_name}-aggregator")
    status, described = get(f"{aggregator_url}/node")
    assert status == 200 and [u["name"] for u in described["upstreams"]] == ["node"]
    status, offers = post(f"{aggregator_url}/requests", REQUEST)
    assert status == 200 and offers["result"] == "YES" and offers["offers"], offers

    # the image's own HEALTHCHECK, on each one's port (EBROKER_SERVER__PORT)
    for container in ("node", "aggregator"):
        check = podman("healthcheck", "run", f"{pod_name}-{container}")
        assert check.returncode == 0, (container, check.stdout, check.stderr)
    print(f"node ready {ready_after:.1f} s after podman run")


def check_config_in_image(
    image: str, pod: PodFiles, places: dict[str, Path], name: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    readable({m: p for m, p in places.items() if m in pod.files})
    argv = run_argv(pod, places, name=name)
    argv.remove("--detach")
    assert pod.args[0] == "serve"
    try:
        return podman(*argv, "--rm", *extra, image, "check-config", *pod.args[1:])
    finally:
        podman("rm", "--force", "--ignore", name)


@pytest.mark.parametrize("name", ["node-minimal", "node-kubernetes"])
def test_check_config_passes_in_the_image_on_the_rendered_config(
    image: str, name: str, tmp_path: Path
) -> None:
    pod = pod_files(render(name), {})
    places = write_pod_files(pod, tmp_path)
    result = check_config_in_image(image, pod, places, f"ebroker-check-{uuid.uuid4().hex[:8]}",
                                   "--network", "none")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "configuration OK" in result.stdout


@pytest.mark.postgres
@pytest.mark.parametrize("name", sorted(SAID))
def test_check_config_passes_in_the_image_on_the_postgresql_configs(
    image: str, name: str, pg_server_url: str, tmp_path: Path
) -> None:
    """The production set and the README's 1000/500 site: PostgreSQL by URL from a Secret,
    Basic users' hashes and a policy credential as files, read by the image's ebroker, which
    reaches the real database (on the host's network, where the test server listens)."""
    pod = pod_files(render(name), existing_secrets(pg_server_url))
    places = write_pod_files(pod, tmp_path)
    result = check_config_in_image(image, pod, places, f"ebroker-check-{uuid.uuid4().hex[:8]}",
                                   "--network", "host")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert SAID[name] in result.stdout


@pytest.fixture
def containers() -> Iterator[list[str]]:
    """Names of the test's containers, removed afterwards."""
    made: list[str] = []
    yield made
    for name in made:
        podman("rm", "--force", "--ignore", "--time", "0", name)


def run_on_host(
    image: str, pod: PodFiles, tmp_path: Path, name: str, *, detach: bool
) -> subprocess.CompletedProcess[str]:
    """One of the chart's pods on the host's network (where the test PostgreSQL listens)."""
    places = write_pod_files(pod, tmp_path / name)
    readable({m: p for m, p in places.items() if m in pod.files})
    argv = run_argv(pod, places, name=name)
    if not detach:
        argv.remove("--detach")
    return podman(*argv, "--network", "host", *command_of(pod, image))


@pytest.mark.postgres
def test_production_node_migrates_in_its_hook_job_then_serves(
    image: str, pg_url: str, tmp_path: Path, containers: list[str]
) -> None:
    """The production set on a fresh PostgreSQL database: the pre-install Job's container
    migrates it (`ebroker db upgrade`), then the node, two workers, which does not migrate
    (database.migrate_on_start false), is ready: the schema is current. Its /metrics, which
    the ServiceMonitor scrapes, answers."""
    manifests = render("node-production")
    secrets = existing_secrets(pg_url)
    tag = uuid.uuid4().hex[:8]
    containers.extend([f"ebroker-migrate-{tag}", f"ebroker-node-{tag}"])
    job = run_on_host(image, pod_files(manifests, secrets, kind="Job"), tmp_path,
                      containers[0], detach=False)  # fmt: skip
    assert job.returncode == 0, job.stdout + job.stderr
    node = pod_files(manifests, secrets)
    port = free_port()
    node.env["EBROKER_SERVER__PORT"] = str(port)  # the host's network: a free port of its own
    run = run_on_host(image, node, tmp_path, containers[1], detach=True)
    assert run.returncode == 0, run.stderr
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, containers[1])
    status, described = get(f"{url}/node")
    assert status == 200 and described["site"]["name"] == "example-site"
    status, metrics = fetch(f"{url}/metrics")
    assert status == 200 and metrics


@pytest.mark.postgres
def test_production_aggregator_migrates_in_its_hook_job_then_serves(
    image: str, pg_url: str, tmp_path: Path, containers: list[str]
) -> None:
    """The aggregator's production set on a fresh PostgreSQL database: its Job's script
    migrates the aggregator's schema, then the aggregator, which does not migrate, is ready."""
    _, values = VALUE_SETS["aggregator-production"]
    values = {**values, "database": {"type": "postgresql", "postgresql": {"url": pg_url}}}
    manifests = manifests_of(render_templates(AGGREGATOR, values))
    tag = uuid.uuid4().hex[:8]
    containers.extend([f"ebroker-aggregator-migrate-{tag}", f"ebroker-aggregator-{tag}"])
    job = run_on_host(image, pod_files(manifests, {}, kind="Job"), tmp_path, containers[0],
                      detach=False)  # fmt: skip
    assert job.returncode == 0, job.stdout + job.stderr
    aggregator = pod_files(manifests, {})
    port = free_port()
    aggregator.env["EBROKER_SERVER__PORT"] = str(port)
    run = run_on_host(image, aggregator, tmp_path, containers[1], detach=True)
    assert run.returncode == 0, run.stderr
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, containers[1])
    status, described = get(f"{url}/node")
    assert status == 200 and [u["name"] for u in described["upstreams"]] == ["site-a", "europe"]


def test_image_runs_as_its_own_user_without_build_tools(image: str) -> None:
    """The final stage: a non-root user, the HEALTHCHECK on /health/live, no compiler and no
    installer (pip) on PATH or in the environment's bin."""
    inspected = json.loads(podman("image", "inspect", image).stdout)[0]
    assert inspected["Config"]["User"] == f"{UID}:{UID}"
    assert any("/health/live" in part for part in inspected["Healthcheck"]["Test"])
    found = podman("run", "--rm", "--no-healthcheck", "--network", "none", "--entrypoint",
                   "/bin/sh", image, "-c",
                   "id -u; for p in gcc cc make pip pip3; do command -v $p; done; "
                   "ls /opt/ebroker/bin")  # fmt: skip
    lines = found.stdout.split()
    assert lines[0] == str(UID)
    assert not [line for line in lines if re.search(r"(^|/)(gcc|cc|make|pip3?)$", line)], lines
