"""The real platforms end to end, through a real node process and its HTTP API.

For podman (``local``) and Slurm (``slurm``): request → offers → accept → AVAILABLE/RUNNING →
COMPLETED with the real container/job having run (its output checked); a failing executable
ends FAILED; cancel mid-run leaves no container, job or reservation behind; SIGKILL of the node
mid-session and a restart end with the session completed and the platform clean. Unavailable
podman or Slurm is a failure in CI (``EBROKER_REQUIRE_INTEGRATION=1``).
"""

from __future__ import annotations

import calendar
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from broker_core.config import PlatformConfig
from platforms.contract import Platform, work_name
from platforms.registry import build_platforms
from tests.conftest import ACCEPT, COMPUTE, DOCKER, offered_start, unavailable
from tests.nodes import Node, start_node

pytestmark = pytest.mark.slow  # real processes or fuzzing: `-m 'not slow'` leaves it out

IMAGE = "localhost/busybox"
DATA_KIND = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/data/simple-data-resource.yaml"
MOUNT = DATA_KIND.replace("data/simple-data-resource", "volume/simple-volume-mount")
CANCEL = {**ACCEPT, "value": "CANCELLED"}
FAST = {"base_preparation": "PT0S", "image_pull": "PT0S", "data_staging": "PT0S"}


def _works(*command: str) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def platform_config(kind: str) -> dict[str, Any]:
    if kind == "local":
        if not shutil.which("podman") or not _works("podman", "image", "exists", IMAGE):
            unavailable(f"podman with the image {IMAGE} (run .ci/setup-podman.sh)")
        return {"name": "box", "type": "local", "options": FAST}
    if not shutil.which("scontrol") or not _works("scontrol", "ping"):
        unavailable("a running Slurm cluster (run .ci/setup-slurm.sh)")
    if not _works("podman", "image", "exists", IMAGE):
        unavailable(f"podman with the image {IMAGE} inside Slurm jobs (run .ci/setup-podman.sh)")
    return {"name": "hpc", "type": "slurm", "options": FAST}


