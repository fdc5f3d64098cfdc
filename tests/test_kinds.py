"""Kinds: every built-in kind is accepted and echoed in offers, unknown kinds get a NO that
lists what the node accepts, legacy documents are normalised, and the registry is extensible."""

from __future__ import annotations

import copy
from typing import Any, Literal

import httpx
import pytest
from pydantic import Field
from starlette.testclient import TestClient

from broker_core.broker import Broker
from broker_core.errors import DocumentInvalid
from broker_core.kinds.base import CATEGORIES, KIND_PREFIX, Component, kind_uri
from broker_core.kinds.builtin import KINDS, DockerContainer, SimpleComputeResource
from broker_core.kinds.legacy import (
    canonical_kind,
    normalise_component,
    normalise_request,
    normalise_update,
)
from broker_core.kinds.registry import KindRegistry, UnknownKind, load_registry
from tests.conftest import ACCEPT, COMPUTE, DOCKER, request_doc

SINGULARITY = kind_uri("executable", "singularity-container")
NOTEBOOK = kind_uri("executable", "jupyter-notebook")
VOLUME = kind_uri("volume", "simple-volume-mount")
STORAGE = kind_uri("storage", "simple-storage-resource")
SIMPLE_DATA = kind_uri("data", "simple-data-resource")
S3_DATA = kind_uri("data", "S3-data-resource")
RUCIO_DATA = kind_uri("data", "rucio-data-resource")
IVOA_DATA = kind_uri("data", "ivoa-data-resource")
SKAO_DATA = kind_uri("data", "skao-data-resource")

EB = "https://www.purl.org/ivoa.net/EB/schema"
QUANTUM = "https://example.org/kinds/executable/quantum-circuit.yaml"


