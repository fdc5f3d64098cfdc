"""Every input form is accepted and every historical form is normalised on input.

Each form has a document written here: ``test_<form>_is_normalised`` checks what the normaliser
(``broker_core.kinds.legacy``) makes of it, ``test_<form>_is_offered`` that a default test node
answers a request of that form with offers. ``test_every_rewrite_has_a_form`` keeps the table of
rewrites and the forms here in step.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from broker_core.config import PlatformConfig
from broker_core.kinds.base import kind_uri
from broker_core.kinds.builtin import KINDS
from broker_core.kinds.legacy import (
    COMPONENT_REWRITES,
    REQUEST_REWRITES,
    UPDATE_REWRITES,
    canonical_kind,
    normalise_request,
    normalise_update,
)
from broker_core.kinds.registry import KindRegistry
from broker_core.kinds.request import parse_request
from broker_core.sessions.views import with_published_ports
from platforms.contract import Execution, executable_ports, published_ports
from platforms.local import LocalPlatform
from tests.conftest import ACCEPT, COMPUTE, DOCKER

REGISTRY = KindRegistry(KINDS)
EB = "https://www.purl.org/ivoa.net/EB/schema"
CALYCOPIS = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0"
NOTEBOOK = kind_uri("executable", "jupyter-notebook")
SINGULARITY = kind_uri("executable", "singularity-container")
STORAGE = kind_uri("storage", "simple-storage-resource")
VOLUME = kind_uri("volume", "simple-volume-mount")
SIMPLE_DATA = kind_uri("data", "simple-data-resource")
S3_DATA = kind_uri("data", "S3-data-resource")
IVOA_DATA = kind_uri("data", "ivoa-data-resource")
SKAO_DATA = kind_uri("data", "skao-data-resource")
RUCIO_DATA = kind_uri("data", "rucio-data-resource")
IMAGE = {"locations": ["localhost/busybox:latest"]}


def executable(**fields: Any) -> dict[str, Any]:
    return {"kind": DOCKER, "image": IMAGE, **fields}


def scratch(name: str = "scratch") -> dict[str, Any]:
    return {"kind": STORAGE, "meta": {"name": name}, "size": {"min": 1, "max": 1}}


def offers(client: TestClient, doc: dict[str, Any]) -> list[dict[str, Any]]:
    r = client.post("/requests", json=doc)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["result"] == "YES", body["meta"].get("messages")
    assert body["offers"]
    return body["offers"]


def normalised(doc: dict[str, Any]) -> dict[str, Any]:
    original = copy.deepcopy(doc)
    out = normalise_request(doc, REGISTRY)
    assert doc == original  # the input is never modified
    parse_request(out, REGISTRY)  # and the result is a valid canonical request
    return out


# --------------------------------------------------------------------------- the forms
# name -> (the document, what the normaliser must make of it)

IVOA_BLOCK = {
    "ivoid": "ivo://example.org/data?field-12",
    "obscore": {"obs_id": "field-12", "dataproduct_type": "cube", "calib_level": 2},
    "datalink": {
        "ID": "ivo://example.org/data?field-12",
        "access_url": "https://x.example/12",
        "semantics": "#this",
        "content_length": 1024,
    },
}
SKAO_BLOCK = {
    "namespace": "testing",
    "objectname": "zi-1.fits",
    "objecttype": "FILE",
    "datasize": 123456,
    "checksum": {"type": "adler32", "value": "0a1b2c3d"},
    "replicas": [{"rsename": "SPSRC_STORM", "dataurl": "https://storm.example.org/zi-1.fits"}],
}


def _later(hours: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + hours * 3600))


FORMS: dict[str, tuple[dict[str, Any], Any]] = {
    # --- the standard's v1.0 forms ----------------------------------------------------------
    "ivoa_block": (
        {"executable": executable(), "data": [{"kind": IVOA_DATA, "ivoa": IVOA_BLOCK}]},
        lambda d: d["data"] == [{"kind": IVOA_DATA, **IVOA_BLOCK}],
    ),
    "skao_blocks": (
        {
            "executable": executable(),
            "data": [
                {
                    "kind": SKAO_DATA,
                    "meta": {"name": "zi"},
                    "ivoa": {"ivoid": "ivo://x/y"},
                    "skao": SKAO_BLOCK,
                }
            ],
        },
        lambda d: (
            d["data"]
            == [{"kind": SKAO_DATA, "meta": {"name": "zi"}, "ivoid": "ivo://x/y", **SKAO_BLOCK}]
        ),
    ),
    "rucio_block": (
        {
            "executable": executable(),
            "data": [
                {
                    "kind": RUCIO_DATA,
                    "rucio": {
                        "endpoint": "https://rucio.example.org",
                        "scope": "ska",
                        "object": "cube-12",
                        "type": "DATASET",
                    },
                }
            ],
        },
        lambda d: (
            d["data"]
            == [
                {
                    "kind": RUCIO_DATA,
                    "endpoint": "https://rucio.example.org",
                    "scope": "ska",
                    "objectname": "cube-12",
                    "objecttype": "DATASET",
                }
            ]
        ),
    ),
    "port_objects": (
        {
            "executable": executable(
                network={
                    "ports": [
                        {
                            "internal": {"port": 8080},
                            "external": {"port": 30080},
                            "protocol": "HTTP",
                        },
                        {"internal": {"port": 5432}, "access": False},
                    ]
                }
            ),
        },
        lambda d: d["executable"]["network"]["ports"][0]["internal"] == {"port": 8080},
    ),
    "costs_and_metrics_with_type_and_description": (
        {
            "executable": executable(),
            "costs": [
                {
                    "kind": kind_uri("costs", "simple-minmax-float-cost"),
                    "type": "urn:example:money",
                    "description": "euros",
                    "max": 10.0,
                }
            ],
            "metrics": [
                {
                    "kind": kind_uri("metrics", "simple-minmax-float-metric"),
                    "type": "urn:example:io",
                    "description": "read rate",
                    "min": 1.5,
                }
            ],
        },
        lambda d: (
            d["costs"][0]["type"] == "urn:example:money"
            and d["metrics"][0]["description"] == "read rate"
        ),
    ),
    "lifecycle_is_the_nodes": (
        {
            "executable": executable(
                phase="INITIALIZING",
                schedule={
                    "preparing": {"start": "2031-01-02T03:00:00Z", "duration": "PT1M"},
                    "available": {"start": "2031-01-02T03:01:00Z/PT0S", "duration": "PT1H"},
                },
            ),
            "compute": {"kind": COMPUTE, "phase": "WAITING", "schedule": {"releasing": {}}},
        },
        lambda d: d["executable"] == executable() and d["compute"] == {"kind": COMPUTE},
    ),
    # --- this node's earlier forms ----------------------------------------------------------
    "port_numbers": (
        {"executable": executable(network={"ports": [{"internal": 8080, "external": 30080}]})},
        lambda d: (
            d["executable"]["network"]["ports"]
            == [{"internal": {"port": 8080}, "external": {"port": 30080}}]
        ),
    ),
    "single_component_for_a_list": (
        {"executable": executable(), "storage": scratch()},
        lambda d: d["storage"] == [scratch()],
    ),
    # --- Calycopis 2024-11..2025-06 ---------------------------------------------------------
    "resources_wrapper": (
        {
            "executable": executable(),
            "resources": {
                "compute": [{"kind": COMPUTE, "cores": {"min": 1, "max": 2}}],
                "storage": [scratch()],
                "data": [{"kind": SIMPLE_DATA, "location": "https://x.example/a.fits"}],
            },
        },
        lambda d: (
            "resources" not in d
            and d["compute"] == {"kind": COMPUTE, "cores": {"min": 1, "max": 2}}
            and d["storage"] == [scratch()]
            and d["data"] == [{"kind": SIMPLE_DATA, "location": "https://x.example/a.fits"}]
        ),
    ),
    "volumes_in_the_resources_wrapper": (
        {
            "executable": executable(),
            "resources": {
                "compute": [{"kind": COMPUTE, "volumes": ["v-in"]}],
                "volumes": [{"name": "v-in", "path": "/in", "resource": "catalogue"}],
                "data": [
                    {
                        "kind": SIMPLE_DATA,
                        "name": "catalogue",
                        "location": "https://x.example/c.vot",
                    }
                ],
            },
        },
        lambda d: (
            "resources" not in d
            and "volumes" not in d
            and d["compute"]["volumes"]
            == [{"kind": VOLUME, "meta": {"name": "v-in"}, "path": "/in", "resource": "catalogue"}]
        ),
    ),
    "storage_resource_lists": (
        {
            "executable": executable(),
            "storage": [{"kind": STORAGE, "name": "pool", "resources": ["d-a", "d-b"]}],
            "data": [
                {"kind": SIMPLE_DATA, "name": "d-a", "location": "https://x.example/a.fits"},
                {"kind": SIMPLE_DATA, "name": "d-b", "location": "https://x.example/b.fits"},
            ],
        },
        lambda d: (
            d["storage"] == [{"kind": STORAGE, "meta": {"name": "pool"}}]
            and [x["storage"] for x in d["data"]] == ["pool", "pool"]
        ),
    ),
    "volume_resource_lists": (
        {
            "executable": executable(),
            "storage": [{"kind": STORAGE, "name": "work", "size": {"min": 1, "max": 1}}],
            "data": [
                {"kind": SIMPLE_DATA, "name": "d-a", "location": "https://x.example/a.fits"},
                {"kind": SIMPLE_DATA, "name": "d-b", "location": "https://x.example/b.fits"},
            ],
            "volumes": [
                {
                    "name": "inputs",
                    "path": "/in",
                    "cardinality": "CONTAINER",
                    "resources": ["d-a", "d-b"],
                },
                {
                    "name": "scratch",
                    "path": "/work",
                    "mode": "READWRITE",
                    "cardinality": "INSTANCE",
                    "resources": ["work"],
                },
            ],
            "compute": {"kind": COMPUTE, "volumes": ["inputs", "scratch"]},
        },
        lambda d: (
            [(v["path"], v["resource"]) for v in d["compute"]["volumes"]]
            == [("/in", "inputs"), ("/work", "work")]
            and not any("cardinality" in v or "resources" in v for v in d["compute"]["volumes"])
            # the two data resources are staged together, into a storage made for the mount
            and d["storage"][1] == {"kind": STORAGE, "meta": {"name": "inputs"}}
            and [x["storage"] for x in d["data"]] == ["inputs", "inputs"]
        ),
    ),
    "top_level_volumes": (
        {
            "executable": executable(),
            "storage": [scratch("work"), scratch("cache")],
            "volumes": [
                {"name": "v-work", "path": "/work", "mode": "READWRITE", "resource": "work"},
                {"name": "v-cache", "path": "/cache", "resource": "cache"},
            ],
            "compute": {"kind": COMPUTE, "volumes": ["v-work"]},
        },
        lambda d: (
            "volumes" not in d
            and d["compute"]["volumes"]
            == [
                {
                    "kind": VOLUME,
                    "meta": {"name": "v-work"},
                    "path": "/work",
                    "mode": "READWRITE",
                    "resource": "work",
                }
            ]
        ),
    ),
    "top_level_volumes_without_compute": (
        {
            "executable": executable(),
            "storage": [scratch("work")],
            "volumes": [{"path": "/work", "resource": "work"}],
        },
        lambda d: (
            d["compute"]
            == {"kind": COMPUTE, "volumes": [{"kind": VOLUME, "path": "/work", "resource": "work"}]}
        ),
    ),
    "numeric_command_items": (
        {"executable": executable(command=["sleep", 10, 2.5])},
        lambda d: d["executable"]["command"] == ["sleep", "10", "2.5"],
    ),
    "description_at_top_level": (
        {"executable": executable(description="says hello", meta={"name": "hello"})},
        lambda d: (
            d["executable"]["meta"] == {"name": "hello", "description": "says hello"}
            and "description" not in d["executable"]
        ),
    ),
    "default_compute": (
        {"executable": executable(), "compute": {}},
        lambda d: d["compute"] == {"kind": COMPUTE},
    ),
    "default_volume_kind": (
        {
            "executable": executable(),
            "storage": [scratch()],
            "compute": {"kind": COMPUTE, "volumes": [{"path": "/s", "resource": "scratch"}]},
        },
        lambda d: (
            d["compute"]["volumes"] == [{"kind": VOLUME, "path": "/s", "resource": "scratch"}]
        ),
    ),
    "kinds_computer_uri": (
        {
            "executable": executable(),
            "compute": {"kind": f"{CALYCOPIS}/kinds/computer/simple-compute-resource.yaml"},
        },
        lambda d: d["compute"]["kind"] == COMPUTE,
    ),
    # --- the 2024 model ---------------------------------------------------------------------
    "plural_executables_uri": (
        {"executable": {"type": f"{EB}/types/executables/docker-container-1.0", "image": IMAGE}},
        lambda d: d["executable"]["kind"] == DOCKER,
    ),
    "nested_resources_uris": (
        {
            "executable": executable(),
            "compute": {"kind": f"{EB}/types/resources/compute/simple-compute-resource-1.0"},
            "storage": [
                {"kind": f"{EB}/types/resources/storage/simple-storage-resource-1.0", "name": "s"}
            ],
            "data": [
                {
                    "kind": f"{EB}/types/resources/data/simple-data-resource-1.0",
                    "location": "https://x.example/a",
                }
            ],
        },
        lambda d: (
            (d["compute"]["kind"], d["storage"][0]["kind"], d["data"][0]["kind"])
            == (COMPUTE, STORAGE, SIMPLE_DATA)
        ),
    ),
    "names_of_2024": (
        {
            "executable": {"type": "uri:singular-container-0.1", "image": "oras://x.example/t"},
            "compute": {"type": "uri:simple-compute-0.1"},
            "data": [
                {
                    "type": "uri:Amazon-S3-data-resource-0.1",
                    "endpoint": "https://s3.example",
                    "bucket": "b",
                    "object": "o",
                }
            ],
        },
        lambda d: (
            (d["executable"]["kind"], d["compute"]["kind"], d["data"][0]["kind"])
            == (SINGULARITY, COMPUTE, S3_DATA)
            and d["executable"]["image"] == {"locations": ["oras://x.example/t"]}
        ),
    ),
    "type_and_meta_at_top_level": (
        {
            "type": "urn:offerset-request-0.1",
            "name": "req-2024",
            "executable": {
                "type": "urn:docker-container-0.1",
                "name": "x",
                "uuid": "u",
                "href": "https://x.example/x",
                "image": IMAGE,
            },
            "computer": {"type": "urn:simple-compute-resource-0.1"},
        },
        lambda d: (
            d["meta"] == {"name": "req-2024"}
            and d["executable"]["meta"] == {"name": "x", "uuid": "u", "url": "https://x.example/x"}
            and d["compute"] == {"kind": COMPUTE}
        ),
    ),
    "properties_are_annotations": (
        {
            "executable": {
                "properties": None,  # the usual form: an empty key above the others
                "name": "explorer",
                "type": "urn:jupyter-notebook-0.1",
                "notebook": "https://x.example/explore.ipynb",
            },
            "resources": {
                "compute": [
                    {"properties": {"owner": "albert", "tier": 2}, "type": "urn:simple-compute"}
                ],
                "data": [
                    {
                        "properties": [{"name": "survey", "value": "deep-field"}],
                        "type": "urn:simple-data-resource",
                        "location": "https://x.example/a.fits",
                    }
                ],
            },
        },
        lambda d: (
            d["executable"]
            == {
                "kind": NOTEBOOK,
                "meta": {"name": "explorer"},
                "location": "https://x.example/explore.ipynb",
            }
            and d["compute"] == {"kind": COMPUTE}
            and d["data"] == [{"kind": SIMPLE_DATA, "location": "https://x.example/a.fits"}]
        ),
    ),
    "executing_schedule": (
        {
            "executable": executable(),
            "schedule": {
                "requested": {"executing": {"start": f"{_later(2)}/PT2H", "duration": "PT30M"}}
            },
        },
        lambda d: (
            set(d["schedule"]["requested"]) == {"start", "duration"}
            and d["schedule"]["requested"]["duration"] == "PT30M"
        ),
    ),
    "component_schedule_blocks": (
        {
            "executable": executable(schedule={"requested": {"preparing": {"duration": "PT5M"}}}),
            "compute": {"kind": COMPUTE, "schedule": {"offered": {}, "observed": {}}},
        },
        lambda d: d["executable"] == executable() and d["compute"] == {"kind": COMPUTE},
    ),
    "amount_units": (
        {
            "executable": executable(),
            "compute": {"kind": COMPUTE, "memory": {"min": 1, "max": 2, "units": "GiB"}},
            "storage": [{"kind": STORAGE, "size": {"min": 2, "max": 5, "units": "none"}}],
        },
        lambda d: (
            d["compute"]["memory"] == {"min": 1, "max": 2}
            and d["storage"][0]["size"] == {"min": 2, "max": 5}
        ),
    ),
    "requested_and_offered_amounts": (
        {
            "executable": executable(),
            "compute": {
                "kind": COMPUTE,
                "cores": {"requested": {"min": 1, "max": 2, "minimal": False}},
                "memory": {"requested": {"min": 1, "max": 1, "units": "GiB"}},
            },
            "storage": [{"kind": STORAGE, "size": {"requested": {"min": 1, "max": 2}}}],
        },
        lambda d: (
            d["compute"]["cores"] == {"min": 1, "max": 2}
            and d["compute"]["memory"] == {"min": 1, "max": 1}
            and d["storage"][0]["size"] == {"min": 1, "max": 2}
        ),
    ),
    "port_numbers_as_strings": (
        {
            "executable": executable(
                network={
                    "ports": [
                        {"internal": "8080", "external": "30080", "address": "192.0.2.1"},
                        {"internal": "9000"},
                    ]
                }
            ),
        },
        lambda d: (
            d["executable"]["network"]["ports"]
            == [
                {
                    "internal": {"port": 8080},
                    "external": {"port": 30080, "addresses": ["192.0.2.1"]},
                },
                {"internal": {"port": 9000}},
            ]
        ),
    ),
    "rucio_domain_and_object": (
        {
            "executable": executable(),
            "data": [
                {
                    "type": "uri:Rucio-data-resource-0.1",
                    "endpoint": "https://r.example",
                    "domain": "ska",
                    "object": "cube-12",
                }
            ],
        },
        lambda d: (
            d["data"]
            == [
                {
                    "kind": RUCIO_DATA,
                    "endpoint": "https://r.example",
                    "scope": "ska",
                    "objectname": "cube-12",
                }
            ]
        ),
    ),
    "schedule_blocks": (
        {
            "executable": executable(),
            "schedule": [
                {"start": f"{_later(1)}/PT2H", "duration": {"min": "PT10M", "max": "PT30M"}},
                {"start": f"{_later(5)}/PT1H", "duration": {"min": "PT20M"}},
            ],
        },
        lambda d: (
            d["schedule"]["requested"]["duration"] == "PT30M"
            and len(d["schedule"]["requested"]["start"]) == 2
        ),
    ),
    "schedule_requested_list": (
        {
            "executable": executable(),
            "schedule": {"requested": [{"duration": "PT15M"}, {"duration": {"max": "PT45M"}}]},
        },
        # no block has a start: as soon as possible
        lambda d: d["schedule"] == {"requested": {"duration": "PT45M"}},
    ),
    "schedule_duration_min_max": (
        {
            "executable": executable(),
            "schedule": {"requested": {"duration": {"min": "PT5M", "max": "PT20M"}}},
        },
        lambda d: d["schedule"] == {"requested": {"duration": "PT20M"}},
    ),
}

REQUEST_FORMS = FORMS

# the rewrite each form exercises (rewrites that apply to updates are tested below)
REWRITE_OF_FORM = {
    "ivoa_block": "ivoa_block",
    "skao_blocks": "skao_blocks",
    "rucio_block": "rucio_block",
    "port_numbers": "port_numbers",
    "single_component_for_a_list": "single_component_for_a_list",
    "resources_wrapper": "resources_wrapper",
    "top_level_volumes": "top_level_volumes",
    "numeric_command_items": "numeric_command_items",
    "description_at_top_level": "description_at_top_level",
    "default_compute": "default_compute",
    "default_volume_kind": "default_volume_kind",
    "plural_executables_uri": "older_kind_uri",
    "properties_are_annotations": "properties_are_annotations",
    "executing_schedule": "executing_schedule",
    "component_schedule_blocks": "component_schedule_blocks",
    "amount_units": "amount_units",
    "lifecycle_is_the_nodes": "lifecycle_is_the_nodes",
    "volumes_in_the_resources_wrapper": "resources_wrapper",
    "storage_resource_lists": "storage_resource_lists",
    "volume_resource_lists": "volume_resource_lists",
    "requested_and_offered_amounts": "requested_and_offered_amounts",
    "port_numbers_as_strings": "port_numbers_as_strings",
    "rucio_domain_and_object": "rucio_domain_and_object",
    "schedule_blocks": "schedule_blocks",
    "names_of_2024": "image_as_a_string",
    "type_and_meta_at_top_level": "request_type_is_kind",
}
ALSO_COVERED = {
    # by type_and_meta_at_top_level
    "request_meta_at_top_level",
    "computer_is_compute",
    "type_is_kind",
    "meta_at_top_level",
    # by properties_are_annotations
    "notebook_is_location",
    # updates: test_update_forms_of_2024 and test_update_paths_as_json_pointers
    "update_wrapper",
    "offer_status",
    "update_type_is_kind",
    "older_update_kind",
    "state_is_phase",
    "pointer_paths",
}


def test_every_rewrite_has_a_form() -> None:
    rewrites = {r.__name__ for r in (*REQUEST_REWRITES, *COMPONENT_REWRITES, *UPDATE_REWRITES)}
    covered = set(REWRITE_OF_FORM.values()) | ALSO_COVERED
    assert rewrites == covered
    assert all(r.__doc__ and "->" in r.__doc__ for r in (*REQUEST_REWRITES, *COMPONENT_REWRITES))


@pytest.mark.parametrize("name", sorted(REQUEST_FORMS))
def test_form_is_normalised(name: str) -> None:
    doc, expected = REQUEST_FORMS[name]
    out = normalised(doc)
    assert expected(out), out


@pytest.mark.parametrize("name", sorted(REQUEST_FORMS))
def test_form_is_offered(client: TestClient, name: str) -> None:
    doc, _ = REQUEST_FORMS[name]
    offers(client, doc)


def test_the_2024_singularity_names_are_the_singularity_container() -> None:
    for uri in ("urn:single-container-0.1", "uri:singular-container-1.0"):
        assert canonical_kind(uri, "executable", REGISTRY) == SINGULARITY


def test_canonical_requests_pass_through_unchanged() -> None:
    canonical = {
        "executable": executable(command=["a"], network={"ports": [{"internal": {"port": 1}}]}),
        "compute": {"kind": COMPUTE, "volumes": [{"kind": VOLUME, "path": "/s", "resource": "s"}]},
        "storage": [scratch("s")],
        "data": [{"kind": IVOA_DATA, "ivoid": "ivo://x"}],
        "schedule": {"requested": {"start": f"{_later(1)}/PT1H", "duration": "PT1H"}},
    }
    assert normalise_request(copy.deepcopy(canonical), REGISTRY) == canonical


# --------------------------------------------------------------------------- what answers say


def test_nested_data_blocks_are_answered_flat(client: TestClient) -> None:
    doc, _ = FORMS["skao_blocks"]
    (data,) = offers(client, doc)[0]["data"]
    assert data["namespace"] == "testing" and data["ivoid"] == "ivo://x/y"
    assert data["checksum"] == {"type": "adler32", "value": "0a1b2c3d"}
    assert "skao" not in data and "ivoa" not in data
    doc, _ = FORMS["ivoa_block"]
    (data,) = offers(client, doc)[0]["data"]
    assert data["datalink"]["content_length"] == 1024  # the DataLink row as sent


@pytest.mark.parametrize("name", ["port_objects", "port_numbers", "port_numbers_as_strings"])
def test_ports_are_answered_as_the_schemas_objects(client: TestClient, name: str) -> None:
    doc, _ = FORMS[name]
    expected = normalised(doc)["executable"]["network"]["ports"]
    for offer in offers(client, doc):
        ports = offer["executable"]["network"]["ports"]
        assert [p["internal"] for p in ports] == [p["internal"] for p in expected]
        assert all(isinstance(p["internal"], dict) for p in ports)
        for got, sent in zip(ports, expected, strict=True):
            assert got.get("external") == sent.get("external")


def test_costs_with_type_and_description_are_read_as_limits(client: TestClient) -> None:
    """A request's costs are limits and its metrics needs, not the offer's (a node without a
    price list quotes none): a limit or need this node cannot judge is said not to be applied."""
    doc, _ = FORMS["costs_and_metrics_with_type_and_description"]
    answer = client.post("/requests", json=doc).json()
    assert answer["result"] == "YES" and answer["offers"][0]["costs"] == []
    cost, metric = answer["meta"]["messages"]
    assert cost["values"]["limit"] == "10 (urn:example:money)"
    assert metric["values"]["need"] == "urn:example:io at least 1.5"


def test_platforms_read_typed_port_numbers() -> None:
    doc, _ = FORMS["port_objects"]
    parsed = parse_request(normalised(doc), REGISTRY).request
    assert parsed is not None
    (published,) = published_ports(parsed)  # the second is not to be reachable (access false)
    assert (published.internal_port, published.external_port) == (8080, 30080)
    # an offered executable (a wire document), in the present form and as stored before
    for stored in (
        {"internal": {"port": 8080}, "external": {"port": 30080}},
        {"internal": 8080, "external": 30080},
    ):
        (port,) = executable_ports({"kind": DOCKER, "network": {"ports": [stored]}})
        assert (port.internal_port, port.external_port, port.protocol) == (8080, 30080, "TCP")
    (port,) = executable_ports({"kind": DOCKER, "network": {"ports": [{"internal": 1}]}})
    assert port.external_port is None
    assert executable_ports({"kind": DOCKER}) == []


def test_a_bare_number_that_is_no_port_is_refused_where_it_was_sent(client: TestClient) -> None:
    doc = {"executable": executable(network={"ports": [{"internal": 0}]})}
    r = client.post("/requests", json=doc)
    assert r.status_code == 200, r.text
    assert r.json()["result"] == "NO"
    [found] = [m["values"]["pointer"] for m in r.json()["meta"]["messages"]]
    assert found.startswith("/executable/network/ports/0/internal"), found


def test_more_than_one_compute_resource_is_refused(client: TestClient) -> None:
    doc = {"executable": executable(), "resources": {"compute": [{"kind": COMPUTE}] * 2}}
    r = client.post("/requests", json=doc)
    assert r.status_code == 400, r.text
    assert {e["pointer"] for e in r.json()["errors"]} == {"/compute"}


def test_a_volume_name_that_matches_nothing_is_refused(client: TestClient) -> None:
    doc = {
        "executable": executable(),
        "volumes": [{"name": "v", "path": "/v", "resource": "s"}],
        "compute": {"kind": COMPUTE, "volumes": ["w"]},
    }
    r = client.post("/requests", json=doc)
    assert r.status_code == 400, r.text
    assert r.json()["errors"][0]["pointer"].startswith("/compute/volumes/0")


def test_a_volume_of_data_in_different_storage_is_refused_where_it_was_sent(
    client: TestClient,
) -> None:
    """Two data resources staged into two storage resources cannot be mounted as one: the
    mount is left as sent, and refused at its ``resources`` list."""
    doc = {
        "executable": executable(),
        "storage": [
            {"kind": STORAGE, "name": "s1", "resources": ["d1"]},
            {"kind": STORAGE, "name": "s2", "resources": ["d2"]},
        ],
        "data": [
            {"kind": SIMPLE_DATA, "name": "d1", "location": "https://x.example/1"},
            {"kind": SIMPLE_DATA, "name": "d2", "location": "https://x.example/2"},
        ],
        "volumes": [{"name": "both", "path": "/in", "resources": ["d1", "d2"]}],
    }
    out = normalise_request(doc, REGISTRY)
    assert [d["storage"] for d in out["data"]] == ["s1", "s2"]
    r = client.post("/requests", json=doc)
    assert r.status_code == 400, r.text
    assert [e["pointer"] for e in r.json()["errors"]] == ["/compute/volumes/0/resources"]


def test_a_storage_list_naming_no_data_resource_is_left_for_validation() -> None:
    doc = {
        "executable": executable(),
        "storage": [{"kind": STORAGE, "name": "s", "resources": ["nothing-of-that-name"]}],
    }
    assert normalise_request(doc, REGISTRY)["storage"][0]["resources"] == ["nothing-of-that-name"]


def test_properties_of_another_form_are_left_for_validation(client: TestClient) -> None:
    doc = {"executable": executable(properties={"image": IMAGE})}  # a value that is no scalar
    r = client.post("/requests", json=doc)
    assert r.status_code == 400, r.text
    assert [e["pointer"] for e in r.json()["errors"]] == ["/executable/properties"]


@pytest.mark.parametrize("where", ["data", "storage"])
def test_a_name_that_is_no_string_is_refused_not_a_crash(client: TestClient, where: str) -> None:
    """The 2025 rewrites match resources by name: a name that is a list (found by the contract
    fuzzer) was used as a dict key, a 500; it is the schema's 400 at the name."""
    kind = "data/simple-data-resource" if where == "data" else "storage/simple-storage-resource"
    part = {"kind": kind_uri(*kind.split("/")), "meta": {"name": [None, None]}}
    doc = {"executable": executable(), where: [part], "volumes": [{"path": "/in"}]}
    r = client.post("/requests", json=doc)
    assert r.status_code == 400, r.text
    assert f"/{where}/0/meta/name" in [e["pointer"] for e in r.json()["errors"]]


