"""Jupyter notebook sessions without podman: the shared pieces (``platforms.notebooks``: token,
server command line, connector URL, idle culling, fetching the notebook within the staging
rules), the local platform's notebook options and answers, and the notebook's ``podman run``
(snapshots in tests/snapshots/podman/, rewritten by ``EBROKER_UPDATE_SNAPSHOTS=1``). The real
server through the whole lifecycle is tests/test_notebooks_podman.py."""

from __future__ import annotations

import json
import string
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from broker_core.config import PlatformConfig
from broker_core.kinds.base import kind_uri
from broker_core.kinds.builtin import KINDS
from broker_core.kinds.registry import KindRegistry
from broker_core.kinds.request import ExecutionRequest, parse_request
from broker_core.staging.rules import StagingRules
from platforms import notebooks, podman_args
from platforms.contract import Execution, PlatformError
from platforms.local import LocalOptions, LocalPlatform
from tests.test_platform_builders import (
    DATA_UUID,
    START,
    WORKDIR,
    check_snapshot,
    session,
    shell,
)

NOTEBOOK = kind_uri("executable", "jupyter-notebook")
COMPUTE = kind_uri("compute", "simple-compute-resource")
LOCATION = "https://notebooks.example.org/course/analysis.ipynb"
OPTIONS = LocalOptions(
    publish_host="127.0.0.1",
    notebook_image="localhost/ebroker-jupyter:latest",
    notebook_idle_timeout=timedelta(minutes=30),
)


def notebook_session(location: str | None = LOCATION) -> Execution:
    """The builders' fixed session with a notebook executable (the data resource mounted)."""
    executable = {"kind": NOTEBOOK, "meta": {"uuid": "7c3e2a10-0000-4000-8000-0000000000e1"}}
    return replace(session(), executable={**executable, "location": location})


# --- the shared pieces --------------------------------------------------------------------


def test_tokens_are_random_url_safe_and_kept_in_the_state() -> None:
    tokens = {notebooks.new_token() for _ in range(50)}
    assert len(tokens) == 50
    allowed = set(string.ascii_letters + string.digits + "-_")
    assert all(len(t) >= 43 and set(t) <= allowed for t in tokens)
    execution = notebook_session()
    first = notebooks.token_of(execution)
    assert execution.state[notebooks.TOKEN_STATE] == first
    assert notebooks.token_of(execution) == first  # made once: a restart opens the same URL
    assert notebooks.environment(first) == {"JUPYTER_TOKEN": first}


def test_the_token_is_scrubbed_from_the_output() -> None:
    line = "[W NotebookApp] 404 GET /notebooks/x.ipynb?token=s3cret-T0ken (10.0.0.1)\n"
    assert notebooks.scrub(line, "s3cret-T0ken") == (
        "[W NotebookApp] 404 GET /notebooks/x.ipynb?token=[token] (10.0.0.1)\n"
    )
    assert notebooks.scrub(line, None) == line


def test_the_server_command_line_serves_the_root_and_culls_idle_kernels() -> None:
    execution = notebook_session()
    command = notebooks.server_command(execution, OPTIONS)
    assert command[:3] == ["python3", "-m", "notebook"]
    assert "--NotebookApp.ip=0.0.0.0" in command
    assert f"--NotebookApp.port={notebooks.PORT}" in command
    assert f"--NotebookApp.notebook_dir={notebooks.ROOT}" in command
    assert "--NotebookApp.shutdown_no_activity_timeout=1800" in command
    assert "--MappingKernelManager.cull_idle_timeout=1800" in command
    assert "--MappingKernelManager.cull_interval=60" in command
    assert not any("token" in arg.lower() for arg in command)


def test_idle_culling_is_capped_at_the_booked_window() -> None:
    execution = notebook_session()
    execution.end_at = execution.start_at + 45
    assert notebooks.idle_seconds(execution, OPTIONS) == 45
    command = notebooks.server_command(execution, OPTIONS)
    assert "--NotebookApp.shutdown_no_activity_timeout=45" in command
    assert "--MappingKernelManager.cull_interval=45" in command
    execution.end_at = execution.start_at  # a window of nothing still gives a valid setting
    assert notebooks.idle_seconds(execution, OPTIONS) == 1


def test_a_jupyter_server_image_gets_its_own_application_and_root_trait() -> None:
    options = OPTIONS.model_copy(update={"notebook_server": "jupyter-server"})
    command = notebooks.server_command(notebook_session(), options)
    assert command[:3] == ["python3", "-m", "jupyter_server"]
    assert f"--ServerApp.root_dir={notebooks.ROOT}" in command
    assert not any(arg.startswith("--NotebookApp.") for arg in command)


