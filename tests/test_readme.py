"""The README as a newcomer reads it: its set-up, its quick start against a real ``ebroker
serve``, its federation demo, the files it shows, and a fresh clone with nothing beside it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml
from packaging.requirements import Requirement

from tests.conftest import offered_start
from tests.nodes import Node, free_port

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
YAML_CT = {"Content-Type": "application/yaml"}


def readme_block(marker: str) -> str:
    """The fenced block that follows ``<!-- marker -->`` in the README."""
    match = re.search(rf"<!-- {re.escape(marker)} -->\n```\w*\n(.*?)```", README, re.S)
    assert match, f"the README has no block marked {marker!r}"
    return match.group(1)


def serve_plain(cwd: Path, port: int) -> Node:
    """``ebroker serve`` as the README starts it (no configuration), in ``cwd``, on ``port``."""
    log = cwd / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ebroker", "serve", "--port", str(port)],
            cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    node = Node(f"http://127.0.0.1:{port}", process, log)
    if not node.ready():
        node.stop()
        pytest.fail(f"ebroker serve did not become ready:\n{node.output()[-3000:]}")
    return node


def newcomer_folder(tmp_path: Path) -> Path:
    """A folder with the repository's examples in it, as a clone has them."""
    folder = tmp_path / "clone"
    folder.mkdir()
    (folder / "examples").symlink_to(ROOT / "examples")
    return folder


def bash(script: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_readme_set_up_installs_from_the_lock_as_ci_does() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install -c constraints.txt -e '.[test]'" in README
    assert "pip install --quiet -c constraints.txt -e '.[test]'" in ci
    assert "\npython -m pytest" in ci and "python -m pytest       # the whole test suite" in README
    assert "\nebroker serve          #" in README
    assert "machine kind" not in README


def test_the_lock_pins_every_dependency_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.split(";")[0].strip()
    for text in [*project["dependencies"], *project["optional-dependencies"]["test"]]:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in constraints.txt: refresh it (see the README)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {name}=={pins[name]}, outside pyproject's {requirement}"
        )


def test_readme_shows_the_aggregator_example_as_it_is() -> None:
    shown = readme_block("examples/aggregator.yaml")
    assert shown == (ROOT / "examples" / "aggregator.yaml").read_text()
    upstreams = yaml.safe_load(shown)["upstreams"]
    ports = [u["url"].rsplit(":", 1)[1] for u in upstreams]
    for name, port in zip(("site-a", "site-b"), ports, strict=True):  # and how to start them
        assert f"ebroker serve --port {port} --database sqlite:///{name}.db --site-name {name}" in (
            README
        )


def test_version_flag() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ebroker", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"ebroker \d+\.\d+\.\d+\S*\n", done.stdout), done.stdout


def test_readme_window_command_gets_offers_in_tomorrows_window(tmp_path: Path) -> None:
    folder = newcomer_folder(tmp_path)
    node = serve_plain(folder, free_port())
    try:
        match = re.search(r"```sh\n(WINDOW=.*?)```", README, re.S)
        assert match, "the README's window example is gone"
        script = match.group(1).replace("localhost:8080", node.url.removeprefix("http://"))
        done = bash(script, folder, timeout=60)
        assert done.returncode == 0, done.stderr
        answer = yaml.safe_load(done.stdout)
        assert answer["result"] == "YES", answer["meta"].get("messages")
        tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
        for offer in answer["offers"]:
            start = offered_start(offer)
            assert start.startswith(tomorrow) and "T08:00:00Z" <= start[10:] <= "T12:00:00Z"
    finally:
        node.stop()


@pytest.mark.slow
def test_readme_quick_start_reaches_the_end_against_a_real_node(tmp_path: Path) -> None:
    """The request, the accept and the phase loop, run as the README writes them."""
    folder = newcomer_folder(tmp_path)
    node = serve_plain(folder, free_port())
    try:
        script = readme_block("quickstart").replace(
            "localhost:8080", node.url.removeprefix("http://")
        )
        done = bash(script, folder, timeout=420)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{node.output()[-3000:]}"
        phases = done.stdout.split()
        assert '"phase": "ACCEPTED"' in done.stdout or "ACCEPTED" in phases
        assert phases[-1] == "COMPLETED", done.stdout
        assert "RUNNING" in phases, done.stdout
        assert (folder / "ebroker.db").is_file()  # its own folder, nobody else's
    finally:
        node.stop()


def _three_free_ports() -> int:
    for _ in range(50):
        base = free_port()
        try:
            for port in (base + 1, base + 2):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    pytest.fail("no three consecutive free ports")


@pytest.mark.slow
def test_demo_starts_two_nodes_and_an_aggregator_over_them(tmp_path: Path) -> None:
    base = _three_free_ports()
    out = (tmp_path / "demo.out").open("w+")
    demo = subprocess.Popen(
        [sys.executable, "-m", "ebroker", "demo", "--dir", str(tmp_path / "demo"),
         "--base-port", str(base)],
        cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "Ctrl-C" not in (tmp_path / "demo.out").read_text():
            assert demo.poll() is None, (tmp_path / "demo.out").read_text()
            assert time.monotonic() < deadline, (tmp_path / "demo.out").read_text()
            time.sleep(0.2)
        printed = (tmp_path / "demo.out").read_text()
        for port in (base, base + 1, base + 2):
            assert f"http://127.0.0.1:{port}" in printed, printed
        raw = (ROOT / "examples" / "requests" / "02-compute.yaml").read_bytes()
        answer = httpx.post(
            f"http://127.0.0.1:{base}/requests", content=raw, headers=YAML_CT, timeout=30
        ).json()
        assert answer["result"] == "YES", answer["meta"].get("messages")
        upstreams = {offer["site"]["upstream"] for offer in answer["offers"]}
        assert upstreams == {"site-a", "site-b"}, answer["meta"].get("messages")
        names = {offer["site"]["name"] for offer in answer["offers"]}
        assert names == {"site-a", "site-b"}
        for name in ("site-a", "site-b"):  # each its own database
            assert (tmp_path / "demo" / f"{name}.db").is_file()
            assert yaml.safe_load((tmp_path / "demo" / f"{name}.yaml").read_text())
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            assert demo.wait(timeout=30) == 0
        finally:
            if demo.poll() is None:
                os.killpg(demo.pid, signal.SIGKILL)
    for port in (base, base + 1, base + 2):  # all three stopped with it
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=2)


@pytest.mark.slow
def test_a_fresh_clone_with_nothing_beside_it_passes_its_example_tests(tmp_path: Path) -> None:
    """``tests/test_examples.py`` in a clone of the repository in a folder with no ``shared/``
    (nor anything else) beside it."""
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.fail("this test clones the repository: it needs git and a git checkout")
    clone = tmp_path / "work" / "ebroker"
    cloned = subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cloned.returncode == 0, cloned.stderr
    assert sorted(p.name for p in clone.parent.iterdir()) == ["ebroker"]
    env = {**os.environ, "PYTHONPATH": str(clone)}
    env.pop("EBROKER_SHARED", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_examples.py"],
        cwd=clone, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", done.stdout) and " skipped" not in done.stdout
    assert " failed" not in done.stdout