def offers_of(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"] == "YES", body["meta"].get("messages")
    assert body["offers"]
    return body["offers"]


def refusal(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"] == "NO", body
    assert body["offers"] == []
    return [m["message"] for m in body["meta"]["messages"]]


def without_uuids(component: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(component)
    doc.get("meta", {}).pop("uuid", None)
    return doc


# --------------------------------------------------------------------------- built-in kinds

DOCKER_FULL: dict[str, Any] = {
    "kind": DOCKER,
    "meta": {"name": "web", "description": "a container with everything"},
    "image": {
        "locations": ["registry.example.org/web:1.0", "mirror.example.org/web:1.0"],
        "digest": "sha256:" + "0" * 64,
        "platform": {"architecture": "amd64", "os": "linux"},
    },
    "command": ["serve", "--port", "8080"],
    "entrypoint": ["/bin/sh", "-c"],
    "environment": {"MODE": "production", "THREADS": "4"},
    "privileged": False,
    "network": {
        "ports": [
            {"internal": 8080, "external": 80, "protocol": "HTTP", "path": "/app", "access": True},
            {"internal": 9000, "protocol": "UDP", "access": False},
        ]
    },
}

PORT_SIDES = ("internal", "external")

EXECUTABLES: dict[str, dict[str, Any]] = {
    "docker-full": DOCKER_FULL,
    "docker-string-entrypoint": {
        "kind": DOCKER,
        "image": {"locations": ["localhost/busybox:latest"]},
        "entrypoint": "/bin/busybox",
    },
    "singularity": {
        "kind": SINGULARITY,
        "meta": {"name": "sif"},
        "image": {"locations": ["oras://registry.example.org/tools.sif"]},
        "command": ["run"],
        "environment": {"A": "1"},
    },
    "notebook": {
        "kind": NOTEBOOK,
        "meta": {"name": "nb"},
        "location": "https://notebooks.example.org/explore.ipynb",
    },
}


@pytest.mark.parametrize("name", sorted(EXECUTABLES))
def test_executable_kinds_accepted_and_echoed(client: TestClient, name: str) -> None:
    executable = EXECUTABLES[name]
    doc = {**request_doc((1, 2), (1, 2)), "executable": executable}
    offers = offers_of(client.post("/requests", json=doc))
    for offer in offers:
        echoed = offer["executable"]
        assert echoed["kind"] == executable["kind"]
        assert echoed["meta"]["uuid"]
        for key, value in executable.items():
            if key == "meta":
                for mkey, mvalue in value.items():
                    assert echoed["meta"][mkey] == mvalue
            elif key == "network":
                for sent, got in zip(value["ports"], echoed["network"]["ports"], strict=True):
                    # bare port numbers are answered as the schema's {port: N} objects
                    sent = {k: {"port": v} if k in PORT_SIDES else v for k, v in sent.items()}
                    assert got.items() >= sent.items()
            else:
                assert echoed[key] == value, key
    assert len({o["executable"]["meta"]["uuid"] for o in offers}) == len(offers)


def test_compute_with_volumes_and_storage(client: TestClient) -> None:
    doc = {
        "executable": EXECUTABLES["notebook"],
        "compute": {
            "kind": COMPUTE,
            "meta": {"name": "cpu"},
            "cores": {"min": 2, "max": 6},
            "memory": {"min": 3, "max": 5},
            "volumes": [
                {"kind": VOLUME, "path": "/scratch", "mode": "READWRITE", "resource": "scratch"},
                {"kind": VOLUME, "path": "/data/in", "resource": "input"},
            ],
        },
        "storage": [
            {"kind": STORAGE, "meta": {"name": "scratch"}, "size": {"min": 10, "max": 20}},
        ],
        "data": [
            {
                "kind": SIMPLE_DATA,
                "meta": {"name": "input"},
                "storage": "scratch",
                "location": "https://archive.example.org/in.fits",
            }
        ],
    }
    offers = offers_of(client.post("/requests", json=doc))
    for offer in offers:
        compute = offer["compute"]
        assert compute["kind"] == COMPUTE
        assert compute["meta"]["name"] == "cpu" and compute["meta"]["uuid"]
        cores, memory = compute["cores"], compute["memory"]
        assert cores["min"] == cores["max"] and 2 <= cores["min"] <= 6
        assert memory["min"] == memory["max"] and 3 <= memory["min"] <= 5
        assert [(v["path"], v["mode"], v["resource"]) for v in compute["volumes"]] == [
            ("/scratch", "READWRITE", "scratch"),
            ("/data/in", "READONLY", "input"),  # the default mode is filled in
        ]
        (storage,) = offer["storage"]
        assert storage["kind"] == STORAGE and storage["meta"]["name"] == "scratch"
        assert storage["meta"]["uuid"]
        assert storage["size"]["min"] == storage["size"]["max"]
        assert 10 <= storage["size"]["min"] <= 20
        (data,) = offer["data"]
        assert data["kind"] == SIMPLE_DATA and data["storage"] == storage["meta"]["uuid"]  # by uuid
        assert data["location"] == "https://archive.example.org/in.fits"
        assert data["meta"]["uuid"]
    # a 16-core, 64 GiB pool has room for the most asked for
    assert offers[0]["compute"]["cores"]["min"] == 6
    assert offers[0]["compute"]["memory"]["min"] == 5


def test_compute_defaults_when_absent(client: TestClient) -> None:
    doc = {"executable": EXECUTABLES["docker-string-entrypoint"]}
    offers = offers_of(client.post("/requests", json=doc))
    compute = offers[0]["compute"]
    assert compute["kind"] == COMPUTE and compute["meta"]["uuid"]
    assert compute["cores"]["min"] == compute["cores"]["max"] >= 1
    assert compute["memory"]["min"] == compute["memory"]["max"] >= 1


DATA: dict[str, dict[str, Any]] = {
    "simple": {"kind": SIMPLE_DATA, "location": "https://archive.example.org/x.fits"},
    "S3": {
        "kind": S3_DATA,
        "endpoint": "https://s3.example.org",
        "template": "{bucket}.s3.example.org",
        "bucket": "surveys",
        "object": "field-12/cube.fits",
    },
    "rucio": {
        "kind": RUCIO_DATA,
        "endpoint": "https://rucio.example.org",
        "scope": "ska",
        "objectname": "cube-12",
    },
    "ivoa": {
        "kind": IVOA_DATA,
        "ivoid": "ivo://example.org/data?field-12",
        "obscore": {"obs_id": "field-12", "s_ra": 10.5, "dataproduct_type": "cube"},
        "datalink": "https://archive.example.org/datalink?ID=field-12",
    },
    "skao": {
        "kind": SKAO_DATA,
        "namespace": "testing",
        "objectname": "zi-1.fits",
        "datasize": 123456,
        "replicas": [
            {"rsename": "SPSRC_STORM", "dataurl": "https://storm.example.org/zi-1.fits"},
            {"rsename": "AUSSRC", "dataurl": "https://aus.example.org/zi-1.fits"},
        ],
    },
}


@pytest.mark.parametrize("name", sorted(DATA))
def test_data_kinds_accepted_and_echoed(client: TestClient, name: str) -> None:
    data = {**DATA[name], "meta": {"name": f"{name}-data"}, "storage": "scratch"}
    doc = {
        **request_doc(),
        "storage": [{"kind": STORAGE, "meta": {"name": "scratch"}, "size": {"min": 1, "max": 1}}],
        "data": [data],
    }
    doc["compute"]["volumes"] = [{"kind": VOLUME, "path": "/in", "resource": f"{name}-data"}]
    offers = offers_of(client.post("/requests", json=doc))
    for offer in offers:
        (echoed,) = offer["data"]
        assert echoed["meta"]["uuid"] and echoed["meta"]["name"] == f"{name}-data"
        assert echoed["storage"] == offer["storage"][0]["meta"]["uuid"]  # "scratch", by uuid
        for key, value in data.items():
            if key not in ("meta", "storage"):
                assert echoed[key] == value, key


def test_an_skao_replica_may_be_named_by_its_rse_alone(client: TestClient) -> None:
    """The schema asks for neither field of a replica; one known by its RSE is enough."""
    skao = {**DATA["skao"], "replicas": [{"rsename": "SPSRC_STORM"}, {"dataurl": "davs://x/y"}]}
    offers = offers_of(client.post("/requests", json={**request_doc(), "data": [skao]}))
    assert offers[0]["data"][0]["replicas"] == skao["replicas"]


def test_an_skao_replica_with_neither_rse_nor_url_is_a_no(client: TestClient) -> None:
    skao = {**DATA["skao"], "replicas": [{"rsename": "SPSRC_STORM"}, {"rsename": " "}]}
    messages = refusal(client.post("/requests", json={**request_doc(), "data": [skao]}))
    assert len(messages) == 1 and "/data/0/replicas/1" in messages[0]


def test_every_data_kind_at_once(client: TestClient) -> None:
    doc = {**request_doc(), "data": [{**d, "meta": {"name": n}} for n, d in DATA.items()]}
    offers = offers_of(client.post("/requests", json=doc))
    assert [d["kind"] for d in offers[0]["data"]] == [d["kind"] for d in DATA.values()]
    assert len({d["meta"]["uuid"] for d in offers[0]["data"]}) == len(DATA)


def test_every_builtin_kind_is_described_by_the_node(client: TestClient) -> None:
    r = client.get("/node")
    assert r.status_code == 200, r.text
    assert set(r.json()["kinds"]) >= {model.kind_uri() for model in KINDS}


# --------------------------------------------------------------------------- unknown kinds


def test_unknown_executable_kind_is_a_no_listing_accepted_kinds(client: TestClient) -> None:
    doc = {**request_doc(), "executable": {"kind": QUANTUM, "qubits": 20, "meta": {"name": "q"}}}
    messages = refusal(client.post("/requests", json=doc))
    text = " ".join(messages)
    assert QUANTUM in text
    for kind in (DOCKER, SINGULARITY, NOTEBOOK):
        assert kind in text
    assert COMPUTE not in text  # only the executable kinds are listed


def test_unknown_data_kind_is_a_no_listing_accepted_kinds(client: TestClient) -> None:
    other = "https://example.org/kinds/data/tape-archive.yaml"
    doc = {**request_doc(), "data": [DATA["simple"], {"kind": other, "tape": "T123"}]}
    messages = refusal(client.post("/requests", json=doc))
    text = " ".join(messages)
    assert other in text and "/data/1" in text
    for kind in (SIMPLE_DATA, S3_DATA, RUCIO_DATA, IVOA_DATA, SKAO_DATA):
        assert kind in text
    assert DOCKER not in text


def test_unknown_kinds_in_two_categories_are_both_reported(client: TestClient) -> None:
    doc = {
        **request_doc(),
        "executable": {"kind": QUANTUM},
        "compute": {"kind": "https://example.org/kinds/compute/fpga.yaml"},
    }
    messages = refusal(client.post("/requests", json=doc))
    assert any(QUANTUM in m for m in messages)
    assert any("fpga" in m and COMPUTE in m for m in messages)


# --------------------------------------------------------------------------- legacy forms


def test_legacy_type_instead_of_kind(client: TestClient) -> None:
    doc = request_doc((2, 2))
    doc["executable"]["type"] = doc["executable"].pop("kind")
    doc["compute"]["type"] = doc["compute"].pop("kind")
    offers = offers_of(client.post("/requests", json=doc))
    assert offers[0]["executable"]["kind"] == DOCKER
    assert offers[0]["compute"]["kind"] == COMPUTE
    assert offers[0]["compute"]["cores"] == {"min": 2, "max": 2}


def test_legacy_top_level_meta_fields(client: TestClient) -> None:
    doc = request_doc()
    doc.update(name="legacy-request", uuid="11111111-1111-4111-8111-111111111111")
    doc["executable"].update(name="legacy-exec", href="https://example.org/exec/1")
    doc["compute"].update(name="legacy-cpu", uuid="client-chosen")
    offers = offers_of(client.post("/requests", json=doc))
    offer = offers[0]
    assert offer["meta"]["name"] == "legacy-request"
    assert offer["executable"]["meta"]["name"] == "legacy-exec"
    assert offer["executable"]["meta"]["url"] == "https://example.org/exec/1"
    assert offer["compute"]["meta"]["name"] == "legacy-cpu"
    for component in (offer["executable"], offer["compute"]):
        assert not {"name", "uuid", "href"} & set(component)
        assert component["meta"]["uuid"]


def test_legacy_type_on_the_request_itself(client: TestClient) -> None:
    doc = {**request_doc(), "type": "urn:execution-request-0.1"}
    r = client.post("/requests", json=doc)
    assert r.status_code == 200, r.text
    assert r.json()["result"] == "YES"


def test_legacy_computer_instead_of_compute(client: TestClient) -> None:
    doc = request_doc((3, 3), (2, 2))
    doc["computer"] = doc.pop("compute")
    offers = offers_of(client.post("/requests", json=doc))
    assert offers[0]["compute"]["cores"] == {"min": 3, "max": 3}
    assert offers[0]["compute"]["memory"] == {"min": 2, "max": 2}


LEGACY_EXECUTABLE_URIS = [
    f"{EB}/types/executable/docker-container-1.0",
    f"{EB}/v1.0/types/executable/docker-container-1.0",
    "urn:docker-container-0.1",
    "uri:docker-container-1.0",
]
LEGACY_COMPUTE_URIS = [
    f"{EB}/types/compute/simple-compute-resource-1.0",
    f"{EB}/types/computer/simple-compute-resource-1.0",
    f"{EB}/v1.0/types/compute/simple-compute-resource-1.0",
    f"{EB}/v1.0/types/computer/simple-compute-resource-1.0",
    "urn:simple-compute-resource-0.1",
    "uri:simple-compute-resource-1.0",
]


@pytest.mark.parametrize("uri", LEGACY_EXECUTABLE_URIS)
@pytest.mark.parametrize("field", ["kind", "type"])
def test_legacy_executable_kind_uris(client: TestClient, uri: str, field: str) -> None:
    doc = request_doc()
    doc["executable"].pop("kind")
    doc["executable"][field] = uri
    offers = offers_of(client.post("/requests", json=doc))
    assert offers[0]["executable"]["kind"] == DOCKER


@pytest.mark.parametrize("uri", LEGACY_COMPUTE_URIS)
def test_legacy_compute_kind_uris(client: TestClient, uri: str) -> None:
    doc = request_doc((2, 2), (3, 3))
    doc["computer"] = doc.pop("compute")
    doc["computer"].pop("kind")
    doc["computer"]["type"] = uri
    offers = offers_of(client.post("/requests", json=doc))
    compute = offers[0]["compute"]
    assert compute["kind"] == COMPUTE
    assert compute["cores"] == {"min": 2, "max": 2}
    assert compute["memory"] == {"min": 3, "max": 3}


@pytest.mark.parametrize(
    ("category", "name"),
    [("executable", "singularity-container"), ("executable", "jupyter-notebook")],
)
def test_legacy_uris_of_other_executables(client: TestClient, category: str, name: str) -> None:
    canonical = kind_uri(category, name)
    body = next(e for e in EXECUTABLES.values() if e["kind"] == canonical)
    for uri in (f"{EB}/types/{category}/{name}-1.0", f"urn:{name}-0.1", f"uri:{name}-1.0"):
        executable = {**body, "type": uri}
        executable.pop("kind")
        doc = {**request_doc(), "executable": executable}
        offers = offers_of(client.post("/requests", json=doc))
        assert offers[0]["executable"]["kind"] == canonical, uri


def test_legacy_storage_data_and_volumes(client: TestClient) -> None:
    """A whole request in the old form: names at the top level and old URIs everywhere."""
    doc = {
        "name": "old-style",
        "executable": {
            "name": "nb",
            "type": f"{EB}/v1.0/types/executable/jupyter-notebook-1.0",
            "location": "https://notebooks.example.org/x.ipynb",
        },
        "computer": {
            "name": "cpu",
            "type": f"{EB}/v1.0/types/computer/simple-compute-resource-1.0",
            "cores": {"min": 1, "max": 1},
            "memory": {"min": 1, "max": 1},
            "volumes": [
                {"type": "urn:simple-volume-mount-0.1", "path": "/in", "resource": "input"},
                {
                    "type": f"{EB}/types/volume/simple-volume-mount-1.0",
                    "path": "/tmp2",
                    "mode": "READWRITE",
                    "resource": "scratch",
                },
            ],
        },
        "storage": [
            {
                "name": "scratch",
                "type": "uri:simple-storage-resource-1.0",
                "size": {"min": 2, "max": 2},
            },
        ],
        "data": [
            {
                "name": "input",
                "type": f"{EB}/types/data/simple-data-resource-1.0",
                "storage": "scratch",
                "location": "https://archive.example.org/a.fits",
            },
            {
                "name": "s3",
                "type": "urn:S3-data-resource-0.1",
                "endpoint": "https://s3.example.org",
                "bucket": "b",
                "object": "o",
            },
            {
                "name": "skao",
                "type": "uri:skao-data-resource-1.0",
                "namespace": "n",
                "objectname": "o",
            },
        ],
    }
    offers = offers_of(client.post("/requests", json=doc))
    offer = offers[0]
    assert offer["meta"]["name"] == "old-style"
    assert offer["executable"]["kind"] == NOTEBOOK
    assert [v["kind"] for v in offer["compute"]["volumes"]] == [VOLUME, VOLUME]
    # the data resources that name no storage get one each (by uuid), as the standard's do
    assert [s["kind"] for s in offer["storage"]] == [STORAGE, STORAGE, STORAGE]
    assert offer["storage"][0]["meta"]["name"] == "scratch"
    assert [d["kind"] for d in offer["data"]] == [SIMPLE_DATA, S3_DATA, SKAO_DATA]
    assert [d["meta"]["name"] for d in offer["data"]] == ["input", "s3", "skao"]
    assert [d["storage"] for d in offer["data"]] == [s["meta"]["uuid"] for s in offer["storage"]]


def test_legacy_single_component_where_a_list_is_expected(client: TestClient) -> None:
    doc = {
        **request_doc(),
        "data": {
            "name": "one",
            "type": "urn:simple-data-resource-0.1",
            "location": "https://example.org/x",
        },
    }
    offers = offers_of(client.post("/requests", json=doc))
    assert [d["meta"]["name"] for d in offers[0]["data"]] == ["one"]


def test_legacy_request_in_yaml(client: TestClient) -> None:
    text = """\
name: yaml-legacy
executable:
  name: old
  type: urn:docker-container-0.1
  image: {locations: [localhost/busybox:latest]}
computer:
  type: uri:simple-compute-resource-1.0
  cores: {min: 2, max: 2}
"""
    r = client.post("/requests", content=text, headers={"Content-Type": "application/yaml"})
    offer = offers_of(r)[0]
    assert offer["meta"]["name"] == "yaml-legacy"
    assert offer["executable"]["kind"] == DOCKER
    assert offer["compute"]["cores"] == {"min": 2, "max": 2}


def test_legacy_forms_on_the_older_paths(client: TestClient) -> None:
    doc = request_doc()
    doc["computer"] = doc.pop("compute")
    doc["executable"]["type"] = "urn:docker-container-0.1"
    doc["executable"].pop("kind")
    offers = offers_of(client.post("/offersets", json=doc))
    assert offers[0]["executable"]["kind"] == DOCKER
    r = client.post("/sessions", json=doc, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert r.json()["phase"] == "ACCEPTED"


@pytest.mark.parametrize(
    "update",
    [
        {"update": {"type": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}},
        {"update": {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}},
        {"update": {"type": "urn:enum-value-update", "path": "phase", "value": "ACCEPTED"}},
        {"update": {"type": "urn:enum-value-update-1.0", "path": "phase", "value": "ACCEPTED"}},
        {"type": "uri:enum-value-update-1.0", "path": "phase", "value": "ACCEPTED"},
    ],
)
def test_legacy_update_forms(client: TestClient, update: dict[str, Any]) -> None:
    offers = offers_of(client.post("/requests", json=request_doc()))
    r = client.post(f"/sessions/{offers[0]['meta']['uuid']}", json=update)
    assert r.status_code == 200, r.text
    assert r.json()["phase"] == "ACCEPTED"
    siblings = client.get(f"/offersets/{r.json()['offerset']['uuid']}").json()["offers"]
    assert [o["phase"] for o in siblings][1:] == ["REJECTED"] * (len(siblings) - 1)


def test_legacy_update_in_yaml(client: TestClient) -> None:
    offers = offers_of(client.post("/requests", json=request_doc()))
    text = "update:\n  type: uri:enum-value-update\n  path: phase\n  value: REJECTED\n"
    r = client.post(
        f"/sessions/{offers[1]['meta']['uuid']}",
        content=text,
        headers={"Content-Type": "application/yaml"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["phase"] == "REJECTED"


# --------------------------------------------------------------------------- legacy unit tests


@pytest.fixture(scope="module")
def registry() -> KindRegistry:
    return KindRegistry(KINDS)


@pytest.mark.parametrize("uri", LEGACY_EXECUTABLE_URIS)
def test_canonical_kind_executable(registry: KindRegistry, uri: str) -> None:
    assert canonical_kind(uri, "executable", registry) == DOCKER


@pytest.mark.parametrize("uri", LEGACY_COMPUTE_URIS)
def test_canonical_kind_compute(registry: KindRegistry, uri: str) -> None:
    assert canonical_kind(uri, "compute", registry) == COMPUTE


@pytest.mark.parametrize(
    ("uri", "category", "expected"),
    [
        ("urn:S3-data-resource-0.1", "data", S3_DATA),
        ("urn:s3-data-resource-0.1", "data", S3_DATA),
        (f"{EB}/types/data/ivoa-data-resource-1.0", "data", IVOA_DATA),
        (f"{EB}/v1.0/types/storage/simple-storage-resource-1.0", "storage", STORAGE),
        ("uri:simple-volume-mount-1.0", "volume", VOLUME),
        ("urn:jupyter-notebook", "executable", NOTEBOOK),  # no version suffix
        (DOCKER, "executable", DOCKER),  # canonical stays canonical
    ],
)
def test_canonical_kind_other_categories(
    registry: KindRegistry, uri: str, category: str, expected: str
) -> None:
    assert canonical_kind(uri, category, registry) == expected


@pytest.mark.parametrize(
    ("uri", "category"),
    [
        (f"{EB}/types/executable/docker-container-1.0", "compute"),  # category mismatch
        (f"{EB}/types/data/docker-container-1.0", "executable"),  # named category differs
        ("urn:quantum-circuit-0.1", "executable"),  # no such kind
        ("urn:simple-compute-resource-0.1", "executable"),  # exists, but in another category
        (QUANTUM, "executable"),
        ("https://example.org/EB/schema/types/executable/docker-container-1.0", "executable"),
        ("", "executable"),
    ],
)
def test_canonical_kind_leaves_others_unchanged(
    registry: KindRegistry, uri: str, category: str
) -> None:
    assert canonical_kind(uri, category, registry) == uri


def test_normalise_component(registry: KindRegistry) -> None:
    legacy = {
        "type": "urn:docker-container-0.1",
        "name": "x",
        "uuid": "u",
        "href": "https://example.org/x",
        "image": {"locations": ["a"]},
    }
    original = copy.deepcopy(legacy)
    assert normalise_component(legacy, "executable", registry) == {
        "kind": DOCKER,
        "meta": {"name": "x", "uuid": "u", "url": "https://example.org/x"},
        "image": {"locations": ["a"]},
    }
    assert legacy == original  # the input is not modified


def test_normalise_component_meta_wins_over_top_level(registry: KindRegistry) -> None:
    doc = {"kind": DOCKER, "name": "outer", "meta": {"name": "inner", "description": "d"}}
    assert normalise_component(doc, "executable", registry)["meta"] == {
        "name": "inner",
        "description": "d",
    }


def test_normalise_component_kind_wins_over_type(registry: KindRegistry) -> None:
    doc = {"kind": DOCKER, "type": "something-else"}
    out = normalise_component(doc, "executable", registry)
    assert out["kind"] == DOCKER


def test_normalise_component_passes_non_objects_through(registry: KindRegistry) -> None:
    for value in (None, "x", 1, [1, 2]):
        assert normalise_component(value, "executable", registry) == value


def test_normalise_request(registry: KindRegistry) -> None:
    legacy = {
        "name": "req",
        "href": "https://example.org/req",
        "executable": {"type": "uri:docker-container-1.0", "image": {"locations": ["a"]}},
        "computer": {
            "type": f"{EB}/types/computer/simple-compute-resource-1.0",
            "volumes": [{"type": "urn:simple-volume-mount-0.1", "path": "/d", "resource": "d"}],
        },
        "storage": {"type": "urn:simple-storage-resource-0.1", "name": "s"},
        "data": [{"type": "urn:simple-data-resource-0.1", "name": "d", "location": "l"}],
        "schedule": {"requested": {"duration": "PT1H"}},
    }
    original = copy.deepcopy(legacy)
    assert normalise_request(legacy, registry) == {
        "meta": {"name": "req", "url": "https://example.org/req"},
        "executable": {"kind": DOCKER, "image": {"locations": ["a"]}},
        "compute": {
            "kind": COMPUTE,
            "volumes": [{"kind": VOLUME, "path": "/d", "resource": "d"}],
        },
        "storage": [{"kind": STORAGE, "meta": {"name": "s"}}],
        "data": [{"kind": SIMPLE_DATA, "meta": {"name": "d"}, "location": "l"}],
        "schedule": {"requested": {"duration": "PT1H"}},
    }
    assert legacy == original


def test_normalise_request_canonical_is_unchanged(registry: KindRegistry) -> None:
    doc = request_doc((1, 2), start="2026-11-22T08:00:00Z/PT4H")
    assert normalise_request(copy.deepcopy(doc), registry) == doc


def test_normalise_request_compute_wins_over_computer(registry: KindRegistry) -> None:
    doc = {"executable": {"kind": DOCKER}, "compute": {"kind": COMPUTE}, "computer": {"x": 1}}
    out = normalise_request(doc, registry)
    assert out["compute"] == {"kind": COMPUTE}


def test_normalise_request_passes_non_objects_through(registry: KindRegistry) -> None:
    for value in (None, "x", 1, [1, 2]):
        assert normalise_request(value, registry) == value


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            {"update": {"type": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}},
            ACCEPT,
        ),
        (
            {"update": {"kind": "urn:enum-value-update-0.1", "path": "phase", "value": "ACCEPTED"}},
            ACCEPT,
        ),
        ({"type": "uri:enum-value-update-1.0", "path": "phase", "value": "ACCEPTED"}, ACCEPT),
        (ACCEPT, ACCEPT),
        (
            {"update": {"kind": "uri:integer-delta-update", "path": "duration", "delta": 60}},
            {"kind": "uri:integer-delta-update", "path": "duration", "delta": 60},
        ),
        # a document that has more than just `update` is not a wrapper
        ({"update": {"kind": "x"}, "path": "phase"}, {"update": {"kind": "x"}, "path": "phase"}),
        ("not an object", "not an object"),
    ],
)
def test_normalise_update(doc: Any, expected: Any) -> None:
    original = copy.deepcopy(doc)
    assert normalise_update(doc) == expected
    assert doc == original


# --------------------------------------------------------------------------- registry


class QuantumCircuit(Component):
    CATEGORY = "executable"
    NAME = "quantum-circuit"
    kind: Literal[kind_uri("executable", "quantum-circuit")] = Field(  # type: ignore[valid-type]
        default=kind_uri("executable", "quantum-circuit")
    )
    qubits: int = Field(ge=1, le=1000)
    circuit: str = Field(min_length=1)


QUANTUM_URI = kind_uri("executable", "quantum-circuit")


def test_registry_parses_a_registered_subclass() -> None:
    registry = KindRegistry(KINDS)
    assert registry.model("executable", QUANTUM_URI) is None
    registry.register(QuantumCircuit)
    assert registry.model("executable", QUANTUM_URI) is QuantumCircuit
    assert QUANTUM_URI in registry.kinds("executable")
    assert QUANTUM_URI not in registry.kinds("data")
    assert registry.find_by_name("quantum-circuit") == QUANTUM_URI
    parsed = registry.parse(
        "executable",
        {"kind": QUANTUM_URI, "meta": {"name": "bell"}, "qubits": 2, "circuit": "H 0; CX 0 1"},
        ("executable",),
    )
    assert isinstance(parsed, QuantumCircuit)
    assert parsed.qubits == 2 and parsed.name == "bell"


def test_registry_reports_invalid_and_unknown_components() -> None:
    registry = KindRegistry([QuantumCircuit])
    with pytest.raises(DocumentInvalid) as invalid:
        registry.parse(
            "executable", {"kind": QUANTUM_URI, "qubits": 0, "circuit": "x"}, ("executable",)
        )
    assert [e.pointer for e in invalid.value.errors] == ["/executable/qubits"]
    with pytest.raises(DocumentInvalid) as extra:
        registry.parse(
            "executable",
            {"kind": QUANTUM_URI, "qubits": 1, "circuit": "x", "y": 1},
            ("executable",),
        )
    assert [e.pointer for e in extra.value.errors] == ["/executable/y"]
    with pytest.raises(DocumentInvalid) as no_kind:
        registry.parse("executable", {"qubits": 1}, ("executable",))
    assert [e.pointer for e in no_kind.value.errors] == ["/executable/kind"]
    with pytest.raises(UnknownKind) as unknown:
        registry.parse("executable", {"kind": DOCKER}, ("executable",))
    assert unknown.value.kind == DOCKER and unknown.value.where == "/executable"
    with pytest.raises(DocumentInvalid):
        registry.parse("executable", ["not", "an", "object"], ("executable",))


def test_legacy_names_resolve_to_a_registered_kind() -> None:
    registry = KindRegistry([*KINDS, QuantumCircuit])
    for uri in ("urn:quantum-circuit-0.1", f"{EB}/types/executable/quantum-circuit-1.0"):
        assert canonical_kind(uri, "executable", registry) == QUANTUM_URI


def test_load_registry_includes_the_builtins() -> None:
    registry = load_registry()
    for model in KINDS:
        assert registry.model(model.CATEGORY, model.kind_uri()) is model
    assert DockerContainer.kind_uri() == DOCKER
    assert SimpleComputeResource.kind_uri() == COMPUTE
    assert set(registry.kinds()) >= {m.kind_uri() for m in KINDS}
    for category in CATEGORIES:
        assert registry.kinds(category), category
        assert all(k.startswith(KIND_PREFIX + category + "/") for k in registry.kinds(category))


def test_a_registered_kind_reaches_the_platform_check(client: TestClient, broker: Broker) -> None:
    """Once registered, a plugin kind is parsed: the NO then comes from the platform, which does
    not provide it, rather than from the parser not knowing it."""
    broker.registry.register(QuantumCircuit)
    doc = {
        **request_doc(),
        "executable": {"type": "urn:quantum-circuit-0.1", "qubits": 5, "circuit": "H 0"},
    }
    messages = refusal(client.post("/requests", json=doc))
    assert any(QUANTUM_URI in m and "does not accept" in m for m in messages), messages
    assert not any("unknown" in m for m in messages), messages
    bad = {**doc, "executable": {"kind": QUANTUM_URI, "qubits": 0, "circuit": "H 0"}}
    r = client.post("/requests", json=bad)
    assert r.status_code == 400, r.text
    assert [e["pointer"] for e in r.json()["errors"]] == ["/executable/qubits"]
