"""What the slurm and local platforms send, without a cluster or podman: the batch script and the
``sbatch``/``scontrol``/``squeue``/``scancel`` argument lists (``platforms.slurm.builders``)
and the podman argument lists (``platforms.podman_args``), each a pure function of a fixed
session and options, compared with a snapshot in ``tests/snapshots/slurm`` and
``tests/snapshots/podman`` (plain text: the script as written, each command as a shell line,
one argument a line). A builder's output that changes fails its test;
``EBROKER_UPDATE_SNAPSHOTS=1 python -m pytest tests/test_platform_builders.py`` rewrites the
snapshots, to be read in the diff and committed.

That the platforms send exactly what these builders make is tested against the real thing:
tests/test_platform_slurm.py (the job script written) and tests/test_platform_local.py (the
command podman records for the container). Last, the runner every command goes through
(``platforms.commands``), with real programs: its timeout, its bound on output, its failures.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from broker_core.kinds.base import kind_uri
from platforms import podman_args
from platforms.commands import Outcome, Program, run
from platforms.contract import Execution, PlatformError
from platforms.local import LocalOptions
from platforms.slurm import builders
from platforms.slurm.options import DEFAULT_LAUNCHERS, SlurmOptions, launchers
from platforms.slurm.runner import SlurmCommands

SNAPSHOTS = Path(__file__).parent / "snapshots"
SESSION = "7c3e2a10-5b4d-4e6f-8a9b-0c1d2e3f4a5b"
STORAGE_UUID = "7c3e2a10-0000-4000-8000-000000000001"
DATA_UUID = "7c3e2a10-0000-4000-8000-000000000002"
WORKDIR = Path("/srv/ebroker/sessions") / SESSION
START = 1_900_000_000  # 2030-03-17T17:46:40Z
DOCKER = kind_uri("executable", "docker-container")


def check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("EBROKER_UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"no snapshot {path}; run with EBROKER_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text(), f"{name} differs from {path}"


def shell(*commands: Sequence[str]) -> str:
    """Commands as a reader would type them, quoted for the shell: an argument a line, an
    option with its value (``--name x``; not ``--export=x``) on one."""
    texts = []
    for argv in commands:
        lines: list[str] = []
        for i, arg in enumerate(argv):
            word = shlex.quote(arg)
            after = argv[i - 1] if i else ""
            if after.startswith("-") and "=" not in after and not arg.startswith("-"):
                lines[-1] += f" {word}"
            else:
                lines.append(word)
        texts.append(" \\\n    ".join(lines) + "\n")
    return "\n".join(texts)


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """Slurm's times are the controller's local time: the snapshots are written in UTC."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def session(kind: str = DOCKER, **executable: Any) -> Execution:
    """A session with what a command can carry: environment (with a space and a quote), an
    entrypoint, a command with shell characters, a storage and a data resource mounted."""
    return Execution(
        session=SESSION,
        executable={
            "kind": kind,
            "meta": {"uuid": "7c3e2a10-0000-4000-8000-0000000000e0"},
            "image": {"locations": ["docker://docker.io/library/python:3.12", "localhost/py"]},
            "command": ["-c", "print('hello, world'); import sys; sys.exit(0)"],
            "environment": {"GREETING": "it's me", "THREADS": "4"},
            **executable,
        },
        compute={
            "kind": kind_uri("compute", "simple-compute-resource"),
            "meta": {"uuid": "7c3e2a10-0000-4000-8000-0000000000c0"},
            "volumes": [
                {"path": "/results", "mode": "READWRITE", "resource": "results"},
                {"path": "/input", "mode": "READONLY", "resource": DATA_UUID},
            ],
        },
        storage=[
            {
                "kind": kind_uri("storage", "simple-storage-resource"),
                "meta": {"uuid": STORAGE_UUID, "name": "results"},
            }
        ],
        data=[
            {
                "kind": kind_uri("data", "simple-data-resource"),
                "meta": {"uuid": DATA_UUID, "name": "input"},
                "location": "https://data.example.org/sets/run42.fits",
            }
        ],
        granted={"cores": 4, "memory": 16, "storage": 20},
        prepare_at=START - 120,
        start_at=START,
        end_at=START + 7200,
        workdir=WORKDIR,
    )


