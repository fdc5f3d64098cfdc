"""Validation before the database: every path parameter and ``format`` of the spec is checked
before any query, on SQLite and PostgreSQL, with hostile strings (NUL, CRLF, lone surrogates,
very long values); and a trailing slash is answered, never redirected by the ``Host`` header."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest
from starlette.testclient import TestClient

from broker_core.broker import Broker
from broker_core.config import NAME_PATTERN
from broker_core.http.app import SPEC_DOCUMENT
from broker_core.http.formats import SPEC_FORMATS
from broker_core.http.paths import CanonicalPaths
from tests.conftest import ACCEPT, request_doc

# hand-made hostile values: each as text and percent-encoded as it travels in a path or query
HOSTILE = [
    "\x00",
    "a\x00b",
    "%00",
    "\r\n",
    "x\r\nSet-Cookie: a=b",
    "\ud800",  # a lone surrogate: not even encodable as UTF-8
    "\udfff\ud800",
    "\ufeff",
    "\u202e" + "0" * 36,
    "\U0001d7d8" * 8 + "-0000-0000-0000-" + "0" * 12,  # digits of another script
    "../../etc/passwd",
    "' OR '1'='1",
    "0" * 10_000,
    "00000000-0000-0000-0000-00000000000g",
    "{00000000-0000-0000-0000-000000000000}",
    "urn:uuid:00000000-0000-0000-0000-000000000000",
]
UNKNOWN = "00000000-0000-4000-8000-000000000000"


def encoded(value: str) -> str:
    return urllib.parse.quote(value.encode("utf-8", "surrogatepass"), safe="")


@pytest.fixture
def node(
    broker_factory: Callable[..., Broker],
    client_factory: Callable[[Broker], TestClient],
    database_url: str,
) -> TestClient:
    return client_factory(broker_factory(database_url))


def assert_refused(response: Any, *allowed: int) -> None:
    assert response.status_code in allowed, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/problem+json")


def test_hostile_path_parameters_are_refused_before_any_query(node: TestClient) -> None:
    """``/sessions/%00`` was a 500 on PostgreSQL: a uuid parameter is now a uuid or a 400."""
    for value in HOSTILE:
        part = encoded(value)
        for method, path, body in [
            ("GET", f"/sessions/{part}", None),
            ("POST", f"/sessions/{part}", ACCEPT),
            ("GET", f"/sessions/{part}/logs", None),
            ("GET", f"/offersets/{part}", None),
            ("GET", f"/projects/{part}", None),
        ]:
            content = json.dumps(body).encode() if body else None
            headers = {"content-type": "application/json"} if body else {}
            r = node.request(method, path, content=content, headers=headers)
            assert_refused(r, 400, 404)  # 404: a value the router cannot even match (CRLF)


def test_a_malformed_uuid_is_a_400_naming_the_parameter(node: TestClient) -> None:
    r = node.get("/sessions/%00")
    assert_refused(r, 400)
    assert r.json()["detail"] == "path parameter 'uuid': '\\x00' is not a 'uuid'"


def test_a_well_formed_unknown_uuid_is_a_404(node: TestClient) -> None:
    for path in (f"/sessions/{UNKNOWN}", f"/offersets/{UNKNOWN}", f"/sessions/{UNKNOWN}/logs"):
        assert_refused(node.get(path), 404)


def test_hostile_query_parameters_are_refused(node: TestClient) -> None:
    for value in HOSTILE:
        r = node.post(f"/requests?project={encoded(value)}", json=request_doc())
        if re.fullmatch(NAME_PATTERN, value):  # a project name this node merely does not know
            assert r.status_code == 200
        else:
            assert_refused(r, 400)


def _strings_set_to(value: str) -> list[dict[str, Any]]:
    """Request documents with one string field each set to ``value``."""
    documents = []
    for put in (
        lambda d: d.update(name=value),
        lambda d: d["executable"].update(name=value),
        lambda d: d["executable"]["image"].update(locations=[value]),
        lambda d: d["executable"].update(command=[value]),
        lambda d: d["executable"].update(environment={"A": value}),
        lambda d: d["executable"].update(environment={value: "a"}),
        lambda d: d["executable"].update(kind=value),
        lambda d: d.update(schedule={"requested": {"duration": value}}),
        lambda d: d.update(schedule={"requested": {"start": [value]}}),
        lambda d: d["executable"].update(schedule={"preparing": {"start": value}}),
    ):
        document = request_doc()
        put(document)
        documents.append(document)
    return documents


@pytest.mark.slow
def test_hostile_strings_in_documents_are_never_a_500(node: TestClient) -> None:
    for value in HOSTILE:
        for document in _strings_set_to(value):
            raw = json.dumps(document).encode()  # lone surrogates travel as \ud800 escapes
            r = node.post("/requests", content=raw, headers={"content-type": "application/json"})
            assert r.status_code < 500, (ascii(value)[:40], r.status_code, r.text[:300])
            if r.status_code == 200 and r.json()["result"] == "YES":
                offer_set = r.json()["meta"]["uuid"]
                assert node.get(f"/offersets/{offer_set}").status_code == 200
                reject = {"kind": "uri:enum-value-update", "path": "phase", "value": "REJECTED"}
                for offer in r.json()["offers"]:  # holds are limited: give them back
                    node.post(f"/sessions/{offer['meta']['uuid']}", json=reject)
        update = {"kind": "uri:enum-value-update", "path": value, "value": value}
        offers = node.post("/requests", json=request_doc()).json()["offers"]
        r = node.post(f"/sessions/{offers[0]['meta']['uuid']}",
                      content=json.dumps(update).encode(),
                      headers={"content-type": "application/json"})  # fmt: skip
        assert_refused(r, 400, 409)
        node.post(f"/sessions/{offers[0]['meta']['uuid']}", json=ACCEPT)


def _formats(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["format"]} if isinstance(node.get("format"), str) else set()
        return found.union(*(_formats(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_formats(v) for v in node))
    return set()


def test_every_format_of_the_spec_is_checked() -> None:
    """A format the checker does not know is silently accepted (jsonschema's Draft 4 checker
    knew neither uuid nor int64, and date-time only with an optional package)."""
    used = _formats(SPEC_DOCUMENT)
    assert used >= {"uuid", "date-time", "int64"}
    assert used <= set(SPEC_FORMATS.checkers), used - set(SPEC_FORMATS.checkers)


@pytest.mark.parametrize(
    ("value", "name", "conforms"),
    [
        ("2024-01-01T00:00:00Z", "date-time", True),
        ("2024-01-01T00:00:00.123456789+01:00", "date-time", True),
        ("2024-13-01T00:00:00Z", "date-time", False),
        ("2024-01-01T00:00:00", "date-time", False),  # no offset
        ("\u0662\u0660\u0662\u0664-01-01T00:00:00Z", "date-time", False),
        ("12345678-1234-1234-1234-1234567890AB", "uuid", True),
        ("12345678123412341234123456789012", "uuid", False),
        (2**63 - 1, "int64", True),
        (2**63, "int64", False),
        ("https://example.org/x", "uri", True),
        ("not a uri", "uri", False),
    ],
)
def test_the_spec_formats(value: object, name: str, conforms: bool) -> None:
    assert SPEC_FORMATS.conforms(value, name) is conforms


# --- trailing slashes and redirects ---------------------------------------------------------


def test_a_trailing_slash_is_answered_without_a_redirect(node: TestClient) -> None:
    """It was a 307 whose Location came from the client's Host header."""
    evil = {"host": "evil.example"}
    for path in ("/node/", "/health/live/", f"/sessions/{UNKNOWN}/"):
        r = node.get(path, headers=evil, follow_redirects=False)
        assert r.status_code in (200, 404), (path, r.status_code)
        assert "location" not in r.headers
    r = node.post("/requests/", json=request_doc(), headers=evil, follow_redirects=False)
    assert r.status_code == 200 and r.json()["result"] == "YES"
    assert r.json()["meta"]["url"].startswith("http://127.0.0.1:8080/offersets/")


