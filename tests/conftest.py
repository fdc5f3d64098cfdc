"""Shared fixtures: a broker node on a fresh SQLite file or a fresh PostgreSQL database.

PostgreSQL tests use ``EBROKER_TEST_PG_URL`` (default: the machine's local server). When
``EBROKER_REQUIRE_INTEGRATION=1`` (set by ``.ci/run``) an unavailable integration dependency
fails the test instead of skipping it, so a green CI run means the real thing was exercised.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from broker_core.broker import Broker
from broker_core.config import NodeConfig, parse_config
from broker_core.db import migrate
from broker_core.http.app import create_app
from broker_core.node import build_broker
from tests.oidc_issuer import OidcIssuer

DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REQUIRE = os.environ.get("EBROKER_REQUIRE_INTEGRATION") == "1"

POOL_CONFIG: dict[str, Any] = {
    "platforms": [
        {
            "name": "sim",
            "type": "simulated",
            "options": {"base_preparation": "PT0S", "image_pull": "PT0S", "data_staging": "PT0S"},
            "pools": [
                {
                    "name": "main",
                    "inventories": {
                        "cores": {"total": 16},
                        "memory": {"total": 64},
                        "storage": {"total": 1000},
                    },
                }
            ],
        }
    ],
    "server": {"validate_responses": True},
    # the tests ask as the anonymous caller, as one user who may hold without limit; the hold
    # limits are tested on their own (tests/test_fair_holds.py)
    "holds": {"anonymous": {}},
    # platforms that make files (storage, staged data, logs) keep them out of the repository
    "lifecycle": {"workdir": str(Path(tempfile.gettempdir()) / "ebroker-test-sessions")},
}


def unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"integration dependency unavailable (EBROKER_REQUIRE_INTEGRATION=1): {reason}")
    pytest.skip(reason)


# The suite runs on pytest-xdist workers (pyproject's addopts: ``-n auto --dist loadgroup``).
# Tests that share one real resource are in one xdist group, which one worker runs, a test at
# a time: the OpenStack tests (they resize the one fake compute host and count its Placement
# usage) and the Slurm tests (reservations and jobs on the one-node cluster). A module is in a
# group whole, or only its tests whose name (with its parameters) names the group.
GROUPS: dict[str, tuple[str, bool]] = {
    "test_platform_openstack_e2e.py": ("openstack", True),
    "test_openstack_cinder_cloud.py": ("openstack", True),
    "test_platform_slurm.py": ("slurm", True),
    "test_accelerators_slurm.py": ("slurm", True),
    "test_platforms_e2e.py": ("slurm", False),
    "test_staging_sandbox.py": ("slurm", False),
}


def _set_node_id(item: pytest.Item, nodeid: str) -> None:
    """pytest 9 keeps an item's node id as ``item._id`` (xdist 3.8 still writes ``_nodeid``,
    which pytest 8 read)."""
    if hasattr(item, "_id"):
        item._id = type(item._id).parse(nodeid)
    else:
        item._nodeid = nodeid


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # the slow tests first (each module's in its order): their waits then overlap with the
    # other workers' tests, and the quick tests even out the end
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    # schemathesis (4.x, on pytest 9) gives the test of each operation its function's node id,
    # not its name (``test_x[GET /]``); xdist schedules by node id, so it would run only one
    for item in items:
        prefix, _, last = item.nodeid.rpartition("::")
        if item.name.startswith(f"{last}["):
            _set_node_id(item, f"{prefix}::{item.name}")
    seen: set[str] = set()
    for item in items:
        if item.nodeid in seen:
            raise pytest.UsageError(f"two tests have the node id {item.nodeid}")
        seen.add(item.nodeid)
    # the groups, as xdist's loadgroup reads them: a worker's node ids end in ``@<group>``
    # (xdist 3.8 sets that suffix where pytest 9 no longer reads it, so it is set here)
    grouping = bool(getattr(config.option, "loadgroup", False))  # set on xdist's workers
    for item in items:
        group, whole = GROUPS.get(item.path.name, (None, False))
        if group is not None and (whole or group in item.name):
            item.add_marker(pytest.mark.xdist_group(group))
        marks = sorted({str(m.args[0]) for m in item.iter_markers("xdist_group") if m.args})
        if grouping and marks and not item.nodeid.endswith(f"@{'_'.join(marks)}"):
            _set_node_id(item, f"{item.nodeid}@{'_'.join(marks)}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if REQUIRE and skipped:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    url = os.environ.get("EBROKER_TEST_PG_URL", DEFAULT_PG)
    try:
        engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        engine.dispose()
    except Exception as exc:
        unavailable(f"PostgreSQL at {url} unavailable: {exc}")
    return url


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    name = f"ebroker_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ebroker.db'}"


def make_config(database_url: str, **overrides: Any) -> NodeConfig:
    data: dict[str, Any] = {**POOL_CONFIG, "database": {"url": database_url}}
    for key, value in overrides.items():
        data[key] = value
    return parse_config(data)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A node database at the head revision, made by the migrations once per worker."""
    path = tmp_path_factory.mktemp("migrated") / "ebroker.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


