"""Wire formats over HTTP: JSON and YAML in both directions, problem documents with JSON
pointers for malformed requests, hostile bodies refused quickly, and unknown resources.

Every response in this file is checked by a response hook: a 500 fails the test at once.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import yaml
from starlette.testclient import TestClient

from tests.conftest import ACCEPT, COMPUTE, DOCKER, request_doc

KINDS = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/"
VOLUME = KINDS + "volume/simple-volume-mount.yaml"
STORAGE = KINDS + "storage/simple-storage-resource.yaml"
SIMPLE_DATA = KINDS + "data/simple-data-resource.yaml"
S3_DATA = KINDS + "data/S3-data-resource.yaml"

JSON_CT = {"Content-Type": "application/json"}
YAML_CT = {"Content-Type": "application/yaml"}
PROBLEM = "application/problem+json"
MIB = 1024 * 1024
QUICK = 2.0  # seconds a hostile body may take to be refused


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def _never_500(client: TestClient) -> Iterator[None]:
    """Fail the test at the first 5xx response, naming the request that caused it."""

    def check(response: httpx.Response) -> None:
        if response.status_code >= 500:
            response.read()
            req = response.request
            pytest.fail(
                f"{req.method} {req.url.path} answered {response.status_code}: "
                f"{response.text[:500]}"
            )

    client.event_hooks["response"].append(check)
    yield
    client.event_hooks["response"].remove(check)


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM, response.headers
    body = response.json()
    assert body["status"] == status
    assert body.get("title") and body.get("detail")
    for error in body.get("errors", []):
        assert set(error) >= {"pointer", "detail"}, error
        assert error["pointer"] == "" or error["pointer"].startswith("/"), error
    return body


def pointers(response: httpx.Response) -> list[str]:
    body = problem(response, 400)
    assert body.get("errors"), f"400 without an errors list: {body}"
    return [e["pointer"] for e in body["errors"]]


def refusal_pointers(response: httpx.Response) -> list[str]:
    """The fields a well-formed but unservable request's NO answer points at."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"] == "NO", body
    return [m["values"]["pointer"] for m in body["meta"]["messages"] if "pointer" in m["values"]]


def as_yaml(doc: Any) -> bytes:
    return yaml.safe_dump(doc, sort_keys=False).encode()


def offers_of(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"] == "YES", body
    assert body["offers"]
    return body["offers"]


def timed(call: Callable[[], httpx.Response]) -> httpx.Response:
    # this process's CPU time (the app's thread's too), not the wall clock: a blow-up is work,
    # and the other tests on a busy 2-core machine must not count as this body's
    started = time.process_time()
    response = call()
    elapsed = time.process_time() - started
    assert elapsed < QUICK, f"took {elapsed:.2f}s of CPU to answer {response.status_code}"
    return response


# --------------------------------------------------------------------------- JSON and YAML


def test_json_request_gets_json_response(client: TestClient) -> None:
    r = client.post("/requests", content=json.dumps(request_doc((2, 4))), headers=JSON_CT)
    assert r.headers["content-type"].split(";")[0] == "application/json"
    offers = offers_of(r)
    assert all(o["phase"] == "OFFERED" for o in offers)
    assert offers[0]["compute"]["cores"] == {"min": 4, "max": 4}


@pytest.mark.parametrize(
    "content_type",
    ["application/yaml", "application/x-yaml", "text/yaml", "application/yaml; charset=utf-8"],
)
def test_yaml_request_gets_offers(client: TestClient, content_type: str) -> None:
    r = client.post(
        "/requests", content=as_yaml(request_doc((2, 2))), headers={"Content-Type": content_type}
    )
    assert r.headers["content-type"].split(";")[0] == "application/json"
    offers = offers_of(r)
    assert offers[0]["compute"]["cores"] == {"min": 2, "max": 2}
    assert offers[0]["executable"]["kind"] == DOCKER


def test_yaml_request_in_block_style(client: TestClient) -> None:
    text = f"""
    # a comment, block style, anchors and an ISO-8601 interval that YAML must not touch
    executable:
      kind: {DOCKER}
      image:
        locations: [localhost/busybox:latest]
    compute:
      kind: {COMPUTE}
      cores: &one {{min: 1, max: 1}}
      memory: *one
    schedule:
      requested:
        duration: PT30M
    """
    body = "\n".join(line[4:] for line in text.splitlines()).encode()
    offers = offers_of(client.post("/requests", content=body, headers=YAML_CT))
    assert offers[0]["compute"]["memory"] == {"min": 1, "max": 1}
    assert offers[0]["schedule"]["available"]["duration"] == "PT30M"


def test_accept_yaml_gets_yaml_with_the_same_structure(client: TestClient) -> None:
    r = client.post("/requests", json=request_doc(), headers={"Accept": "application/yaml"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].split(";")[0] == "application/yaml"
    assert int(r.headers["content-length"]) == len(r.content)
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.content)  # really YAML, not JSON (which YAML would also load)
    doc = yaml.safe_load(r.content)
    assert doc["result"] == "YES"
    assert isinstance(doc["expires"], str)  # timestamps stay strings, as in JSON
    again = client.get(f"/offersets/{doc['meta']['uuid']}")
    assert again.headers["content-type"].split(";")[0] == "application/json"
    assert doc == again.json()


def test_yaml_in_and_yaml_out(client: TestClient) -> None:
    r = client.post(
        "/requests",
        content=as_yaml(request_doc()),
        headers={**YAML_CT, "Accept": "application/x-yaml"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].split(";")[0] == "application/yaml"
    assert yaml.safe_load(r.content)["result"] == "YES"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/json;q=0.9, application/yaml;q=0.5", "application/json"),
        ("application/yaml;q=0.5, application/json", "application/json"),
        ("application/yaml;q=0, */*", "application/json"),
        ("*/*", "application/json"),
        ("application/yaml, application/json;q=0.5", "application/yaml"),
        ("text/yaml;q=0.8, application/json;q=0.7", "application/yaml"),
        ("application/yaml;q=1.0, */*;q=1.0", "application/yaml"),
    ],
)
def test_accept_q_values(client: TestClient, accept: str, expected: str) -> None:
    r = client.post("/requests", json=request_doc(), headers={"Accept": accept})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].split(";")[0] == expected
    load = json.loads if expected == "application/json" else yaml.safe_load
    assert load(r.content)["result"] == "YES"


