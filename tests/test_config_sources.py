"""Configuration as Kubernetes delivers it: the YAML file, ``EBROKER_<SECTION>__<KEY>``
environment variables over it, secrets read from files (``*_FILE``, ``{secret_file: path}``),
and secrets masked in every log line and error; worker processes are handed the configuration
in a private file, not in their environment."""

from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from aggregator.config import load_aggregator_config
from broker_core.auth.basic import hash_password
from broker_core.config import ConfigError, load_config
from broker_core.secrets import MASK, Secrets, mask_logs
from tests.conftest import request_doc
from tests.nodes import free_port


def _yaml(tmp_path: Path, text: str | dict) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(text if isinstance(text, str) else yaml.safe_dump(text))
    return path


def _secret_file(path: Path) -> dict[str, str]:
    return {"secret_file": str(path)}


def test_the_environment_overrides_the_file_key_by_key(tmp_path: Path):
    path = _yaml(tmp_path, "site: {name: from-file, description: kept}\nserver: {port: 8001}\n")
    config = load_config(
        path,
        {
            "EBROKER_SITE__NAME": "from-env",
            "EBROKER_SERVER__PORT": "9001",
            "EBROKER_OFFERS__HOLD": "PT2M",
            "EBROKER_PLATFORMS": '[{"name": "sim", "type": "simulated"}]',
            "EBROKER_REQUIRE_INTEGRATION": "1",  # not a section: another tool's variable
        },
    )
    assert (config.site.name, config.site.description) == ("from-env", "kept")
    assert config.server.port == 9001
    assert config.offers.hold.total_seconds() == 120
    assert [p.name for p in config.platforms] == ["sim"]
    assert load_config(path, {}).site.name == "from-file"  # the file alone


def test_a_secret_comes_from_a_file_named_by_a_variable(tmp_path: Path):
    secret = tmp_path / "database-url"
    secret.write_text("sqlite:///from-a-secret.db\n")  # as kubectl create secret leaves it
    config = load_config(None, {"EBROKER_DATABASE__URL_FILE": str(secret)})
    assert config.database.url == "sqlite:///from-a-secret.db"
    # the variable wins over the file's key, and the *_FILE form over the plain one
    path = _yaml(tmp_path, "database: {url: 'sqlite:///in-the-file.db'}\n")
    both = {"EBROKER_DATABASE__URL_FILE": str(secret), "EBROKER_DATABASE__URL": "sqlite:///x.db"}
    assert load_config(path, both).database.url == "sqlite:///from-a-secret.db"


def test_a_value_of_the_file_may_be_a_secret_file(tmp_path: Path):
    """``{secret_file: path}`` anywhere, plugin options and list items included."""
    (tmp_path / "hash").write_text(hash_password("correct horse") + "\n")
    (tmp_path / "token").write_text("upstream-token-1234")
    alice = {"name": "alice", "password_hash": _secret_file(tmp_path / "hash")}
    policy = {"name": "p", "type": "local-rules",
              "options": {"token": _secret_file(tmp_path / "token")}}  # fmt: skip
    path = _yaml(tmp_path, {"auth": {"basic": {"users": [alice]}}, "policies": [policy]})
    config = load_config(path, {})
    assert config.auth.basic.users[0].password_hash.startswith("$argon2")
    assert config.policies[0].options == {"token": "upstream-token-1234"}


def test_an_unreadable_secret_file_is_named_and_its_content_never_shown(tmp_path: Path):
    with pytest.raises(ConfigError) as missing:
        load_config(None, {"EBROKER_DATABASE__URL_FILE": str(tmp_path / "nothing-here")})
    assert "EBROKER_DATABASE__URL_FILE" in str(missing.value)
    assert "nothing-here" in str(missing.value)
    path = _yaml(tmp_path, f"database: {{url: {{secret_file: {tmp_path / 'gone'}}}}}\n")
    with pytest.raises(ConfigError) as in_file:
        load_config(path, {})
    assert "database.url" in str(in_file.value) and "gone" in str(in_file.value)
    big = tmp_path / "big"
    big.write_bytes(b"x" * (1 << 20))
    with pytest.raises(ConfigError, match="big"):
        load_config(None, {"EBROKER_DATABASE__URL_FILE": str(big)})


def test_a_bad_variable_is_named_in_the_error(tmp_path: Path):
    with pytest.raises(ConfigError) as bad:
        load_config(None, {"EBROKER_DATABASE__URLL": "x", "EBROKER_SERVER__PORT": "eighty"})
    text = str(bad.value)
    assert "database.urll" in text and "'url'" in text
    assert "(set by EBROKER_DATABASE__URLL)" in text
    assert "server.port" in text and "(set by EBROKER_SERVER__PORT)" in text
    with pytest.raises(ConfigError, match="environment"):
        load_config(None, {"EBROKER_PLATFORMS": "[not json"})


