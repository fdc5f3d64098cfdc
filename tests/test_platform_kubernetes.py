"""The kubernetes platform: pools, claims and quotas from API objects (pure), the status of a
session's work from its Job, pod and events (pure), and every platform step against the fake
API server (``tests/kube_fake.py``) through the official client: a session staged, run and
released; failures (exit code, image pull, unschedulable past the booked start, the deadline);
idempotent steps; extension; others' pods, a quota and a shrinking pool as claims; and
``check-config`` with ``type: kubernetes``."""

from __future__ import annotations

import http.server
import ipaddress
import json
import logging
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from broker_core.config import ConfigError, PlatformConfig
from broker_core.kinds.base import kind_uri
from broker_core.kinds.builtin import KINDS, JupyterNotebook
from broker_core.kinds.registry import KindRegistry
from broker_core.kinds.request import parse_request
from broker_core.staging.rules import StagingRules
from platforms import notebooks
from platforms.contract import Execution, PlatformError, WorkState, WorkStatus
from platforms.kubernetes import KubernetesPlatform, cluster, manifests
from platforms.kubernetes.client import only_in_cluster
from platforms.kubernetes.options import KubernetesOptions
from platforms.kubernetes.status import Seen, work_status
from platforms.registry import build_platforms
from tests.kube_fake import FakeCluster, Run

ROOT = Path(__file__).resolve().parents[1]
BUSYBOX = "docker.io/library/busybox:1.36"
CURL = "docker.io/curlimages/curl:8.11.1"
NAMESPACE = "sessions"


