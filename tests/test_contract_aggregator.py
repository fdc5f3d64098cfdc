"""Contract test of the aggregator: schemathesis fuzzes it against the same spec as a node's,
with a real node process behind it (no 5xx, conforming answers, forbidden documents refused)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from aggregator.config import AggregatorConfig
from aggregator.http.app import create_aggregator_app
from tests.conftest import POOL_CONFIG
from tests.nodes import free_port, start_node

pytestmark = pytest.mark.slow  # real processes or fuzzing: `-m 'not slow'` leaves it out

# The app is built at import (schemathesis needs it then) for a node started by the fixture
# below on a port chosen now. (schemathesis' from_fixture breaks with some pytest versions.)
NODE_PORT = free_port()
WORKDIR = Path(tempfile.mkdtemp(prefix="ebroker-contract-aggregator-"))
CONFIG = AggregatorConfig.model_validate({
    "server": {"validate_responses": True},
    "database": {"url": f"sqlite:///{WORKDIR}/agg.db"},
    "fanout": {"deadline": "PT5S"},
    "upstreams": [{"name": "node", "url": f"http://127.0.0.1:{NODE_PORT}"}],
})  # fmt: skip
schema = schemathesis.openapi.from_asgi("/openapi.json", create_aggregator_app(CONFIG))
# the spec's every keyword is walked against a node (test_contract); here each operation is fuzzed
schema.config.phases.coverage.enabled = False


@pytest.fixture(scope="module", autouse=True)
def upstream_node() -> Iterator[None]:
    node_file = WORKDIR / "node.yaml"
    database = {"url": f"sqlite:///{WORKDIR}/node.db"}
    node_file.write_text(yaml.safe_dump({**POOL_CONFIG, "database": database}))
    node = start_node(node_file, WORKDIR, "node", port=NODE_PORT)
    try:
        yield
    finally:
        node.stop()


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True)  # fmt: skip
def test_the_aggregator_honours_the_spec(case):
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