# --- slurm ----------------------------------------------------------------------------------

SLURM = SlurmOptions(reservation_user="astro", reservation_flags=["IGNORE_JOBS"])


def template(kind: str, options: SlurmOptions = SLURM) -> str:
    return launchers(options, installed=lambda program: program == "apptainer")[kind]


@pytest.mark.parametrize(
    ("name", "kind", "launcher", "executable", "state"),
    [
        (
            "job-podman.sh",
            DOCKER,
            None,
            {"entrypoint": ["python", "-u"]},
            {"image": "localhost/py"},
        ),
        ("job-apptainer.sh", kind_uri("executable", "singularity-container"), None, {}, {}),
        (
            "job-shell.sh",
            DOCKER,
            "cd {workdir} && {command}",  # the command is all the shell runs
            {"command": ["python3", "-c", "print('hello, world')"]},
            {},
        ),
    ],
)
def test_job_scripts_match_their_snapshots(
    name: str, kind: str, launcher: str | None, executable: dict[str, Any], state: dict[str, str]
) -> None:
    """The default podman and apptainer launchers and a configured one, filled in."""
    options = SLURM if launcher is None else SlurmOptions(launchers={"docker-container": launcher})
    execution = session(kind, **executable)
    execution.state.update(state)
    script = builders.job_script(execution, template(kind, options), platform="hpc")
    check_snapshot(f"slurm/{name}", script)


def test_reservation_commands_match_their_snapshot() -> None:
    execution = session()
    check_snapshot(
        "slurm/reservation.txt",
        shell(
            builders.create_reservation(execution, SLURM, partition="debug", now=START - 600),
            builders.show_reservation(execution.name),
            builders.extend_reservation(execution.name, START + 7200 + 1800),
            builders.delete_reservation(execution.name),
        ),
    )


def test_sbatch_and_job_commands_match_their_snapshot() -> None:
    execution = session()
    minutes = builders.job_minutes(execution.end_at, START - 30)
    check_snapshot(
        "slurm/jobs.txt",
        shell(
            builders.sbatch(execution, SLURM, partition="debug", minutes=minutes, user="root"),
            builders.find_job(execution.name),
            builders.LIST_JOBS,
            builders.LIST_JOB_NAMES,
            builders.show_job("4242"),
            builders.extend_job(execution, "4242", execution.end_at + 1800),
            builders.cancel_job("4242"),
            builders.cancel_named(execution.name),
        ),
    )


def test_sbatch_as_the_reservation_user_asks_for_no_uid_and_no_memory_when_none_granted() -> None:
    execution = session()
    execution.granted = {"cores": 0}
    argv = builders.sbatch(execution, SLURM, partition="debug", minutes=5, user="astro")
    assert not [a for a in argv if a.startswith("--uid")]
    assert "--mem" not in argv
    assert argv[argv.index("--cpus-per-task") + 1] == "1"  # a job asks for one core at least
    assert argv[-1] == str(WORKDIR / "job.sh")


def test_job_time_limits_round_up_to_whole_minutes() -> None:
    assert builders.job_minutes(START + 61, START) == 2
    assert builders.job_minutes(START + 60, START) == 1
    assert builders.job_minutes(START + 10, START + 20) == 1  # the window has passed: one minute
    execution = session()
    assert builders.extend_job(execution, "7", execution.end_at + 61)[-1] == "TimeLimit=+2"
    assert builders.extend_job(execution, "7", execution.end_at + 1)[-1] == "TimeLimit=+1"