def node(
    name: str,
    cpu: str = "4",
    memory: str = "16Gi",
    labels: dict[str, str] | None = None,
    ready: bool = True,
    cordoned: bool = False,
    gpus: int = 0,
    taints: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    allocatable = {"cpu": cpu, "memory": memory, "ephemeral-storage": "100Gi"}
    if gpus:
        allocatable["nvidia.com/gpu"] = str(gpus)
    spec: dict[str, Any] = {"unschedulable": True} if cordoned else {}
    if taints:
        spec["taints"] = taints
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
        "status": {
            "allocatable": allocatable,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def pod(
    node_name: str,
    cpu: str,
    memory: str,
    labels: dict[str, str] | None = None,
    phase: str = "Running",
    namespace: str = "other",
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"p-{node_name}-{cpu}",
            "namespace": namespace,
            "labels": labels or {},
        },
        "spec": {
            "nodeName": node_name,
            "containers": [
                {"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}
            ],
        },
        "status": {"phase": phase},
    }


GROUPS = {
    "node_groups": [
        {"name": "cpu", "selector": {"pool": "cpu"}},
        {
            "name": "gpu",
            "selector": {"pool": "gpu"},
            "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    ]
}
NODES = [
    node("c1", "3800m", "16384Mi", {"pool": "cpu"}),
    node("c2", "8", "32Gi", {"pool": "cpu"}),
    node("c3", "8", "32Gi", {"pool": "cpu"}, cordoned=True),
    node("c4", "8", "32Gi", {"pool": "cpu"}, ready=False),
    node("c5", "8", "32Gi", {"pool": "cpu"}, taints=[{"key": "gpu", "effect": "NoSchedule"}]),
    node(
        "g1", "16", "64Gi", {"pool": "gpu"}, gpus=4, taints=[{"key": "gpu", "effect": "NoSchedule"}]
    ),
]


# --- pools, claims and quotas (pure) ------------------------------------------------------------


def test_pools_are_the_usable_nodes_allocatable_times_the_share() -> None:
    options = KubernetesOptions.model_validate({**GROUPS, "share": 0.5})
    readings = cluster.read_groups(NODES, [], options, "k8s")
    cpu, gpu = (cluster.pool_config(r, options, {}) for r in readings)
    # c1 + c2: 11.8 cores, 48 GiB; cordoned, NotReady and untolerated-tainted nodes left out
    assert readings[0].nodes == ["c1", "c2"]
    assert readings[0].left_out == {"c3": "cordoned", "c4": "NotReady", "c5": "tainted gpu"}
    assert cpu.inventories["cores"].total == 5 and cpu.inventories["memory"].total == 24
    assert cpu.inventories["cores"].max_unit == 5  # one pod fits one node: min(8, pool)
    assert "gpus" not in cpu.inventories
    assert gpu.inventories["gpus"].total == 2 and gpu.inventories["cores"].total == 8
    assert gpu.inventories["storage"].total == 50


def test_a_quota_in_the_namespace_caps_every_pool() -> None:
    options = KubernetesOptions.model_validate(GROUPS)
    quotas = [
        {"spec": {"hard": {"requests.cpu": "6", "limits.memory": "20Gi"}}},
        {"status": {"hard": {"cpu": "10", "requests.nvidia.com/gpu": "1"}}},
    ]
    caps = cluster.quota_caps(quotas)
    assert caps == {"cores": 6, "memory": 20, "gpus": 1}
    cpu, gpu = (
        cluster.pool_config(r, options, caps)
        for r in cluster.read_groups(NODES, [], options, "k8s")
    )
    assert (cpu.inventories["cores"].total, cpu.inventories["memory"].total) == (6, 20)
    assert gpu.inventories["gpus"].total == 1


def test_others_pods_on_the_pools_nodes_are_claims_and_ours_are_not() -> None:
    options = KubernetesOptions.model_validate({**GROUPS, "share": 0.5})
    baseline = [
        cluster.pool_config(r, options, {}) for r in cluster.read_groups(NODES, [], options, "k8s")
    ]
    pods = [
        pod("c2", "7", "1Gi"),  # someone else's: 7 of 11.8 cores, more than the unshared half
        pod("c1", "2", "1Gi", {"ebroker.platform": "k8s", "ebroker.session": "x"}),  # ours
        pod("c1", "2", "1Gi", phase="Succeeded"),  # ended: holds nothing
        pod("c3", "8", "1Gi"),  # on a cordoned node: not in the pool anyway
    ]
    readings = cluster.read_groups(NODES, pods, options, "k8s")
    assert readings[0].foreign_pods == 1
    claims = cluster.claims(baseline, readings, options, {}, {}, 100, 200)
    # 11.8 - 7 = 4.8 cores left for ebroker: 4 of its 5; memory is untouched (48 - 1 > 24)
    assert [(c.pool, c.resource_class, c.amount, c.start, c.end) for c in claims] == [
        ("cpu", "cores", 1, 100, 200)
    ]
    assert "1 pod(s) not started by ebroker" in claims[0].reason
    # the quota less what others use in the namespace bounds it too
    claims = cluster.claims(baseline, readings, options, {"cores": 4}, {"cores": 1}, 100, 200)
    assert {(c.pool, c.amount) for c in claims if c.resource_class == "cores"} == {
        ("cpu", 2),
        ("gpu", 5),
    }


def test_a_pool_that_loses_nodes_shrinks_and_says_why() -> None:
    options = KubernetesOptions.model_validate(GROUPS)
    baseline = [
        cluster.pool_config(r, options, {}) for r in cluster.read_groups(NODES, [], options, "k8s")
    ]
    later = [n for n in NODES if n["metadata"]["name"] != "c2"]
    later.append(node("c2", "8", "32Gi", {"pool": "cpu"}, ready=False))
    readings = cluster.read_groups(later, [], options, "k8s")
    shrunk = cluster.shrinkage(baseline, readings, options, {})
    assert set(shrunk) == {"cpu"}
    assert "3 of 11 cores" in shrunk["cpu"] and "c2 (NotReady)" in shrunk["cpu"]
    claims = cluster.claims(baseline, readings, options, {}, {}, 0, 10)
    assert {(c.resource_class, c.amount) for c in claims} == {
        ("cores", 8),
        ("memory", 32),
        ("storage", 100),
    }  # its ephemeral storage too


@pytest.mark.parametrize(
    "text,value",
    [
        ("3800m", 3.8),
        ("16Gi", 16 * 2**30),
        ("16384Ki", 16 * 2**20),
        ("1e3", 1000.0),
        ("2", 2.0),
        ("1500M", 1.5e9),
    ],
)
def test_quantities(text: str, value: float) -> None:
    assert cluster.quantity(text) == pytest.approx(value)


# --- the work's status (pure) ---------------------------------------------------------------


def _pod(phase: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "status": {"phase": phase, **status}}


def seen(
    pod: dict[str, Any] | None,
    job: dict[str, Any] | None = None,
    events: list[dict[str, Any]] | None = None,
    waited: int = 0,
    stopped: str | None = None,
) -> WorkStatus:
    return work_status(Seen(job, pod, events or [], 1000 + waited, 1000, 60, stopped))


def test_pull_failures_and_crash_loops_fail_with_a_clear_message() -> None:
    pulling = _pod(
        "Pending",
        containerStatuses=[
            {
                "name": "main",
                "image": "x/y:1",
                "state": {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": 'Back-off pulling image "x/y:1"',
                    }
                },
            }
        ],
    )
    status = seen(pulling)
    assert status.state == WorkState.FAILED
    assert "image x/y:1 cannot be pulled (ImagePullBackOff)" in (status.message or "")
    first_try = _pod(
        "Pending",
        containerStatuses=[{"name": "main", "state": {"waiting": {"reason": "ErrImagePull"}}}],
    )
    assert seen(first_try).state == WorkState.PENDING  # a first failure may be passing
    crashing = _pod(
        "Running",
        containerStatuses=[
            {
                "name": "main",
                "state": {
                    "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting"}
                },
                "lastState": {"terminated": {"exitCode": 137}},
            }
        ],
    )
    status = seen(crashing)
    assert (status.state, status.exit_code) == (WorkState.FAILED, 137)
    assert "keeps crashing (CrashLoopBackOff, last exit code 137)" in (status.message or "")


def test_a_pod_unscheduled_past_the_booked_start_fails_with_the_schedulers_message() -> None:
    stuck = _pod(
        "Pending",
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
    )
    events = [
        {
            "reason": "FailedScheduling",
            "lastTimestamp": "2026-01-01T00:00:01Z",
            "message": "0/3 nodes are available: 3 Insufficient cpu.",
        }
    ]
    early = seen(stuck, events=events, waited=30)
    assert early.state == WorkState.PENDING and "Insufficient cpu" in (early.message or "")
    late = seen(stuck, events=events, waited=61)
    assert late.state == WorkState.FAILED
    assert "could not be scheduled within 60 s" in (late.message or "")
    assert "0/3 nodes are available: 3 Insufficient cpu." in (late.message or "")


def test_ended_pods_and_jobs() -> None:
    assert seen(_pod("Succeeded")).state == WorkState.SUCCEEDED
    oom = _pod(
        "Failed",
        containerStatuses=[
            {"name": "main", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
        ],
    )
    status = seen(oom, stopped="the session was cancelled")
    assert status.exit_code == 137
    assert status.message == (
        "exited with code 137 (killed: out of memory) (stopped: the session was cancelled)"
    )
    staging = _pod(
        "Failed",
        initContainerStatuses=[{"name": "stage-0", "state": {"terminated": {"exitCode": 22}}}],
    )
    assert (
        seen(staging).message == "staging data failed: init container stage-0 exited with code 22"
    )
    deadline = {
        "status": {
            "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]
        }
    }
    assert "active deadline" in (seen(None, deadline).message or "")
    assert (
        seen(None, {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}).state
        == WorkState.SUCCEEDED
    )
    assert seen(None, None).state == WorkState.MISSING
    refused = [{"reason": "FailedCreate", "message": 'pods "x" is forbidden: exceeded quota'}]
    job = {"metadata": {"creationTimestamp": "1970-01-01T00:16:40Z"}, "status": {}}
    assert seen(None, job, refused, waited=10).state == WorkState.PENDING
    assert "exceeded quota" in (seen(None, job, refused, waited=61).message or "")


# --- the platform against the fake API server ------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeCluster]:
    cluster_ = FakeCluster(images={BUSYBOX, CURL}).start()
    cluster_.add_node("n1", cpu="4", memory="8Gi", labels={"pool": "main"})
    cluster_.add_node("n2", cpu="4", memory="8Gi", labels={"pool": "main"})
    yield cluster_
    cluster_.stop()


@pytest.fixture
def make_platform(fake: FakeCluster, tmp_path: Path) -> Callable[..., KubernetesPlatform]:
    kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig")

    def make(**options: Any) -> KubernetesPlatform:
        config = PlatformConfig.model_validate(
            {
                "name": "k8s",
                "type": "kubernetes",
                "options": {
                    "kubeconfig": str(kubeconfig),
                    "namespace": NAMESPACE,
                    "reread_interval": "PT0.2S",
                    "pending_timeout": "PT2S",
                    "node_groups": [{"name": "main", "selector": {"pool": "main"}}],
                    **options,
                },
            }
        )
        (platform,) = build_platforms([config])
        assert isinstance(platform, KubernetesPlatform)
        return platform

    return make


@pytest.fixture
def platform(make_platform: Callable[..., KubernetesPlatform]) -> KubernetesPlatform:
    return make_platform()


@pytest.fixture
def data_url(tmp_path: Path) -> Iterator[str]:
    served = tmp_path / "served"
    served.mkdir()
    (served / "input.txt").write_text("staged-data-42\n")

    def handler(*args: Any) -> http.server.SimpleHTTPRequestHandler:
        return http.server.SimpleHTTPRequestHandler(*args, directory=str(served))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/input.txt"
    server.shutdown()


def execution(
    tmp_path: Path,
    script: str,
    data_url: str | None = None,
    cores: int = 1,
    image: str = BUSYBOX,
    seconds: int = 120,
    ports: bool = False,
    start_in: int = 0,
) -> Execution:
    session = "0b6f1a52-3c1e-4c55-9a0e-7d2c4f1e8a0" + str(len(list(tmp_path.glob("w*"))))
    storage = "5d1e2f3a-0000-4000-8000-000000000001"
    now = int(time.time())
    executable: dict[str, Any] = {
        "kind": kind_uri("executable", "docker-container"),
        "image": {"locations": [image]},
        "command": ["sh", "-c", script],
        "environment": {"GREETING": "hello-from-ebroker"},
    }
    if ports:
        executable["network"] = {"ports": [{"internal": {"port": 8080}, "protocol": "HTTP"}]}
    volumes = (
        [{"kind": kind_uri("volume", "simple-volume-mount"), "path": "/input", "resource": "input"}]
        if data_url
        else []
    )
    workdir = tmp_path / f"w{session[-1]}"
    workdir.mkdir()
    return Execution(
        # the data server is on this machine's loopback, which the site allows here
        staging=StagingRules(allow_networks=(ipaddress.ip_network("127.0.0.0/8"),)),
        session=session,
        executable=executable,
        compute={"kind": kind_uri("compute", "simple-compute-resource"), "volumes": volumes},
        storage=[
            {
                "kind": kind_uri("storage", "simple-storage-resource"),
                "meta": {"uuid": storage, "name": "scratch"},
            }
        ]
        if data_url
        else [],
        data=[
            {
                "kind": kind_uri("data", "simple-data-resource"),
                "location": data_url,
                "meta": {"uuid": "5d1e2f3a-0000-4000-8000-000000000002", "name": "input"},
                "storage": storage,
            }
        ]
        if data_url
        else [],
        granted={"cores": cores, "memory": 1, "storage": 1},
        prepare_at=now + start_in,
        start_at=now + start_in,
        end_at=now + start_in + seconds,
        workdir=workdir,
        pools=["main"],
    )


def prepare_and_start(platform: KubernetesPlatform, run: Execution) -> None:
    for storage in run.storage:
        platform.prepare_storage(run, storage)
    for data in run.data:
        platform.stage_data(run, data)
    platform.prepare_executable(run)
    platform.start(run)


def wait_for(
    platform: KubernetesPlatform, run: Execution, *states: WorkState, seconds: float = 20
) -> WorkStatus:
    deadline = time.monotonic() + seconds
    while True:
        status = platform.poll(run)
        if status.state in states or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_a_session_is_staged_run_logged_and_released(platform, fake, tmp_path, data_url) -> None:
    run = execution(
        tmp_path, 'echo "$GREETING"; cat /input/input.txt; sleep 1; echo done', data_url, ports=True
    )
    prepare_and_start(platform, run)
    platform.start(run)  # a repeated start (after a crash) finds what the first made
    assert len(fake.items("jobs", NAMESPACE)) == 1
    assert wait_for(platform, run, WorkState.RUNNING).state == WorkState.RUNNING
    (connector,) = platform.connectors(run)
    assert connector["url"] == f"http://{run.name}.{NAMESPACE}.svc.cluster.local:8080/"
    status = wait_for(platform, run, WorkState.SUCCEEDED, WorkState.FAILED)
    assert (status.state, status.exit_code) == (WorkState.SUCCEEDED, 0), status
    assert platform.logs(run) == "hello-from-ebroker\nstaged-data-42\ndone\n"
    assert platform.list_work() == {run.name}
    platform.stop(run, "the session is ending")
    platform.release(run)
    platform.release(run)  # idempotent
    deadline = time.monotonic() + 5
    while platform.list_work():
        assert time.monotonic() < deadline, platform.list_work()
        time.sleep(0.1)
    assert (run.workdir / "logs" / "output.log").read_text().endswith("done\n")
    assert not fake.items("persistentvolumeclaims", NAMESPACE)
    received = {o["kind"] for o in fake.received}
    assert {"Job", "PersistentVolumeClaim", "Service"} <= received  # each schema-validated


def test_a_failing_executable_fails_with_its_exit_code(platform, tmp_path) -> None:
    run = execution(tmp_path, "echo about-to-fail; exit 3")
    prepare_and_start(platform, run)
    status = wait_for(platform, run, WorkState.SUCCEEDED, WorkState.FAILED)
    assert (status.state, status.exit_code, status.message) == (
        WorkState.FAILED,
        3,
        "exited with code 3",
    )
    assert "about-to-fail" in (run.workdir / "logs" / "output.log").read_text()


def test_an_image_that_cannot_be_pulled_fails_the_session(platform, tmp_path) -> None:
    run = execution(tmp_path, "true", image="registry.example.org/missing:1")
    prepare_and_start(platform, run)
    status = wait_for(platform, run, WorkState.FAILED)
    assert status.state == WorkState.FAILED
    assert "image registry.example.org/missing:1 cannot be pulled" in (status.message or "")


def test_a_pod_that_fits_no_node_fails_after_the_pending_timeout(platform, tmp_path) -> None:
    run = execution(tmp_path, "true", cores=6)  # the nodes have 4 cores each
    prepare_and_start(platform, run)
    assert platform.poll(run).state == WorkState.PENDING
    status = wait_for(platform, run, WorkState.FAILED, seconds=10)
    assert status.state == WorkState.FAILED
    assert "could not be scheduled" in (status.message or "")
    assert "Insufficient cpu" in (status.message or "")  # the scheduler's own reason


def test_the_job_ends_with_the_booked_window_and_extending_moves_it(
    platform, fake, tmp_path
) -> None:
    run = execution(tmp_path, "sleep 30", seconds=10)  # extended before it ends
    prepare_and_start(platform, run)
    assert wait_for(platform, run, WorkState.RUNNING).state == WorkState.RUNNING
    platform.extend(run, run.end_at + 600)
    (job,) = fake.items("jobs", NAMESPACE)
    assert job["spec"]["activeDeadlineSeconds"] >= 600
    other = execution(tmp_path, "sleep 30", seconds=2)
    prepare_and_start(platform, other)
    status = wait_for(platform, other, WorkState.FAILED, seconds=10)
    assert "active deadline" in (status.message or ""), status
    assert platform.poll(run).state == WorkState.RUNNING  # the extended one runs on


def test_stop_mid_run_removes_the_pod_and_says_why(platform, fake, tmp_path) -> None:
    run = execution(tmp_path, "echo started; sleep 60")
    prepare_and_start(platform, run)
    assert wait_for(platform, run, WorkState.RUNNING).state == WorkState.RUNNING
    time.sleep(0.2)
    platform.stop(run, "the session was cancelled")
    platform.stop(run, "the session was cancelled")
    assert run.state["stopped"] == "the session was cancelled"
    assert "started" in (run.workdir / "logs" / "output.log").read_text()
    deadline = time.monotonic() + 5
    while fake.items("pods", NAMESPACE) or fake.items("jobs", NAMESPACE):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_with_the_watch_polling_a_running_session_asks_the_api_nothing(
    make_platform, fake, tmp_path
) -> None:
    platform = make_platform(reread_interval="PT1H")  # the capacity re-read is not per poll
    run = execution(tmp_path, "sleep 20")
    prepare_and_start(platform, run)
    assert wait_for(platform, run, WorkState.RUNNING).state == WorkState.RUNNING

    def asked() -> list[tuple[str, str]]:
        return [r for r in fake.requests if "watch=" not in r[1]]

    deadline = time.monotonic() + 10
    while True:  # until the watch has listed the pods (slow on a busy machine)
        fake.requests.clear()
        platform.poll(run)
        if not asked():
            break
        assert time.monotonic() < deadline, asked()
        time.sleep(0.1)
    for _ in range(5):
        assert platform.poll(run).state == WorkState.RUNNING
    assert asked() == []
    platform.release(run)


def test_without_the_watch_the_pod_is_read_each_poll(make_platform, fake, tmp_path) -> None:
    platform = make_platform(watch=False)
    run = execution(tmp_path, "echo polled")
    prepare_and_start(platform, run)
    status = wait_for(platform, run, WorkState.SUCCEEDED, WorkState.FAILED)
    assert status.state == WorkState.SUCCEEDED
    fake.requests.clear()
    platform.poll(run)
    assert any("/pods?" in path for _, path in fake.requests)  # a list of the session's pods
    assert not any("watch=" in path for _, path in fake.requests)


def test_reconciliation_lists_and_removes_a_stray_job(platform, fake, tmp_path) -> None:
    stray = "11111111-2222-4333-8444-555555555555"
    labels = {"ebroker.session": stray, "ebroker.platform": "k8s"}
    fake.create(
        "jobs",
        NAMESPACE,
        {
            "metadata": {"name": f"ebroker-{stray}", "labels": labels},
            "spec": {
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "main", "image": BUSYBOX, "args": ["sleep", "60"]}],
                    },
                }
            },
        },
    )
    fake.create(
        "jobs",
        NAMESPACE,
        {
            "metadata": {"name": "not-ours"},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "main", "image": BUSYBOX}],
                    }
                }
            },
        },
    )
    deadline = time.monotonic() + 5
    while not fake.items("pods", NAMESPACE):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert platform.list_work() == {f"ebroker-{stray}"}
    with pytest.raises(PlatformError, match="not ebroker"):
        platform.remove_work("not-ours")
    platform.remove_work(f"ebroker-{stray}")
    while platform.list_work():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert [j["metadata"]["name"] for j in fake.items("jobs", NAMESPACE)] == ["not-ours"]


