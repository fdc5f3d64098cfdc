"""The spec in openapi/ is valid, is what the app serves, and describes every kind."""

from __future__ import annotations

from pathlib import Path

import yaml
from openapi_spec_validator import validate

from broker_core.http.app import SPEC
from broker_core.kinds.builtin import KINDS


def load() -> dict:
    return yaml.safe_load(SPEC.read_text())


def test_the_spec_validates():
    assert Path(__file__).resolve().parents[1] / "openapi" / "ebroker.yaml" == SPEC
    validate(load())


def test_the_app_serves_this_spec(client):
    served = client.get("/openapi.json").json()
    spec = load()
    assert served["paths"].keys() == spec["paths"].keys()
    assert served["components"]["schemas"].keys() == spec["components"]["schemas"].keys()
    assert served["info"] == spec["info"]


def test_the_spec_has_a_browsable_ui(client):
    r = client.get("/ui/")
    assert r.status_code == 200 and "swagger" in r.text.lower()


def test_every_builtin_kind_is_a_schema():
    schemas = load()["components"]["schemas"]
    enums = {
        value
        for schema in schemas.values()
        for value in schema.get("properties", {}).get("kind", {}).get("enum", [])
    }
    for model in KINDS:
        assert model.kind_uri() in enums, model.kind_uri()


def test_every_path_of_the_issue_is_there():
    paths = load()["paths"]
    assert {"post"} <= paths["/requests"].keys()
    assert {"get"} <= paths["/offersets/{uuid}"].keys()
    assert {"get", "post"} <= paths["/sessions/{uuid}"].keys()
    for path in ("/direct", "/offersets", "/sessions"):
        assert "post" in paths[path]
    for path in ("/health/live", "/health/ready", "/node"):
        assert "get" in paths[path]


def test_models_and_schemas_agree_on_fields():
    """Each kind's pydantic fields are exactly its schema's properties."""
    schemas = load()["components"]["schemas"]
    by_kind = {
        schema["properties"]["kind"]["enum"][0]: schema
        for schema in schemas.values()
        if "enum" in schema.get("properties", {}).get("kind", {})
        and len(schema["properties"]["kind"]["enum"]) == 1
    }
    for model in KINDS:
        schema = by_kind[model.kind_uri()]
        # what only answers carry (a component's phase and schedule) is read-only
        written = {n for n, prop in schema["properties"].items() if not prop.get("readOnly")}
        assert set(model.model_fields) == written, model.__name__
        required = {n for n, f in model.model_fields.items() if f.is_required()}
        assert required == set(schema.get("required", [])) - {"kind"}, model.__name__
