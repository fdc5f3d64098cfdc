"""The node configuration: validated at start-up with errors naming the offending key."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from broker_core.config import ConfigError, load_config, parse_config
from platforms.registry import build_platforms
from platforms.simulated import SimulatedPlatform
from policies.registry import build_policies
from tests.nodes import free_port


def test_no_config_means_sqlite_and_the_simulated_host_platform():
    config = load_config(None)
    assert config.database.url.startswith("sqlite:///")
    assert config.server.host == "127.0.0.1"
    (platform,) = build_platforms(config.platforms)
    assert isinstance(platform, SimulatedPlatform)
    (pool,) = platform.pools()
    assert pool.inventories["cores"].total == os.cpu_count()
    assert pool.inventories["memory"].total >= 1


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"sever": {}}, "sever"),
        ({"offers": {"max_offers": 0}}, "offers.max_offers"),
        ({"offers": {"hold": "soon"}}, "offers.hold"),
        ({"offers": {"hold": "-PT5M"}}, "offers.hold"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"platforms": [{"name": "x", "pools": [{"name": "p", "inventories": {}}]}]},
         "platforms.0.pools.0.inventories"),
        ({"platforms": [{"name": "x", "pools": [{"name": "p", "inventories": {
            "cores": {"total": 4, "reserved": 8}}}]}]}, "platforms.0.pools.0.inventories.cores"),
        ({"platforms": [{"name": "x", "pools": [{"name": "p", "inventories": {
            "cpus": {"total": 4}}}]}]}, "platforms.0.pools.0.inventories.cpus"),
        ({"platforms": [{"name": "Bad Name"}]}, "platforms.0.name"),
        ({"platforms": [{"name": "a"}, {"name": "a"}]}, "platforms"),
    ],
)  # fmt: skip
def test_bad_keys_and_values_are_named(data, named):
    with pytest.raises(ConfigError) as info:
        parse_config(data, "node.yaml")
    assert named in str(info.value) and "node.yaml" in str(info.value)


def test_unknown_platform_types_and_options_are_named():
    config = parse_config({"platforms": [{"name": "x", "type": "mainframe"}]})
    with pytest.raises(ConfigError, match=r"platforms\.0\.type: unknown platform type 'mainframe'"):
        build_platforms(config.platforms)
    config = parse_config({"platforms": [{"name": "x", "options": {"image_pul": "PT1S"}}]})
    with pytest.raises(ConfigError, match=r"platforms\.0\.options.*image_pul"):
        build_platforms(config.platforms)


def test_a_file_that_is_not_yaml_or_not_there(tmp_path: Path):
    bad = tmp_path / "node.yaml"
    bad.write_text("site: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_the_example_config_is_valid():
    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "examples" / "node.yaml")
    assert build_platforms(config.platforms)
    assert not config.auth.anonymous and config.auth.issuers
    assert [p.name for p in build_policies(config.policies, None)] == ["site-rules", "allocations"]


def test_a_bad_policy_option_stops_start_up_naming_it(tmp_path: Path):
    access = [{"name": "a", "groups": ["x"], "pools": 3}]
    data = {"policies": [{"name": "rules", "type": "local-rules", "options": {"access": access}}]}
    with pytest.raises(ConfigError) as info:
        build_policies(parse_config(data).policies, None)
    assert "policies.0.options.access.0.pools" in str(info.value)
    data = {"policies": [{"name": "rules", "type": "no-such-policy"}]}
    with pytest.raises(ConfigError, match="unknown policy type 'no-such-policy'"):
        build_policies(parse_config(data).policies, None)
    with pytest.raises(ConfigError, match="anonymous access is off and no issuers"):
        parse_config({"auth": {"anonymous": False}})
    issuer = {"name": "egi", "issuer": "https://aai.example.org", "audience": ["ebroker"]}
    for key, value, named in (("jwks_cache", "PT0S", "auth.issuers.0.jwks_cache"),
                              ("algorithms", ["HS256"], "auth.issuers.0.algorithms"),
                              ("leeway", "-PT1S", "auth.issuers.0.leeway")):  # fmt: skip
        with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
            parse_config({"auth": {"issuers": [{**issuer, key: value}]}})


def test_cli_refuses_a_bad_config_with_a_message(tmp_path: Path):
    bad = tmp_path / "node.yaml"
    bad.write_text("offers:\n  max_ofers: 3\n")
    result = subprocess.run(
        [sys.executable, "-m", "ebroker", "serve", "-c", str(bad)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "offers.max_ofers" in result.stderr


def test_serve_with_no_config_starts_a_node_and_prints_its_url(tmp_path: Path):
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ebroker", "serve", "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert any(f"http://127.0.0.1:{port}" in line for line in lines), lines
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert r.json()["status"] == "ok"
        node = httpx.get(f"http://127.0.0.1:{port}/node").json()
        assert node["platforms"][0]["type"] == "simulated"
        assert (tmp_path / "ebroker.db").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _children(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as stat:
                if entry.isdigit() and stat.read().rsplit(")", 1)[1].split()[1] == str(pid):
                    children.append(int(entry))
        except (OSError, IndexError):
            continue
    return children


def test_serve_with_several_workers(tmp_path: Path):
    port = free_port()
    config = tmp_path / "node.yaml"
    config.write_text(
        f"server: {{port: {port}, workers: 2}}\n"
        "holds: {anonymous: {}}\n"  # six anonymous requests, each one held
        f"database: {{url: 'sqlite:///{tmp_path / 'workers.db'}'}}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "ebroker", "serve", "-c", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120  # two workers starting on a loaded 2-core machine
        ready = False
        while time.time() < deadline and not ready:
            try:
                ready = httpx.get(f"{base}/health/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.2)
        assert ready
        from tests.conftest import request_doc

        answers = [httpx.post(f"{base}/requests", json=request_doc(), timeout=10) for _ in range(6)]
        assert all(r.status_code == 200 and r.json()["result"] == "YES" for r in answers)
        assert len(_children(proc.pid)) >= 2  # the worker processes
    finally:
        proc.terminate()
        proc.wait(timeout=20)