# --- notebooks ---------------------------------------------------------------------------------

NOTEBOOK_IMAGE = "registry.example.org/ebroker/notebook:1"


def notebook_server(
    argv: list[str], env: dict[str, str], files: Callable[[str], Path | None], started: float
) -> Run:
    """A stand-in for the notebook server in the fake's kubelet: what it is given (its root,
    base URL and token) and what it finds in its root, in the lines a classic server logs,
    including a failed request's URL with the token (as the real one logs it); it serves until
    stopped. Without a token or a root it exits, as the real one would fail."""
    traits = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    root = next((v for k, v in traits.items() if k.endswith((".notebook_dir", ".root_dir"))), "")
    base = next((v for k, v in traits.items() if k.endswith(".base_url")), "/")
    directory = files(root) if root else None
    token = env.get(notebooks.TOKEN_ENV)
    if not token or directory is None or not directory.is_dir():
        return Run(started, [(0, "[C NotebookApp] no token or no root directory\n")], 0.1, 1)
    found = sorted(p.name for p in directory.iterdir())
    lines = [
        f"[I NotebookApp] Serving notebooks from local directory: {root}: {', '.join(found)}\n",
        f"[I NotebookApp] http://127.0.0.1:{notebooks.PORT}{base}?token=...\n",
        f"[W NotebookApp] 404 GET {base}api/missing?token={token} (10.244.0.1) 1.2ms\n",
        f"[I NotebookApp] running as {'root' if '--allow-root' in argv else 'a user'}\n",
    ]
    return Run(started, [(0.1 * i, line) for i, line in enumerate(lines)], float("inf"))