async def _redirect_to_own_host(scope: Any, receive: Any, send: Any) -> None:
    host = dict(scope["headers"])[b"host"].decode()
    await send({"type": "http.response.start", "status": 307,
                "headers": [(b"location", f"http://{host}/ui/?x=1".encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize(
    ("public_url", "location"),
    [
        ("https://broker.example.org/eb/", "https://broker.example.org/eb/ui/?x=1"),
        (None, "/ui/?x=1"),
    ],
)
def test_a_redirect_never_points_at_the_clients_host(public_url: str | None, location: str) -> None:
    app = CanonicalPaths(_redirect_to_own_host, templates=["/node"], public_url=public_url)
    r = TestClient(app).get("/ui", headers={"host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"] == location


async def _see_other_to_a_session(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 303,
                "headers": [(b"location", b"http://127.0.0.1:8080/sessions/abc")]})  # fmt: skip
    await send({"type": "http.response.body", "body": b""})


def test_a_redirect_to_the_configured_base_is_kept() -> None:
    """A 303 from /direct names the session's meta.url, under the node's base URL: a client
    that reached the node at that very address gets it as it is, equal to meta.url."""
    app = CanonicalPaths(_see_other_to_a_session, templates=["/node"], public_url=None,
                         base_url="http://127.0.0.1:8080")  # fmt: skip
    r = TestClient(app).get("/direct", headers={"host": "127.0.0.1:8080"}, follow_redirects=False)
    assert r.headers["location"] == "http://127.0.0.1:8080/sessions/abc"