def test_get_endpoints_honour_accept_yaml(client: TestClient) -> None:
    offerset = client.post("/requests", json=request_doc()).json()
    session_uuid = offerset["offers"][0]["meta"]["uuid"]
    for path in (
        f"/offersets/{offerset['meta']['uuid']}",
        f"/sessions/{session_uuid}",
        "/node",
        "/health/live",
    ):
        as_json = client.get(path)
        as_yaml_ = client.get(path, headers={"Accept": "application/yaml"})
        assert as_json.status_code == as_yaml_.status_code == 200, (path, as_yaml_.text)
        assert as_yaml_.headers["content-type"].split(";")[0] == "application/yaml", path
        assert yaml.safe_load(as_yaml_.content) == as_json.json(), path


def test_session_update_in_yaml_with_yaml_answer(client: TestClient) -> None:
    offers = offers_of(client.post("/requests", json=request_doc()))
    r = client.post(
        f"/sessions/{offers[0]['meta']['uuid']}",
        content=as_yaml(ACCEPT),
        headers={**YAML_CT, "Accept": "application/yaml"},
    )
    assert r.status_code == 200, r.text
    assert yaml.safe_load(r.content)["phase"] == "ACCEPTED"


def test_problems_stay_problem_json_when_yaml_is_accepted(client: TestClient) -> None:
    doc = _request(_set("/compute/cores/min", "abc"))
    r = client.post("/requests", json=doc, headers={"Accept": "application/yaml"})
    assert pointers(r) == ["/compute/cores/min"]


# --------------------------------------------------------------------------- malformed input


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(doc: dict[str, Any]) -> None:
        *parents, last = path.strip("/").split("/")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value

    return apply


_DELETE = object()


def _request(*changes: Callable[[dict[str, Any]], None], **schedule: Any) -> dict[str, Any]:
    doc = copy.deepcopy(request_doc(**schedule))
    for change in changes:
        change(doc)
    return doc


def test_invalid_json_syntax(client: TestClient) -> None:
    r = client.post("/requests", content=b'{"executable": {"kind": }', headers=JSON_CT)
    body = problem(r, 400)
    assert "line 1" in body["detail"] and "column" in body["detail"]


def test_invalid_yaml_syntax(client: TestClient) -> None:
    r = client.post("/requests", content=b"executable: [unclosed\n", headers=YAML_CT)
    body = problem(r, 400)
    assert "YAML" in body["detail"]


def test_document_that_is_not_an_object(client: TestClient) -> None:
    for content in (b"[]", b"42", b'"text"', b"null"):
        r = client.post("/requests", content=content, headers=JSON_CT)
        assert r.status_code == 400, (content, r.text)
        assert r.headers["content-type"].split(";")[0] == PROBLEM