def _from_migrated(database_url: str, migrated: Path) -> None:
    """A node's SQLite database that does not exist yet starts as a copy of the migrated one:
    the same tables the node's own start-up would make, without running the migrations again
    (0.4 s of the 0.55 s a broker took to make). tests/test_migrations.py runs them."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        target = Path(url.database)
        if not target.exists() and target.parent.is_dir():
            shutil.copyfile(migrated, target)


@pytest.fixture
def broker_factory(migrated_sqlite: Path) -> Iterator[Callable[..., Broker]]:
    made: list[Broker] = []

    def factory(database_url: str, **overrides: Any) -> Broker:
        _from_migrated(database_url, migrated_sqlite)
        broker = build_broker(make_config(database_url, **overrides))
        made.append(broker)
        return broker

    yield factory
    for broker in made:
        broker.close()


@pytest.fixture
def broker(broker_factory: Callable[..., Broker], sqlite_url: str) -> Broker:
    return broker_factory(sqlite_url)


@pytest.fixture
def client(broker: Broker) -> Iterator[TestClient]:
    with TestClient(create_app(broker), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def client_factory() -> Iterator[Callable[[Broker], TestClient]]:
    clients: list[TestClient] = []

    def factory(broker: Broker) -> TestClient:
        c = TestClient(create_app(broker), raise_server_exceptions=False)
        c.__enter__()
        clients.append(c)
        return c

    yield factory
    for c in clients:
        c.__exit__(None, None, None)


DOCKER = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/executable/docker-container.yaml"
COMPUTE = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/compute/simple-compute-resource.yaml"


def request_doc(
    cores: tuple[int, int] = (1, 1), memory: tuple[int, int] = (1, 1), **schedule: Any
) -> dict[str, Any]:
    """A docker-container request for a range of cores and memory."""
    doc: dict[str, Any] = {
        "executable": {"kind": DOCKER, "image": {"locations": ["localhost/busybox:latest"]}},
        "compute": {
            "kind": COMPUTE,
            "cores": {"min": cores[0], "max": cores[1]},
            "memory": {"min": memory[0], "max": memory[1]},
        },
    }
    if schedule:
        doc["schedule"] = {"requested": schedule}
    return doc


ACCEPT = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}


def offered_start(offer: dict[str, Any]) -> str:
    """The instant an offer starts at: its ``schedule.available.start`` is an ISO-8601
    interval (``<instant>/PT0S``), as the standard's ScheduleStartDurationInterval has it."""
    return offer["schedule"]["available"]["start"].split("/")[0]


@pytest.fixture(scope="module")
def issuer() -> Iterator[OidcIssuer]:
    """A test OIDC issuer (tests/oidc_issuer.py) for the module: its keys, discovery document
    and JWKS served over HTTP, tokens made with ``issuer.token(...)``."""
    with OidcIssuer() as oidc:
        yield oidc
