"""A second node started on the same SQLite file is told so (replicas may share on purpose)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from broker_core import neighbours
from broker_core.config import parse_config


def config(db: Path, site: str = "ebroker-node", port: int = 8080):  # type: ignore[no-untyped-def]
    return parse_config(
        {"site": {"name": site}, "server": {"port": port}, "database": {"url": f"sqlite:///{db}"}}
    )


def test_a_live_node_on_the_same_file_is_named(tmp_path: Path) -> None:
    db = tmp_path / "ebroker.db"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        folder = tmp_path / "ebroker.db.nodes"
        folder.mkdir()
        (folder / f"{sleeper.pid}.json").write_text(
            json.dumps({"pid": sleeper.pid, "url": "http://127.0.0.1:8080", "site": "ebroker-node"})
        )
        (warning,) = neighbours.register(config(db, port=8081))
        assert f"pid {sleeper.pid}" in warning and "http://127.0.0.1:8080" in warning
        assert "one booking table and one site name" in warning
        assert "--database" in warning and "--site-name" in warning
        assert (folder / f"{os.getpid()}.json").is_file()  # and this one is recorded in turn
    finally:
        sleeper.kill()
        sleeper.wait()
    # once it is gone, its entry is cleared and nobody is warned
    assert neighbours.register(config(db, port=8081)) == []
    assert not (tmp_path / "ebroker.db.nodes" / f"{sleeper.pid}.json").exists()


def test_another_file_or_postgres_is_nobodys_business(tmp_path: Path) -> None:
    assert neighbours.register(config(tmp_path / "a.db")) == []
    assert neighbours.register(config(tmp_path / "b.db", site="b")) == []
    pg = parse_config({"database": {"url": "postgresql+psycopg://u@127.0.0.1:1/x"}})
    assert neighbours.register(pg) == []
