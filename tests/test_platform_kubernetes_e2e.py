"""The kubernetes platform end to end, through real node processes and their HTTP API, against
the fake API server (``tests/kube_fake.py``) that the official client talks to unmodified:
request → accept → pod Running → Succeeded → COMPLETED with the staged data and the output
checked; a failing executable; cancel mid-run leaving nothing behind; SIGKILL of the node
mid-session and a restart; reconciliation removing a stray Job; a pool shrinking under a
running session; a notebook session served through an Ingress path with its token (from a
Secret, in no pod spec and no log), then cancelled with its Secret, Job, Service and Ingress
gone.

Against a real cluster: ``EBROKER_KUBE_TEST_CONTEXT=<kubeconfig context>`` (and optionally
``EBROKER_KUBE_TEST_NAMESPACE``, default ``ebroker-test``, which must exist, and
``EBROKER_KUBE_TEST_HOST``, the address the cluster's pods reach this machine at for the
staged data) runs the same tests there; the one that cordons a node runs only against the
fake, and the notebook one there needs ``EBROKER_KUBE_TEST_NOTEBOOK_IMAGE`` (a notebook image
that runs as a non-root user). Without the variable the real-cluster path is not taken (this is
an opt-in, not an integration dependency: CI runs every test here against the fake).
"""

from __future__ import annotations

import base64
import http.server
import ipaddress
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml
from kubernetes import client, config

from broker_core.config import PlatformConfig
from platforms.contract import Platform, work_name
from platforms.notebooks import NOTEBOOK
from platforms.registry import build_platforms
from tests.conftest import COMPUTE, DOCKER, offered_start
from tests.kube_fake import FakeCluster
from tests.nodes import Node, start_node
from tests.test_platform_kubernetes import notebook_server
from tests.test_platforms_e2e import CANCEL, DATA_KIND, FAST, MOUNT, book, messages, wait_phase

pytestmark = pytest.mark.slow  # real node processes

