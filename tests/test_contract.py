"""Contract test: schemathesis fuzzes the app against its own spec.

Every documented operation is called with generated documents (valid and invalid); no answer may
be a 5xx, and every answer must conform to the spec (status code, content type, schema), and
documents the spec forbids must be refused.

One check is left out: "schema-valid data is accepted". Some rules cannot be written in the
schema (min <= max, ISO-8601 syntax, names that must refer to another component), so a
schema-valid document may still rightly get a 400 naming the offending field.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from broker_core.http.app import create_app
from broker_core.node import build_broker
from tests.conftest import make_config


def _app():
    import tempfile

    folder = tempfile.mkdtemp(prefix="ebroker-contract-")
    broker = build_broker(make_config(f"sqlite:///{folder}/contract.db"))
    return create_app(broker, reaper=False)


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_app_honours_its_spec(case):
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
