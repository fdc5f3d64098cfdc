"""Well-formed but unservable is a NO, not a 400.

A request that parses and has the standard's types, but breaks a rule of the data model (a port
out of range, an unknown protocol, a data resource without a location, min > max, a duration of
zero), is answered ``200`` with ``result: NO`` whose messages point at the field and say what
would work, as the standard's other implementation does. Only documents that do not parse, or
have the wrong types, are 400 problems with pointers.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from tests.conftest import request_doc

KINDS = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/"
VOLUME = KINDS + "volume/simple-volume-mount.yaml"
STORAGE = KINDS + "storage/simple-storage-resource.yaml"
SIMPLE_DATA = KINDS + "data/simple-data-resource.yaml"
RUCIO_DATA = KINDS + "data/rucio-data-resource.yaml"
JUPYTER = KINDS + "executable/jupyter-notebook.yaml"
PROBLEM = "application/problem+json"
DATA = {"kind": SIMPLE_DATA, "meta": {"name": "input"}, "location": "https://example.org/a.fits"}


def refusal(response: httpx.Response) -> dict[str, dict[str, Any]]:
    """A NO answer's ERROR messages, by the pointer each names."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"] == "NO", body
    assert body["offers"] == []
    found = {}
    for m in body["meta"]["messages"]:
        if m["level"] == "ERROR":
            assert m["template"].startswith("{pointer}"), m
            assert all(isinstance(v, str) for v in m["values"].values()), m
            assert m["message"].startswith(m["values"]["pointer"] + ": "), m
            found[m["values"]["pointer"]] = m
    return found


def ports(*items: dict[str, Any]) -> dict[str, Any]:
    doc = request_doc()
    doc["executable"]["network"] = {"ports": list(items)}
    return doc


