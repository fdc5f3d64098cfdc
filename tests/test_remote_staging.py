"""Data that the session's own machine fetches (a server's cloud-init, a pod's init container),
judged by the node's staging rules: the verdicts, the pinned and bounded download, and the
OpenStack server's staging script run as it is, with ``sh`` and the real ``curl``, against a
local HTTP server (its host name known only through the pin)."""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from broker_core.kinds.base import kind_uri
from broker_core.kinds.builtin import DockerContainer, SimpleDataResource
from broker_core.kinds.request import ExecutionRequest, RequestedSchedule
from broker_core.staging.rules import (
    ADDRESS,
    SCHEME,
    StagingFailed,
    StagingRefused,
    StagingRules,
    remote_fetch,
)
from platforms import remote_staging
from platforms.contract import Execution, PlatformError
from platforms.openstack import builders
from platforms.openstack.kinds import VirtualMachine
from tests.test_platform_openstack_builders import START, WORKDIR, ssh_key

DATA = kind_uri("data", "simple-data-resource")
COMPUTE = kind_uri("compute", "simple-compute-resource")
DOCKER = kind_uri("executable", "docker-container")
LOCAL = StagingRules(allow_networks=(ipaddress.ip_network("127.0.0.0/8"),), max_bytes=1000)


# --- the verdicts ------------------------------------------------------------------------------


def test_a_public_literal_is_pinned_to_itself() -> None:
    remote = remote_fetch("https://192.0.2.7:8443/cube.fits", StagingRules(
        allow_networks=(ipaddress.ip_network("192.0.2.0/24"),)))  # fmt: skip
    assert (remote.host, remote.port, str(remote.address)) == ("192.0.2.7", 8443, "192.0.2.7")


@pytest.mark.parametrize(
    ("location", "rule"),
    [
        ("http://10.1.2.3/secret", ADDRESS),
        ("http://169.254.169.254/latest/meta-data/", ADDRESS),
        ("http://[::1]:8080/x", ADDRESS),
        ("http://localhost/x", ADDRESS),
        ("http://app.localhost/x", ADDRESS),
        ("file:///etc/passwd", SCHEME),
        ("ftp://example.org/x", SCHEME),
        ("s3://bucket/key", SCHEME),
    ],
)
def test_what_the_rules_forbid_is_refused_naming_the_rule(location: str, rule: str) -> None:
    with pytest.raises(StagingRefused) as refused:
        remote_fetch(location, StagingRules())
    assert refused.value.rule == rule


def test_a_name_that_resolves_only_to_internal_addresses_is_refused() -> None:
    with pytest.raises(StagingRefused) as refused:
        remote_fetch("http://localhost.:8080/x", StagingRules())  # resolves to loopback
    assert refused.value.rule == ADDRESS


def test_an_allowed_host_is_trusted_by_name_and_not_pinned() -> None:
    remote = remote_fetch("https://data.site.example/x", StagingRules(
        allow_hosts=("data.site.example",)))  # fmt: skip
    assert remote.address is None and remote.port == 443


def test_a_host_that_does_not_resolve_fails_saying_so() -> None:
    with pytest.raises(StagingFailed, match="does not resolve"):
        remote_fetch("https://no-such-host.invalid/x", StagingRules())


# --- the download ------------------------------------------------------------------------------


def fetch(location: str, address: str | None = "127.0.0.1", host: str = "data.example.org"):
    return remote_staging.Fetch("d1", "cube", location, "cube.fits", host, 8080, address)


def test_curl_is_pinned_and_bounded_by_the_rules() -> None:
    rules = StagingRules(max_bytes=5000, timeout=7, max_time=90, max_redirects=2)
    argv = remote_staging.curl_argv(fetch("http://data.example.org:8080/cube.fits"), rules)
    pairs = dict(itertools.pairwise(argv))
    assert pairs["--resolve"] == "data.example.org:8080:127.0.0.1"
    assert pairs["--max-filesize"] == "5000" and pairs["--max-redirs"] == "2"
    assert (pairs["--connect-timeout"], pairs["--max-time"]) == ("7", "90")
    assert pairs["--proto"] == pairs["--proto-redir"] == "=http,https"
    assert argv[-1] == "http://data.example.org:8080/cube.fits"
    ipv6 = fetch("http://[2001:db8::1]:8080/x", address="2001:db8::1", host="2001:db8::1")
    assert ipv6.resolve == "2001:db8::1:8080:[2001:db8::1]"
    assert "--resolve" not in remote_staging.curl_argv(fetch("http://x/", address=None), rules)


def test_request_messages_name_what_the_machine_cannot_fetch() -> None:
    request = ExecutionRequest(
        DockerContainer.model_validate({"image": {"locations": ["busybox"]}}),
        None,
        [],
        [
            SimpleDataResource.model_validate({"location": "https://example.org/a"}),
            SimpleDataResource.model_validate({"location": "file:///data/b"}),
        ],
        RequestedSchedule(),
    )
    (found,) = remote_staging.request_messages("cloud", request)
    assert "file:///data/b" in found.message and "http(s)" in found.message