@pytest.mark.parametrize(
    ("entry", "path"),
    [
        ("analysis.ipynb", "/notebooks/analysis.ipynb"),
        ("my notes #1.ipynb", "/notebooks/my%20notes%20%231.ipynb"),
        ("course/week 2.ipynb", "/notebooks/course/week%202.ipynb"),
        (None, "/tree"),
    ],
)
def test_the_connector_opens_the_notebook_or_the_file_list(entry: str | None, path: str) -> None:
    assert notebooks.open_path(entry) == path
    port = notebooks.port(entry)
    assert (port.internal_port, port.protocol, port.path, port.access) == (8888, "HTTP", path, True)


def test_the_connector_url_carries_the_token_in_its_query() -> None:
    url = notebooks.connector_url("http://127.0.0.1:18888/notebooks/a.ipynb", "a+b/c=")
    assert url == "http://127.0.0.1:18888/notebooks/a.ipynb?token=a%2Bb%2Fc%3D"
    kept = notebooks.connector_url("http://[::1]:1/tree?x=1#top", "t")
    assert kept == "http://[::1]:1/tree?x=1&token=t#top"


def test_the_notebook_to_open_is_the_only_one_fetched() -> None:
    assert notebooks.entry_notebook(["analysis.ipynb", "data.csv"]) == "analysis.ipynb"
    assert notebooks.entry_notebook(["a.ipynb", "b.ipynb"]) is None
    assert notebooks.entry_notebook([".hidden.ipynb", "readme.md"]) is None
    assert notebooks.entry_from_location(LOCATION) == "analysis.ipynb"
    assert notebooks.entry_from_location("https://x.org/my%20nb.ipynb?raw=1") == "my nb.ipynb"
    assert notebooks.entry_from_location("https://x.org/course/") is None
    assert notebooks.entry_from_location(None) is None


def write_notebook(path: Path, text: str = "hello from a cell") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cells = [{"cell_type": "markdown", "metadata": {}, "source": [text]}]
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                "nbformat_minor": 5}))  # fmt: skip
    return path


def test_fetching_copies_the_notebook_from_a_data_root_and_records_it(tmp_path: Path) -> None:
    source = write_notebook(tmp_path / "root" / "analysis.ipynb")
    execution = notebook_session(source.as_uri())
    execution.workdir = tmp_path / "session"
    rules = StagingRules(file_roots=(str((tmp_path / "root").resolve()),))
    notes = notebooks.fetch(execution, rules, None)
    fetched = notebooks.notebook_dir(execution) / "analysis.ipynb"
    assert fetched.read_bytes() == source.read_bytes()
    assert execution.state[notebooks.ENTRY_STATE] == "analysis.ipynb"
    assert any("analysis.ipynb" in note for note in notes)
    source.write_text("{}")  # fetching again starts over
    notebooks.fetch(execution, rules, None)
    assert fetched.read_text() == "{}"


@pytest.mark.parametrize(
    "location",
    ["file:///etc/passwd", "http://127.0.0.1:8888/x.ipynb", "http://10.0.0.7/x.ipynb"],
)
def test_fetching_keeps_to_the_staging_rules(tmp_path: Path, location: str) -> None:
    """Host files outside the data roots and internal addresses are refused, as for data."""
    execution = notebook_session(location)
    execution.workdir = tmp_path / "session"
    rules = StagingRules(file_roots=(str(tmp_path.resolve()),))
    with pytest.raises(PlatformError, match="staging rule"):
        notebooks.fetch(execution, rules, None)
    assert not notebooks.notebook_dir(execution).exists()
    assert notebooks.ENTRY_STATE not in execution.state


def test_fetching_needs_a_notebook_executable_with_a_location() -> None:
    with pytest.raises(PlatformError, match="names no location"):
        notebooks.fetch(notebook_session(None), StagingRules(), None)
    with pytest.raises(PlatformError, match="names no location"):
        notebooks.fetch(session(), StagingRules(), None)


# --- the local platform's options and answers ----------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"notebook_image": "not an image"},
        {"notebook_image": ""},
        {"notebook_server": "lab"},
        {"notebook_python": "python3; rm -rf /"},
        {"notebook_idle_timeout": "soon"},
        {"notebook_imag": "typo"},
    ],
)
def test_bad_notebook_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        LocalOptions.model_validate(options)


def test_notebook_options_default_to_no_notebooks() -> None:
    options = LocalOptions()
    assert options.notebook_image is None
    assert options.notebook_server == "notebook"
    assert options.notebook_idle_timeout == timedelta(hours=1)
    given = LocalOptions.model_validate(
        {"notebook_image": "localhost/ebroker-jupyter:0123abcd", "notebook_idle_timeout": "PT20M"}
    )
    assert given.notebook_idle_timeout == timedelta(minutes=20)


