"""GPUs on the real single-node Slurm cluster (``.ci/setup-slurm.sh`` gives its node two
stand-in A100s, ``Gres=gpu:a100:2``): the partition's pool counts them with their trait, and a
session granted one runs as a job that Slurm gives one GPU (``--gres=gpu:a100:1``)."""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

from platforms.contract import Execution, WorkState
from platforms.slurm import parse_records
from tests.conftest import unavailable
from tests.test_platform_slurm import COMPUTE, DOCKER, platform, sh, wait_for

A100 = {"type": "gpu", "count": {"min": 1, "max": 1}, "model": ["A100"]}


def gpu_cluster() -> None:
    if shutil.which("sinfo") is None or "is UP" not in sh("scontrol", "ping").stdout:
        unavailable("Slurm is not running (run .ci/setup-slurm.sh)")
    if "gpu:a100" not in sh("sinfo", "-h", "-o", "%G").stdout:
        unavailable("the Slurm node has no gpu:a100 GRES (run .ci/setup-slurm.sh)")


def test_the_partitions_gpus_are_its_pools_with_their_trait() -> None:
    gpu_cluster()
    (pool,) = platform(partition="debug").pools()
    assert pool.inventories["gpus"].total == 2 and pool.inventories["gpus"].max_unit == 2
    assert pool.traits == ["GPU_A100"]
    (half,) = platform(partition="debug", share=0.5).pools()
    assert half.inventories["gpus"].total == 1


def test_a_session_granted_a_gpu_runs_with_it(tmp_path: Path) -> None:
    gpu_cluster()
    p = platform(partition="debug")
    session, now = str(uuid.uuid4()), int(time.time())
    execution = Execution(
        session=session,
        executable={"kind": DOCKER, "meta": {"uuid": str(uuid.uuid4())},
                    "image": {"locations": ["localhost/busybox"]},
                    "command": ["sh", "-c", 'echo "gpus=$CUDA_VISIBLE_DEVICES"']},
        compute={"kind": COMPUTE, "meta": {"uuid": str(uuid.uuid4())}, "accelerators": [A100]},
        storage=[], data=[], granted={"cores": 1, "memory": 1, "gpus": 1},
        prepare_at=now, start_at=now, end_at=now + 180, workdir=tmp_path / session,
    )  # fmt: skip
    try:
        p.reserve(execution)
        p.start(execution)
        job_id = execution.state["job_id"]
        job = parse_records(sh("scontrol", "show", "job", "-o", job_id).stdout)[0]
        assert "gpu:a100:1" in (job.get("TresPerNode") or job.get("Gres") or ""), job
        status = wait_for(p, execution, {WorkState.SUCCEEDED, WorkState.FAILED}, timeout=60)
        assert status.state == WorkState.SUCCEEDED, status
        assert "gpus=0" in (p.logs(execution) or "")
    finally:
        sh("scancel", "--name", execution.name)
        p.release(execution)
