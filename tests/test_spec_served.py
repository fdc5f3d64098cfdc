"""The spec a node and an aggregator serve is one a stranger's tools can use.

It is the spec as written in ``openapi/`` (with its ``$ref``s, not connexion's dereferenced
copy), its operations have short names, its server is the configured public URL, its examples
work unedited, and openapi-python-client makes a small client from it that talks to a node.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate
from starlette.testclient import TestClient

from aggregator.config import AggregatorConfig
from aggregator.http.app import HANDLERS as AGGREGATOR_HANDLERS
from aggregator.http.app import create_aggregator_app
from broker_core.config import parse_config
from broker_core.http.app import HANDLERS, SPEC, create_app, operation_resolver
from broker_core.node import build_broker
from tests.conftest import unavailable

PUBLIC_URL = "https://broker.example.org/ebroker"
OPERATION_IDS = {
    "getLandingPage", "requestOffers", "requestOffersLegacy", "getOfferSet", "getSession",
    "updateSession", "getSessionLogs", "executeDirect", "executeDirectLegacy", "getLiveness",
    "getReadiness", "getMetrics", "getNode", "getUsage", "getProject", "listSessions",
    "listOfferSets", "updateOfferSet", "drainPool", "undrainPool", "listMaintenance",
    "bookMaintenance", "deleteMaintenance", "changeInventory", "listAuditEvents",
    "getPoolUsage", "getSessionFeed", "createFeedToken",
}  # fmt: skip
MAX_SPEC_BYTES = 108_000  # 102,256 with combined requests (aggregators)
# 98 before the admin controls, 117 with them, 132 with notifications (the request's notify
# and the webhook's NotificationEvent), about 136 with combined requests (aggregators),
# about 146 with recurring series; connexion's dereferenced copy made 2,854
MAX_MODELS = 152


def default_node(tmp_path: Path, **server: Any) -> Any:
    """A node as ``ebroker`` makes it from a config naming only its database: one simulated
    platform with its default pool."""
    config = parse_config({
        "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
        "lifecycle": {"workdir": str(tmp_path / "sessions")},
        "server": {"validate_responses": True, **server},
    })  # fmt: skip
    return build_broker(config)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[TestClient]:
    broker = default_node(tmp_path, public_url=PUBLIC_URL)
    with TestClient(create_app(broker, reaper=False, lifecycle=False),
                    raise_server_exceptions=False) as client:  # fmt: skip
        yield client
    broker.close()


@pytest.fixture
def aggregator(tmp_path: Path) -> Iterator[TestClient]:
    config = AggregatorConfig.model_validate({
        "server": {"public_url": PUBLIC_URL + "/"},
        "database": {"url": f"sqlite:///{tmp_path / 'agg.db'}"},
        "upstreams": [{"name": "node", "url": "http://127.0.0.1:9"}],
    })  # fmt: skip
    with TestClient(create_aggregator_app(config), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture(params=["node", "aggregator"])
def service(request: pytest.FixtureRequest) -> TestClient:
    return request.getfixturevalue(request.param)


def refs(document: Any) -> int:
    if isinstance(document, dict):
        return ("$ref" in document) + sum(refs(v) for v in document.values())
    if isinstance(document, list):
        return sum(refs(v) for v in document)
    return 0


def operation_ids(spec: dict[str, Any]) -> set[str]:
    return {op["operationId"] for ops in spec["paths"].values() for op in ops.values()
            if isinstance(op, dict) and "operationId" in op}  # fmt: skip


def example(spec: dict[str, Any], path: str, method: str = "post") -> Any:
    """The request body example of an operation, its ``$ref`` followed as a client would."""
    body = spec["paths"][path][method]["requestBody"]
    if "$ref" in body:
        body = spec["components"]["requestBodies"][body["$ref"].rsplit("/", 1)[1]]
    (found,) = body["content"]["application/json"]["examples"].values()
    if "$ref" in found:
        found = spec["components"]["examples"][found["$ref"].rsplit("/", 1)[1]]
    return found["value"]


def test_the_spec_is_served_as_written(service):
    r = service.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert len(r.content) < MAX_SPEC_BYTES, len(r.content)
    served = r.json()
    assert refs(served) > 100
    written = yaml.safe_load(SPEC.read_text())
    assert {k: v for k, v in served.items() if k != "servers"} == json.loads(
        json.dumps({k: v for k, v in written.items() if k != "servers"}, default=str)
    )
    validate(served)


def test_the_yaml_is_the_same_spec(service):
    r = service.get("/openapi.yaml")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/yaml")
    assert yaml.safe_load(r.text) == service.get("/openapi.json").json()


def test_the_server_is_the_public_url(service):
    assert service.get("/openapi.json").json()["servers"] == [{"url": PUBLIC_URL}]


def test_without_a_public_url_the_server_stays_relative(tmp_path):
    with TestClient(create_app(default_node(tmp_path), reaper=False, lifecycle=False)) as client:
        assert client.get("/openapi.json").json()["servers"] == [{"url": "/"}]


def test_operations_have_short_names(service):
    assert operation_ids(service.get("/openapi.json").json()) == OPERATION_IDS


def test_each_app_has_a_handler_for_every_operation():
    assert HANDLERS.keys() == AGGREGATOR_HANDLERS.keys() == OPERATION_IDS
    assert all(h.__module__.startswith("aggregator.") for h in AGGREGATOR_HANDLERS.values())
    with pytest.raises(ValueError, match="getNode"):
        operation_resolver({k: v for k, v in HANDLERS.items() if k != "getNode"})


def test_the_ui_shows_the_served_spec(service):
    r = service.get("/ui/")
    assert r.status_code == 200 and "swagger" in r.text.lower()
    assert '"/openapi.json"' in r.text or "'/openapi.json'" in r.text


def test_requests_are_still_validated_against_the_spec(node):
    r = node.post("/requests", json={"executable": {"kind": 42}})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/problem+json")


def test_the_examples_work_unedited_on_a_default_node(node):
    spec = node.get("/openapi.json").json()
    request = example(spec, "/requests")
    assert "schedule" not in request  # as soon as possible: no date to edit
    assert request["executable"]["image"]["locations"] == ["localhost/busybox:latest"]
    for path in ("/offersets", "/direct", "/sessions"):
        assert example(spec, path) == request
    offerset = node.post("/requests", json=request).json()
    assert offerset["result"] == "YES", offerset
    update = example(spec, "/sessions/{uuid}")
    assert update == {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
    session = node.post(f"/sessions/{offerset['offers'][0]['meta']['uuid']}", json=update)
    assert session.status_code == 200 and session.json()["phase"] == "ACCEPTED"
    direct = node.post("/direct", json=request, follow_redirects=False)
    assert direct.status_code == 303 and direct.json()["phase"] == "ACCEPTED", direct.text
    assert direct.headers["location"] == direct.json()["meta"]["url"]


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_a_generated_client_is_small_and_works(node, tmp_path):
    """openapi-python-client (no network) makes a client of fewer than MAX_MODELS models,
    one module per operation named after it, and that client gets offers from a node."""
    try:
        import openapi_python_client  # noqa: F401
    except ImportError:
        unavailable("openapi-python-client is not installed (the test extra has it)")
    spec_file = tmp_path / "openapi.json"
    spec_file.write_bytes(node.get("/openapi.json").content)
    config = tmp_path / "generator.yaml"
    config.write_text("post_hooks: []\n")  # no formatter run: the code is only counted and used
    done = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(spec_file),
         "--meta", "none", "--config", str(config), "--output-path",
         str(tmp_path / "ebroker_client")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    package = tmp_path / "ebroker_client"
    models = [p for p in (package / "models").glob("*.py") if p.name != "__init__.py"]
    print(f"generated {len(models)} model files")
    assert 0 < len(models) < MAX_MODELS, len(models)
    modules = {p.stem for p in (package / "api").rglob("*.py") if p.name != "__init__.py"}
    assert modules == {snake(o) for o in OPERATION_IDS}
    assert "request_offers" in modules

    # the generated client, talking to a node through the test client, books a slot
    sys.path.insert(0, str(tmp_path))
    try:
        from ebroker_client import Client  # type: ignore[import-not-found]
        from ebroker_client.api.offers import request_offers  # type: ignore[import-not-found]
        from ebroker_client.api.sessions import update_session  # type: ignore[import-not-found]
        from ebroker_client.models import ExecutionRequest, Update  # type: ignore[import-not-found]

        spec = json.loads(spec_file.read_text())
        client = Client(base_url="http://testserver")
        client.set_httpx_client(node)
        offerset = request_offers.sync(
            client=client, body=ExecutionRequest.from_dict(example(spec, "/requests"))
        )
        assert offerset.result == "YES"
        session = update_session.sync(
            client=client,
            uuid=offerset.offers[0].meta.uuid,
            body=Update.from_dict(example(spec, "/sessions/{uuid}")),
        )
        assert session.phase == "ACCEPTED"
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == "ebroker_client" or
                     m.startswith("ebroker_client.")]:  # fmt: skip
            del sys.modules[name]