def notebook_run(tmp_path: Path, data_url: str) -> Execution:
    """A notebook session whose notebook is served next to the data (``data_url``'s server)."""
    served = tmp_path / "served" / "analysis.ipynb"
    served.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    run = execution(tmp_path, "")
    run.executable = JupyterNotebook.model_validate(
        {
            "kind": notebooks.NOTEBOOK,
            "meta": {"uuid": "5d1e2f3a-0000-4000-8000-0000000000e1"},
            "location": data_url.rsplit("/", 1)[0] + "/analysis.ipynb",
        }
    )
    return run


def test_a_notebook_is_served_with_its_token_from_a_secret_and_leaves_nothing_behind(
    make_platform, fake, tmp_path, data_url
) -> None:
    fake.programs[NOTEBOOK_IMAGE] = notebook_server
    fake.images.add(NOTEBOOK_IMAGE)
    platform = make_platform(
        notebook_image=NOTEBOOK_IMAGE, ingress={"host": "apps.example.org", "path_prefix": "/s"}
    )
    run = notebook_run(tmp_path, data_url)
    prepare_and_start(platform, run)
    token = run.state[notebooks.TOKEN_STATE]
    assert wait_for(platform, run, WorkState.RUNNING).state == WorkState.RUNNING
    (secret,) = fake.items("secrets", NAMESPACE)
    assert manifests.token_from_secret(secret) == token
    (pod,) = fake.items("pods", NAMESPACE)
    assert token not in json.dumps(pod) and token not in json.dumps(fake.items("jobs"))
    (connector,) = platform.connectors(run)
    assert connector["url"] == (
        f"http://apps.example.org/s/{run.name}/notebooks/analysis.ipynb?token={token}"
    )
    deadline = time.monotonic() + 10
    while "running as" not in (text := platform.logs(run) or ""):
        assert time.monotonic() < deadline, text
        time.sleep(0.1)
    # the server got its token from the Secret, its root with the notebook, the Ingress path
    assert "local directory: /work: analysis.ipynb" in text
    assert f"/s/{run.name}/?token=..." in text and "running as a user" in text
    assert token not in text and "?token=[token]" in text  # the failed URL, scrubbed
    assert token not in (run.workdir / "logs" / "output.log").read_text()
    # a start after the state was lost finds the Secret, and the running server's token
    run.state.pop(notebooks.TOKEN_STATE)
    platform.start(run)
    assert run.state[notebooks.TOKEN_STATE] == token
    assert len(fake.items("secrets", NAMESPACE)) == 1
    assert any(n.startswith("notebook ") and "is fetched from" in n for n in run.notes)
    platform.stop(run, "cancelled")
    platform.release(run)
    deadline = time.monotonic() + 5
    while platform.list_work():
        assert time.monotonic() < deadline, platform.list_work()
        time.sleep(0.1)
    assert not fake.items("secrets", NAMESPACE) and not fake.items("services", NAMESPACE)
    assert {"Secret", "Job", "Service", "Ingress"} <= {o["kind"] for o in fake.received}