BUSYBOX = "docker.io/library/busybox:1.36"
CURL = "docker.io/curlimages/curl:8.11.1"
REAL_CONTEXT = os.environ.get("EBROKER_KUBE_TEST_CONTEXT")
NAMESPACE = os.environ.get("EBROKER_KUBE_TEST_NAMESPACE", "ebroker-test")
DATA_HOST = os.environ.get("EBROKER_KUBE_TEST_HOST", "127.0.0.1")


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Where the sessions run: the fake API server with two 4-core nodes (or, opted in, the
    real cluster), the platform options pointing at it and an admin client."""
    if REAL_CONTEXT:
        configuration = client.Configuration()
        config.load_kube_config(context=REAL_CONTEXT, client_configuration=configuration)
        yield {
            "fake": None,
            "options": {"context": REAL_CONTEXT},
            "api": client.ApiClient(configuration),
        }
        return
    fake = FakeCluster(images={BUSYBOX, CURL}).start()
    fake.add_node("n1", cpu="4", memory="8Gi")
    fake.add_node("n2", cpu="4", memory="8Gi")
    kubeconfig = fake.kubeconfig(tmp_path / "kubeconfig")
    configuration = client.Configuration()
    config.load_kube_config(str(kubeconfig), client_configuration=configuration)
    try:
        yield {
            "fake": fake,
            "options": {"kubeconfig": str(kubeconfig)},
            "api": client.ApiClient(configuration),
        }
    finally:
        fake.stop()


@pytest.fixture
def data_url(tmp_path: Path) -> Iterator[str]:
    """A file the sessions' init containers download, over HTTP from this machine."""
    served = tmp_path / "served"
    served.mkdir()
    (served / "input.txt").write_text("staged-data-42\n")

    def handler(*args: Any) -> http.server.SimpleHTTPRequestHandler:
        return http.server.SimpleHTTPRequestHandler(*args, directory=str(served))

    server = http.server.ThreadingHTTPServer(
        ("0.0.0.0" if REAL_CONTEXT else "127.0.0.1", 0), handler
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://{DATA_HOST}:{server.server_address[1]}/input.txt"
    server.shutdown()


def _allowing(host: str) -> dict[str, list[str]]:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return {"allow_hosts": [host]}
    return {"allow_networks": [host]}


@pytest.fixture
def site(kube: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    platform = {
        "name": "k8s",
        "type": "kubernetes",
        "options": {
            **FAST,
            **kube["options"],
            "namespace": NAMESPACE,
            "reread_interval": "PT1S",
            "pending_timeout": "PT3S",
        },
    }
    node_config = {
        "site": {"name": "e2e-kubernetes"},
        "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
        "offers": {"granularity": "PT1S", "max_offers": 2},
        "lifecycle": {
            "workdir": str(tmp_path / "sessions"),
            "poll_interval": "PT1S",
            "reconcile_interval": "PT2S",
        },
        # the data server is on this machine: its address is allowed to the stagers
        "staging": _allowing(DATA_HOST),
        "platforms": [platform],
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(node_config))
    (inspector,) = build_platforms([PlatformConfig.model_validate(platform)])
    yield {**kube, "config": path, "tmp": tmp_path, "platform": inspector}
    sessions = tmp_path / "sessions"
    for name in inspector.list_work() or set():  # never leave work behind, whatever failed
        if sessions.exists() and any(work_name(d.name) == name for d in sessions.iterdir()):
            inspector.remove_work(name)


@pytest.fixture
def node(site: dict[str, Any]) -> Iterator[Node]:
    node = start_node(site["config"], site["tmp"], "node")
    yield node
    node.stop()


def request_doc(
    data_url: str, script: str, cores: int = 1, duration: str = "PT2M"
) -> dict[str, Any]:
    return {
        "executable": {
            "kind": DOCKER,
            "image": {"locations": [BUSYBOX]},
            "command": ["sh", "-c", script],
            "environment": {"GREETING": "hello-from-ebroker"},
        },
        "compute": {
            "kind": COMPUTE,
            "cores": {"min": cores, "max": cores},
            "memory": {"min": 1, "max": 1},
            "volumes": [{"kind": MOUNT, "path": "/input", "mode": "READONLY", "resource": "input"}],
        },
        "data": [{"kind": DATA_KIND, "meta": {"name": "input"}, "location": data_url}],
        "schedule": {"requested": {"duration": duration}},
    }


def output(site: dict[str, Any], uuid: str) -> str:
    path = site["tmp"] / "sessions" / uuid / "logs" / "output.log"
    return path.read_text(errors="replace") if path.exists() else ""


def left_on_platform(platform: Platform, uuid: str) -> set[str]:
    return {name for name in platform.list_work() or set() if name == work_name(uuid)}


def wait_gone(platform: Platform, uuid: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while left_on_platform(platform, uuid):
        assert time.monotonic() < deadline, "the session's objects outlived it"
        time.sleep(0.3)


def test_a_session_runs_as_a_pod_and_completes(site, node, data_url):
    uuid = book(node, request_doc(data_url, 'echo "$GREETING"; cat /input/input.txt; sleep 3'))
    doc = wait_phase(node, uuid, {"COMPLETED", "FAILED", "CANCELLED"})
    assert doc["phase"] == "COMPLETED", messages(doc) + node.output()[-3000:]
    assert "running" in doc["schedule"]["actual"], doc["seen"]
    assert [c["phase"] for c in doc["components"]] == ["AVAILABLE"] * 3
    text = output(site, uuid)
    assert "hello-from-ebroker" in text and "staged-data-42" in text, text
    served = httpx.get(f"{node.url}/sessions/{uuid}/logs", timeout=30)
    assert served.status_code == 200 and "staged-data-42" in served.text
    assert f"made Job/{work_name(uuid)}" in messages(doc)
    wait_gone(site["platform"], uuid)
    if site["fake"] is not None:  # every object the node sent was checked against the schema
        kinds = {o["kind"] for o in site["fake"].received}
        assert {"Job", "PersistentVolumeClaim"} <= kinds
        # the node watched its pods rather than listing them on every poll
        watches = [p for _, p in site["fake"].requests if "/pods?" in p and "watch=true" in p]
        assert watches and all("ebroker.platform%3Dk8s" in p for p in watches), watches


def test_a_failing_executable_ends_failed(site, node, data_url):
    uuid = book(node, request_doc(data_url, "echo about-to-fail; exit 3"))
    doc = wait_phase(node, uuid, {"COMPLETED", "FAILED", "CANCELLED"})
    assert doc["phase"] == "FAILED", messages(doc)
    assert "exited with code 3" in messages(doc)
    assert "about-to-fail" in output(site, uuid)
    wait_gone(site["platform"], uuid)


def test_cancel_mid_run_leaves_nothing_behind(site, node, data_url):
    uuid = book(node, request_doc(data_url, "echo started; sleep 300"))
    wait_phase(node, uuid, {"RUNNING"})
    assert left_on_platform(site["platform"], uuid)
    r = httpx.post(f"{node.url}/sessions/{uuid}", json=CANCEL, timeout=30)
    assert r.status_code == 200 and r.json()["phase"] == "CANCELLED"
    wait_gone(site["platform"], uuid, 60)
    doc = httpx.get(f"{node.url}/sessions/{uuid}", timeout=30).json()
    assert "stopped and removed" in messages(doc)
    assert "started" in output(site, uuid)


def test_sigkill_mid_session_then_restart_completes_and_leaves_the_cluster_clean(site, data_url):
    first = start_node(site["config"], site["tmp"], "first")
    try:
        uuid = book(first, request_doc(data_url, "echo survived; sleep 6; echo done"))
        wait_phase(first, uuid, {"RUNNING"})
    finally:
        first.kill()  # SIGKILL: no shutdown handler runs
    assert left_on_platform(site["platform"], uuid), "the pod should outlive the node"
    second = start_node(site["config"], site["tmp"], "second")
    try:
        doc = wait_phase(second, uuid, {"COMPLETED", "FAILED", "CANCELLED"})
        assert doc["phase"] == "COMPLETED", messages(doc) + second.output()[-3000:]
        assert "done" in output(site, uuid)
        wait_gone(site["platform"], uuid)
    finally:
        second.stop()


def test_reconciliation_removes_a_stray_job_of_an_ended_session(site, node, data_url):
    uuid = book(node, request_doc(data_url, "echo quick"))
    wait_phase(node, uuid, {"COMPLETED"})
    wait_gone(site["platform"], uuid)
    # someone (or a crash at the wrong moment) leaves a Job of that session behind
    labels = {"ebroker.session": uuid, "ebroker.platform": "k8s"}
    client.BatchV1Api(site["api"]).create_namespaced_job(
        NAMESPACE,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": work_name(uuid), "labels": labels},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000},
                        "containers": [
                            {"name": "main", "image": BUSYBOX, "args": ["sleep", "300"]}
                        ],
                    },
                },
            },
        },
    )
    assert left_on_platform(site["platform"], uuid)
    wait_gone(site["platform"], uuid)
    doc = httpx.get(f"{node.url}/sessions/{uuid}", timeout=30).json()
    assert "reconciliation removed stray work" in messages(doc)
    assert doc["phase"] == "COMPLETED"


