"""Data staging is sandboxed (issue 13, finding 1).

A data resource's location used to be copied or fetched by the node with the node's reach:
``file:///etc/shadow`` came back through the session's logs and ``http://`` fetched internal
addresses. Now ``file://`` is refused unless the site names data directories, and is confined
to them; ``http(s)://`` reaches only public addresses (after DNS, on every redirect, to the
address checked); copies and downloads are capped; staging runs as the session's user where the
platform has one. A refused location is a ``result: NO`` at request time naming the rule, on
every platform, and staging itself refuses it too when it is reached another way.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import os
import pwd
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from broker_core.config import ConfigError, PlatformConfig, parse_config
from broker_core.kinds.base import Meta, kind_uri
from broker_core.kinds.builtin import SimpleDataResource
from broker_core.staging import fetch, files
from broker_core.staging.addresses import parse_address, refused_category
from broker_core.staging.rules import StagingRefused, StagingRules, rules_for
from platforms.contract import Execution, Platform, PlatformError
from platforms.local import LocalPlatform
from platforms.registry import build_platforms
from platforms.slurm import SlurmPlatform
from platforms.staging import stage
from tests.conftest import ACCEPT, COMPUTE, DOCKER, POOL_CONFIG, unavailable
from tests.nodes import Node, start_node

DATA = kind_uri("data", "simple-data-resource")
MOUNT = kind_uri("volume", "simple-volume-mount")
METADATA = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
FAST = {"base_preparation": "PT0S", "image_pull": "PT0S", "data_staging": "PT0S"}
IMAGE = "localhost/busybox"


# --- a site's files, and a local HTTP server ----------------------------------------------------


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A directory every user may enter (pytest's own are root's alone), so that staging as
    another user can reach its files."""
    path = Path(tempfile.mkdtemp(prefix="ebroker-staging-"))
    path.chmod(0o755)
    yield path.resolve()
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def site_files(tmp_path: Path) -> dict[str, Path]:
    """A data root with a file, a directory and a link out of it; a secret beside it; the
    node's database and session workdir inside the root (as a careless site might have it)."""
    root = tmp_path / "data-root"
    (root / "inputs" / "deeper").mkdir(parents=True)
    (root / "inputs" / "a.txt").write_text("input-a\n")
    (root / "inputs" / "deeper" / "b.txt").write_text("input-b\n")
    (root / "input.txt").write_text("staged-data-42\n")
    secret = tmp_path / "private" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("top-secret\n")
    (root / "escape").symlink_to(secret)
    (root / "escape-dir").symlink_to(secret.parent, target_is_directory=True)
    database = root / "node.db"
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("CREATE TABLE secrets (value TEXT)")
        db.execute("INSERT INTO secrets VALUES ('the node''s bookings')")
        db.commit()
    workdir = root / "sessions"
    (workdir / "other-session" / "data").mkdir(parents=True)
    (workdir / "other-session" / "data" / "theirs.txt").write_text("another user's data\n")
    return {"root": root, "secret": secret, "database": database, "workdir": workdir}


def node_config(site_files: dict[str, Path], **staging: Any) -> dict[str, Any]:
    return {
        **POOL_CONFIG,
        "database": {"url": f"sqlite:///{site_files['database']}"},
        "lifecycle": {"workdir": str(site_files["workdir"])},
        "staging": {"file_roots": [str(site_files["root"])], **staging},
    }


def site_rules(site_files: dict[str, Path], **staging: Any) -> StagingRules:
    return rules_for(parse_config(node_config(site_files, **staging)))


