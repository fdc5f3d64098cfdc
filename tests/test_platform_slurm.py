"""The slurm platform against the real single-node Slurm cluster (``.ci/setup-slurm.sh``).

No mocks: reservations and jobs are made on the cluster and removed in teardown. Most tests
use a plain shell launcher (``{command}``); one runs podman inside the job.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from broker_core.config import PlatformConfig, PoolConfig
from broker_core.kinds.base import kind_uri
from broker_core.kinds.builtin import DockerContainer, SingularityContainer
from broker_core.kinds.request import ExecutionRequest, RequestedSchedule
from platforms.contract import Execution, PlatformError, WorkState, WorkStatus
from platforms.slurm import SlurmPlatform, builders, expand_hostlist, parse_records, pool_name
from tests.conftest import unavailable

DOCKER = kind_uri("executable", "docker-container")
COMPUTE = kind_uri("compute", "simple-compute-resource")
SHELL = {"docker-container": "{command}"}


def sh(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=check)


@pytest.fixture(scope="module")
def cluster() -> None:
    if shutil.which("scontrol") is None:
        unavailable("Slurm is not installed (run .ci/setup-slurm.sh)")
    ping = sh("scontrol", "ping")
    if "is UP" not in ping.stdout:
        unavailable(f"slurmctld does not answer: {(ping.stdout + ping.stderr).strip()}")
    state = sh("sinfo", "-h", "-o", "%T").stdout.split()
    if not {"idle", "mixed", "allocated"} & set(state):
        unavailable(f"the Slurm node is not usable: {state}")


@pytest.fixture
def names(cluster: None) -> Iterator[list[str]]:
    """Names of jobs and reservations a test made; all removed afterwards."""
    made: list[str] = []
    yield made
    for name in made:
        sh("scancel", "--name", name)
        sh("scontrol", "delete", "reservation", name)
    # the next test may need the whole node: wait until the cancelled jobs have let it go
    deadline = time.monotonic() + 30
    while made and time.monotonic() < deadline:
        queued = subprocess.run(["squeue", "--noheader", "--format=%j"], capture_output=True,
                                text=True, check=False).stdout.split()  # fmt: skip
        if not set(queued) & set(made):
            break
        time.sleep(0.5)


def platform(**options: Any) -> SlurmPlatform:
    options = {"poll_cache_seconds": 0, "launchers": SHELL, **options}
    return SlurmPlatform(PlatformConfig(name="hpc", type="slurm", options=options))


@pytest.fixture
def make_execution(tmp_path: Path, names: list[str]) -> Callable[..., Execution]:
    def make(command: list[str], duration: int = 180, **executable: Any) -> Execution:
        session = str(uuid.uuid4())
        now = int(time.time())
        execution = Execution(
            session=session,
            executable={
                "kind": DOCKER,
                "meta": {"uuid": str(uuid.uuid4())},
                "image": {"locations": ["localhost/busybox"]},
                "command": command,
                **executable,
            },
            compute={"kind": COMPUTE, "meta": {"uuid": str(uuid.uuid4())}},
            storage=[],
            data=[],
            granted={"cores": 1, "memory": 1},
            prepare_at=now,
            start_at=now,
            end_at=now + duration,
            workdir=tmp_path / session,
        )
        names.append(execution.name)
        return execution

    return make


def wait_for(
    p: SlurmPlatform, execution: Execution, states: set[WorkState], timeout: float = 20
) -> WorkStatus:
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        status = p.poll(execution)
        seen.append(status.state)
        if status.state in states:
            return status
        assert status.state in (WorkState.PENDING, WorkState.RUNNING), status
        if time.monotonic() > deadline:
            raise AssertionError(f"still {status} after {timeout} s (seen {seen})")
        time.sleep(0.25)


def reservation(name: str) -> dict[str, str] | None:
    out = sh("scontrol", "show", "reservation", "-o", name)
    records = parse_records(out.stdout, key="ReservationName")
    return records[0] if out.returncode == 0 and records else None


def live_jobs(name: str) -> list[str]:
    return sh("squeue", "-h", "--name", name, "-o", "%i").stdout.split()


def slurm_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch))


# --- booking side -------------------------------------------------------------------------------


def test_pools_from_the_cluster_with_a_share(cluster: None) -> None:
    part = parse_records(sh("scontrol", "show", "partition", "-o", check=True).stdout)
    default = next(r for r in part if r.get("Default") == "YES")
    cpus = int(default["TotalCPUs"])
    node = parse_records(sh("scontrol", "show", "node", "-o", check=True).stdout)
    mib = sum(int(n["RealMemory"]) for n in node if default["PartitionName"] in n["Partitions"])

    pools = {pool.name: pool for pool in platform(share=0.5).pools()}

    pool = pools[pool_name(default["PartitionName"])]
    assert pool.inventories["cores"].total == cpus // 2
    assert pool.inventories["memory"].total == int(mib / 1024 * 0.5)
    assert pool.inventories["storage"].total >= 1
    full = {p.name: p for p in platform().pools()}[pool.name]
    assert full.inventories["cores"].total == cpus
    assert full.inventories["cores"].max_unit == cpus  # one node here


def test_configured_pools_must_name_partitions(cluster: None) -> None:
    inventories = {"cores": {"total": 1}}
    good = PlatformConfig(
        name="hpc",
        type="slurm",
        pools=[PoolConfig(name="debug", inventories=inventories)],
    )
    assert [p.name for p in SlurmPlatform(good).pools()] == ["debug"]
    bad = good.model_copy(update={"pools": [PoolConfig(name="gpu", inventories=inventories)]})
    with pytest.raises(ValueError, match=r"pool 'gpu' is not a partition.*debug"):
        SlurmPlatform(bad).pools()
    with pytest.raises(ValueError, match=r"options.partition 'nope' is not a partition"):
        platform(partition="nope").pools()


def test_options_are_checked() -> None:
    with pytest.raises(ValidationError, match="unknown placeholder"):
        platform(launchers={"docker-container": "run {imgae}"})
    with pytest.raises(ValidationError, match="not an executable kind"):
        platform(launchers={"docker": "run {image}"})
    with pytest.raises(ValidationError):
        platform(share=0)
    with pytest.raises(ValidationError):
        platform(colour="blue")
    with pytest.raises(ValidationError, match="MAINT"):
        platform(reservation_flags=["MAINT"])


def test_external_claims_see_other_reservations_only(cluster: None, names: list[str]) -> None:
    p = platform(share=0.5)
    pool = p.pools()[0]
    tag = uuid.uuid4().hex[:8]
    base = int(time.time()) + 3 * 3600
    made = {
        "other": (f"other-{tag}", base, "CoreCnt=1 PartitionName=debug"),
        "maint": (f"maint-{tag}", base + 3600, "Nodes=ALL Flags=MAINT"),
        "ours": (f"ebroker-{uuid.uuid4()}", base + 7200, "CoreCnt=1 PartitionName=debug"),
    }
    for name, start, extra in made.values():
        names.append(name)
        sh(
            "scontrol",
            "create",
            "reservation",
            f"ReservationName={name}",
            f"StartTime={slurm_time(start)}",
            "Duration=30",
            "Users=root",
            *extra.split(),
            check=True,
        )

    claims = p.external_claims(base - 60, base + 3 * 3600)

    by_reason = {}
    for claim in claims:
        by_reason.setdefault(claim.reason, {})[claim.resource_class] = claim
    other = by_reason[f"Slurm reservation {made['other'][0]}"]
    assert other["cores"].amount == 1
    assert other["cores"].pool == pool.name
    assert (other["cores"].start, other["cores"].end) == (base, base + 1800)
    assert 1 <= other["memory"].amount <= pool.inventories["memory"].total
    maint = by_reason[f"Slurm maintenance reservation {made['maint'][0]}"]
    assert maint["cores"].amount == pool.inventories["cores"].total
    assert maint["memory"].amount == pool.inventories["memory"].total
    assert not [c for c in claims if made["ours"][0] in c.reason]
    # outside the window: nothing of ours
    early = p.external_claims(base - 7200, base - 3600)
    assert not [c for c in early if tag in c.reason]


def test_validate_says_why_not(cluster: None) -> None:
    p = platform(launchers={})
    image = {"locations": ["localhost/busybox"]}

    def request(executable: Any) -> ExecutionRequest:
        return ExecutionRequest(executable, None, [], [], RequestedSchedule())

    assert p.validate(request(DockerContainer(image=image))) == [] or not shutil.which("podman")
    singularity = p.validate(request(SingularityContainer(image=image)))
    if not (shutil.which("apptainer") or shutil.which("singularity")):
        assert "neither apptainer nor singularity is installed" in singularity[0].message
    privileged = p.validate(request(DockerContainer(image=image, privileged=True)))
    assert any("privileged" in m.message for m in privileged)
    ports = {"ports": [{"internal": 8080}]}
    assert any(
        "ports" in m.message
        for m in p.validate(request(DockerContainer(image=image, network=ports)))
    )


def test_helpers() -> None:
    assert expand_hostlist("n[01-03,7],gpu1") == ["n01", "n02", "n03", "n7", "gpu1"]
    assert pool_name("GPU_Long!") == "gpu_long"
    record = parse_records("NodeName=a OS=Linux 6.1 #1 SMP RealMemory=10\n")[0]
    assert record == {"NodeName": "a", "OS": "Linux 6.1 #1 SMP", "RealMemory": "10"}


# --- execution side -----------------------------------------------------------------------------


def test_reserve_is_idempotent_and_release_deletes(
    make_execution: Callable[..., Execution],
) -> None:
    p = platform()
    execution = make_execution(["true"])
    p.reserve(execution)
    p.reserve(execution)

    resv = reservation(execution.name)
    assert resv is not None
    assert resv["CoreCnt"] == "1"
    assert resv["Users"] == "root"
    assert resv["PartitionName"] == "debug"
    assert execution.state["reservation"] == execution.name
    # a crash after creating it: a fresh state finds the reservation
    again = Execution(**{**execution.__dict__, "state": {}, "notes": []})
    p.reserve(again)
    assert again.state["reservation"] == execution.name

    p.release(execution)
    assert reservation(execution.name) is None
    p.release(execution)


def test_job_runs_in_its_reservation_and_succeeds(
    make_execution: Callable[..., Execution],
) -> None:
    p = platform()
    execution = make_execution(["sh", "-c", "sleep 1; echo hello from slurm"])
    p.reserve(execution)
    p.start(execution)
    job_id = execution.state["job_id"]
    p.start(execution)
    assert execution.state["job_id"] == job_id
    again = Execution(**{**execution.__dict__, "state": {}, "notes": []})
    p.start(again)  # after a crash: found by name, not submitted twice
    assert again.state["job_id"] == job_id

    job = parse_records(sh("scontrol", "show", "job", "-o", job_id, check=True).stdout)[0]
    assert job["Reservation"] == execution.name
    assert job["JobName"] == execution.name
    # the script written is what the builder makes (tests/test_platform_builders.py)
    script = builders.job_script(execution, SHELL["docker-container"], platform="hpc")
    assert (execution.workdir / "job.sh").read_text() == script

    first = p.poll(execution)
    assert first.state in (WorkState.PENDING, WorkState.RUNNING)
    status = wait_for(p, execution, {WorkState.SUCCEEDED, WorkState.FAILED})
    assert status.state == WorkState.SUCCEEDED, status
    assert status.exit_code == 0
    assert "hello from slurm" in (p.logs(execution) or "")
    p.release(execution)
    assert reservation(execution.name) is None


def test_failing_command_reports_its_exit_code(
    make_execution: Callable[..., Execution],
) -> None:
    p = platform()
    execution = make_execution(["sh", "-c", "echo failing; exit 3"])
    p.reserve(execution)
    p.start(execution)
    status = wait_for(p, execution, {WorkState.SUCCEEDED, WorkState.FAILED})
    assert status.state == WorkState.FAILED
    assert status.exit_code == 3
    assert "exit code 3" in (status.message or "")
    assert "failing" in (p.logs(execution) or "")
    p.release(execution)


def test_stop_cancels_and_release_is_idempotent(
    make_execution: Callable[..., Execution],
) -> None:
    p = platform()
    execution = make_execution(["sleep", "300"])
    p.reserve(execution)
    p.start(execution)
    wait_for(p, execution, {WorkState.RUNNING})

    p.stop(execution, "the booked window ended")
    p.stop(execution, "again")
    deadline = time.monotonic() + 15
    while live_jobs(execution.name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert live_jobs(execution.name) == []
    status = p.poll(execution)
    assert status.state == WorkState.FAILED
    assert "stopped: the booked window ended" in (status.message or "")

    p.release(execution)
    assert reservation(execution.name) is None
    p.release(execution)
    p.stop(execution, "once more")


def test_list_work_and_remove_work(make_execution: Callable[..., Execution]) -> None:
    p = platform()
    execution = make_execution(["sleep", "300"])
    reserved_only = make_execution(["true"])
    p.reserve(execution)
    p.reserve(reserved_only)
    p.start(execution)
    deadline = time.monotonic() + 10
    while not live_jobs(execution.name) and time.monotonic() < deadline:
        time.sleep(0.2)

    work = p.list_work()
    assert work is not None
    assert {execution.name, reserved_only.name} <= work

    p.remove_work(execution.name)
    p.remove_work(reserved_only.name)
    p.remove_work(reserved_only.name)
    deadline = time.monotonic() + 15
    while live_jobs(execution.name) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not {execution.name, reserved_only.name} & (p.list_work() or set())
    assert reservation(execution.name) is None
    with pytest.raises(PlatformError):
        p.remove_work("someone-elses-job")


def test_unknown_jobs_are_missing_and_errors_are_platform_errors(
    make_execution: Callable[..., Execution],
) -> None:
    p = platform()
    execution = make_execution(["true"])
    assert p.poll(execution).state == WorkState.MISSING
    execution.state["job_id"] = "99999999"
    assert p.poll(execution).state == WorkState.MISSING

    too_big = make_execution(["true"])
    too_big.granted["cores"] = 4096
    with pytest.raises(PlatformError, match="scontrol create reservation failed"):
        p.reserve(too_big)
    with pytest.raises(PlatformError, match="not found"):
        platform(bin_dir="/nonexistent").reserve(too_big)


def test_podman_inside_the_job(make_execution: Callable[..., Execution]) -> None:
    if shutil.which("podman") is None:
        unavailable("podman is not installed (run .ci/setup-podman.sh)")
    check = sh("podman", "run", "--rm", "localhost/busybox", "/bin/busybox", "true")
    if check.returncode != 0:
        unavailable(f"podman does not run localhost/busybox: {check.stderr.strip()[-300:]}")

    p = platform(launchers={})
    execution = make_execution(
        ["/bin/busybox", "sh", "-c", 'echo "hello from $WHO in podman"'],
        environment={"WHO": "slurm"},
    )
    p.reserve(execution)
    p.prepare_executable(execution)
    assert execution.state["image"] == "localhost/busybox"
    p.start(execution)
    script = (execution.workdir / "job.sh").read_text()
    assert "podman run --rm --name" in script
    status = wait_for(p, execution, {WorkState.SUCCEEDED, WorkState.FAILED}, timeout=40)
    assert status.state == WorkState.SUCCEEDED, (status, p.logs(execution))
    assert "hello from slurm in podman" in (p.logs(execution) or "")
    assert sh("podman", "container", "exists", execution.name).returncode == 1
    p.release(execution)

    missing = make_execution(["true"], image={"locations": ["localhost/no-such-image"]})
    with pytest.raises(PlatformError, match="no image location"):
        p.prepare_executable(missing)


def test_extend_moves_the_reservation_end_and_the_job_limit(
    make_execution: Callable[..., Execution],
) -> None:
    p = platform()
    execution = make_execution(["sleep", "60"], duration=300)
    p.reserve(execution)
    p.start(execution)
    wait_for(p, execution, {WorkState.RUNNING})
    new_end = execution.end_at + 600
    p.extend(execution, new_end)
    assert reservation(execution.name)["EndTime"] == slurm_time(new_end)
    job = sh("scontrol", "show", "job", "-o", execution.state["job_id"]).stdout
    limit = job.split("TimeLimit=")[1].split()[0]  # [days-]hours:minutes:seconds
    assert limit in ("00:15:00", "00:16:00"), limit  # 5 minutes booked + 10 added
    p.release(execution)