def test_cores_min_not_an_integer(client: TestClient) -> None:
    r = client.post("/requests", json=_request(_set("/compute/cores/min", "abc")))
    assert pointers(r) == ["/compute/cores/min"]


def test_cores_min_greater_than_max(client: TestClient) -> None:
    r = client.post("/requests", json=request_doc((4, 2)))
    assert refusal_pointers(r) == ["/compute/cores"]
    assert "greater than max" in r.json()["meta"]["messages"][0]["message"]


def test_cores_min_greater_than_max_in_yaml(client: TestClient) -> None:
    r = client.post("/requests", content=as_yaml(request_doc((1, 1), (8, 2))), headers=YAML_CT)
    assert refusal_pointers(r) == ["/compute/memory"]


def test_missing_executable(client: TestClient) -> None:
    r = client.post("/requests", json=_request(_set("/executable", _DELETE)))
    found = pointers(r)
    assert len(found) == 1 and found[0] in ("", "/", "/executable"), found
    assert "executable" in r.json()["errors"][0]["detail"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/compute/cors", "/compute/cors"),
        ("/executable/imag", "/executable/imag"),
        ("/colour", "/colour"),
    ],
)
def test_unknown_extra_field_is_named(client: TestClient, path: str, expected: str) -> None:
    r = client.post("/requests", json=_request(_set(path, {"min": 1})))
    assert pointers(r) == [expected]


def test_unknown_extra_field_is_a_400(client: TestClient) -> None:
    """Whatever the pointer, a typo'd field must be a 400 naming at least its parent."""
    r = client.post("/requests", json=_request(_set("/compute/cors", {"min": 1})))
    found = pointers(r)
    assert found and all(p.startswith("/compute") for p in found), found
    assert "cors" in r.json()["detail"]


def test_docker_container_without_image(client: TestClient) -> None:
    r = client.post("/requests", json=_request(_set("/executable/image", _DELETE)))
    assert refusal_pointers(r) == ["/executable/image"]
    assert "image" in r.json()["meta"]["messages"][0]["message"]


def test_docker_container_with_a_bad_port(client: TestClient) -> None:
    network = {"ports": [{"internal": 8888}, {"internal": 0}]}
    r = client.post("/requests", json=_request(_set("/executable/network", network)))
    assert refusal_pointers(r) == ["/executable/network/ports/1/internal/port"]


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ({"start": "tomorrow morning"}, "/schedule/requested/start"),
        ({"start": "2026-13-45T08:00:00Z/PT1H"}, "/schedule/requested/start"),
        ({"start": "2026-11-22T12:00:00Z/2026-11-22T08:00:00Z"}, "/schedule/requested/start"),
        ({"duration": "one hour"}, "/schedule/requested/duration"),
        ({"duration": "PT"}, "/schedule/requested/duration"),
        ({"duration": "-PT1H"}, "/schedule/requested/duration"),
    ],
)
def test_bad_iso8601_schedule(client: TestClient, schedule: dict[str, str], expected: str) -> None:
    r = client.post("/requests", json=request_doc(**schedule))
    assert refusal_pointers(r) == [expected]


def test_bad_interval_in_a_list_is_named_by_index(client: TestClient) -> None:
    r = client.post("/requests", json=request_doc(start=["2026-11-22T08:00:00Z/PT4H", "bad"]))
    assert refusal_pointers(r) == ["/schedule/requested/start/1"]


def test_bad_interval_in_a_list(client: TestClient) -> None:
    r = client.post("/requests", json=request_doc(start=["2026-11-22T08:00:00Z/PT4H", "bad"]))
    assert refusal_pointers(r) == ["/schedule/requested/start/1"]
    assert "bad" in r.json()["meta"]["messages"][0]["message"]


def test_data_naming_a_storage_that_does_not_exist(client: TestClient) -> None:
    data = [{"kind": SIMPLE_DATA, "location": "https://example.org/a.fits", "storage": "nowhere"}]
    r = client.post("/requests", json=_request(_set("/data", data)))
    assert refusal_pointers(r) == ["/data/0/storage"]
    assert "nowhere" in r.json()["meta"]["messages"][0]["message"]


def test_volume_naming_nothing(client: TestClient) -> None:
    volumes = [{"kind": VOLUME, "path": "/data", "resource": "nothing-by-this-name"}]
    r = client.post("/requests", json=_request(_set("/compute/volumes", volumes)))
    assert refusal_pointers(r) == ["/compute/volumes/0/resource"]
    assert "nothing-by-this-name" in r.json()["meta"]["messages"][0]["message"]


