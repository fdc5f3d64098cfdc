"""Real node server processes for tests (start ``ebroker serve``, wait until ready, stop, kill)
and what their client threads share."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ready(self, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return True
            time.sleep(0.1)
        return False

    def kill(self) -> None:
        """SIGKILL the node's whole process group: no shutdown handler, no last commit."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def start_node(
    config_file: Path,
    workdir: Path,
    name: str,
    command: str = "serve",
    port: int | None = None,
    open_files: int | None = None,
    log_level: str = "WARNING",
    env: dict[str, str] | None = None,
) -> Node:
    """``ebroker serve`` (or ``ebroker aggregator``) on a free port (or ``port``), ready;
    ``open_files``: the process's RLIMIT_NOFILE (soft and hard); ``env``: added to this
    process's environment."""
    limit = None
    if open_files is not None:

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    chosen = port
    for attempt in range(3):  # a free port can be taken before the server binds it
        port = chosen or free_port()
        log = workdir / f"{name}-{attempt}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "ebroker", command, "-c", str(config_file),
                 "--port", str(port), "--log-level", log_level],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, preexec_fn=limit,
            )  # fmt: skip
        node = Node(f"http://127.0.0.1:{port}", process, log)
        if node.ready():
            return node
        node.stop()
    pytest.fail(f"{command} {name} did not become ready:\n{node.output()[-5000:]}")


@dataclass
class Tally:
    """Counts and failures recorded by many client threads at once."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def count(self, *names: str) -> None:
        with self.lock:
            self.counts.update(names)

    def fail(self, text: str) -> None:
        with self.lock:
            self.failures.append(text)


def oidc_node(issuer: Any, tmp: Path, site: str, name: str = "node", **sections: Any) -> Node:
    """A node on SQLite in ``tmp`` whose callers bring tokens of the test ``issuer``
    (``test:admins`` its admins), with one pool, unlimited holds that a new request does not
    replace, and a quick lifecycle; ``sections`` replace whole sections of that config."""
    from tests.conftest import POOL_CONFIG

    config = {
        **POOL_CONFIG,
        "site": {"name": site},
        "database": {"url": f"sqlite:///{tmp / 'node.db'}"},
        "auth": {**issuer.auth_config(), "admin_groups": ["test:admins"]},
        "holds": {"caller": {}, "anonymous": {}, "replace": False},
        "lifecycle": {"workdir": str(tmp / "sessions"), "poll_interval": "PT1S"},
        **sections,
    }
    path = tmp / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    return start_node(path, tmp, name)
