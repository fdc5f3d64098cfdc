"""``ebroker demo``: a small federation on one machine, for trying the aggregator.

Two broker nodes (``site-a`` and ``site-b``, simulated platforms of different sizes, each with
its own SQLite database) and an aggregator over them, as three child processes. The configs are
written to a folder first, so that what runs can be read and reused as a starting point.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class Service:
    """One process of the demo: its name, the ``ebroker`` subcommand and its config."""

    name: str
    command: str
    port: int
    config: dict[str, Any]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def node_config(name: str, port: int, cores: int, folder: Path) -> dict[str, Any]:
    return {
        "site": {"name": name, "description": f"demo node {name} (simulated platform)"},
        "server": {"host": "127.0.0.1", "port": port},
        "database": {"url": f"sqlite:///{folder / f'{name}.db'}"},
        "lifecycle": {"workdir": str(folder / f"{name}-sessions")},
        "platforms": [
            {
                "name": "cluster",
                "type": "simulated",
                "pools": [
                    {
                        "name": "batch",
                        "inventories": {
                            "cores": {"total": cores},
                            "memory": {"total": cores * 4},
                            "storage": {"total": 1000},
                        },
                    }
                ],
            }
        ],
    }


def federation(folder: Path, base_port: int) -> list[Service]:
    """The demo's services: the aggregator on ``base_port``, the nodes on the next two."""
    nodes = [
        Service("site-a", "serve", base_port + 1, node_config("site-a", base_port + 1, 16, folder)),
        Service("site-b", "serve", base_port + 2, node_config("site-b", base_port + 2, 64, folder)),
    ]
    aggregator = {
        "site": {"name": "demo-federation"},
        "server": {"host": "127.0.0.1", "port": base_port},
        "database": {"url": f"sqlite:///{folder / 'aggregator.db'}"},
        "upstreams": [{"name": node.name, "url": node.url} for node in nodes],
    }
    return [*nodes, Service("aggregator", "aggregator", base_port, aggregator)]


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _ready(url: str) -> bool:
    with (
        contextlib.suppress(OSError, urllib.error.URLError),
        urllib.request.urlopen(f"{url}/health/ready", timeout=2) as answer,
    ):
        return bool(answer.status == 200)
    return False


@contextlib.contextmanager
def running(folder: Path, base_port: int, log_level: str = "WARNING") -> Iterator[list[Service]]:
    """Write the configs, start the services, wait until each is ready; stop them on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    services = federation(folder.resolve(), base_port)
    taken = [str(service.port) for service in services if _port_taken(service.port)]
    if taken:
        raise RuntimeError(
            f"port(s) {', '.join(taken)} already in use (another demo?); "
            f"choose others with --base-port"
        )
    processes: list[tuple[Service, subprocess.Popen[bytes]]] = []
    try:
        for service in services:  # the nodes first, so the aggregator finds them
            config_file = folder / f"{service.name}.yaml"
            config_file.write_text(yaml.safe_dump(service.config, sort_keys=False))
            log = (folder / f"{service.name}.log").open("wb")
            process = subprocess.Popen(
                [sys.executable, "-m", "ebroker", service.command,
                 "-c", str(config_file), "--log-level", log_level],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            processes.append((service, process))
            deadline = time.monotonic() + READY_TIMEOUT
            while not _ready(service.url):
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = (folder / f"{service.name}.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{service.name} did not start; its log ends:\n{tail}")
                time.sleep(0.2)
        yield services
    finally:
        for _service, process in reversed(processes):
            if process.poll() is None:
                process.terminate()
        for _service, process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def run(folder: Path, base_port: int, log_level: str) -> int:
    """Run the demo until interrupted (Ctrl-C or SIGTERM)."""
    stop = False

    def interrupted(*_args: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, interrupted)
    try:
        with running(folder, base_port, log_level) as services:
            print(f"ebroker demo: a federation of two nodes, configs and logs in {folder}/")
            for service in services:
                role = "aggregator" if service.command == "aggregator" else "node"
                print(f"  {service.name:<11} {role:<10} {service.url}   ({service.url}/ui)")
            print("Ask the aggregator for offers from both nodes, e.g.")
            print(f"  curl -s -X POST {services[-1].url}/requests -H 'Content-Type: "
                  "application/yaml' --data-binary @examples/requests/01-minimal.yaml")  # fmt: skip
            print("Ctrl-C stops all three.", flush=True)
            while not stop:
                time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        print(f"ebroker demo: {exc}", file=sys.stderr)
        return 1
    print("ebroker demo: stopped")
    return 0
