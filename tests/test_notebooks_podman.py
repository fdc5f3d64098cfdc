"""A Jupyter notebook session for real: a node process with the ``local`` platform runs the
notebook-server image built by .ci/setup-jupyter.sh (Debian's jupyter-server and classic
notebook) on rootful podman, through the node's HTTP API.

request → accept → the notebook fetched from the site's data directory → RUNNING → the
connector's URL opens the notebook with a real HTTP client (the notebook listed and served, and
refused without the token or with another) and in headless Chromium (the notebook's cell
rendered) → cancel → the container gone. A SIGKILLed node, restarted, finds the session running
with the same URL. An idle server ends itself (idle culling), which completes the session
before its window ends. The token is in no log and on no command line.
A missing image or Chromium fails in CI (``EBROKER_REQUIRE_INTEGRATION=1``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid as uuids
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml

from broker_core.config import PlatformConfig
from broker_core.staging.rules import StagingRules
from platforms.contract import Execution, Platform, work_name
from platforms.local import LocalPlatform
from platforms.registry import build_platforms
from tests.conftest import ACCEPT, COMPUTE, unavailable
from tests.nodes import Node, start_node

pytestmark = pytest.mark.slow  # real processes: `-m 'not slow'` leaves it out

IMAGE = "localhost/ebroker-jupyter:latest"  # .ci/setup-jupyter.sh tags its build so
NOTEBOOK = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/executable/jupyter-notebook.yaml"
CANCEL = {**ACCEPT, "value": "CANCELLED"}
FAST = {"base_preparation": "PT0S", "image_pull": "PT0S", "data_staging": "PT0S"}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=20000",  # the notebook's cells are rendered by its scripts
]


def _works(*command: str) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module", autouse=True)
def notebook_image() -> None:
    if not shutil.which("podman") or not _works("podman", "image", "exists", IMAGE):
        unavailable(f"podman with the image {IMAGE} (run .ci/setup-jupyter.sh)")


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium")
    if not found:
        unavailable("chromium is not installed (run .ci/setup-chromium.sh)")
    return str(found)


def site_config(tmp_path: Path, **options: Any) -> tuple[Path, Platform]:
    """A node config with the local platform serving notebooks from ``IMAGE``, and the
    platform object to inspect its containers."""
    platform = {
        "name": "box",
        "type": "local",
        "options": {**FAST, "stop_timeout": 2, "notebook_image": IMAGE, **options},
    }
    config = {
        "site": {"name": "notebooks"},
        "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
        "offers": {"granularity": "PT1S", "max_offers": 1},
        "lifecycle": {
            "workdir": str(tmp_path / "sessions"),
            "poll_interval": "PT1S",
            "reconcile_interval": "PT2S",
        },
        # the notebook is fetched from the site's data directory, as file:// data is
        "staging": {"file_roots": [str(tmp_path / "data-root")]},
        "platforms": [platform],
    }
    path = tmp_path / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    (inspector,) = build_platforms([PlatformConfig.model_validate(platform)])
    return path, inspector


@pytest.fixture
def marker() -> str:
    return f"ebroker-notebook-cell-{uuids.uuid4().hex[:12]}"


@pytest.fixture
def notebook_file(tmp_path: Path, marker: str) -> Path:
    """A notebook in the node's data directory, with a markdown cell saying ``marker``."""
    path = tmp_path / "data-root" / "analysis.ipynb"
    path.parent.mkdir()
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": [f"# {marker}"]},
        {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
         "source": ["print(6 * 7)"]},
    ]  # fmt: skip
    notebook = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(notebook))
    return path


@pytest.fixture
def clean(tmp_path: Path) -> Iterator[list[Platform]]:
    """Platforms whose session containers are removed after the test, whatever happened."""
    platforms: list[Platform] = []
    yield platforms
    sessions = tmp_path / "sessions"
    for platform in platforms:
        for name in platform.list_work() or set():
            if sessions.exists() and any(work_name(d.name) == name for d in sessions.iterdir()):
                platform.remove_work(name)


def book(node: Node, location: str, duration: str = "PT10M") -> str:
    doc = {
        "executable": {"kind": NOTEBOOK, "location": location},
        "compute": {"kind": COMPUTE, "cores": {"min": 1, "max": 1}, "memory": {"min": 1, "max": 1}},
        "schedule": {"requested": {"duration": duration}},
    }
    r = httpx.post(f"{node.url}/requests", json=doc, timeout=30)
    assert r.status_code == 200 and r.json()["result"] == "YES", r.text
    offer = r.json()["offers"][0]["meta"]["uuid"]
    r = httpx.post(f"{node.url}/sessions/{offer}", json=ACCEPT, timeout=30)
    assert r.status_code == 200 and r.json()["phase"] == "ACCEPTED", r.text
    return offer