def test_every_broken_reference_is_reported(client: TestClient) -> None:
    doc = _request(
        _set("/storage", [{"kind": STORAGE, "meta": {"name": "scratch"}}]),
        _set(
            "/data",
            [
                {"kind": SIMPLE_DATA, "location": "https://example.org/a", "storage": "scratch"},
                {"kind": SIMPLE_DATA, "location": "https://example.org/b", "storage": "missing"},
            ],
        ),
        _set(
            "/compute/volumes",
            [
                {"kind": VOLUME, "path": "/scratch", "resource": "scratch"},
                {"kind": VOLUME, "path": "/x", "resource": "missing"},
            ],
        ),
    )
    assert sorted(refusal_pointers(client.post("/requests", json=doc))) == [
        "/compute/volumes/1/resource",
        "/data/1/storage",
    ]


def test_data_component_missing_a_required_field(client: TestClient) -> None:
    data = [
        {"kind": SIMPLE_DATA, "location": "https://example.org/a"},
        {"kind": S3_DATA, "endpoint": "https://s3.example.org", "object": "x"},
    ]
    found = refusal_pointers(client.post("/requests", json=_request(_set("/data", data))))
    assert found == ["/data/1/bucket"]


# --------------------------------------------------------------------------- hostile input


def test_oversized_body_with_content_length(client: TestClient) -> None:
    body = b'{"executable": {"kind": "' + b"a" * (MIB + 16) + b'"}}'
    r = timed(lambda: client.post("/requests", content=body, headers=JSON_CT))
    problem(r, 413)


def test_oversized_body_declared_only(client: TestClient) -> None:
    """A Content-Length over the limit is refused without reading the body."""
    r = timed(
        lambda: client.post(
            "/requests", content=b"{}", headers={**JSON_CT, "Content-Length": str(2 * MIB)}
        )
    )
    problem(r, 413)


def test_oversized_body_streamed_without_content_length(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"executable": {"kind": "'
        for _ in range(24):
            yield b"a" * 65536
        yield b'"}}'

    r = timed(lambda: client.post("/requests", content=chunks(), headers=JSON_CT))
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in r.request.headers
    problem(r, 413)


async def test_oversized_body_in_many_asgi_chunks_stops_reading_early(
    client: TestClient,
) -> None:
    """The TestClient hands a generator body over as one ASGI message; drive the ASGI app
    directly to check that a chunked body is refused as soon as it passes the limit."""
    chunk = b" " * 65536
    total = 64  # 4 MiB if read to the end
    received = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        if received > total:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunk, "more_body": received < total}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/requests",
        "raw_path": b"/requests",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"testserver"),
            (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
        ],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    started = time.monotonic()
    await client.app(scope, receive, send)
    assert time.monotonic() - started < QUICK
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    assert received <= MIB // len(chunk) + 2, f"read {received} chunks before refusing"


@pytest.mark.parametrize("content_type", ["application/json", "application/yaml", None])
def test_deep_nesting(client: TestClient, content_type: str | None) -> None:
    depth = 100_000
    body = b"[" * depth + b"]" * depth
    headers = {"Content-Type": content_type} if content_type else {}
    r = timed(lambda: client.post("/requests", content=body, headers=headers))
    problem(r, 400)


def test_deep_object_nesting(client: TestClient) -> None:
    depth = 100_000
    body = b'{"executable": ' + b'{"a": ' * depth + b"1" + b"}" * (depth + 1)
    r = timed(lambda: client.post("/requests", content=body, headers=JSON_CT))
    problem(r, 400)


def test_yaml_billion_laughs(client: TestClient) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    previous = "a"
    for name in "bcdefghi":
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]")
        previous = name
    lines.append(f"executable: *{previous}")
    body = "\n".join(lines).encode()
    r = timed(lambda: client.post("/requests", content=body, headers=YAML_CT))
    assert "alias" in problem(r, 400)["detail"]


def test_yaml_recursive_alias(client: TestClient) -> None:
    body = b"executable: &loop\n  kind: x\n  self: *loop\n"
    r = timed(lambda: client.post("/requests", content=body, headers=YAML_CT))
    assert "alias" in problem(r, 400)["detail"]


@pytest.mark.parametrize("content_type", ["text/csv", "application/x-www-form-urlencoded"])
def test_other_media_types_unsupported(client: TestClient, content_type: str) -> None:
    body = b'<?xml version="1.0"?><request><executable kind="x"/></request>'
    r = timed(
        lambda: client.post("/requests", content=body, headers={"Content-Type": content_type})
    )
    problem(r, 415)


