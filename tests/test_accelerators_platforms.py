"""Accelerators on the platforms, without a cluster: Slurm's node GRES read as GPU/FPGA
inventories with traits and a session's GPUs asked for with ``--gres`` (a snapshot), and the
kubernetes platform's node groups counting and requesting their configured extended resources
(``nvidia.com/gpu`` or ``amd.com/gpu``) with the group's node selector (a snapshot), then a
GPU session run through the fake API server (``tests/kube_fake.py``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from broker_core.config import PlatformConfig
from broker_core.kinds.base import kind_uri
from broker_core.kinds.builtin import KINDS
from broker_core.kinds.registry import KindRegistry
from broker_core.kinds.request import parse_request
from platforms.contract import Execution, PlatformError, WorkState
from platforms.kubernetes import KubernetesPlatform, cluster, manifests
from platforms.kubernetes.options import KubernetesOptions
from platforms.registry import build_platforms
from platforms.slurm import builders
from platforms.slurm.cluster import parse_gres, partition_pools, read_partitions
from tests.conftest import request_doc
from tests.kube_fake import FakeCluster
from tests.test_platform_builders import SLURM, check_snapshot, session, shell
from tests.test_platform_kubernetes import node as kube_node
from tests.test_platform_kubernetes_manifests import check_snapshot as check_manifest
from tests.test_platform_kubernetes_manifests import session as kube_session
from tests.test_platform_kubernetes_manifests import validate

BUSYBOX = "docker.io/library/busybox:1.36"
A100 = {"type": "gpu", "count": {"min": 2, "max": 2}, "model": ["A100"],
        "memory": {"min": 80, "max": 80}}  # fmt: skip


def with_accelerators(execution: Execution, granted: dict[str, int], *items: dict) -> Execution:
    """The session as offered with accelerators: the compute echoes them, granted counts them."""
    compute = execution.compute.model_dump(mode="json", exclude_none=True)  # type: ignore[union-attr]
    return Execution(
        session=execution.session,
        executable=execution.executable,
        compute={**compute, "accelerators": list(items)},
        storage=execution.storage,
        data=execution.data,
        granted={**execution.granted, **granted},
        prepare_at=execution.prepare_at,
        start_at=execution.start_at,
        end_at=execution.end_at,
        workdir=execution.workdir,
        state=execution.state,
    )


# --- slurm -------------------------------------------------------------------------------------

PARTITIONS = "PartitionName=gpu Default=YES\nPartitionName=cpu\n"
NODES = (
    "NodeName=g1 CPUTot=32 RealMemory=262144 Gres=gpu:a100:4(S:0-1),fpga:1 Partitions=gpu\n"
    "NodeName=g2 CPUTot=32 RealMemory=262144 Gres=gpu:a100:4(S:0-1) Partitions=gpu\n"
    "NodeName=c1 CPUTot=64 RealMemory=524288 Gres=(null) Partitions=cpu\n"
)


def test_node_gres_are_read_by_name_and_type() -> None:
    assert parse_gres("gpu:a100:4(S:0-1),fpga:1") == {("gpu", "a100"): 4, ("fpga", None): 1}
    assert parse_gres("gpu:2,gpu:t4:1(S:0,1)") == {("gpu", None): 2, ("gpu", "t4"): 1}
    assert parse_gres("(null)") == {} and parse_gres(None) == {}


def test_a_partitions_gpus_and_fpgas_are_its_pools_inventories_with_traits() -> None:
    partitions = read_partitions(PARTITIONS, NODES)
    pools = {
        p.name: p
        for p in partition_pools({"gpu": "gpu", "cpu": "cpu"}, partitions, share=0.5, disk=100)
    }
    gpu = pools["gpu"]
    assert gpu.inventories["gpus"].total == 4 and gpu.inventories["gpus"].max_unit == 4
    assert "fpgas" not in gpu.inventories  # half of g1's one FPGA is none
    assert gpu.traits == ["GPU_A100"]
    assert "gpus" not in pools["cpu"].inventories and pools["cpu"].traits == []
    whole = partition_pools({"gpu": "gpu"}, partitions, share=1.0, disk=100)[0]
    assert whole.inventories["gpus"].total == 8 and whole.inventories["gpus"].max_unit == 4
    assert whole.inventories["fpgas"].total == 1


def test_sbatch_asks_for_the_granted_gpus_by_type_snapshot() -> None:
    fpga = {"type": "fpga", "count": {"min": 1, "max": 1}, "model": ["U250", "U280"]}
    execution = with_accelerators(session(), {"gpus": 2, "fpgas": 1}, A100, fpga)
    assert builders.gres(execution) == "gpu:a100:2,fpga:1"  # two FPGA models: any type
    assert builders.launcher_values(execution)["gpus"] == "2"  # for a launcher's --device
    assert builders.launcher_values(session())["gpus"] == "0"
    minutes = builders.job_minutes(execution.end_at, execution.start_at - 30)
    check_snapshot(
        "slurm/sbatch-gres.txt",
        shell(builders.sbatch(execution, SLURM, partition="gpu", minutes=minutes, user="root")),
    )
    assert builders.gres(session()) is None  # no devices granted: no --gres at all
    untyped = with_accelerators(session(), {"gpus": 1}, {"type": "gpu", "count": {"min": 1}})
    assert builders.gres(untyped) == "gpu:1"


# --- kubernetes --------------------------------------------------------------------------------

GROUPS: dict[str, Any] = {
    "node_groups": [
        {
            "name": "a100",
            "selector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
            "traits": ["GPU_A100", "GPU_MEM_80G"],
        },
        {
            "name": "mi300",
            "selector": {"amd.com/gpu.product": "MI300X"},
            "devices": {"gpus": "amd.com/gpu"},
            "traits": ["GPU_MI300X"],
        },
    ]
}


def amd_node(name: str, gpus: int) -> dict[str, Any]:
    found = kube_node(name, "64", "512Gi", {"amd.com/gpu.product": "MI300X"})
    found["status"]["allocatable"]["amd.com/gpu"] = str(gpus)
    return found


def test_node_groups_count_their_configured_devices_and_carry_their_traits() -> None:
    options = KubernetesOptions.model_validate(GROUPS)
    nodes = [
        kube_node("g1", "32", "256Gi", {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}, gpus=8),
        amd_node("m1", 8),
        amd_node("m2", 4),
    ]
    a100, mi300 = (
        cluster.pool_config(r, options, {}) for r in cluster.read_groups(nodes, [], options, "k8s")
    )
    assert a100.inventories["gpus"].total == 8 and a100.traits == ["GPU_A100", "GPU_MEM_80G"]
    assert mi300.inventories["gpus"].total == 12 and mi300.inventories["gpus"].max_unit == 8
    assert mi300.traits == ["GPU_MI300X"]


@pytest.mark.parametrize(
    ("devices", "needle"),
    [({"gpus": "not a resource"}, "devices"), ({"tpus": "google.com/tpu"}, "devices")],
)
def test_bad_device_names_are_config_errors(devices: dict[str, str], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        KubernetesOptions.model_validate({"node_groups": [{"name": "g", "devices": devices}]})


def test_the_pod_asks_for_the_groups_device_and_runs_on_its_nodes_snapshot() -> None:
    options = KubernetesOptions.model_validate({"namespace": "science", **GROUPS})
    execution = with_accelerators(kube_session(), {"gpus": 2}, {**A100, "model": ["MI300X"]})
    group = options.node_groups[1]
    job = manifests.job_manifest(execution, options, "k8s", BUSYBOX, group, execution.start_at)
    pod = job["spec"]["template"]["spec"]
    (main,) = pod["containers"]
    assert main["resources"]["limits"] == {"cpu": "4", "memory": "16Gi", "amd.com/gpu": "2"}
    assert main["resources"]["requests"] == main["resources"]["limits"]
    assert pod["nodeSelector"] == {"amd.com/gpu.product": "MI300X"}
    for init in pod.get("initContainers", []):  # stagers need no GPU
        assert "amd.com/gpu" not in init["resources"]["limits"]
    validate(job)
    check_manifest("gpu-job", job)


@pytest.fixture
def gpu_fake(tmp_path: Path):
    fake = FakeCluster(images={BUSYBOX}).start()
    labels = {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    fake.add_node("g1", cpu="8", memory="32Gi", gpus=2, labels=labels)
    fake.add_node("c1", cpu="8", memory="32Gi")
    yield fake, fake.kubeconfig(tmp_path / "kubeconfig")
    fake.stop()


def kube_platform(kubeconfig: Path, **group: Any) -> KubernetesPlatform:
    config = PlatformConfig.model_validate({
        "name": "k8s", "type": "kubernetes",
        "options": {"kubeconfig": str(kubeconfig), "namespace": "sessions",
                    "reread_interval": "PT0.2S", "pending_timeout": "PT3S",
                    "node_groups": [{"name": "a100", **GROUPS["node_groups"][0], **group}]},
    })  # fmt: skip
    (platform,) = build_platforms([config])
    assert isinstance(platform, KubernetesPlatform)
    return platform


def test_a_gpu_session_runs_on_the_fake_cluster_with_its_gpus(gpu_fake, tmp_path) -> None:
    fake, kubeconfig = gpu_fake
    platform = kube_platform(kubeconfig)
    (pool,) = platform.pools()
    assert pool.inventories["gpus"].total == 2 and pool.traits == ["GPU_A100", "GPU_MEM_80G"]
    now = int(time.time())
    run = Execution(
        session="0c5b7a10-2b4d-4e6f-8a9b-0c1d2e3f4a51",
        executable={"kind": kind_uri("executable", "docker-container"),
                    "image": {"locations": [BUSYBOX]}, "command": ["sh", "-c", "echo gpu-ok"]},
        compute={"kind": kind_uri("compute", "simple-compute-resource"), "accelerators": [A100]},
        storage=[], data=[], granted={"cores": 1, "memory": 1, "gpus": 2},
        prepare_at=now, start_at=now, end_at=now + 120, workdir=tmp_path, pools=["a100"],
    )  # fmt: skip
    try:
        platform.prepare_executable(run)
        platform.start(run)
        deadline = time.monotonic() + 30
        while (status := platform.poll(run)).state not in (WorkState.SUCCEEDED, WorkState.FAILED):
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert status.state == WorkState.SUCCEEDED, status
        (pod,) = [p for p in fake.objects["pods"].values()
                  if p["metadata"]["labels"].get("ebroker.session") == run.session]  # fmt: skip
        assert pod["spec"]["nodeName"] == "g1"  # the A100 node, by the group's selector
        assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    finally:
        platform.release(run)


def test_a_configured_fpga_pool_needs_a_device_name(gpu_fake) -> None:
    _, kubeconfig = gpu_fake
    config = PlatformConfig.model_validate({
        "name": "k8s", "type": "kubernetes",
        "options": {"kubeconfig": str(kubeconfig), "namespace": "sessions",
                    "node_groups": [{"name": "f", "selector": {"fpga": "yes"}}]},
        "pools": [{"name": "f", "inventories": {"cores": {"total": 4}, "fpgas": {"total": 2}}}],
    })  # fmt: skip
    (platform,) = build_platforms([config])
    with pytest.raises(PlatformError, match="names no devices"):
        platform.pools()


# --- platforms that cannot hand devices to the work ---------------------------------------------


def test_the_local_platform_refuses_accelerators_saying_so() -> None:
    (local,) = build_platforms([PlatformConfig.model_validate({"name": "box", "type": "local"})])
    doc = request_doc()
    doc["compute"]["accelerators"] = [{"type": "gpu", "model": "A100"}]
    request = parse_request(doc, KindRegistry(KINDS)).request
    assert request is not None
    assert [m.message for m in local.refuse_accelerators(request)] == [
        "platform box cannot give its sessions accelerators (gpu); ask a node whose platform "
        "can (simulated, slurm or kubernetes)"
    ]
    assert any("accelerators" in m.message for m in local.validate(request))
    doc["compute"]["accelerators"] = [{"type": "gpu", "count": {"min": 0, "max": 0}}]
    none = parse_request(doc, KindRegistry(KINDS)).request
    assert none is not None and local.refuse_accelerators(none) == []
