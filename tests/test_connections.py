"""Connection hygiene of a real ``ebroker serve`` process: slow and silent clients, huge heads,
slow bodies, and a slowloris of more clients than the node may open files.

The limits are ``server.header_timeout``, ``body_timeout``, ``keep_alive_timeout``,
``max_header_bytes`` and ``max_connections`` (``broker_core/http/server.py``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import selectors
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from broker_core.config import ConfigError, ServerConfig
from broker_core.http import server
from ebroker.cli import main
from tests.conftest import POOL_CONFIG, unavailable
from tests.nodes import Node, start_node

SLOW_HEAD = b"GET /health/live HTTP/1.1\r\nHost: slow\r\nX-Slow: "


def write_config(path: Path, **server_options: Any) -> Path:
    config = {
        **POOL_CONFIG,
        "database": {"url": f"sqlite:///{path.parent / 'node.db'}"},
        "lifecycle": {"enabled": False},
        "server": server_options,
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A node with short timeouts, so that waiting for them takes little time."""
    folder = tmp_path_factory.mktemp("quick")
    config = write_config(
        folder / "node.yaml", header_timeout="PT2S", body_timeout="PT2S", keep_alive_timeout="PT2S"
    )
    node = start_node(config, folder, "quick")
    yield node
    node.stop()


def address(node: Node) -> tuple[str, int]:
    host, port = node.url.removeprefix("http://").split(":")
    return host, int(port)


def connect(node: Node) -> socket.socket:
    sock = socket.create_connection(address(node), timeout=10)
    sock.settimeout(10)
    return sock


def closed_within(sock: socket.socket, seconds: float) -> tuple[float, bytes]:
    """(seconds until the node closed ``sock``, what it wrote before)."""
    start, received = time.monotonic(), b""
    sock.settimeout(seconds)
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(4096):
            received += chunk
    return time.monotonic() - start, received


def still_answers(node: Node) -> None:
    assert httpx.get(f"{node.url}/health/live", timeout=5).status_code == 200


# --- the limits one at a time ----------------------------------------------------------------


def test_a_silent_connection_is_closed_after_the_header_timeout(quick: Node) -> None:
    with connect(quick) as sock:
        waited, received = closed_within(sock, 10)
    assert 1.5 <= waited <= 6, waited
    assert received == b""  # nothing was asked, so nothing is answered


def test_a_head_sent_byte_by_byte_is_a_408_after_the_header_timeout(quick: Node) -> None:
    with connect(quick) as sock:
        sock.sendall(SLOW_HEAD)
        start, received = time.monotonic(), b""
        sock.settimeout(0.25)
        while time.monotonic() - start < 10:
            try:
                sock.sendall(b"x")
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
    assert time.monotonic() - start <= 6
    assert received.startswith(b"HTTP/1.1 408 "), received[:80]


def test_a_body_that_does_not_arrive_is_cut_after_the_body_timeout(quick: Node) -> None:
    with connect(quick) as sock:
        sock.sendall(
            b"POST /requests HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"executable": '
        )
        waited, _ = closed_within(sock, 10)
    assert 1.5 <= waited <= 6, waited
    still_answers(quick)


def test_a_20_mib_header_is_refused_with_a_431(quick: Node) -> None:
    with connect(quick) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Huge: ")
        sent = 0
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < 20 * 2**20:
                sock.sendall(b"a" * 65536)
                sent += 65536
        _, received = closed_within(sock, 5)
    assert sent < 20 * 2**20, "the node read a 20 MiB header"
    assert received.startswith(b"HTTP/1.1 431 "), received[:80]
    still_answers(quick)