# --- the server's staging script, run -----------------------------------------------------------


class Files(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/cube.fits":
            self._send(b"SIMPLE  = T\n" * 10, length=True)
        elif self.path == "/big":
            self._send(b"x" * 5000, length=True)
        elif self.path == "/big-unannounced":
            self._send(b"x" * 5000, length=False)
        else:
            self.send_error(404)

    def _send(self, body: bytes, length: bool) -> None:
        self.send_response(200)
        if length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    server.protocol_version = "HTTP/1.0"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def vm_with_data(paths: list[str]) -> Execution:
    data = [
        {"kind": DATA, "meta": {"uuid": f"d{i}", "name": f"data{i}"}, "location": path}
        for i, path in enumerate(paths)
    ]
    volumes = [{"path": "/work/in/cube", "resource": "data0"}] if paths else []
    return Execution(
        session="7c3e2a10-5b4d-4e6f-8a9b-0c1d2e3f4a5b",
        executable=VirtualMachine.model_validate(
            {"image": "debian-12", "ssh_public_key": ssh_key()}
        ),
        compute={"kind": COMPUTE, "meta": {"uuid": "c0"}, "volumes": volumes},
        storage=[],
        data=data,
        granted={"cores": 1, "memory": 1},
        prepare_at=START - 60,
        start_at=START,
        end_at=START + 600,
        workdir=WORKDIR,
    )


def run_script(tmp_path: Path, port: int, paths: list[str]) -> tuple[Execution, int, Path]:
    """Judge each ``http://data.example.org:<port><path>`` (pinned to the loopback, which the
    rules here allow) and run the staging script the server would get."""
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run the staging script (it is on every cloud image)")
    execution = vm_with_data([f"http://127.0.0.1:{port}{p}" for p in paths])
    execution.staging = LOCAL
    for data in execution.data:
        remote_staging.prepare(execution, data)
    fetches = [  # the same downloads, under a name only the pin resolves
        dataclasses.replace(
            f, location=f.location.replace("127.0.0.1", "data.example.org"), host="data.example.org"
        )
        for f in remote_staging.fetches(execution)
    ]
    script = tmp_path / "ebroker-stage"
    text = builders.staging_script(execution, fetches, LOCAL)
    root, console = tmp_path / "data", tmp_path / "console"
    text = text.replace("ln -sfn", "echo ln -sfn").replace("mkdir -p /work/in", ": /work/in")
    script.write_text(text)
    console.touch()
    env = {
        "PATH": "/usr/bin:/bin",
        "EBROKER_DATA_ROOT": str(root),
        "EBROKER_CONSOLE": str(console),
        "EBROKER_POWEROFF": f"touch {tmp_path / 'powered-off'}",
    }
    done = subprocess.run(["sh", str(script)], env=env, timeout=60, capture_output=True)
    return execution, done.returncode, root


def test_the_script_fetches_through_the_pin_into_the_data_root(tmp_path, http_port) -> None:
    execution, code, root = run_script(tmp_path, http_port, ["/cube.fits"])
    assert code == 0, (tmp_path / "console").read_text()
    staged = root / "d0" / "cube.fits"
    assert staged.read_bytes() == b"SIMPLE  = T\n" * 10
    assert not list((root / "d0").glob(".*.part"))
    assert not (tmp_path / "powered-off").exists()
    assert builders.staging_failure((tmp_path / "console").read_text(), execution) is None


@pytest.mark.parametrize(
    ("path", "curl_code"),
    [("/missing", "22"), ("/big", "63"), ("/big-unannounced", "63")],
)
def test_a_failed_or_oversized_download_fails_the_session_and_powers_off(
    tmp_path, http_port, path, curl_code
) -> None:
    execution, code, root = run_script(tmp_path, http_port, ["/cube.fits", path])
    assert code == 1
    assert (tmp_path / "powered-off").exists()
    console = (tmp_path / "console").read_text()
    failure = builders.staging_failure(console, execution)
    assert failure == f"the server could not fetch data data1 (curl exit code {curl_code})"
    assert not (root / "d1").exists() or not any((root / "d1").iterdir())


def test_volume_paths_of_data_become_links_outside_a_container(tmp_path, http_port) -> None:
    text = builders.staging_script(
        vm_with_data(["http://x.example/a"]),
        [fetch("http://x.example/a", host="x.example")],
        LOCAL,
    )
    assert 'mkdir -p /work/in && ln -sfn "$root"/d0 /work/in/cube' in text


def test_data_not_judged_at_preparation_is_not_fetched_blindly() -> None:
    with pytest.raises(PlatformError, match="not judged"):
        remote_staging.fetches(vm_with_data(["http://x.example/a"]))


def test_preparation_refuses_an_internal_address_naming_the_rule() -> None:
    execution = vm_with_data(["http://10.0.0.8/cube.fits"])
    with pytest.raises(PlatformError, match="staging rule address"):
        remote_staging.prepare(execution, execution.data[0])