# --------------------------------------------------------------------------- updates


def _offer(client: TestClient, hours_ahead: float = 2) -> str:
    doc = {
        "executable": executable(),
        "compute": {"kind": COMPUTE, "cores": {"min": 1, "max": 1}},
        "schedule": {"requested": {"start": f"{_later(hours_ahead)}/PT1H", "duration": "PT1H"}},
    }
    return offers(client, doc)[0]["meta"]["uuid"]


UPDATES_2024 = [
    {"update": {"type": "urn:enum-value-update-0.1", "path": "state", "value": "ACCEPTED"}},
    {"update": {"kind": "urn:enum-value-update", "path": "state", "value": "ACCEPTED"}},
    {"type": "uri:enum-value-update-1.0", "path": "/state", "value": "ACCEPTED"},
    {"offer": {"status": "ACCEPTED"}},
]


@pytest.mark.parametrize("update", UPDATES_2024)
def test_update_forms_of_2024(client: TestClient, update: dict[str, Any]) -> None:
    assert normalise_update(update) == ACCEPT
    uuid = _offer(client)
    r = client.post(f"/sessions/{uuid}", json=update)
    assert r.status_code == 200, r.text
    assert r.json()["phase"] == "ACCEPTED"


@pytest.mark.parametrize("path", ["/schedule/duration", "schedule/duration", "schedule.duration"])
def test_update_paths_as_json_pointers(client: TestClient, path: str) -> None:
    assert normalise_update({**ACCEPT, "path": "/phase"}) == ACCEPT
    extend = {"kind": "uri:integer-delta-update", "path": path, "delta": 30, "units": "minutes"}
    assert normalise_update(extend)["path"] == "schedule.duration"
    uuid = _offer(client)
    r = client.post(f"/sessions/{uuid}", json={**ACCEPT, "path": "/phase"})
    assert r.status_code == 200, r.text
    assert r.json()["phase"] == "ACCEPTED"
    r = client.post(f"/sessions/{uuid}", json=extend)
    assert r.status_code == 200, r.text
    assert r.json()["schedule"]["available"]["duration"] == "PT1H30M"