def test_a_pool_shrinking_under_a_running_session_is_noted_and_offers_avoid_it(
    site, node, data_url
):
    if site["fake"] is None:
        pytest.skip("cordons a node: runs against the fake API server only")
    four = request_doc(data_url, "true", cores=4)  # a whole node
    r = httpx.post(f"{node.url}/requests", json=four, timeout=30)
    assert r.status_code == 200 and r.json()["result"] == "YES", r.text  # two nodes of 4 cores
    uuid = book(node, request_doc(data_url, "echo long; sleep 120", duration="PT5M"))
    wait_phase(node, uuid, {"RUNNING"})
    # the admin cordons a node (kubectl cordon n2): the pool keeps 4 of its 8 cores
    pod_node = next(p["spec"]["nodeName"] for p in site["fake"].items("pods", NAMESPACE))
    other = "n2" if pod_node == "n1" else "n1"
    client.CoreV1Api(site["api"]).patch_node(other, {"spec": {"unschedulable": True}})
    deadline = time.monotonic() + 30
    while True:
        doc = httpx.get(f"{node.url}/sessions/{uuid}", timeout=30).json()
        if "shrank" in messages(doc):
            break
        assert time.monotonic() < deadline, messages(doc) + node.output()[-2000:]
        time.sleep(0.5)
    assert f"{other} (cordoned)" in messages(doc) and "4 of 8 cores" in messages(doc)
    assert "pool default shrank" in node.output()
    # 4 cores left, 1 of them booked: a whole node is offered only after the session ends
    booked_end = doc["schedule"]["releasing"]["start"]
    r = httpx.post(f"{node.url}/requests", json=four, timeout=30)
    assert r.status_code == 200 and r.json()["offers"], r.text
    for offer in r.json()["offers"]:
        assert offered_start(offer) >= booked_end, (offer["schedule"], booked_end)
    r = httpx.post(f"{node.url}/sessions/{uuid}", json=CANCEL, timeout=30)
    assert r.status_code == 200
    wait_gone(site["platform"], uuid, 60)