def session(node: Node, uuid: str) -> dict[str, Any]:
    return httpx.get(f"{node.url}/sessions/{uuid}", timeout=30).json()


def messages(doc: dict[str, Any]) -> str:
    return " | ".join(m["message"] for m in doc["meta"].get("messages", []))


def wait_phase(node: Node, uuid: str, phases: set[str], seconds: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        doc = session(node, uuid)
        if doc["phase"] in phases:
            return doc
        assert time.monotonic() < deadline, (
            f"{uuid} still {doc['phase']}: {messages(doc)}" + node.output()[-3000:]
        )
        time.sleep(0.3)


def wait_served(url: str, seconds: float = 90) -> httpx.Response:
    """The first answer of the notebook server at ``url`` (it starts after its container)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return httpx.get(url, timeout=10)
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"the notebook server at {url} never answered"
            time.sleep(0.3)


def left(platform: Platform, uuid: str) -> set[str]:
    return {name for name in platform.list_work() or set() if name == work_name(uuid)}


def test_a_notebook_session_is_served_with_its_token_then_cancelled(
    tmp_path: Path, notebook_file: Path, marker: str, chromium: str, clean: list[Platform]
) -> None:
    config, platform = site_config(tmp_path)
    clean.append(platform)
    node = start_node(config, tmp_path, "node")
    try:
        accepted = time.monotonic()
        uuid = book(node, notebook_file.as_uri())
        doc = wait_phase(node, uuid, {"RUNNING", "FAILED", "COMPLETED", "CANCELLED"})
        assert doc["phase"] == "RUNNING", messages(doc) + node.output()[-3000:]
        fetched = tmp_path / "sessions" / uuid / "notebook" / "analysis.ipynb"
        assert fetched.read_bytes() == notebook_file.read_bytes()

        (connector,) = doc["connectors"]
        url = connector["url"]
        parts = urlsplit(url)
        assert parts.path == "/notebooks/analysis.ipynb"
        (token,) = parse_qs(parts.query)["token"]
        assert len(token) >= 40
        base = f"{parts.scheme}://{parts.netloc}"

        page = wait_served(url)
        started = time.monotonic() - accepted
        assert page.status_code == 200, page.text[:500]
        assert "analysis.ipynb" in page.text
        assert marker not in page.text  # the page's scripts load the cells (Chromium, below)
        # the notebook listed and served, through the server's API, with the token
        auth = {"Authorization": f"token {token}"}
        listing = httpx.get(f"{base}/api/contents", headers=auth, timeout=10)
        assert listing.status_code == 200
        assert "analysis.ipynb" in [item["name"] for item in listing.json()["content"]]
        served = httpx.get(f"{base}/api/contents/analysis.ipynb", headers=auth, timeout=10)
        assert served.status_code == 200
        assert marker in "".join(served.json()["content"]["cells"][0]["source"])

        # without the token, or with another, the notebook is not served
        bare = httpx.get(f"{base}/api/contents/analysis.ipynb", timeout=10)
        assert bare.status_code == 403
        wrong = {"Authorization": f"token {token[::-1]}"}
        assert httpx.get(f"{base}/api/contents", headers=wrong, timeout=10).status_code == 403
        page = httpx.get(f"{base}{parts.path}", timeout=10)  # the login page instead
        assert page.status_code != 200 or marker not in page.text
        assert page.is_redirect or page.status_code in (401, 403)

        # in headless Chromium, the connector's URL renders the notebook's cell
        profile = tmp_path / "chromium-profile"
        dom = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert marker in dom.stdout, dom.stdout[-3000:]

        # the token is on no command line and in no log, not even a failed request's line
        missing = httpx.get(f"{base}/notebooks/missing.ipynb?token={token}", timeout=10)
        assert missing.status_code == 404
        created = subprocess.run(
            ["podman", "inspect", "--format", "{{json .Config.CreateCommand}}", work_name(uuid)],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert "JUPYTER_TOKEN" in created.stdout and token not in created.stdout
        logs = httpx.get(f"{node.url}/sessions/{uuid}/logs", timeout=30)
        assert logs.status_code == 200 and logs.text.strip()  # the server's own output
        assert token not in logs.text
        assert "missing.ipynb" in logs.text  # the failed request was logged, without the token
        raw = tmp_path / "sessions" / uuid / "logs" / "container.log"  # as the image wrote it
        assert raw.is_file() and token not in raw.read_text()
        assert token not in node.output()

        r = httpx.post(f"{node.url}/sessions/{uuid}", json=CANCEL, timeout=30)
        assert r.status_code == 200 and r.json()["phase"] == "CANCELLED"
        deadline = time.monotonic() + 60
        while left(platform, uuid):
            assert time.monotonic() < deadline, "the notebook server outlived its cancellation"
            time.sleep(0.3)
        with pytest.raises(httpx.TransportError):
            httpx.get(url, timeout=5)
        assert token not in node.output()
        print(f"notebook served {started:.1f} s after acceptance")
    finally:
        node.stop()


def test_a_notebook_outlives_a_sigkilled_node_and_opens_with_the_same_url_after_restart(
    tmp_path: Path, notebook_file: Path, marker: str, clean: list[Platform]
) -> None:
    """The token is in the platform state the node keeps: after SIGKILL and a restart the
    session is still RUNNING, its connector the same URL, and the server still answers it."""
    config, platform = site_config(tmp_path)
    clean.append(platform)
    first = start_node(config, tmp_path, "first")
    try:
        uuid = book(first, notebook_file.as_uri())
        doc = wait_phase(first, uuid, {"RUNNING", "FAILED", "COMPLETED", "CANCELLED"})
        assert doc["phase"] == "RUNNING", messages(doc)
        (connector,) = doc["connectors"]
        assert wait_served(connector["url"]).status_code == 200
    finally:
        first.kill()  # SIGKILL: no shutdown handler runs
    assert left(platform, uuid), "the notebook server should outlive the node"
    second = start_node(config, tmp_path, "second")
    try:
        time.sleep(3)  # a few polls and a reconciliation of the restarted node
        doc = session(second, uuid)
        assert doc["phase"] == "RUNNING", messages(doc) + second.output()[-3000:]
        assert doc["connectors"] == [connector]
        (token,) = parse_qs(urlsplit(connector["url"]).query)["token"]
        base = "{0.scheme}://{0.netloc}".format(urlsplit(connector["url"]))
        served = httpx.get(f"{base}/api/contents/analysis.ipynb?token={token}", timeout=10)
        assert served.status_code == 200
        assert marker in "".join(served.json()["content"]["cells"][0]["source"])
        r = httpx.post(f"{second.url}/sessions/{uuid}", json=CANCEL, timeout=30)
        assert r.status_code == 200 and r.json()["phase"] == "CANCELLED"
        deadline = time.monotonic() + 60
        while left(platform, uuid):
            assert time.monotonic() < deadline, "the notebook server outlived its cancellation"
            time.sleep(0.3)
        assert token not in first.output() + second.output()
    finally:
        second.stop()


def test_an_idle_notebook_server_ends_itself_and_completes_the_session(
    tmp_path: Path, notebook_file: Path, clean: list[Platform]
) -> None:
    """Idle culling: with nobody using it, the server shuts down after the idle timeout (its
    check runs once a minute), long before the booked window ends."""
    config, platform = site_config(tmp_path, notebook_idle_timeout="PT5S")
    clean.append(platform)
    node = start_node(config, tmp_path, "node")
    try:
        uuid = book(node, notebook_file.as_uri(), duration="PT30M")
        doc = wait_phase(node, uuid, {"RUNNING", "FAILED", "COMPLETED", "CANCELLED"})
        assert doc["phase"] == "RUNNING", messages(doc)
        (connector,) = doc["connectors"]
        assert wait_served(connector["url"]).status_code == 200
        running = time.monotonic()
        doc = wait_phase(node, uuid, {"COMPLETED", "FAILED", "CANCELLED"}, seconds=180)
        assert doc["phase"] == "COMPLETED", messages(doc)
        assert "exited with code 0" in messages(doc)
        assert not left(platform, uuid)
        print(f"the idle server ended {time.monotonic() - running:.1f} s after it answered")
    finally:
        node.stop()


def test_a_node_that_lost_the_ports_finds_the_running_server_and_its_url_again(
    tmp_path: Path, notebook_file: Path, clean: list[Platform]
) -> None:
    """The platform's steps without a node: after a crash between ``podman run`` and saving
    the state, ``start`` again finds the container, and the connector opens the same notebook
    with the same token (kept in the state the engine saved before)."""
    _, platform = site_config(tmp_path)
    assert isinstance(platform, LocalPlatform)
    clean.append(platform)
    now = int(time.time())
    execution = Execution(
        session=str(uuids.uuid4()),
        executable={"kind": NOTEBOOK, "meta": {"uuid": str(uuids.uuid4())},
                    "location": notebook_file.as_uri()},
        compute=None, storage=[], data=[], granted={"cores": 1, "memory": 1},
        prepare_at=now, start_at=now, end_at=now + 600,
        workdir=tmp_path / "sessions" / "lost",
        staging=StagingRules(file_roots=(str(notebook_file.parent.resolve()),)),
    )  # fmt: skip
    execution.workdir.mkdir(parents=True)
    platform.prepare_executable(execution)
    platform.start(execution)
    (first,) = platform.connectors(execution)
    assert wait_served(first["url"]).status_code == 200
    execution.state.pop("ports")  # the crash
    platform.start(execution)  # a no-op for the container: it runs already
    assert platform.connectors(execution) == [first]
    platform.stop(execution, "the test ended")
    platform.release(execution)
    assert not left(platform, execution.session)