def test_a_stray_notebook_secret_is_found_and_removed_by_reconciliation(platform, fake) -> None:
    stray = "11111111-2222-4333-8444-666666666666"
    labels = {"ebroker.session": stray, "ebroker.platform": "k8s"}
    fake.create("secrets", NAMESPACE, {"metadata": {"name": f"ebroker-{stray}", "labels": labels}})
    assert platform.list_work() == {f"ebroker-{stray}"}
    platform.remove_work(f"ebroker-{stray}")
    assert platform.list_work() == set() and not fake.items("secrets", NAMESPACE)


def test_a_notebook_whose_secret_is_gone_fails_saying_so(make_platform, fake, tmp_path):
    gate = threading.Event()

    class Gated(http.server.BaseHTTPRequestHandler):
        """Serves the notebook once the test lets it: the pod waits in its fetch."""

        def do_GET(self) -> None:
            gate.wait(10)
            body = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gated)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake.programs[NOTEBOOK_IMAGE] = notebook_server
    fake.images.add(NOTEBOOK_IMAGE)
    platform = make_platform(notebook_image=NOTEBOOK_IMAGE)
    run = execution(tmp_path, "")
    run.executable = JupyterNotebook.model_validate(
        {
            "kind": notebooks.NOTEBOOK,
            "meta": {"uuid": "5d1e2f3a-0000-4000-8000-0000000000e1"},
            "location": f"http://127.0.0.1:{server.server_address[1]}/a.ipynb",
        }
    )
    try:
        platform.prepare_executable(run)
        platform.start(run)
        fake.delete("secrets", NAMESPACE, run.name)  # removed by hand while the pod fetches
        gate.set()
        status = wait_for(platform, run, WorkState.FAILED)
    finally:
        gate.set()
        server.shutdown()
    assert status.state == WorkState.FAILED, status
    assert status.message == (
        f'container main cannot start (CreateContainerConfigError): secret "{run.name}" not found'
    )
    platform.release(run)