def test_an_image_that_cannot_be_pulled_fails_the_session_saying_so(site, node, data_url):
    doc = request_doc(data_url, "true")
    doc["executable"]["image"]["locations"] = ["registry.invalid/ebroker/missing:1"]
    uuid = book(node, doc)
    doc = wait_phase(node, uuid, {"COMPLETED", "FAILED", "CANCELLED"})
    assert doc["phase"] == "FAILED"
    assert "the image registry.invalid/ebroker/missing:1 cannot be pulled" in messages(doc)
    wait_gone(site["platform"], uuid)


def test_a_pod_left_unscheduled_past_the_booked_start_fails_with_the_schedulers_reason(
    site, node, data_url
):
    if site["fake"] is None:
        pytest.skip("taints the nodes: runs against the fake API server only")
    core = client.CoreV1Api(site["api"])
    taint = {"spec": {"taints": [{"key": "maintenance", "effect": "NoSchedule"}]}}
    doc = request_doc(data_url, "true", duration="PT5M")
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 6))
    doc["schedule"]["requested"]["start"] = f"{start}/PT1M"  # a little later: time to taint
    uuid = book(node, doc)
    for name in ("n1", "n2"):  # the admin taints every node before the booked start
        core.patch_node(name, taint)
    doc = wait_phase(node, uuid, {"COMPLETED", "FAILED", "CANCELLED"})
    assert doc["phase"] == "FAILED", messages(doc)
    assert "could not be scheduled within 3 s of the booked start" in messages(doc)
    assert "untolerated taint {maintenance: }" in messages(doc)  # the scheduler's own words
    wait_gone(site["platform"], uuid)


def test_extending_a_running_session_moves_the_jobs_deadline(site, node, data_url):
    uuid = book(node, request_doc(data_url, "echo long; sleep 300", duration="PT2M"))
    wait_phase(node, uuid, {"RUNNING"})
    batch = client.BatchV1Api(site["api"])
    before = batch.read_namespaced_job(work_name(uuid), NAMESPACE).spec.active_deadline_seconds
    longer = {"kind": "uri:integer-delta-update", "path": "schedule.duration", "delta": 600}
    r = httpx.post(f"{node.url}/sessions/{uuid}", json=longer, timeout=30)
    assert r.status_code == 200, r.text
    after = batch.read_namespaced_job(work_name(uuid), NAMESPACE).spec.active_deadline_seconds
    assert after - before >= 590, (before, after)  # the booked end moved by ten minutes
    r = httpx.post(f"{node.url}/sessions/{uuid}", json=CANCEL, timeout=30)
    assert r.status_code == 200
    wait_gone(site["platform"], uuid, 60)


# --- a notebook session ------------------------------------------------------------------------

NOTEBOOK_IMAGE = os.environ.get(
    "EBROKER_KUBE_TEST_NOTEBOOK_IMAGE", "registry.example.org/ebroker/notebook:1"
)


