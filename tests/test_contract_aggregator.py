"""Contract test of the aggregator: schemathesis fuzzes it against the same spec as a node's,
with a real node process behind it (no 5xx, conforming answers, forbidden documents refused)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from aggregator.config import AggregatorConfig
from aggregator.http.app import create_aggregator_app
from tests.conftest import POOL_CONFIG
from tests.nodes import start_node


@pytest.fixture(scope="module")
def aggregator_schema(tmp_path_factory) -> Iterator[object]:
    tmp = tmp_path_factory.mktemp("contract-aggregator")
    node_file = tmp / "node.yaml"
    node_file.write_text(
        yaml.safe_dump({**POOL_CONFIG, "database": {"url": f"sqlite:///{tmp}/n.db"}})
    )
    node = start_node(node_file, tmp, "node")
    config = AggregatorConfig.model_validate({
        "server": {"validate_responses": True},
        "database": {"url": f"sqlite:///{tmp}/agg.db"},
        "fanout": {"deadline": "PT5S"},
        "upstreams": [{"name": "node", "url": node.url}],
    })  # fmt: skip
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", create_aggregator_app(config))
    finally:
        node.stop()


schema = schemathesis.pytest.from_fixture("aggregator_schema")


@schema.parametrize()
@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True)  # fmt: skip
def test_the_aggregator_honours_the_spec(case):
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
