"""Contract test: schemathesis fuzzes the app against its own spec.

Every documented operation is called with generated documents (valid and invalid); no answer may
be a 5xx, and every answer must conform to the spec (status code, content type, schema), and
documents the spec forbids must be refused.

One check is left out: "schema-valid data is accepted". Some rules cannot be written in the
schema (min <= max, ISO-8601 syntax, names that must refer to another component), so a
schema-valid document may still rightly get a 400 naming the offending field.
"""

from __future__ import annotations

import base64

import argon2
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from broker_core.http.app import create_app
from broker_core.node import build_broker
from tests.conftest import make_config

pytestmark = pytest.mark.slow  # real processes or fuzzing: `-m 'not slow'` leaves it out


def _app():
    import tempfile

    folder = tempfile.mkdtemp(prefix="ebroker-contract-")
    # durability is shown elsewhere (test_crash); here every fsync would only slow the fuzzing
    database = {"url": f"sqlite:///{folder}/contract.db", "sqlite_synchronous": "OFF"}
    broker = build_broker(make_config("", database=database))
    return create_app(broker, reaper=False)


SETTINGS = settings(
    max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)

# Every operation is fuzzed with generated documents, valid and invalid.
schema = schemathesis.openapi.from_asgi("/openapi.json", _app())
schema.config.phases.coverage.enabled = False
# a generated document over server.max_body_bytes is refused as too large (413): a rejection
_rejection = schema.config.checks.negative_data_rejection
_rejection.expected_statuses = [*_rejection.expected_statuses, "413"]


@schema.parametrize()
@SETTINGS
def test_the_app_honours_its_spec(case):
    case.call_and_validate(excluded_checks=[positive_data_acceptance])


# The coverage phase also walks every keyword of the spec (boundaries, every missing or wrong
# field). For the request document, one schema holding every kind, that is about 8000 calls per
# operation, so it runs on POST /requests only: the other request operations take the same
# document through the same content layer, validation and parsing.
covered = schemathesis.openapi.from_asgi("/openapi.json", _app()).include(
    method="POST", path_regex="^/requests$"
)
covered.config.phases.fuzzing.enabled = False
covered.config.phases.examples.enabled = False
covered.config.phases.stateful.enabled = False


@covered.parametrize()
@SETTINGS
def test_every_keyword_of_the_request_document_is_covered(case):
    case.call_and_validate(excluded_checks=[positive_data_acceptance])


# The admin operations, called as an admin (a Basic user of an admin group), so that their
# answers past the 403 are fuzzed too: the spec's examples name the node's pool (sim/main).
_FAST = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
ADMIN = {"Authorization": "Basic " + base64.b64encode(b"root:contract").decode()}


def _admin_app():
    import tempfile

    folder = tempfile.mkdtemp(prefix="ebroker-contract-admin-")
    database = {"url": f"sqlite:///{folder}/contract.db", "sqlite_synchronous": "OFF"}
    auth = {
        "admin_groups": ["basic:admins"],
        "basic": {"users": [{"name": "root", "password_hash": _FAST.hash("contract"),
                             "groups": ["admins"]}]},
    }  # fmt: skip
    broker = build_broker(make_config("", database=database, auth=auth))
    return create_app(broker, reaper=False)


administered = schemathesis.openapi.from_asgi("/openapi.json", _admin_app()).include(tag="admin")
administered.config.phases.coverage.enabled = False


@administered.parametrize()
@SETTINGS
def test_the_admin_operations_honour_their_spec_for_an_admin(case):
    case.call_and_validate(headers=ADMIN, excluded_checks=[positive_data_acceptance])