@pytest.mark.parametrize("content_type", ["application/json", "application/yaml", None])
@pytest.mark.parametrize("content", [b"", b"   \n  "])
def test_empty_body(client: TestClient, content_type: str | None, content: bytes) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    r = timed(lambda: client.post("/requests", content=content, headers=headers))
    problem(r, 400)


def test_empty_yaml_document(client: TestClient) -> None:
    r = timed(lambda: client.post("/requests", content=b"# nothing\n", headers=YAML_CT))
    problem(r, 400)


@pytest.mark.parametrize("content_type", ["application/json", "application/yaml"])
def test_non_utf8(client: TestClient, content_type: str) -> None:
    doc = request_doc()
    doc["executable"]["meta"] = {"name": "caf\xe9"}
    text = json.dumps(doc, ensure_ascii=False)
    r = timed(
        lambda: client.post(
            "/requests", content=text.encode("latin-1"), headers={"Content-Type": content_type}
        )
    )
    assert "UTF-8" in problem(r, 400)["detail"]


@pytest.mark.parametrize(
    "body",
    [
        b'{"executable": {"kind": "\\ud800"}}',
        b'{"executable": {"kind": "x", "meta": {"name": "a\\udfffb"}}}',
        b'{"\\ud800": 1, "executable": {"kind": "x"}}',
    ],
)
def test_lone_surrogate_in_json(client: TestClient, body: bytes) -> None:
    r = timed(lambda: client.post("/requests", content=body, headers=JSON_CT))
    problem(r, 400)


def test_lone_surrogate_in_yaml(client: TestClient) -> None:
    r = timed(lambda: client.post("/requests", content=b'executable: "\\ud800"\n', headers=YAML_CT))
    problem(r, 400)


def test_lone_surrogate_in_a_session_update(client: TestClient) -> None:
    offers = offers_of(client.post("/requests", json=request_doc()))
    body = b'{"kind": "uri:enum-value-update", "path": "phase", "value": "\\ud800"}'
    r = client.post(f"/sessions/{offers[0]['meta']['uuid']}", content=body, headers=JSON_CT)
    problem(r, 400)


def test_hostile_session_update_bodies(client: TestClient) -> None:
    offers = offers_of(client.post("/requests", json=request_doc()))
    path = f"/sessions/{offers[0]['meta']['uuid']}"
    problem(timed(lambda: client.post(path, content=b"[" * 100_000, headers=JSON_CT)), 400)
    csv = {"Content-Type": "text/csv"}
    problem(timed(lambda: client.post(path, content=b"<accept/>", headers=csv)), 415)
    xml = {"Content-Type": "application/xml"}
    bomb = b'<!DOCTYPE u [<!ENTITY a "aaaaaaaaaa">]><u><path>&a;</path></u>'
    problem(timed(lambda: client.post(path, content=bomb, headers=xml)), 400)
    problem(timed(lambda: client.post(path, content=b"x" * (MIB + 1), headers=JSON_CT)), 413)
    assert client.get(path).json()["phase"] == "OFFERED"


# --------------------------------------------------------------------------- unknown resources


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("POST", "/nope"),
        ("GET", "/requests/extra/segments"),
        ("POST", "/sessions/00000000-0000-4000-8000-000000000000/extra"),
        ("GET", "/offersets/00000000-0000-4000-8000-000000000000/offers"),
    ],
)
def test_unknown_paths(client: TestClient, method: str, path: str) -> None:
    r = client.request(method, path, json=request_doc() if method == "POST" else None)
    assert r.status_code == 404, r.text


@pytest.mark.parametrize(
    "bad", ["not-a-uuid", "1234", "00000000-0000-4000-8000-00000000000g", "x" * 5000, "%00", "..."]
)
def test_bad_uuid(client: TestClient, bad: str) -> None:
    for response in (
        client.get(f"/sessions/{bad}"),
        client.post(f"/sessions/{bad}", json=ACCEPT),
        client.get(f"/offersets/{bad}"),
    ):
        assert response.status_code in (400, 404), response.text
        assert response.headers["content-type"].split(";")[0] == PROBLEM


def test_unknown_session_and_offerset(client: TestClient) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    problem(client.get(f"/sessions/{unknown}"), 404)
    problem(client.post(f"/sessions/{unknown}", json=ACCEPT), 404)
    problem(client.get(f"/offersets/{unknown}"), 404)