def _notebook_request(location: str = "https://notebooks.example.org/a.ipynb") -> Any:
    document = {
        "executable": {"kind": notebooks.NOTEBOOK, "location": location},
        "compute": {"kind": kind_uri("compute", "simple-compute-resource"), "cores": {"min": 1}},
    }
    parsed = parse_request(document, KindRegistry(KINDS))
    assert parsed.request is not None
    return parsed.request


def test_notebooks_are_refused_where_no_notebook_image_is_configured() -> None:
    def platform(**options: Any) -> KubernetesPlatform:
        config_ = {"name": "k8s", "type": "kubernetes", "options": options}
        return KubernetesPlatform(PlatformConfig.model_validate(config_))

    plain = platform()
    assert notebooks.NOTEBOOK not in plain.accepted_kinds()
    kind, refusal = plain.validate(_notebook_request())
    assert kind.values == {"platform": "k8s", "kind": notebooks.NOTEBOOK}
    assert refusal.values == {"platform": "k8s"} and "notebook_image" in refusal.template
    serving = platform(notebook_image=NOTEBOOK_IMAGE, base_preparation="PT5S",
                       image_pull="PT60S", data_staging="PT30S")  # fmt: skip
    assert notebooks.NOTEBOOK in serving.accepted_kinds()
    assert serving.validate(_notebook_request()) == []
    (refusal,) = serving.validate(_notebook_request("ftp://files.example.org/a.ipynb"))
    assert "http(s) only" in refusal.template
    assert serving.preparation_estimate(_notebook_request()).total_seconds() == 95