def test_an_error_never_repeats_a_secret(tmp_path: Path):
    """A secret from a file under a key the models refuse is masked in the message."""
    (tmp_path / "s").write_text("hunter2-is-my-password")
    path = _yaml(tmp_path, f"site: {{name: {{secret_file: {tmp_path / 's'}}}, extra: 1}}\n")
    with pytest.raises(ConfigError) as bad:
        load_config(path, {})
    assert "hunter2-is-my-password" not in str(bad.value)


def test_the_aggregator_reads_the_same_sources(tmp_path: Path):
    (tmp_path / "token").write_text("a-token-of-the-aggregator")
    path = tmp_path / "aggregator.yaml"
    upstream = {"name": "a", "url": "http://127.0.0.1:1", "token": _secret_file(tmp_path / "token")}
    path.write_text(yaml.safe_dump({"upstreams": [upstream]}))
    config = load_aggregator_config(path, {"EBROKER_SITE__NAME": "agg-from-env"})
    assert config.site.name == "agg-from-env"
    assert config.upstreams[0].token == "a-token-of-the-aggregator"


def test_secrets_are_found_by_key_and_in_urls():
    secrets = Secrets()
    secrets.collect(
        {
            "database": {"url": "postgresql+psycopg://broker:s3cr%40t-pw@db:5432/ebroker"},
            "policies": [{"options": {"api_key": "k-123456", "token_file": "/run/not-a-secret"}}],
            "site": {"name": "plain-name"},
        }
    )
    text = "connect postgresql+psycopg://broker:s3cr%40t-pw@db (s3cr@t-pw) with k-123456"
    masked = f"connect postgresql+psycopg://broker:{MASK}@db ({MASK}) with {MASK}"
    assert secrets.mask(text) == masked
    assert secrets.mask("/run/not-a-secret plain-name") == "/run/not-a-secret plain-name"


def test_log_records_are_masked_before_any_handler_sees_them(caplog):
    mask_logs(Secrets(["log-secret-98765"]))
    log = logging.getLogger("ebroker.test.secrets")
    with caplog.at_level(logging.INFO, logger="ebroker.test.secrets"):
        log.info("calling with %s", "log-secret-98765")
        try:
            raise RuntimeError("failed with log-secret-98765")
        except RuntimeError:
            log.exception("it broke")
    text = caplog.text
    assert "log-secret-98765" not in text
    assert text.count(MASK) >= 2 and "RuntimeError" in text


def _children(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                if handle.read().rsplit(")", 1)[1].split()[1] == str(pid):
                    children.append(int(entry))
        except (OSError, IndexError):
            continue
    return children


@pytest.mark.slow
def test_workers_are_handed_the_config_in_a_private_file_not_their_environment(tmp_path: Path):
    """Two workers, a secret from a file and a key from the environment: each worker has them
    (Basic auth works, the site's name is the variable's), no worker's environment holds the
    config or the secret, the hand-over file is private and gone when the node stops; the
    metrics are every worker's."""
    port = free_port()
    secret = hash_password("correct horse")
    (tmp_path / "hash").write_text(secret)
    alice = {"name": "alice", "password_hash": _secret_file(tmp_path / "hash")}
    config = _yaml(
        tmp_path,
        {
            "server": {"port": port, "workers": 2},
            "database": {"url": f"sqlite:///{tmp_path / 'workers.db'}"},
            "auth": {"anonymous": False, "basic": {"users": [alice]}},
        },
    )
    env = {**os.environ, "EBROKER_SITE__NAME": "site-from-env", "TMPDIR": str(tmp_path)}
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ebroker", "serve", "-c", str(config)],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            assert time.time() < deadline and proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        for _ in range(4):  # spread over both workers
            r = httpx.get(f"{base}/node", timeout=10)
            assert r.status_code == 200 and r.json()["site"]["name"] == "site-from-env", r.text
            r = httpx.post(f"{base}/requests", json=request_doc(), timeout=10,
                           auth=("alice", "correct horse"))  # fmt: skip
            assert r.status_code == 200 and r.json()["result"] == "YES", r.text
        assert httpx.post(f"{base}/requests", json=request_doc(), timeout=10).status_code == 401
        # every worker's counters, summed (prometheus-client's multiprocess mode): the five
        # POST /requests, the 401 among them
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        answered = [line for line in metrics.splitlines()
                    if line.startswith('ebroker_http_requests_total{operation="requestOffers"')]
        assert sum(float(line.rsplit(" ", 1)[1]) for line in answered) == 5  # fmt: skip
        workers = _children(proc.pid)
        assert len(workers) >= 2
        for pid in workers:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert secret.encode() not in environ
            assert b'"database"' not in environ  # no config document at all
        handed = list(tmp_path.glob("ebroker-workers-*/config.json"))
        assert len(handed) == 1
        assert stat.S_IMODE(handed[0].stat().st_mode) == 0o600
        assert stat.S_IMODE(handed[0].parent.stat().st_mode) == 0o700
        assert json.loads(handed[0].read_text())["config"]["site"]["name"] == "site-from-env"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert not list(tmp_path.glob("ebroker-workers-*"))
    assert secret not in log.read_text()