def read_answer(sock: socket.socket) -> bytes:
    """One whole answer on a kept-alive connection: its head, then Content-Length bytes (a
    server may send them in separate writes, so one recv can hold the head alone)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed mid-answer: {data[:80]!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
         if line.lower().startswith(b"content-length:")),
        0,
    )  # fmt: skip
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, "connection closed mid-body"
        body += chunk
    assert len(body) == length, "more bytes than the answer's Content-Length"
    return head + b"\r\n\r\n" + body


def test_heads_within_the_limit_are_served(quick: Node) -> None:
    """A head just under max_header_bytes (a large token, say), and a head whose blank line is
    split across two reads, are answered; so are two requests on one kept-alive connection."""
    padding = "p" * 30_000
    r = httpx.get(f"{quick.url}/health/live", headers={"X-Pad": padding}, timeout=5)
    assert r.status_code == 200
    with connect(quick) as sock:
        for _ in range(2):
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r")
            time.sleep(0.2)
            sock.sendall(b"\n")
            answer = read_answer(sock)
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]
            time.sleep(0.5)  # idle, within keep_alive_timeout


def test_an_idle_kept_alive_connection_is_closed(quick: Node) -> None:
    with connect(quick) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(sock).startswith(b"HTTP/1.1 200 ")
        waited, _ = closed_within(sock, 10)
    assert waited <= 6, waited


# --- max_connections from the open-file limit ------------------------------------------------


class FakeLimits:
    def __init__(self, soft: int, hard: int) -> None:
        self.soft, self.hard = soft, hard

    def getrlimit(self, _which: int) -> tuple[int, int]:
        return self.soft, self.hard

    def setrlimit(self, _which: int, limits: tuple[int, int]) -> None:
        if limits[0] > self.hard:
            raise ValueError("not allowed")
        self.soft = limits[0]


@pytest.fixture
def rlimit(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLimits]:
    fake = FakeLimits(1024, 1024)
    monkeypatch.setattr(server.resource, "getrlimit", fake.getrlimit)
    monkeypatch.setattr(server.resource, "setrlimit", fake.setrlimit)
    yield fake


def test_max_connections_defaults_to_what_the_open_file_limit_leaves(rlimit: FakeLimits) -> None:
    limits = server.connection_limits(ServerConfig())
    assert limits.max_connections == 1024 - server.FD_RESERVE
    rlimit.soft, rlimit.hard = 1024, 65536  # a soft limit below the hard one is raised
    assert server.connection_limits(ServerConfig()).max_connections == 1000
    assert rlimit.soft == 1000 + server.FD_RESERVE


def test_a_max_connections_the_open_file_limit_cannot_hold_stops_start_up(
    rlimit: FakeLimits,
) -> None:
    with pytest.raises(ConfigError, match=r"server\.max_connections: 5000 connections need"):
        server.connection_limits(ServerConfig(max_connections=5000))
    assert server.connection_limits(ServerConfig(max_connections=500)).max_connections == 500


def test_check_config_says_what_the_open_file_limit_allows(
    rlimit: FakeLimits, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "node.yaml", max_connections=5000)
    assert main(["check-config", "-c", str(config)]) == 2
    assert "server.max_connections: 5000 connections need" in capsys.readouterr().err
    write_config(tmp_path / "node.yaml")
    assert main(["check-config", "-c", str(config)]) == 0
    assert f"connections: at most {1024 - server.FD_RESERVE} per worker" in capsys.readouterr().out


# --- the slowloris ---------------------------------------------------------------------------


class Slowloris:
    """``count`` clients that each send a request head a byte at a time, and reconnect when the
    node closes them, from one thread."""

    def __init__(self, target: tuple[str, int], count: int) -> None:
        self.target, self.count = target, count
        self.selector = selectors.DefaultSelector()
        self.stop = threading.Event()
        self.opened = self.closed_by_node = 0
        self.thread = threading.Thread(target=self.run, name="slowloris", daemon=True)

    def open_one(self) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        code = sock.connect_ex(self.target)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            return
        self.selector.register(sock, selectors.EVENT_WRITE | selectors.EVENT_READ, [False])
        self.opened += 1

    def drop(self, sock: socket.socket) -> None:
        self.selector.unregister(sock)
        sock.close()
        self.closed_by_node += 1

    def run(self) -> None:
        while len(self.selector.get_map()) < self.count:
            self.open_one()
        while not self.stop.is_set():
            for key, events in self.selector.select(timeout=0.5):
                sock, started = key.fileobj, key.data
                assert isinstance(sock, socket.socket)
                try:
                    if events & selectors.EVENT_READ:
                        sock.recv(4096)  # a 408, a reset or the end: closed either way
                        self.drop(sock)
                    elif not started[0]:
                        sock.send(SLOW_HEAD)
                        started[0] = True
                        self.selector.modify(sock, selectors.EVENT_READ, started)
                except OSError:
                    self.drop(sock)
            for key in list(self.selector.get_map().values()):  # one more byte each
                if key.data[0]:
                    try:
                        key.fileobj.send(b"x")  # type: ignore[union-attr]
                    except OSError:
                        self.drop(key.fileobj)  # type: ignore[arg-type]
            while len(self.selector.get_map()) < self.count:  # reconnect what was closed
                self.open_one()
            time.sleep(0.5)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.slow
def test_more_slow_clients_than_open_files_leave_the_node_answering(tmp_path: Path) -> None:
    """1,100 slow clients against a node that may open 1,024 files (the finding that took one
    down), at the default limits: a fresh client is still answered, promptly, every time, and
    the node never runs out of files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1400:
        unavailable(f"this test opens 1,100 sockets; the open-file limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1400), hard))
    node = start_node(write_config(tmp_path / "node.yaml"), tmp_path, "slowloris", open_files=1024)
    attack = Slowloris(address(node), 1100)
    try:
        attack.thread.start()
        deadline = time.monotonic() + 60
        while attack.opened < 1100 and time.monotonic() < deadline:
            time.sleep(0.1)
        peak = 0
        answered = []
        for _ in range(8):
            time.sleep(0.5)
            peak = max(peak, open_files(node.process.pid))
            start = time.monotonic()
            r = httpx.get(f"{node.url}/health/live", timeout=5)
            answered.append((r.status_code, time.monotonic() - start))
            peak = max(peak, open_files(node.process.pid))
    finally:
        attack.stop.set()
        attack.thread.join(timeout=30)
        output = node.output()
        node.stop()
    assert attack.opened >= 1100
    assert attack.closed_by_node > 0, "the node closed none of the slow clients"
    assert [status for status, _ in answered] == [200] * 8
    assert max(seconds for _, seconds in answered) < 2, answered
    assert peak < 1024, f"the node held {peak} files"
    assert "Too many open files" not in output and "out of system resource" not in output
    assert "closing those that wait longest" in output


@pytest.mark.slow
def test_ctrl_c_stops_the_node_without_a_traceback(tmp_path: Path) -> None:
    """SIGINT (Ctrl-C, or a supervisor stopping the node) is a normal stop: uvicorn re-raises
    the signal it shut down on, which reached the user as a KeyboardInterrupt traceback."""
    node = start_node(write_config(tmp_path / "node.yaml"), tmp_path, "interrupted")
    node.process.send_signal(signal.SIGINT)
    assert node.process.wait(timeout=20) == 0
    assert "Traceback" not in node.output(), node.output()[-3000:]