@pytest.fixture(params=["local", "slurm"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A node config for one real platform, and the platform object to inspect its work."""
    platform = platform_config(request.param)
    config = {
        "site": {"name": f"e2e-{request.param}"},
        "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
        "offers": {"granularity": "PT1S", "max_offers": 2},
        "lifecycle": {
            "workdir": str(tmp_path / "sessions"),
            "poll_interval": "PT1S",
            "reconcile_interval": "PT2S",
        },
        # file:// data is staged from the site's data directories only
        "staging": {"file_roots": [str(tmp_path / "data-root")]},
        "platforms": [platform],
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    (inspector,) = build_platforms([PlatformConfig.model_validate(platform)])
    yield {"config": path, "tmp": tmp_path, "platform": inspector, "kind": request.param}
    sessions = tmp_path / "sessions"
    for name in inspector.list_work() or set():  # never leave work behind, whatever failed
        if sessions.exists() and any(work_name(d.name) == name for d in sessions.iterdir()):
            inspector.remove_work(name)


@pytest.fixture
def node(site) -> Iterator[Node]:
    node = start_node(site["config"], site["tmp"], "node")
    yield node
    node.stop()


def request_doc(data_file: Path, script: str, duration: str = "PT2M") -> dict[str, Any]:
    return {
        "executable": {
            "kind": DOCKER,
            "image": {"locations": [IMAGE]},
            "command": ["/bin/busybox", "sh", "-c", script],
            "environment": {"GREETING": "hello-from-ebroker"},
        },
        "compute": {
            "kind": COMPUTE,
            "cores": {"min": 1, "max": 1},
            "memory": {"min": 1, "max": 1},
            "volumes": [{"kind": MOUNT, "path": "/input", "mode": "READONLY", "resource": "input"}],
        },
        "data": [{"kind": DATA_KIND, "meta": {"name": "input"}, "location": data_file.as_uri()}],
        "schedule": {"requested": {"duration": duration}},
    }


def book(node: Node, doc: dict[str, Any]) -> str:
    """Ask for offers and accept the earliest; the session's uuid."""
    r = httpx.post(f"{node.url}/requests", json=doc, timeout=30)
    assert r.status_code == 200 and r.json()["result"] == "YES", r.text
    first = r.json()["offers"][0]["meta"]["uuid"]
    r = httpx.post(f"{node.url}/sessions/{first}", json=ACCEPT, timeout=30)
    assert r.status_code == 200 and r.json()["phase"] == "ACCEPTED", r.text
    return first


def wait_phase(node: Node, uuid: str, phases: set[str], seconds: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    seen = []
    while True:
        doc = httpx.get(f"{node.url}/sessions/{uuid}", timeout=30).json()
        if not seen or seen[-1] != doc["phase"]:
            seen.append(doc["phase"])
        if doc["phase"] in phases:
            doc["seen"] = seen
            return doc
        assert time.monotonic() < deadline, (
            f"{uuid} still {doc['phase']} (seen {seen}): "
            + " | ".join(m["message"] for m in doc["meta"].get("messages", []))
            + node.output()[-3000:]
        )
        time.sleep(0.3)


def utc(stamp: str) -> int:
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))


def messages(doc: dict[str, Any]) -> str:
    return " | ".join(m["message"] for m in doc["meta"].get("messages", []))


def output(site: dict[str, Any], uuid: str) -> str:
    path = site["tmp"] / "sessions" / uuid / "logs" / "output.log"
    return path.read_text(errors="replace") if path.exists() else ""


def left_on_platform(platform: Platform, uuid: str) -> set[str]:
    return {name for name in platform.list_work() or set() if name == work_name(uuid)}


@pytest.fixture
def data_file(tmp_path) -> Path:
    path = tmp_path / "data-root" / "input.txt"  # in the node's staging.file_roots
    path.parent.mkdir(exist_ok=True)
    path.write_text("staged-data-42\n")
    return path


def test_a_session_runs_for_real_and_completes(site, node, data_file):
    # long enough to be seen running between polls, also behind Slurm's scheduling delay
    script = 'echo "$GREETING"; cat /input/input.txt; sleep 5'
    uuid = book(node, request_doc(data_file, script))
    doc = wait_phase(node, uuid, {"COMPLETED", "FAILED", "CANCELLED"})
    assert doc["phase"] == "COMPLETED", messages(doc) + node.output()[-3000:]
    assert "running" in doc["schedule"]["actual"], doc["seen"]
    # the data resource names no storage, so it gets a storage resource of its own, prepared first
    assert [c["phase"] for c in doc["components"]] == ["AVAILABLE"] * 3
    assert [c["category"] for c in doc["components"]] == ["storage", "data", "executable"]
    assert doc["data"][0]["storage"] == doc["storage"][0]["meta"]["uuid"]
    text = output(site, uuid)
    assert "hello-from-ebroker" in text and "staged-data-42" in text, text
    served = httpx.get(f"{node.url}/sessions/{uuid}/logs", timeout=30)
    assert served.status_code == 200 and served.headers["content-type"].startswith("text/plain")
    assert "hello-from-ebroker" in served.text
    assert not left_on_platform(site["platform"], uuid)


def test_a_failing_executable_ends_failed(site, node, data_file):
    uuid = book(node, request_doc(data_file, "echo about-to-fail; exit 3"))
    doc = wait_phase(node, uuid, {"COMPLETED", "FAILED", "CANCELLED"})
    assert doc["phase"] == "FAILED", messages(doc)
    assert "3" in messages(doc)
    assert "about-to-fail" in output(site, uuid)
    assert not left_on_platform(site["platform"], uuid)


def test_cancel_mid_run_leaves_nothing_behind(site, node, data_file):
    uuid = book(node, request_doc(data_file, "echo started; sleep 300"))
    wait_phase(node, uuid, {"RUNNING"})
    assert left_on_platform(site["platform"], uuid)
    r = httpx.post(f"{node.url}/sessions/{uuid}", json=CANCEL, timeout=30)
    assert r.status_code == 200 and r.json()["phase"] == "CANCELLED"
    deadline = time.monotonic() + 60
    while left_on_platform(site["platform"], uuid):
        assert time.monotonic() < deadline, "the work outlived its cancellation"
        time.sleep(0.3)
    doc = httpx.get(f"{node.url}/sessions/{uuid}", timeout=30).json()
    assert "stopped and removed" in messages(doc)


def test_sigkill_mid_session_then_restart_completes_and_leaves_the_platform_clean(site, data_file):
    first = start_node(site["config"], site["tmp"], "first")
    try:
        uuid = book(first, request_doc(data_file, "echo survived; sleep 6; echo done"))
        wait_phase(first, uuid, {"RUNNING"})
    finally:
        first.kill()  # SIGKILL: no shutdown handler runs
    assert left_on_platform(site["platform"], uuid), "the work should outlive the node"
    second = start_node(site["config"], site["tmp"], "second")
    try:
        doc = wait_phase(second, uuid, {"COMPLETED", "FAILED", "CANCELLED"})
        assert doc["phase"] == "COMPLETED", messages(doc) + second.output()[-3000:]
        assert "done" in output(site, uuid)
        assert not left_on_platform(site["platform"], uuid)
    finally:
        second.stop()


@pytest.mark.parametrize("site", ["local"], indirect=True)
def test_reconciliation_removes_a_stray_container_of_an_ended_session(site, node, data_file):
    uuid = book(node, request_doc(data_file, "echo quick"))
    wait_phase(node, uuid, {"COMPLETED"})
    # someone (or a crash at the wrong moment) leaves a container of that session behind
    subprocess.run(
        ["podman", "run", "-d", "--name", work_name(uuid), "--label", f"ebroker.session={uuid}",
         "--label", "ebroker.platform=box", IMAGE, "/bin/busybox", "sleep", "300"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    assert left_on_platform(site["platform"], uuid)
    deadline = time.monotonic() + 30
    while left_on_platform(site["platform"], uuid):
        assert time.monotonic() < deadline, "reconciliation did not remove the stray container"
        time.sleep(0.3)
    doc = httpx.get(f"{node.url}/sessions/{uuid}", timeout=30).json()
    assert "reconciliation removed stray work" in messages(doc)
    assert doc["phase"] == "COMPLETED"


@pytest.mark.parametrize("site", ["slurm"], indirect=True)
def test_offers_avoid_a_slurm_maintenance_window(site, node, data_file):
    name = "maint-e2e-test"
    start = int(time.time()) + 120
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(start))
    created = subprocess.run(
        ["scontrol", "create", "reservation", f"ReservationName={name}", f"StartTime={stamp}",
         "Duration=30", "Nodes=ALL", "Users=root", "Flags=MAINT,IGNORE_JOBS"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    try:
        window = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start - 60))
        doc = request_doc(data_file, "true", duration="PT10M")
        doc["schedule"]["requested"]["start"] = f"{window}/PT2H"
        r = httpx.post(f"{node.url}/requests", json=doc, timeout=30)
        assert r.status_code == 200 and r.json()["result"] == "YES", r.text
        for offer in r.json()["offers"]:
            schedule = offer["schedule"]
            begins = utc(schedule["preparing"]["start"])
            ends = utc(offered_start(offer)) + 600
            # no offer overlaps the maintenance window [start, start + 30 min)
            assert ends <= start or begins >= start + 1800, schedule
    finally:
        subprocess.run(["scontrol", "delete", "reservation", name], capture_output=True, timeout=60)