def test_the_reservation_starts_now_when_preparation_has_begun() -> None:
    execution = session()
    later = builders.create_reservation(execution, SLURM, partition="p", now=START)
    assert "StartTime=2030-03-17T17:46:40" in later
    assert "Flags=IGNORE_JOBS" in later
    plain = builders.create_reservation(execution, SlurmOptions(), partition="p", now=START)
    assert not [a for a in plain if a.startswith("Flags=")]


def test_a_volume_of_no_resource_of_the_session_is_refused() -> None:
    execution = session()
    execution.compute.volumes[0].resource = "elsewhere"
    with pytest.raises(PlatformError, match="'elsewhere' is not a storage or data resource"):
        builders.job_script(execution, DEFAULT_LAUNCHERS["docker-container"], platform="hpc")


def test_singularity_falls_back_when_only_singularity_is_installed() -> None:
    kind = kind_uri("executable", "singularity-container")
    found = launchers(SlurmOptions(), installed=lambda program: program == "singularity")
    assert found[kind].startswith("singularity exec ")
    configured = SlurmOptions(launchers={"singularity-container": "apptainer run {image}"})
    assert launchers(configured, installed=lambda program: False)[kind] == "apptainer run {image}"
    assert DOCKER not in launchers(SlurmOptions(launchers={"docker-container": None}), bool)


# --- podman ---------------------------------------------------------------------------------

LOCAL = LocalOptions(publish_host="::1", log_max_size="100m", stop_timeout=20)
PORTS: list[podman_args.PortBinding] = [
    {"internal": 8080, "external": 18080, "protocol": "HTTP", "path": "/index.html"},
    {"internal": 5353, "external": 15353, "protocol": "UDP", "path": None},
]


def run_argv(execution: Execution, options: LocalOptions = LOCAL, **overrides: Any) -> list[str]:
    given: dict[str, Any] = {
        "platform": "box",
        "image": "sha256:" + "ab" * 32,
        "ports": PORTS,
        "mounts": [podman_args.mount(execution, volume) for volume in execution.volumes],
        "logs": WORKDIR / "logs",
        **overrides,
    }
    return ["podman", *podman_args.run_argv(execution, options, **given)]


def test_podman_run_matches_its_snapshot() -> None:
    """Everything: labels, log file, limits, environment, ports on an IPv6 host, mounts read-only
    and read-write, a list entrypoint (as JSON) and the command."""
    execution = session(entrypoint=["python", "-u"])
    check_snapshot("podman/run.txt", shell(run_argv(execution)))


def test_podman_run_of_a_plain_session_matches_its_snapshot() -> None:
    """Nothing granted, no ports, no mounts, no environment; a string entrypoint."""
    execution = session(entrypoint="/bin/sh", environment={})
    execution.granted = {}
    argv = run_argv(execution, LocalOptions(), ports=[], mounts=[])
    check_snapshot("podman/run-plain.txt", shell(argv))


def test_podman_stop_remove_and_list_match_their_snapshot() -> None:
    name = session().name
    check_snapshot(
        "podman/others.txt",
        shell(
            ["podman", *podman_args.stop_argv(name, LOCAL)],
            ["podman", *podman_args.remove_argv(name, LOCAL)],
            ["podman", *podman_args.list_argv("box")],
        ),
    )


def test_privileged_containers_run_only_where_allowed() -> None:
    execution = session(privileged=True)
    with pytest.raises(PlatformError, match="does not run privileged containers"):
        run_argv(execution)
    allowed = run_argv(execution, LocalOptions(allow_privileged=True))
    assert "--privileged" in allowed


@pytest.mark.parametrize("name", ["", "A=B", "NUL\0"])
def test_environment_variable_names_are_checked(name: str) -> None:
    with pytest.raises(PlatformError, match="invalid environment variable name"):
        run_argv(session(environment={name: "x"}))