def test_published_ports_say_where_they_are() -> None:
    document: dict[str, Any] = {
        "executable": executable(network={"ports": [
            {"internal": {"port": 8080}, "protocol": "HTTP"},
            {"internal": {"port": 5432}, "protocol": "TCP"},
            {"internal": {"port": 9000}, "protocol": "UDP", "access": False},
        ]}),
        "connectors": [
            {"kind": "http-connector", "protocol": "HTTP", "host": "127.0.0.1", "port": 18080,
             "internal": 8080, "url": "http://127.0.0.1:18080/"},
            {"kind": "port-connector", "protocol": "TCP", "host": "127.0.0.1", "port": 15432,
             "internal": 5432},
        ],
    }  # fmt: skip
    shown = with_published_ports(document["executable"], document["connectors"])
    ports = shown["network"]["ports"]
    assert ports[0]["external"] == {"port": 18080, "addresses": ["127.0.0.1"]}
    assert ports[1]["external"] == {"port": 15432, "addresses": ["127.0.0.1"]}
    assert "external" not in ports[2]
    # and the document still reads as typed ports
    assert [p.external_port for p in executable_ports(shown)] == [
        18080,
        15432,
        None,
    ]


def test_the_local_platform_reads_ports_of_either_form(tmp_path: Any) -> None:
    platform = LocalPlatform(PlatformConfig(name="local", type="local", options={}))
    for internal, external in (({"port": 8080}, {"port": 30080}), (8080, 30080)):
        ports = [{"internal": internal, "external": external, "protocol": "HTTP"},
                 {"internal": {"port": 5432}}]  # fmt: skip
        execution = Execution(
            session="s", executable=executable(network={"ports": ports}), compute={}, storage=[],
            data=[], granted={}, prepare_at=0, start_at=0, end_at=1, workdir=tmp_path,
        )  # fmt: skip
        chosen = platform._choose_ports(execution)
        assert chosen[0] == {"internal": 8080, "external": 30080, "protocol": "HTTP", "path": None}
        assert chosen[1]["internal"] == 5432 and chosen[1]["external"] > 0
        bindings = {"HostConfig": {"PortBindings": {"8080/tcp": [{"HostPort": "30080"}]}}}
        assert [p["external"] for p in platform._recover_ports(execution, bindings)] == [30080]
    twice = {"internal": {"port": 80}, "external": {"port": 30080}}
    doc = {"executable": executable(network={"ports": [twice, {**twice, "internal": 81}]})}
    parsed = parse_request(normalised(doc), REGISTRY).request
    assert parsed is not None
    (warning,) = [m for m in platform.validate(parsed) if "30080" in m.message]
    assert warning.level == "WARN"