def notebook_request(location: str = LOCATION) -> ExecutionRequest:
    document = {
        "executable": {"kind": NOTEBOOK, "location": location},
        "compute": {"kind": COMPUTE, "cores": {"min": 1}},
    }
    parsed = parse_request(document, KindRegistry(KINDS))
    assert parsed.request is not None
    return parsed.request


def local(**options: Any) -> LocalPlatform:
    return LocalPlatform(PlatformConfig(name="box", type="local", options=options))


def test_validate_refuses_notebooks_without_a_notebook_image() -> None:
    """Not offered (the kind is not accepted), and the site's missing option named."""
    assert NOTEBOOK not in local().accepted_kinds()
    assert NOTEBOOK in local(notebook_image="localhost/nb").accepted_kinds()
    kind, refusal = local().validate(notebook_request())
    assert kind.values == {"platform": "box", "kind": NOTEBOOK}
    assert refusal.values == {"platform": "box"}
    assert "notebook_image" in refusal.template
    assert (
        local(notebook_image="localhost/ebroker-jupyter:latest").validate(notebook_request()) == []
    )


def test_validate_refuses_notebooks_where_no_port_can_be_published() -> None:
    (refusal,) = local(notebook_image="localhost/nb", network="none").validate(notebook_request())
    assert refusal.values["network"] == "none"


def test_a_notebook_is_booked_its_image_and_its_fetch() -> None:
    platform = local(notebook_image="localhost/nb", base_preparation="PT5S",
                     image_pull="PT60S", data_staging="PT30S")  # fmt: skip
    assert platform.preparation_estimate(notebook_request()) == timedelta(seconds=95)


def test_the_notebook_connector_url_opens_the_notebook_with_the_token() -> None:
    platform = local(notebook_image="localhost/nb", connector_host="nb.example.org")
    execution = notebook_session()
    token = notebooks.token_of(execution)
    binding = podman_args.PortBinding(internal=8888, external=18888, protocol="HTTP",
                                      path="/notebooks/analysis.ipynb")  # fmt: skip
    execution.state["ports"] = [binding]
    (connector,) = platform.connectors(execution)
    assert connector["kind"] == "http-connector"
    assert connector["url"] == (
        f"http://nb.example.org:18888/notebooks/analysis.ipynb?token={token}"
    )


# --- the notebook's podman run ---------------------------------------------------------------


def notebook_run_argv(execution: Execution, options: LocalOptions = OPTIONS) -> list[str]:
    mounts = [podman_args.notebook_mount(execution)]
    mounts += [podman_args.mount(execution, v) for v in execution.volumes]
    ports: list[podman_args.PortBinding] = [
        {"internal": 8888, "external": 18888, "protocol": "HTTP",
         "path": "/notebooks/analysis.ipynb"},
    ]  # fmt: skip
    return [
        "podman",
        *podman_args.notebook_run_argv(
            execution,
            options,
            platform="box",
            image="sha256:" + "cd" * 32,
            ports=ports,
            mounts=mounts,
            logs=WORKDIR / "logs",
        ),
    ]


def test_notebook_podman_run_matches_its_snapshot() -> None:
    """The session's container as for a docker container (labels, log, limits, data mounted),
    the notebook's directory read-write as the server's root, the server's port published, the
    token named but not given (podman takes it from its environment) and the server's command
    line with idle culling."""
    execution = notebook_session()
    token = notebooks.token_of(execution)
    argv = notebook_run_argv(execution)
    assert not any(token in arg for arg in argv)
    assert argv[argv.index("--env") + 1] == "JUPYTER_TOKEN"
    assert f"{WORKDIR}/notebook:/work:rw" in argv
    assert f"{WORKDIR}/data/{DATA_UUID}:/input:ro" in argv
    check_snapshot("podman/notebook-run.txt", shell(argv))


def test_notebook_podman_run_of_a_jupyter_server_image_matches_its_snapshot() -> None:
    options = OPTIONS.model_copy(update={"notebook_server": "jupyter-server",
                                         "notebook_python": "/opt/conda/bin/python"})  # fmt: skip
    execution = notebook_session()
    execution.end_at = START + 600  # a short window caps the idle timeout
    check_snapshot(
        "podman/notebook-run-jupyter-server.txt", shell(notebook_run_argv(execution, options))
    )


def test_the_builders_keep_to_their_own_executables() -> None:
    with pytest.raises(PlatformError, match="docker containers only"):
        podman_args.run_argv(notebook_session(), OPTIONS, platform="box", image="i", ports=[],
                             mounts=[], logs=WORKDIR)  # fmt: skip
    with pytest.raises(PlatformError, match="not a jupyter-notebook session"):
        podman_args.notebook_run_argv(session(), OPTIONS, platform="box", image="i", ports=[],
                                      mounts=[], logs=WORKDIR)  # fmt: skip