def test_mounts_are_the_sessions_directories_at_absolute_paths() -> None:
    execution = session()
    results, data = (podman_args.mount(execution, v) for v in execution.volumes)
    assert results.spec == f"{WORKDIR}/storage/{STORAGE_UUID}:/results:rw"
    assert data.spec == f"{WORKDIR}/data/{DATA_UUID}:/input:ro"
    execution.compute.volumes[0].path = "relative"
    with pytest.raises(PlatformError, match="cannot mount"):
        podman_args.mount(execution, execution.compute.volumes[0])
    execution.compute.volumes[1].resource = "nowhere"
    with pytest.raises(PlatformError, match="no storage or data resource 'nowhere'"):
        podman_args.mount(execution, execution.compute.volumes[1])


def test_the_builders_touch_nothing_and_answer_the_same_twice(tmp_path: Path) -> None:
    """Pure: the session's workdir is not created, the session's state is not changed."""
    execution = session(entrypoint=["python", "-u"])
    execution.workdir = tmp_path / "workdir"
    state = dict(execution.state)

    def build() -> list[Any]:
        return [
            builders.job_script(execution, template(DOCKER), platform="hpc"),
            builders.sbatch(execution, SLURM, partition="debug", minutes=5, user="root"),
            builders.create_reservation(execution, SLURM, partition="debug", now=START),
            run_argv(execution, logs=execution.workdir / "logs"),
        ]

    assert build() == build()
    assert not execution.workdir.exists()
    assert execution.state == state


# --- the runner -----------------------------------------------------------------------------


def test_a_command_that_does_not_answer_in_time_is_stopped() -> None:
    began = time.monotonic()
    with pytest.raises(PlatformError, match=r"^sleep 30 did not answer within 0.3 s$"):
        run(["sleep", "30"], timeout=0.3)
    assert time.monotonic() - began < 5


def test_output_is_read_up_to_its_bound() -> None:
    script = "head -c 200000 /dev/zero; echo done >&2"
    with pytest.raises(PlatformError, match="wrote more than 100000 bytes"):
        run(["sh", "-c", script], timeout=10, limit=100_000)
    outcome = run(["sh", "-c", script], timeout=10, limit=300_000)
    assert (len(outcome.stdout), outcome.stderr, outcome.code) == (200_000, "done\n", 0)


def test_a_missing_program_is_named_with_where_it_was_looked_for() -> None:
    with pytest.raises(PlatformError, match=r"^scontrol not found: '/nonexistent/scontrol'$"):
        SlurmCommands("/nonexistent", 5)(["scontrol", "ping"])


def test_a_failure_names_the_command_its_exit_and_its_message() -> None:
    """podman's warnings before its error and its ``Error:`` prefix are left out; a long
    message keeps its end, where the reason is."""
    script = 'echo "time=x level=warning msg=w" >&2; echo "Error: no such image" >&2; exit 125'
    outcome = run(["sh", "-c", script], timeout=5, name="podman")
    assert outcome.failure().args == ("podman failed (exit 125): no such image",)
    long = run(["sh", "-c", "printf 'x%.0s' $(seq 2000); echo ' the reason'; exit 2"], timeout=5)
    message = str(long.failure())
    assert message.endswith("x the reason") and len(message) < 700
    assert Outcome("true", 0, "", "").checked().ok
    with pytest.raises(PlatformError, match=r"^sh failed \(exit 3\): no message$"):
        run(["sh", "-c", "exit 3"], timeout=5).checked()


def test_slurm_commands_take_expected_failures_as_done() -> None:
    """An idempotent step's "already gone" is None; any other failure is raised."""
    commands = SlurmCommands(None, 5)
    gone = ["sh", "-c", "echo 'scancel: error: Invalid job id specified' >&2; exit 1"]
    assert commands(gone, ok=("invalid job id",)) is None
    with pytest.raises(PlatformError, match="Invalid job id specified"):
        commands(gone, ok=("Duplicate reservation name",))
    assert commands(["echo", "out"]) == "out\n"


def test_a_program_runs_with_its_own_timeout_unless_told_otherwise() -> None:
    program = Program("sleep", timeout=0.2)
    with pytest.raises(PlatformError, match=r"within 0\.2 s"):
        program("5")
    assert program("0.3", timeout=5).ok