def _admin(fake: FakeCluster, tmp_path: Path) -> client.CoreV1Api:
    """The official client as a cluster admin would use it (kubectl cordon, a quota)."""
    configuration = client.Configuration()
    config.load_kube_config(
        str(fake.kubeconfig(tmp_path / "admin")), client_configuration=configuration
    )
    return client.CoreV1Api(client.ApiClient(configuration))


def test_pools_claims_quota_and_a_shrink_read_from_the_cluster(
    make_platform, fake, tmp_path, caplog
) -> None:
    admin = _admin(fake, tmp_path)
    platform = make_platform(share=0.5)
    (pool,) = platform.pools()
    assert (pool.name, pool.inventories["cores"].total, pool.inventories["memory"].total) == (
        "main",
        4,
        8,
    )
    assert platform.external_claims(0, 10) == []
    # someone else's pod takes 6 of the 8 cores: 2 remain for ebroker, 2 less than booked
    fake.create(
        "pods",
        "default",
        {
            "metadata": {"name": "theirs"},
            "spec": {
                "nodeName": "n1",
                "containers": [
                    {
                        "name": "c",
                        "image": BUSYBOX,
                        "args": ["sleep", "60"],
                        "resources": {"requests": {"cpu": "3"}},
                    }
                ],
            },
        },
    )
    fake.create(
        "pods",
        "default",
        {
            "metadata": {"name": "theirs-too"},
            "spec": {
                "nodeName": "n2",
                "containers": [
                    {
                        "name": "c",
                        "image": BUSYBOX,
                        "args": ["sleep", "60"],
                        "resources": {"requests": {"cpu": "3"}},
                    }
                ],
            },
        },
    )
    time.sleep(0.3)
    claims = platform.external_claims(0, 10)
    assert [(c.resource_class, c.amount) for c in claims] == [("cores", 2)]
    fake.delete("pods", "default", "theirs", grace=0)
    fake.delete("pods", "default", "theirs-too", grace=0)
    # a quota in the namespace caps the pools read from then on
    admin.create_namespaced_resource_quota(
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "q"},
            "spec": {"hard": {"requests.cpu": "3", "requests.memory": "4Gi"}},
        },
    )
    (capped,) = make_platform(share=0.5).pools()
    assert (capped.inventories["cores"].total, capped.inventories["memory"].total) == (3, 4)
    admin.delete_namespaced_resource_quota("q", NAMESPACE)
    # a session draws on the pool; a node is cordoned (kubectl cordon) and the pool shrinks
    run = execution(tmp_path, "sleep 30")
    prepare_and_start(platform, run)
    assert wait_for(platform, run, WorkState.RUNNING).state == WorkState.RUNNING
    with caplog.at_level(logging.WARNING, logger="platforms.kubernetes.platform"):
        admin.patch_node("n2", {"spec": {"unschedulable": True}})
        time.sleep(0.3)
        claims = platform.external_claims(0, 10)
        assert {(c.resource_class, c.amount) for c in claims} == {
            ("cores", 2),
            ("memory", 4),
            ("storage", 50),
        }
        assert "n2 (cordoned)" in claims[0].reason
        assert "pool main shrank" in caplog.text and "2 of 4 cores" in caplog.text
    platform.poll(run)
    platform.poll(run)
    notes = [n for n in run.notes if "shrank" in n]
    assert len(notes) == 1 and "n2 (cordoned)" in notes[0]  # once per change, not every poll
    platform.release(run)


# --- configuration ------------------------------------------------------------------------------


