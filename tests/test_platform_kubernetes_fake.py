"""The fake API server behaves as the Kubernetes API does where the platform relies on it,
checked through the official client (and raw HTTP where the client would refuse first):
Status objects for 401, 404, 409 and 422; resourceVersions that move on every change;
watches from a resourceVersion; label and field selectors; the job controller, scheduler and
kubelet on their clock; a Job's pods orphaned by default and removed with ``Background``;
Secrets (base64 data, ``stringData`` merged, ``immutable``) given to containers through
``secretKeyRef``; ``emptyDir`` volumes shared by a pod's containers."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client, config, watch

from tests.kube_fake import FakeCluster, label_matcher, run_script

BUSYBOX = "docker.io/library/busybox:1.36"


@pytest.fixture
def fake() -> Iterator[FakeCluster]:
    cluster = FakeCluster(images={BUSYBOX}).start()
    cluster.add_node("n1", cpu="2", memory="4Gi")
    yield cluster
    cluster.stop()


@pytest.fixture
def api(fake: FakeCluster, tmp_path: Path) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(
        str(fake.kubeconfig(tmp_path / "kubeconfig")), client_configuration=configuration
    )
    return client.ApiClient(configuration)


def job(name: str, script: str, cpu: str = "1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "backoffLimit": 0,
            **spec,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": BUSYBOX,
                            "args": ["sh", "-c", script],
                            "resources": {"requests": {"cpu": cpu}, "limits": {"cpu": cpu}},
                        }
                    ],
                },
            },
        },
    }


def wait(test: Any, seconds: float = 10) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := test()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return found


def test_errors_are_status_objects(fake: FakeCluster, api: client.ApiClient) -> None:
    batch = client.BatchV1Api(api)
    with pytest.raises(client.ApiException) as missing:
        batch.read_namespaced_job("nope", "default")
    status = json.loads(missing.value.body)
    assert (missing.value.status, status["kind"], status["reason"]) == (404, "Status", "NotFound")
    batch.create_namespaced_job("default", job("j", "true"))
    with pytest.raises(client.ApiException) as taken:
        batch.create_namespaced_job("default", job("j", "true"))
    assert (taken.value.status, json.loads(taken.value.body)["reason"]) == (409, "AlreadyExists")
    raw = httpx.post(
        f"{fake.url}/apis/batch/v1/namespaces/default/jobs",
        json={**job("k", "true"), "spc": {}},
        headers={"Authorization": f"Bearer {fake.token}"},
    )
    assert (raw.status_code, raw.json()["reason"]) == (422, "Invalid")  # schema-checked
    assert httpx.get(f"{fake.url}/api/v1/nodes").status_code == 401  # no token


def test_resource_versions_move_and_a_stale_replace_conflicts(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    made = core.create_namespaced_service(
        "default",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s"},
            "spec": {"type": "NodePort", "ports": [{"port": 80}]},
        },
    )
    assert 30000 <= made.spec.ports[0].node_port <= 32767  # allocated by the server
    patched = core.patch_namespaced_service("s", "default", {"metadata": {"labels": {"a": "b"}}})
    assert int(patched.metadata.resource_version) > int(made.metadata.resource_version)
    stale = core.read_namespaced_service("s", "default").to_dict()
    stale["metadata"]["resource_version"] = made.metadata.resource_version
    with pytest.raises(client.ApiException) as conflict:
        core.replace_namespaced_service("s", "default", stale)
    assert conflict.value.status == 409


def test_a_watch_carries_on_from_a_resource_version(api: client.ApiClient) -> None:
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    listing = core.list_namespaced_pod("default", label_selector="app=w")
    batch.create_namespaced_job("default", job("w", "echo hi; sleep 0.5"))
    phases = []
    stream = watch.Watch()
    for event in stream.stream(
        core.list_namespaced_pod,
        "default",
        label_selector="app=w",
        resource_version=listing.metadata.resource_version,
        timeout_seconds=10,
    ):
        phases.append((event["type"], event["object"].status.phase))
        if event["object"].status.phase == "Succeeded":
            stream.stop()
    assert phases[0] == ("ADDED", "Pending")  # nothing before the list's version is replayed
    assert ("MODIFIED", "Running") in phases and phases[-1] == ("MODIFIED", "Succeeded")


def test_selectors(fake: FakeCluster, api: client.ApiClient) -> None:
    assert label_matcher("a in (x, y),!b,c!=3")({"a": "y", "c": "4"})
    assert not label_matcher("a notin (x),c")({"a": "x", "c": "1"})
    core = client.CoreV1Api(api)
    fake.add_node("n2", cpu="2", memory="4Gi", labels={"zone": "b"})
    assert [n.metadata.name for n in core.list_node(label_selector="zone=b").items] == ["n2"]
    assert [n.metadata.name for n in core.list_node(field_selector="metadata.name!=n2").items] == [
        "n1"
    ]


def test_the_controllers_run_a_job_and_the_scheduler_says_why_not(
    fake: FakeCluster, api: client.ApiClient
) -> None:
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    batch.create_namespaced_job("default", job("ok", "echo one; exit 4"))
    done = wait(
        lambda: [
            c
            for c in batch.read_namespaced_job("ok", "default").status.conditions or []
            if c.type == "Failed"
        ]
    )
    assert done[0].reason == "BackoffLimitExceeded"
    (pod,) = core.list_namespaced_pod("default", label_selector="job-name=ok").items
    assert pod.status.container_statuses[0].state.terminated.exit_code == 4
    assert core.read_namespaced_pod_log(pod.metadata.name, "default") == "one\n"
    batch.create_namespaced_job("default", job("big", "true", cpu="3"))  # the node has 2
    events = wait(
        lambda: (
            core.list_namespaced_event("default", field_selector="reason=FailedScheduling").items
        )
    )
    assert events[0].message == "0/1 nodes are available: 1 Insufficient cpu."
    batch.create_namespaced_job("default", job("late", "sleep 30", activeDeadlineSeconds=1))
    failed = wait(
        lambda: [
            c
            for c in batch.read_namespaced_job("late", "default").status.conditions or []
            if c.type == "Failed"
        ]
    )
    assert failed[0].reason == "DeadlineExceeded"


def test_deleting_a_job_orphans_its_pods_unless_told_otherwise(
    fake: FakeCluster, api: client.ApiClient
) -> None:
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    for name in ("orphaning", "background"):
        batch.create_namespaced_job("default", job(name, "sleep 30"))
    wait(lambda: len(core.list_namespaced_pod("default").items) == 2)
    batch.delete_namespaced_job("orphaning", "default")
    batch.delete_namespaced_job("background", "default", propagation_policy="Background")
    wait(lambda: len(core.list_namespaced_pod("default").items) == 1)
    (left,) = core.list_namespaced_pod("default").items
    assert left.metadata.labels["job-name"] == "orphaning" and not left.metadata.owner_references


def test_the_shell_of_the_fake_images() -> None:
    run = run_script(
        ["sh", "-c", 'set -e; echo "$X"; sleep 2; false; echo never'],
        {"X": "1"},
        lambda path: None,
        100.0,
    )
    assert (run.exit_code, run.duration, run.output(101)) == (1, 2.0, "1\n")
    assert run_script(["sleep", "3"], {}, lambda path: None, 0).duration == 3


def test_admission_quotas_and_claim_protection(fake: FakeCluster, api: client.ApiClient) -> None:
    core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
    core.create_namespaced_resource_quota(
        "default",
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "q"},
            "spec": {"hard": {"requests.cpu": "1500m"}},
        },
    )
    batch.create_namespaced_job("default", job("fits", "sleep 30"))
    wait(lambda: core.list_namespaced_pod("default").items)
    batch.create_namespaced_job("default", job("over", "true"))
    refused = wait(
        lambda: (
            core.list_namespaced_event(
                "default", field_selector="involvedObject.name=over,reason=FailedCreate"
            ).items
        )
    )
    assert "exceeded quota: q, requested: requests.cpu=1, used: requests.cpu=1" in (
        refused[0].message
    )
    core.create_namespaced_persistent_volume_claim(
        "default",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "c"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    fake.create(
        "pods",
        "default",
        {
            "metadata": {"name": "user"},
            "spec": {
                "containers": [{"name": "m", "image": BUSYBOX, "args": ["sleep", "30"]}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "c"}}],
            },
        },
    )
    core.delete_namespaced_persistent_volume_claim("c", "default")
    claim = core.read_namespaced_persistent_volume_claim("c", "default")
    assert claim.metadata.deletion_timestamp and claim.metadata.finalizers == [
        "kubernetes.io/pvc-protection"
    ]
    core.delete_namespaced_pod("user", "default", grace_period_seconds=0)
    wait(lambda: not core.list_namespaced_persistent_volume_claim("default").items)


def test_a_watch_from_a_compacted_version_is_told_410(tmp_path: Path) -> None:
    small = FakeCluster(images={BUSYBOX}, history_limit=20).start()
    try:
        configuration = client.Configuration()
        config.load_kube_config(
            str(small.kubeconfig(tmp_path / "kc")), client_configuration=configuration
        )
        core = client.CoreV1Api(client.ApiClient(configuration))
        first = core.list_namespaced_service("default").metadata.resource_version
        for i in range(30):
            small.add_node(f"n{i}")
        stream = watch.Watch().stream(
            core.list_namespaced_service, "default", resource_version=first, timeout_seconds=5
        )
        with pytest.raises(client.ApiException) as expired:
            next(stream)
        assert expired.value.status == 410
    finally:
        small.stop()


def test_json_patches_as_clients_send_them(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.patch_node(
        "n1",
        [
            {"op": "add", "path": "/metadata/labels/zone", "value": "a"},
            {"op": "add", "path": "/spec/taints", "value": []},
            {"op": "add", "path": "/spec/taints/-", "value": {"key": "k", "effect": "NoSchedule"}},
            {"op": "replace", "path": "/spec/taints/0/key", "value": "j"},
        ],
    )
    node = core.read_node("n1")
    assert node.metadata.labels["zone"] == "a" and node.spec.taints[0].key == "j"
    core.patch_node("n1", [{"op": "remove", "path": "/spec/taints/0"}])
    assert not core.read_node("n1").spec.taints


def test_secrets_keep_base64_data_and_refuse_changes_once_immutable(
    api: client.ApiClient,
) -> None:
    core = client.CoreV1Api(api)
    made = core.create_namespaced_secret(
        "default",
        {"metadata": {"name": "s"}, "stringData": {"K": "plain"}, "data": {"B": "Ynl0ZXM="}},
    )
    assert made.type == "Opaque" and made.data == {"K": "cGxhaW4=", "B": "Ynl0ZXM="}
    assert made.string_data is None  # stringData is merged into data, never kept
    with pytest.raises(client.ApiException) as again:
        core.create_namespaced_secret("default", {"metadata": {"name": "s"}})
    assert again.value.status == 409
    core.patch_namespaced_secret("s", "default", {"data": {"K": "b3RoZXI="}})  # mutable
    core.patch_namespaced_secret("s", "default", {"immutable": True})
    with pytest.raises(client.ApiException) as frozen:
        core.patch_namespaced_secret("s", "default", {"data": {"K": "dGhpcmQ="}})
    assert frozen.value.status == 422
    assert core.read_namespaced_secret("s", "default").data["K"] == "b3RoZXI="
    with pytest.raises(client.ApiException) as bad:
        core.create_namespaced_secret("default", {"metadata": {"name": "t"}, "data": {"K": "!"}})
    assert bad.value.status == 400
    core.delete_namespaced_secret("s", "default")
    assert core.list_namespaced_secret("default").items == []


def test_the_kubelet_gives_containers_their_secrets_and_waits_for_a_missing_one(
    fake: FakeCluster, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    spec = job("with-secret", 'echo "token=$TOKEN"')
    container = spec["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "later", "key": "T"}}}
    ]
    client.BatchV1Api(api).create_namespaced_job("default", spec)

    def waiting() -> Any:
        pods = core.list_namespaced_pod("default", label_selector="app=with-secret").items
        statuses = (pods[0].status.container_statuses or []) if pods else []
        return statuses and statuses[0].state.waiting

    state = wait(waiting)
    assert (state.reason, state.message) == (
        "CreateContainerConfigError",
        'secret "later" not found',
    )
    core.create_namespaced_secret(
        "default", {"metadata": {"name": "later"}, "stringData": {"T": "s3cret"}}
    )

    def succeeded() -> Any:
        pods = core.list_namespaced_pod("default", label_selector="app=with-secret").items
        return pods and pods[0].status.phase == "Succeeded" and pods[0]

    pod = wait(succeeded)
    assert core.read_namespaced_pod_log(pod.metadata.name, "default") == "token=s3cret\n"


def test_an_empty_dir_is_shared_by_a_pods_containers_and_goes_with_the_pod(
    fake: FakeCluster, api: client.ApiClient, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("in the empty dir\n")

    def handler(*args: Any) -> http.server.SimpleHTTPRequestHandler:
        return http.server.SimpleHTTPRequestHandler(*args, directory=str(tmp_path))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/file"
    spec = job("shared", "cat /data/file")
    pod = spec["spec"]["template"]["spec"]
    pod["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    pod["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/data"}]
    pod["initContainers"] = [
        {
            "name": "fetch",
            "image": BUSYBOX,
            "args": ["sh", "-c", f"curl -fsSL -o /out/file {url}"],
            "volumeMounts": [{"name": "scratch", "mountPath": "/out"}],
        }
    ]
    client.BatchV1Api(api).create_namespaced_job("default", spec)
    core = client.CoreV1Api(api)
    try:
        (made,) = wait(
            lambda: core.list_namespaced_pod("default", label_selector="app=shared").items
        )
        done = wait(
            lambda: (
                (p := core.read_namespaced_pod(made.metadata.name, "default")).status.phase
                in ("Succeeded", "Failed")
                and p
            )
        )
    finally:
        server.shutdown()
    assert done.status.phase == "Succeeded"
    assert core.read_namespaced_pod_log(made.metadata.name, "default") == "in the empty dir\n"
    directory = fake.storage / "pods" / made.metadata.uid / "scratch"
    assert (directory / "file").is_file()
    core.delete_namespaced_pod(made.metadata.name, "default", grace_period_seconds=0)
    wait(lambda: not directory.exists())