class Handler(http.server.BaseHTTPRequestHandler):
    """``/data`` (a small file), ``/big`` (5000 bytes, with or without a length), ``/slow``
    (answers after 3 s), ``/to?url`` (302 to the url), ``/loop`` (302 to itself)."""

    hits: list[str]

    def do_GET(self) -> None:
        self.hits.append(self.path)
        if self.path == "/data/input.fits":
            self._send(200, b"remote-bytes-17\n")
        elif self.path.startswith("/big"):
            body = b"x" * 5000
            self.send_response(200)
            if "chunked" not in self.path:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True
        elif self.path == "/slow":
            time.sleep(3)
            self._send(200, b"late\n")
        elif self.path.startswith("/to?"):
            self.send_response(302)
            self.send_header("Location", self.path.split("?", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"no\n")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


def serve(host: str) -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    handler = type("Recording", (Handler,), {"hits": hits})
    server = http.server.ThreadingHTTPServer((host, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{host}:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


@pytest.fixture
def web() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1: loopback, so refused unless the site allows it."""
    yield from serve("127.0.0.1")


@pytest.fixture
def other_web() -> Iterator[tuple[str, list[str]]]:
    """A second server on 127.0.0.2: loopback too, outside an allowed 127.0.0.1/32."""
    yield from serve("127.0.0.2")


def refusal(location: str, rules: StagingRules, tmp_path: Path, user: str | None = None) -> str:
    """Stage ``location``; the PlatformError's message (the staging must fail), having checked
    that nothing was left in the destination."""
    dest = tmp_path / "dest" / uuid.uuid4().hex / "data"
    with pytest.raises(PlatformError) as info:
        stage({"kind": DATA, "location": location}, dest, rules, user=user)
    left = list(dest.parent.iterdir()) if dest.parent.exists() else []
    assert left == [], left
    return str(info.value)


def staged(location: str, rules: StagingRules, tmp_path: Path, user: str | None = None) -> Path:
    dest = tmp_path / "dest" / uuid.uuid4().hex
    stage({"kind": DATA, "location": location}, dest, rules, user=user)
    return dest


# --- addresses ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "category"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd00:ec2::254", "private"),
        ("100.64.0.1", "non-global"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("::ffff:127.0.0.1", "loopback (IPv4 127.0.0.1 inside)"),
        ("::ffff:169.254.169.254", "link-local (IPv4 169.254.169.254 inside)"),
        ("2002:7f00:1::1", "loopback (IPv4 127.0.0.1 inside)"),  # 6to4
        ("64:ff9b::a9fe:a9fe", "link-local (IPv4 169.254.169.254 inside)"),  # NAT64
    ],
)
def test_non_public_addresses_are_refused(address: str, category: str):
    assert refused_category(ipaddress.ip_address(address), []) == category


@pytest.mark.parametrize("address", ["8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses_are_reached(address: str):
    assert refused_category(ipaddress.ip_address(address), []) is None


def test_allowed_networks_open_their_addresses_and_only_those():
    allowed = [ipaddress.ip_network("10.20.0.0/16"), ipaddress.ip_network("127.0.0.1/32")]
    assert refused_category(ipaddress.ip_address("10.20.3.4"), allowed) is None
    assert refused_category(ipaddress.ip_address("::ffff:127.0.0.1"), allowed) is None
    assert refused_category(ipaddress.ip_address("10.21.0.1"), allowed) == "private"
    assert refused_category(ipaddress.ip_address("127.0.0.2"), allowed) == "loopback"


@pytest.mark.parametrize("text", ["127.1", "0x7f000001", "2130706433", "0177.0.0.1", "[::1]"])
def test_every_spelling_of_an_address_is_read_as_one(text: str):
    address = parse_address(text)
    assert address is not None and address.is_loopback


# --- configuration ------------------------------------------------------------------------------


def test_the_staging_section_validates_with_clear_errors():
    config = parse_config(
        {"staging": {"file_roots": ["/data"], "allow_networks": ["10.0.0.0/8"],
                     "allow_hosts": ["Data.Example.ORG."], "max_bytes": 1000}}
    )  # fmt: skip
    assert config.staging.allow_hosts == ["data.example.org"]
    assert parse_config({}).staging.file_roots == []  # the default: no local files
    for bad, named in [
        ({"file_roots": ["data"]}, "staging.file_roots: 'data' is not an absolute path"),
        ({"file_roots": ["/"]}, "every file of the host"),
        ({"allow_networks": ["10.0.0.0/33"]}, "staging.allow_networks.0"),
        ({"allow_hosts": ["not a host"]}, "is not a host name"),
        ({"allow_hosts": ["127.0.0.1"]}, "allow it in allow_networks"),
        ({"max_byte": 1}, "did you mean 'max_bytes'"),
    ]:
        with pytest.raises(ConfigError, match=named):
            parse_config({"staging": bad})


def test_the_node_files_are_in_its_rules(site_files):
    rules = site_rules(site_files)
    assert str(site_files["database"].resolve()) in rules.denied
    assert str(site_files["database"].resolve()) + "-wal" in rules.denied
    assert str(site_files["workdir"].resolve()) in rules.denied


# --- at request time: a NO naming the rule ------------------------------------------------------


def data_request(*locations: str, executable: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "executable": executable or {"kind": DOCKER, "image": {"locations": [IMAGE]}},
        "compute": {"kind": COMPUTE, "cores": {"min": 1, "max": 1}, "memory": {"min": 1, "max": 1}},
        "data": [
            {"kind": DATA, "meta": {"name": f"d{i}"}, "location": location}
            for i, location in enumerate(locations)
        ],
    }


def rules_named(answer: dict[str, Any]) -> dict[str, str]:
    """A NO answer's staging refusals: the rule each data location broke, by its pointer."""
    assert answer["result"] == "NO", answer
    assert answer["offers"] == []
    return {
        m["values"]["pointer"]: m["values"]["rule"]
        for m in answer["meta"]["messages"]
        if m["level"] == "ERROR" and "rule" in m.get("values", {})
    }


def hostile_locations(site_files: dict[str, Path]) -> dict[str, str]:
    """What issue 13's probe tried, with the rule each must be refused by."""
    return {
        site_files["database"].as_uri(): "node-files",
        "file:///etc/shadow": "file-roots",
        (site_files["root"] / "escape").as_uri(): "file-roots",
        f"file://{site_files['root']}/../private/secret.txt": "file-roots",
        (site_files["workdir"] / "other-session" / "data" / "theirs.txt").as_uri(): "node-files",
        METADATA: "address",
        "http://[::ffff:169.254.169.254]/latest/": "address",
        "http://localhost:8080/": "address",
        "http://2130706433/": "address",
        "gopher://127.0.0.1:25/": "scheme",
    }


def test_the_default_node_refuses_file_and_internal_locations(client):
    """The embedded default (the simulated platform) answered YES to file:///etc/shadow."""
    answer = client.post("/requests", json=data_request("file:///etc/shadow", METADATA)).json()
    assert rules_named(answer) == {"/data/0/location": "file-roots", "/data/1/location": "address"}
    text = " ".join(m["message"] for m in answer["meta"]["messages"])
    assert "stages no local files" in text and "169.254.169.254" in text
    public = client.post("/requests", json=data_request("https://archive.example.org/a.fits"))
    assert public.json()["result"] == "YES", public.text


def test_every_hostile_location_is_refused_with_its_rule(
    site_files, broker_factory, client_factory
):
    client = client_factory(broker_factory(f"sqlite:///{site_files['database']}",
                                           **_overrides(site_files)))  # fmt: skip
    hostile = hostile_locations(site_files)
    answer = client.post("/requests", json=data_request(*hostile)).json()
    assert rules_named(answer) == {
        f"/data/{i}/location": rule for i, rule in enumerate(hostile.values())
    }
    inside = client.post("/requests", json=data_request((site_files["root"] / "inputs").as_uri()))
    assert inside.json()["result"] == "YES", inside.text


def test_allowed_networks_and_hosts_are_not_refused(site_files, broker_factory, client_factory):
    overrides = _overrides(site_files, allow_networks=["127.0.0.1/32"], allow_hosts=["localhost"])
    client = client_factory(broker_factory(f"sqlite:///{site_files['database']}", **overrides))
    answer = client.post(
        "/requests", json=data_request("http://127.0.0.1:8080/x", "http://localhost:1/y")
    ).json()
    assert answer["result"] == "YES", answer
    answer = client.post("/requests", json=data_request("http://127.0.0.2:8080/x")).json()
    assert rules_named(answer) == {"/data/0/location": "address"}


def _overrides(site_files: dict[str, Path], **staging: Any) -> dict[str, Any]:
    config = node_config(site_files, **staging)
    return {"lifecycle": config["lifecycle"], "staging": config["staging"]}


def _slurm_works() -> bool:
    if not shutil.which("scontrol"):
        return False
    try:
        return subprocess.run(["scontrol", "ping"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def real_platform(kind: str) -> dict[str, Any]:
    if kind == "slurm" and not _slurm_works():
        unavailable("a running Slurm cluster (run .ci/setup-slurm.sh)")
    if not shutil.which("podman"):
        unavailable("podman (run .ci/setup-podman.sh)")
    name = {"local": "box", "slurm": "hpc"}[kind]
    return {"name": name, "type": kind, "options": FAST}


@pytest.mark.parametrize("kind", ["local", "slurm"])
def test_local_and_slurm_nodes_refuse_hostile_locations_at_request_time(
    kind, site_files, broker_factory, client_factory
):
    overrides = {**_overrides(site_files), "platforms": [real_platform(kind)]}
    client = client_factory(broker_factory(f"sqlite:///{site_files['database']}", **overrides))
    hostile = hostile_locations(site_files)
    for index, (location, rule) in enumerate(hostile.items()):
        answer = client.post("/requests", json=data_request(location)).json()
        assert rules_named(answer) == {"/data/0/location": rule}, (index, location, answer)
    fine = client.post("/requests", json=data_request((site_files["root"] / "input.txt").as_uri()))
    assert fine.json()["result"] == "YES", fine.text


# --- staging itself: the boundary ---------------------------------------------------------------


def test_files_inside_the_roots_are_copied(site_files, tmp_path):
    rules = site_rules(site_files)
    dest = staged((site_files["root"] / "input.txt").as_uri(), rules, tmp_path)
    assert (dest / "input.txt").read_text() == "staged-data-42\n"
    dest = staged((site_files["root"] / "inputs").as_uri(), rules, tmp_path)
    assert (dest / "a.txt").read_text() == "input-a\n"
    assert (dest / "deeper" / "b.txt").read_text() == "input-b\n"


def test_staging_refuses_what_the_request_check_refuses(site_files, tmp_path):
    """Reached another way (a session accepted before the rules changed, say), staging itself
    refuses every hostile location, and leaves nothing behind."""
    rules = site_rules(site_files)
    for location, rule in hostile_locations(site_files).items():
        assert f"staging rule {rule}:" in refusal(location, rules, tmp_path), location


def test_with_no_rules_staging_refuses_every_local_file(site_files, tmp_path):
    text = refusal((site_files["root"] / "input.txt").as_uri(), StagingRules(), tmp_path)
    assert "staging rule file-roots: this node stages no local files" in text


def test_a_directory_copy_skips_links_and_never_copies_the_node_files(site_files, tmp_path):
    rules = site_rules(site_files)
    root = site_files["root"]
    inputs = root / "inputs"
    (inputs / "escape").symlink_to(site_files["secret"])
    (inputs / "escape-dir").symlink_to(site_files["secret"].parent, target_is_directory=True)
    os.mkfifo(inputs / "fifo")
    execution_notes = stage({"location": inputs.as_uri()}, tmp_path / "d1", rules)
    copied = {p.relative_to(tmp_path / "d1").as_posix() for p in (tmp_path / "d1").rglob("*")}
    assert copied == {"a.txt", "deeper", "deeper/b.txt"}
    assert "escape (a symbolic link)" in execution_notes[0]
    assert "fifo (not a regular file)" in execution_notes[0]
    # the whole root holds the database and the session workdirs: refused, not half-copied
    assert "staging rule node-files" in refusal(root.as_uri(), rules, tmp_path)
    # a hard link to the database is the database
    os.link(site_files["database"], inputs / "bookings.bin")
    assert "staging rule node-files" in refusal(inputs.as_uri(), rules, tmp_path)
    assert "staging rule node-files" in refusal((inputs / "bookings.bin").as_uri(), rules, tmp_path)


def test_directory_copies_are_capped_in_bytes_and_files(site_files, tmp_path):
    inputs = (site_files["root"] / "inputs").as_uri()
    text = refusal(inputs, site_rules(site_files, max_bytes=10), tmp_path)
    assert "staging rule max-bytes" in text and "10 bytes" in text
    text = refusal(inputs, site_rules(site_files, max_files=2), tmp_path)
    assert "staging rule max-files" in text and "more than 2 files" in text
    assert staged(inputs, site_rules(site_files, max_bytes=16, max_files=3), tmp_path).is_dir()


def test_a_link_swapped_in_after_the_check_is_not_followed(site_files):
    """The path is resolved and checked, then opened again from its root one component at a
    time without following links: a link that appears in between fails the open."""
    root = str(site_files["root"].resolve())
    with pytest.raises(StagingRefused, match="staging rule no-links"):
        os.close(files._open_beneath(root, "escape", "escape"))
    with pytest.raises(StagingRefused, match="staging rule no-links"):
        os.close(files._open_beneath(root, "escape-dir/secret.txt", "escape-dir/secret.txt"))
    os.close(files._open_beneath(root, "inputs/a.txt", "inputs/a.txt"))


@pytest.mark.parametrize("kind", ["local", "slurm"])
def test_the_platforms_stage_data_refuses_hostile_locations(kind, site_files, tmp_path):
    """``stage_data`` of the local and slurm platforms, called as the lifecycle engine calls
    it, with the node's rules."""
    platform = _platform(kind, reservation_user=_me())
    execution = _execution(tmp_path, site_rules(site_files))
    for location, rule in hostile_locations(site_files).items():
        data = _data(location)
        with pytest.raises(PlatformError, match=f"staging rule {rule}:"):
            platform.stage_data(execution, data)
        assert not execution.data_path(data).exists()
    data = _data((site_files["root"] / "input.txt").as_uri())
    platform.stage_data(execution, data)
    assert (execution.data_path(data) / "input.txt").read_text() == "staged-data-42\n"


def _data(location: str) -> SimpleDataResource:
    """A data resource as the lifecycle engine gives it to a platform: its kind's model."""
    return SimpleDataResource(kind=DATA, meta=Meta(uuid=str(uuid.uuid4())), location=location)


def _me() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def _platform(kind: str, **options: Any) -> Platform:
    if kind == "local":
        return LocalPlatform(PlatformConfig(name="box", type="local"))
    return SlurmPlatform(PlatformConfig(name="hpc", type="slurm", options=options))


def _execution(tmp_path: Path, rules: StagingRules) -> Execution:
    now = int(time.time())
    session = str(uuid.uuid4())
    workdir = tmp_path / "work" / session
    workdir.mkdir(parents=True)
    return Execution(
        session=session, executable={}, compute={}, storage=[], data=[], granted={},
        prepare_at=now, start_at=now, end_at=now + 60, workdir=workdir, staging=rules,
    )  # fmt: skip


# --- staging as the session's user --------------------------------------------------------------


@pytest.fixture
def as_root() -> None:
    if os.geteuid() != 0:
        unavailable("the node running as root, to stage as another user (CI runs as root)")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        unavailable("a user 'nobody' to stage as")


def test_slurm_stages_as_the_jobs_user(as_root, site_files, tmp_path):
    """On slurm, staging runs as the job's user (``reservation_user``): files that user may not
    read are not staged, even inside the roots, and what is staged is theirs."""
    for path in (tmp_path, site_files["root"], site_files["root"] / "inputs"):
        path.chmod(0o755)
    private = site_files["root"] / "root-only.txt"
    private.write_text("only root reads this\n")
    private.chmod(0o600)
    platform = _platform("slurm", reservation_user="nobody")
    execution = _execution(tmp_path, site_rules(site_files))
    execution.workdir.parent.chmod(0o755)
    data = _data(private.as_uri())
    with pytest.raises(PlatformError, match="Permission denied"):
        platform.stage_data(execution, data)
    data.location = (site_files["root"] / "input.txt").as_uri()
    platform.stage_data(execution, data)
    target = execution.data_path(data) / "input.txt"
    assert target.read_text() == "staged-data-42\n"
    assert target.stat().st_uid == pwd.getpwnam("nobody").pw_uid
    assert execution.data_path(data).stat().st_uid == pwd.getpwnam("nobody").pw_uid
    assert f"staged {data.location} as user nobody" in execution.notes


def test_the_sites_staging_user_applies_to_the_local_platform(as_root, site_files, tmp_path):
    for path in (tmp_path, site_files["root"]):
        path.chmod(0o755)
    rules = site_rules(site_files, user="nobody")
    assert (
        LocalPlatform(PlatformConfig(name="box", type="local")).staging_user(
            _execution(tmp_path, rules)
        )
        == "nobody"
    )
    private = site_files["root"] / "root-only.txt"
    private.write_text("only root reads this\n")
    private.chmod(0o600)
    assert "Permission denied" in refusal(private.as_uri(), rules, tmp_path, user="nobody")
    dest = staged((site_files["root"] / "input.txt").as_uri(), rules, tmp_path, user="nobody")
    assert (dest / "input.txt").stat().st_uid == pwd.getpwnam("nobody").pw_uid


def test_an_unknown_staging_user_is_a_clear_failure(site_files, tmp_path):
    text = refusal((site_files["root"] / "input.txt").as_uri(), site_rules(site_files), tmp_path,
                   user="no-such-user-ebroker")  # fmt: skip
    assert "no such user" in text


# --- downloads ----------------------------------------------------------------------------------


def test_a_loopback_server_is_refused_by_default_and_reached_when_allowed(web, tmp_path):
    base, hits = web
    location = f"{base}/data/input.fits"
    assert "staging rule address" in refusal(location, StagingRules(), tmp_path)
    assert hits == []  # refused before connecting
    rules = StagingRules(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    dest = staged(location, rules, tmp_path)
    assert (dest / "input.fits").read_text() == "remote-bytes-17\n"


def test_a_name_that_resolves_to_loopback_is_refused_after_dns(web, tmp_path):
    base, hits = web
    location = base.replace("127.0.0.1", "localhost") + "/data/input.fits"
    text = refusal(location, StagingRules(), tmp_path)
    assert "staging rule address: localhost resolves to" in text and "loopback" in text
    assert hits == []
    allowed = StagingRules(allow_hosts=("localhost",))
    assert (staged(location, allowed, tmp_path) / "input.fits").read_bytes() == b"remote-bytes-17\n"


def test_every_redirect_is_checked_as_the_first_request(web, other_web, tmp_path):
    base, _ = web
    other, other_hits = other_web
    rules = StagingRules(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    # to a loopback address outside the allowed network, to the metadata service, to a file
    for target in (f"{other}/data/input.fits", METADATA, "file:///etc/shadow"):
        text = refusal(f"{base}/to?{target}", rules, tmp_path)
        assert "staging rule address" in text or "staging rule scheme" in text, text
    assert other_hits == []
    # an allowed redirect is followed
    dest = staged(f"{base}/to?/data/input.fits", rules, tmp_path)
    assert (dest / "to").read_text() == "remote-bytes-17\n"
    text = refusal(f"{base}/loop", rules, tmp_path)
    assert "staging rule max-redirects" in text and "more than 5 times" in text


def test_downloads_are_capped_in_size_and_time(web, tmp_path):
    base, _ = web
    allowed = (ipaddress.ip_network("127.0.0.1/32"),)
    capped = StagingRules(allow_networks=allowed, max_bytes=1000)
    for path in ("/big", "/big?chunked"):  # refused by its length, or while it is read
        assert "staging rule max-bytes" in refusal(base + path, capped, tmp_path)
    hurried = StagingRules(allow_networks=allowed, timeout=0.5)
    started = time.monotonic()
    text = refusal(base + "/slow", hurried, tmp_path)
    assert "no answer within 0.5 s" in text and time.monotonic() - started < 2.5
    deadline = StagingRules(allow_networks=allowed, timeout=10, max_time=0.5)
    assert "not done within 0.5 s" in refusal(base + "/slow", deadline, tmp_path)


def test_the_connection_goes_to_the_checked_address(web, other_web, tmp_path, monkeypatch):
    """DNS rebinding: a name that resolves to an allowed and a forbidden address is connected
    to the allowed one only, the one that was checked."""
    base, hits = web
    _, other_hits = other_web
    port = int(base.rsplit(":", 1)[1])

    async def two_answers(self, host: str, port: int = 0, family: Any = socket.AF_INET):
        return [
            {"hostname": host, "host": "127.0.0.2", "port": port, "family": socket.AF_INET,
             "proto": 0, "flags": 0},
            {"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET,
             "proto": 0, "flags": 0},
        ]  # fmt: skip

    monkeypatch.setattr(fetch.ThreadedResolver, "resolve", two_answers)
    rules = StagingRules(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    dest = staged(f"http://rebind.example:{port}/data/input.fits", rules, tmp_path)
    assert (dest / "input.fits").read_text() == "remote-bytes-17\n"
    assert hits == ["/data/input.fits"] and other_hits == []


def test_the_socket_is_checked_even_if_a_resolver_lets_a_forbidden_address_through(
    web, tmp_path, monkeypatch
):
    """The address is checked where the socket is made, before it connects: a resolver that
    lets a forbidden address through (or answers differently the second time) sends nothing."""
    base, hits = web
    port = int(base.rsplit(":", 1)[1])

    async def unchecked(self, host: str, port: int = 0, family: Any = socket.AF_INET):
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": 0}]  # fmt: skip

    monkeypatch.setattr(fetch.GuardedResolver, "resolve", unchecked)
    text = refusal(f"http://public.example:{port}/data/input.fits", StagingRules(), tmp_path)
    assert "staging rule address: 127.0.0.1 is a loopback address" in text
    assert hits == []


def test_downloads_run_as_the_sessions_user_too(as_root, web, tmp_path):
    base, _ = web
    tmp_path.chmod(0o755)
    rules = StagingRules(allow_networks=(ipaddress.ip_network("127.0.0.1/32"),))
    assert "staging rule address" in refusal(METADATA, rules, tmp_path, user="nobody")
    dest = staged(f"{base}/data/input.fits", rules, tmp_path, user="nobody")
    assert (dest / "input.fits").read_text() == "remote-bytes-17\n"
    assert (dest / "input.fits").stat().st_uid == pwd.getpwnam("nobody").pw_uid


# --- a real node on local and slurm -------------------------------------------------------------


@pytest.fixture(params=["local", "slurm"])
def real_node(request: pytest.FixtureRequest, site_files: dict[str, Path]) -> Iterator[Node]:
    """A real node process on podman or Slurm whose data root is ``site_files['root']``."""
    kind = request.param
    platform = real_platform(kind)
    if not _podman_image():
        unavailable(f"podman with the image {IMAGE} (run .ci/setup-podman.sh)")
    tmp = site_files["root"].parent
    for path in (tmp, site_files["root"]):
        path.chmod(0o755)
    config = {
        **node_config(site_files),
        "offers": {"granularity": "PT1S", "max_offers": 1},
        "lifecycle": {"workdir": str(site_files["workdir"]), "poll_interval": "PT1S"},
        "platforms": [platform],
    }
    config.pop("server", None)
    path = tmp / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    node = start_node(path, tmp, f"node-{kind}")
    (inspector,) = build_platforms([PlatformConfig.model_validate(platform)])
    yield node
    node.stop()
    for name in inspector.list_work() or set():
        if name.removeprefix("ebroker-") in os.listdir(site_files["workdir"]):
            inspector.remove_work(name)


def _podman_image() -> bool:
    try:
        done = subprocess.run(["podman", "image", "exists", IMAGE], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _session_request(location: str) -> dict[str, Any]:
    doc = data_request(location, executable={
        "kind": DOCKER, "image": {"locations": [IMAGE]},
        "command": ["/bin/busybox", "sh", "-c", "cat /input/*"],
    })  # fmt: skip
    doc["data"][0]["meta"]["name"] = "input"
    doc["compute"]["volumes"] = [
        {"kind": MOUNT, "path": "/input", "mode": "READONLY", "resource": "input"}
    ]
    doc["schedule"] = {"requested": {"duration": "PT2M"}}
    return doc


@pytest.mark.slow
def test_a_real_node_refuses_hostile_locations_and_a_swapped_link(real_node, site_files):
    """Through a real node on podman and on Slurm: each hostile location is a NO naming its
    rule. A file that is fine when offered and replaced by a link to /etc/shadow before the
    session is accepted is refused by staging itself: the session fails, and neither its
    messages nor its logs hold the secret."""
    for location, rule in hostile_locations(site_files).items():
        r = httpx.post(f"{real_node.url}/requests", json=_session_request(location), timeout=30)
        assert rules_named(r.json()) == {"/data/0/location": rule}, location
    swapped = site_files["root"] / "later.txt"
    swapped.write_text("harmless\n")
    r = httpx.post(f"{real_node.url}/requests", json=_session_request(swapped.as_uri()),
                   timeout=30)  # fmt: skip
    assert r.json()["result"] == "YES", r.text
    swapped.unlink()
    swapped.symlink_to(site_files["secret"])
    offer = r.json()["offers"][0]["meta"]["uuid"]
    accepted = httpx.post(f"{real_node.url}/sessions/{offer}", json=ACCEPT, timeout=30)
    assert accepted.status_code == 200, accepted.text
    deadline = time.monotonic() + 90
    while (doc := httpx.get(f"{real_node.url}/sessions/{offer}", timeout=30).json())[
        "phase"
    ] not in ("FAILED", "COMPLETED", "CANCELLED"):
        assert time.monotonic() < deadline, doc["phase"]
        time.sleep(0.3)
    text = " | ".join(m["message"] for m in doc["meta"]["messages"])
    assert doc["phase"] == "FAILED", text
    assert "staging rule file-roots" in text, text
    logs = httpx.get(f"{real_node.url}/sessions/{offer}/logs", timeout=30)
    assert "top-secret" not in text and "top-secret" not in logs.text