def test_the_platform_type_is_registered_and_its_options_checked() -> None:
    config_ = PlatformConfig.model_validate(
        {"name": "k8s", "type": "kubernetes", "options": {"namespace": "science"}}
    )
    (platform,) = build_platforms([config_])
    assert isinstance(platform, KubernetesPlatform)
    bad = PlatformConfig.model_validate(
        {"name": "k8s", "type": "kubernetes", "options": {"share": 2}}
    )
    with pytest.raises(ConfigError, match=r"platforms\.0\.options\.share"):
        build_platforms([bad])


@pytest.mark.slow  # two `ebroker check-config` processes
def test_check_config_accepts_the_example_and_names_a_bad_key(tmp_path: Path) -> None:
    example = ROOT / "deploy" / "kubernetes" / "node.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "ebroker", "check-config", "-c", str(example)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "configuration OK" in done.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        example.read_text().replace("service_type: ClusterIP", "service_type: ExternalName")
    )
    done = subprocess.run(
        [sys.executable, "-m", "ebroker", "check-config", "-c", str(bad)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "platforms.0.options.service_type" in done.stderr


def test_an_unreachable_cluster_stops_the_node_with_a_message(tmp_path: Path) -> None:
    fake = FakeCluster()  # never started: nothing listens on its port
    kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig")
    fake.server.server_close()
    shutil.rmtree(fake.storage)
    config_ = PlatformConfig.model_validate(
        {"name": "k8s", "type": "kubernetes", "options": {"kubeconfig": str(kubeconfig)}}
    )
    (platform,) = build_platforms([config_])
    started = time.monotonic()
    with pytest.raises(ConfigError, match="platform k8s: cannot read the cluster's nodes"):
        platform.pools()
    assert time.monotonic() - started < 30


def _request(data: str | None = None, **executable: Any) -> Any:
    document: dict[str, Any] = {
        "executable": {
            "kind": kind_uri("executable", "docker-container"),
            "image": {"locations": [BUSYBOX]},
            **executable,
        },
        "compute": {"kind": kind_uri("compute", "simple-compute-resource"), "cores": {"min": 1}},
    }
    if data:
        document["data"] = [{"kind": kind_uri("data", "simple-data-resource"), "location": data}]
    parsed = parse_request(document, KindRegistry(KINDS))
    assert parsed.request is not None
    return parsed.request


def test_requests_it_cannot_serve_are_answered_with_reasons() -> None:
    platform = KubernetesPlatform(
        PlatformConfig.model_validate({"name": "k8s", "type": "kubernetes"})
    )
    assert platform.validate(_request(data="https://data.example.org/x")) == []
    (refusal,) = platform.validate(_request(privileged=True))
    assert "privileged" in refusal.template
    (refusal,) = platform.validate(_request(data="file:///etc/passwd"))
    assert "fetches data itself, from http(s)" in refusal.message
    twice = {"ports": [{"internal": 80, "external": 30080}, {"internal": 81, "external": 30080}]}
    (refusal,) = platform.validate(_request(network=twice))
    assert "requested twice" in refusal.template
    nodeport = KubernetesPlatform(
        PlatformConfig.model_validate(
            {
                "name": "k8s",
                "type": "kubernetes",
                "options": {"service_type": "NodePort", "connector_host": "node1.example.org"},
            }
        )
    )
    (refusal,) = nodeport.validate(_request(network={"ports": [{"internal": 80, "external": 80}]}))
    assert "outside the cluster's node ports" in refusal.template
    singularity = _request()
    assert kind_uri("executable", "singularity-container") not in platform.accepted_kinds()
    assert singularity.executable.kind in platform.accepted_kinds()


def test_a_job_the_quota_refuses_a_pod_fails_with_the_quota_message(
    platform, fake, tmp_path
) -> None:
    fake.create(
        "resourcequotas",
        NAMESPACE,
        {"metadata": {"name": "two-pods"}, "spec": {"hard": {"pods": "1"}}},
    )
    fake.create(
        "pods",
        NAMESPACE,
        {
            "metadata": {"name": "someone-elses"},
            "spec": {"containers": [{"name": "c", "image": BUSYBOX, "args": ["sleep", "60"]}]},
        },
    )
    run = execution(tmp_path, "true")
    prepare_and_start(platform, run)
    assert platform.poll(run).state == WorkState.PENDING
    status = wait_for(platform, run, WorkState.FAILED, seconds=10)
    assert status.state == WorkState.FAILED
    assert "made no pod within 2 s" in (status.message or "")
    assert "exceeded quota: two-pods" in (status.message or "")


def test_without_a_kubeconfig_a_node_in_a_pod_uses_its_service_account(
    monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    assert only_in_cluster(KubernetesOptions())
    assert not only_in_cluster(KubernetesOptions(context="prod"))
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("{}")
    assert not only_in_cluster(KubernetesOptions())  # a kubeconfig at its default place wins
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    (tmp_path / ".kube" / "config").unlink()
    assert not only_in_cluster(KubernetesOptions())  # not in a pod