@pytest.fixture
def notebook_site(kube: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A node whose kubernetes platform serves notebooks behind an Ingress path; on the fake,
    its kubelet runs a stand-in for the server (``notebook_server``), not a real Jupyter (that
    runs for real on podman: tests/test_notebooks_podman.py)."""
    if kube["fake"] is not None:
        kube["fake"].programs[NOTEBOOK_IMAGE] = notebook_server
        kube["fake"].images.add(NOTEBOOK_IMAGE)
    elif "EBROKER_KUBE_TEST_NOTEBOOK_IMAGE" not in os.environ:
        pytest.skip("a real cluster needs EBROKER_KUBE_TEST_NOTEBOOK_IMAGE, a notebook image")
    platform = {
        "name": "k8s",
        "type": "kubernetes",
        "options": {
            **FAST,
            **kube["options"],
            "namespace": NAMESPACE,
            "notebook_image": NOTEBOOK_IMAGE,
            "ingress": {"host": "notebooks.example.org", "path_prefix": "/s"},
        },
    }
    node_config = {
        "site": {"name": "e2e-kubernetes-notebooks"},
        "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
        "offers": {"granularity": "PT1S", "max_offers": 2},
        "lifecycle": {"workdir": str(tmp_path / "sessions"), "poll_interval": "PT1S"},
        "staging": _allowing(DATA_HOST),
        "platforms": [platform],
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(node_config))
    (inspector,) = build_platforms([PlatformConfig.model_validate(platform)])
    yield {**kube, "config": path, "tmp": tmp_path, "platform": inspector}
    for name in inspector.list_work() or set():
        inspector.remove_work(name)


def test_a_notebook_is_served_through_the_ingress_with_its_token_then_cancelled(
    notebook_site, data_url
):
    site = notebook_site
    served = site["tmp"] / "served" / "analysis.ipynb"
    served.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    node = start_node(site["config"], site["tmp"], "node")
    try:
        doc = {
            "executable": {
                "kind": NOTEBOOK,
                "location": data_url.replace("input.txt", served.name),
            },
            "compute": {"kind": COMPUTE, "cores": {"min": 1, "max": 1}, "memory": {"min": 1}},
            "schedule": {"requested": {"duration": "PT5M"}},
        }
        uuid = book(node, doc)
        doc = wait_phase(node, uuid, {"RUNNING", "COMPLETED", "FAILED", "CANCELLED"})
        assert doc["phase"] == "RUNNING", messages(doc) + node.output()[-3000:]
        # the connector opens the notebook through the Ingress path, with the session's token
        (connector,) = doc["connectors"]
        parts = urlsplit(connector["url"])
        (token,) = parse_qs(parts.query)["token"]
        name = work_name(uuid)
        assert (parts.scheme, parts.netloc) == ("http", "notebooks.example.org")
        assert parts.path == f"/s/{name}/notebooks/analysis.ipynb"
        api = site["api"]
        secret = client.CoreV1Api(api).read_namespaced_secret(name, NAMESPACE)
        assert base64.b64decode(secret.data["JUPYTER_TOKEN"]).decode() == token
        ingress = client.NetworkingV1Api(api).read_namespaced_ingress(name, NAMESPACE)
        (path,) = ingress.spec.rules[0].http.paths
        assert path.path == f"/s/{name}/" and path.backend.service.port.number == 8888
        service = client.CoreV1Api(api).read_namespaced_service(name, NAMESPACE)
        assert [p.target_port for p in service.spec.ports] == [8888]
        # the token is in no pod spec: the server reads it from the Secret
        (pod,) = (
            client.CoreV1Api(api)
            .list_namespaced_pod(NAMESPACE, label_selector=f"ebroker.session={uuid}")
            .items
        )
        assert token not in json.dumps(api.sanitize_for_serialization(pod))
        (env,) = [e for e in pod.spec.containers[0].env if e.name == "JUPYTER_TOKEN"]
        assert (env.value, env.value_from.secret_key_ref.name) == (None, name)
        if site["fake"] is not None:
            assert all(
                token not in json.dumps(o) for o in site["fake"].received if o["kind"] != "Secret"
            )
            # the stand-in server saw the fetched notebook, its token and the Ingress path
            deadline = time.monotonic() + 30
            while "running as" not in (
                logs := httpx.get(f"{node.url}/sessions/{uuid}/logs", timeout=30).text
            ):
                assert time.monotonic() < deadline, logs
                time.sleep(0.5)
            assert "local directory: /work: analysis.ipynb" in logs
            assert f"/s/{name}/?token=..." in logs and "running as a user" in logs
            assert token not in logs and "?token=[token]" in logs  # a failed URL, scrubbed
        r = httpx.post(f"{node.url}/sessions/{uuid}", json=CANCEL, timeout=30)
        assert r.status_code == 200 and r.json()["phase"] == "CANCELLED"
        wait_gone(site["platform"], uuid, 60)
        core, networking = client.CoreV1Api(api), client.NetworkingV1Api(api)
        for read in (
            core.read_namespaced_secret,
            core.read_namespaced_service,
            networking.read_namespaced_ingress,
            client.BatchV1Api(api).read_namespaced_job,
        ):
            with pytest.raises(client.ApiException) as gone:
                read(name, NAMESPACE)
            assert gone.value.status == 404, read
        kept = output(site, uuid)
        assert token not in kept
        assert token not in node.output()  # nor in the node's own log
    finally:
        node.stop()


def test_a_notebook_where_no_notebook_image_is_configured_is_answered_no_saying_why(
    site, node, data_url
):
    doc = {
        "executable": {"kind": NOTEBOOK, "location": data_url.replace("input.txt", "a.ipynb")},
        "compute": {"kind": COMPUTE, "cores": {"min": 1, "max": 1}},
        "schedule": {"requested": {"duration": "PT5M"}},
    }
    r = httpx.post(f"{node.url}/requests", json=doc, timeout=30)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["result"] == "NO" and not answer.get("offers"), answer
    assert "configured no notebook_image" in json.dumps(answer), answer