def volumes(*items: dict[str, Any], data: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    doc = request_doc()
    doc["compute"]["volumes"] = list(items)
    doc["data"] = copy.deepcopy(data if data is not None else [DATA])
    return doc


def with_data(*items: dict[str, Any]) -> dict[str, Any]:
    doc = request_doc()
    doc["data"] = list(items)
    return doc


def image(value: Any) -> dict[str, Any]:
    doc = request_doc()
    doc["executable"]["image"] = value
    return doc


CASES = [
    # (the document, the pointer, words the message must hold: what would work)
    (ports({"internal": {"port": -1}}), "/executable/network/ports/0/internal/port", "1..65535"),
    (ports({"internal": {"port": 70000}}), "/executable/network/ports/0/internal/port", "1..65535"),
    (ports({"internal": 8080, "external": 0}), "/executable/network/ports/0/external/port",
     "1..65535"),
    (ports({"external": {"port": 8080}}), "/executable/network/ports/0/internal/port", "1..65535"),
    (ports({"internal": {"port": 80}, "protocol": "FTP"}), "/executable/network/ports/0/protocol",
     "TCP, UDP, HTTP, HTTPS"),
    (with_data({"kind": SIMPLE_DATA}), "/data/0/location", "URL"),
    (with_data({"kind": SIMPLE_DATA, "location": "  "}), "/data/0/location", "URL"),
    (with_data({"kind": RUCIO_DATA, "scope": "s", "objectname": "o", "objecttype": "FOLDER"}),
     "/data/0/objecttype", "FILE, CONTAINER, DATASET"),
    (volumes({"kind": VOLUME, "path": "/data"}), "/compute/volumes/0/resource", "meta.name"),
    (volumes({"kind": VOLUME, "path": "/data", "resource": "nothing"}),
     "/compute/volumes/0/resource", "'input'"),
    (volumes({"kind": VOLUME, "path": "/data", "resource": "input", "mode": "APPEND"}),
     "/compute/volumes/0/mode", "READONLY, READWRITE"),
    (volumes({"kind": VOLUME, "path": "data", "resource": "input"}), "/compute/volumes/0/path",
     "absolute"),
    (request_doc((4, 2)), "/compute/cores", "at most max"),
    (request_doc((1, 1), (-1, 2)), "/compute/memory/min", "0.."),
    (request_doc(duration="PT0S"), "/schedule/requested/duration", "longer than zero"),
    (request_doc(duration="one hour"), "/schedule/requested/duration", "PT1H"),
    (request_doc(start=[]), "/schedule/requested/start", "at least one"),
    (request_doc(start="tomorrow"), "/schedule/requested/start", "ISO-8601 interval"),
    (image({"locations": []}), "/executable/image/locations", "at least one"),
    (image({}), "/executable/image/locations", "at least one"),
    (image({"locations": ["docker.io/x", ""]}), "/executable/image/locations/1", "give one"),
    ({"executable": {"kind": JUPYTER}}, "/executable/location", "URL"),
]  # fmt: skip


@pytest.mark.parametrize(("doc", "where", "hint"), CASES, ids=[c[1] for c in CASES])
def test_a_broken_rule_is_a_no_pointing_at_the_field(
    client: TestClient, doc: dict[str, Any], where: str, hint: str
) -> None:
    found = refusal(client.post("/requests", json=doc))
    assert list(found) == [where], found
    assert hint in found[where]["message"], found[where]


def test_every_problem_is_reported_at_once(client: TestClient) -> None:
    doc = ports({"internal": {"port": 70000}, "protocol": "FTP"}, {"internal": 22})
    doc["compute"]["cores"] = {"min": 8, "max": 2}
    doc["compute"]["volumes"] = [{"kind": VOLUME, "path": "/x", "resource": "nothing"}]
    doc["data"] = [{"kind": SIMPLE_DATA}, {**DATA, "storage": "nowhere"}]
    doc["schedule"] = {"requested": {"duration": "PT0S"}}
    found = refusal(client.post("/requests", json=doc))
    assert sorted(found) == [
        "/compute/cores",
        "/compute/volumes/0/resource",
        "/data/0/location",
        "/data/1/storage",
        "/executable/network/ports/0/internal/port",
        "/executable/network/ports/0/protocol",
        "/schedule/requested/duration",
    ]


def test_a_no_is_stored_and_read_back(client: TestClient) -> None:
    r = client.post("/requests", json=ports({"internal": {"port": 0}}))
    answer = r.json()
    again = client.get(answer["meta"]["url"].split("8080", 1)[1])
    assert again.status_code == 200, again.text
    assert again.json()["result"] == "NO"
    assert list(refusal(again)) == ["/executable/network/ports/0/internal/port"]


def test_a_direct_booking_of_a_broken_request_says_where(client: TestClient) -> None:
    """Nothing is started; however /direct answers that (its own tests say), the answer's
    messages point at the field."""
    r = client.post("/direct", json=ports({"internal": {"port": 0}}))
    assert r.status_code in (200, 400), r.text
    messages = r.json()["meta"]["messages"]
    pointers = [m["values"].get("pointer") for m in messages if m["level"] == "ERROR"]
    assert pointers == ["/executable/network/ports/0/internal/port"], messages


def test_a_good_request_is_still_offered(client: TestClient) -> None:
    doc = volumes({"kind": VOLUME, "path": "/data", "resource": "input", "mode": "READWRITE"})
    doc["executable"]["network"] = {"ports": [{"internal": {"port": 8080}, "protocol": "HTTP"}]}
    r = client.post("/requests", json=doc)
    assert r.status_code == 200, r.text
    assert r.json()["result"] == "YES", r.text


# --- type errors stay 400s with pointers ---------------------------------------------------------


def _problem_pointers(response: httpx.Response) -> list[str]:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM
    return [e["pointer"] for e in response.json()["errors"]]


@pytest.mark.parametrize(
    ("doc", "where"),
    [
        (ports({"internal": {"port": "eighty"}}), "/executable/network/ports/0/internal"),
        (request_doc() | {"data": "input"}, "/data"),
        (volumes({"kind": VOLUME, "path": 7, "resource": "input"}), "/compute/volumes/0/path"),
        (with_data({"kind": SIMPLE_DATA, "location": ["a", "b"]}), "/data/0/location"),
        (request_doc(duration=3600), "/schedule/requested/duration"),
    ],
)
def test_a_type_error_stays_a_400_with_a_pointer(
    client: TestClient, doc: dict[str, Any], where: str
) -> None:
    found = _problem_pointers(client.post("/requests", json=doc))
    assert any(p.startswith(where) for p in found), found


def test_a_document_that_does_not_parse_stays_a_400(client: TestClient) -> None:
    r = client.post(
        "/requests", content=b'{"executable": ', headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.headers["content-type"].split(";")[0] == PROBLEM
