"""XML in and out: request bodies parsed safely and typed by the spec's schema, answers in XML
for ``Accept: application/xml`` (problems as ``application/problem+xml``), hostile XML refused
quickly, and the ``yml`` spellings of YAML.

Every response in this file is checked by a response hook: a 500 fails the test at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as DefusedET
import httpx
import pytest
import yaml
from starlette.testclient import TestClient

from broker_core.http.bodies import BodyError, BodyLimits, parse_body
from broker_core.http.negotiation import (
    XML_REQUEST_SCHEMA,
    XML_UPDATE_SCHEMA,
    _typed_update_value,
    preferred_format,
    spec_schemas,
)
from broker_core.http.xml import PROBLEM_NS, Schemas, dump_xml, is_xml, parse_xml
from tests.conftest import ACCEPT, COMPUTE, DOCKER, request_doc

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "requests"
DOCUMENTS = Path(__file__).resolve().parent / "documents" / "xml"
XML_CT = {"Content-Type": "application/xml"}
YAML_CT = {"Content-Type": "application/yaml"}
ACCEPT_XML = {"Accept": "application/xml"}
MIB = 1024 * 1024
QUICK = 3.0  # CPU seconds a hostile body may take to be refused: ~0.5 s, 6x that is a blow-up,
# not a busy CI core


@pytest.fixture(autouse=True)
def _never_500(client: TestClient) -> Iterator[None]:
    def check(response: httpx.Response) -> None:
        if response.status_code >= 500:
            response.read()
            pytest.fail(f"{response.request.url.path} answered 500: {response.text[:500]}")

    client.event_hooks["response"].append(check)
    yield
    client.event_hooks["response"].remove(check)


def schemas() -> Schemas:
    return spec_schemas()


def request_schema() -> Any:
    return XML_REQUEST_SCHEMA  # ExecutionRequest, and the legacy `computer` typed as `compute`


def to_xml(doc: Any, root: str = "offers-request") -> bytes:
    return dump_xml(doc, root, schemas(), request_schema())


def example(name: str) -> Any:
    return yaml.safe_load((EXAMPLES / name).read_text())


def timed(call: Callable[[], Any]) -> Any:
    # this process's CPU time, not the wall clock: a blow-up is work, and the other tests on a
    # busy 2-core machine must not count as this body's
    started = time.process_time()
    result = call()
    elapsed = time.process_time() - started
    assert elapsed < QUICK, f"took {elapsed:.2f}s of CPU"
    return result


DEFAULT_LIMITS = BodyLimits()


def refused(raw: bytes, status: int = 400, limits: BodyLimits = DEFAULT_LIMITS) -> BodyError:
    def call() -> BodyError:
        with pytest.raises(BodyError) as info:
            parse_body(raw, "application/xml", limits, (schemas(), request_schema()))
        return info.value

    err = timed(call)
    assert err.status == status, err.detail
    return err


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    return response.json()


def xml_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+xml"
    root = DefusedET.fromstring(response.content)
    assert root.tag == f"{{{PROBLEM_NS}}}problem"
    doc = parse_xml(response.content, schemas=schemas(), schema=schemas().named("Problem"))
    assert doc["status"] == status and doc.get("title") and doc.get("detail")
    return doc


VOLATILE = {"uuid", "url", "created", "modified", "expires", "time", "start", "offerset"}


def essentials(offer_set: Any) -> Any:
    """What two answers to the same request share (not their uuids, times or holds)."""
    if isinstance(offer_set, dict):
        return {
            k: essentials(v)
            for k, v in offer_set.items()
            # a data resource names its storage by the storage's uuid, which differs too
            if k not in VOLATILE and not (k == "storage" and isinstance(v, str))
        }
    if isinstance(offer_set, list):
        return [essentials(v) for v in offer_set]
    return offer_set


# --------------------------------------------------------------------------- the mapping


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_examples_round_trip_through_xml(name: str) -> None:
    doc = example(name)
    assert parse_xml(to_xml(doc), schemas=schemas(), schema=request_schema()) == doc


@pytest.mark.parametrize("name", ["02-compute", "03-notebook-with-data", "05-legacy-types"])
def test_hand_written_documents_read_as_the_examples(name: str) -> None:
    raw = (DOCUMENTS / f"{name}.xml").read_bytes()
    doc = parse_xml(raw, schemas=schemas(), schema=request_schema())
    assert doc == example(f"{name}.yaml")  # legacy `computer` is typed like `compute`


def test_text_is_typed_by_the_schema_not_by_its_look() -> None:
    doc = request_doc()
    doc["executable"]["command"] = ["42", "true"]
    doc["executable"]["meta"] = {"name": "007"}
    doc["executable"]["privileged"] = True
    doc["executable"]["network"] = {"ports": [{"internal": 8080, "access": False}]}
    raw = to_xml(doc)
    assert b"xsi:type" not in raw  # the schema says what everything is
    back = parse_xml(raw, schemas=schemas(), schema=request_schema())
    assert back == doc
    assert back["executable"]["command"] == ["42", "true"]
    assert back["compute"]["cores"] == {"min": 1, "max": 1}
    assert back["executable"]["network"]["ports"][0] == {"internal": 8080, "access": False}


def test_a_field_that_is_a_string_or_a_list() -> None:
    one = (
        b"<r><schedule><requested><start>2030-01-01T00:00Z/PT1H</start></requested></schedule></r>"
    )
    two = (
        b"<r><schedule><requested><start>2030-01-01T00:00Z/PT1H</start>"
        b"<start>2030-01-02T00:00Z/PT1H</start></requested></schedule></r>"
    )
    wrapped = b"<r><schedule><requested><start><start>a</start></start></requested></schedule></r>"
    read = lambda raw: parse_xml(raw, schemas=schemas(), schema=request_schema())  # noqa: E731
    assert read(one)["schedule"]["requested"]["start"] == "2030-01-01T00:00Z/PT1H"
    assert read(two)["schedule"]["requested"]["start"] == [
        "2030-01-01T00:00Z/PT1H",
        "2030-01-02T00:00Z/PT1H",
    ]
    assert read(wrapped)["schedule"]["requested"]["start"] == ["a"]


def test_wrapped_and_unwrapped_lists_read_alike() -> None:
    read = lambda raw: parse_xml(raw, schemas=schemas(), schema=request_schema())  # noqa: E731
    unwrapped = b"<r><executable><command>a</command><command>b</command></executable></r>"
    wrapped = b"<r><executable><command><c>a</c><c>b</c></command></executable></r>"
    single = b"<r><executable><command>a</command></executable></r>"
    empty = b"<r><executable><command/></executable></r>"
    assert read(unwrapped)["executable"]["command"] == ["a", "b"]
    assert read(wrapped)["executable"]["command"] == ["a", "b"]
    assert read(single)["executable"]["command"] == ["a"]
    assert read(empty)["executable"]["command"] == []
    storage = f'<storage kind="{COMPUTE}"><meta><name>s</name></meta></storage>'
    once = read(f"<r>{storage}</r>".encode())["storage"]
    assert once == [{"kind": COMPUTE, "meta": {"name": "s"}}]
    twice = read(f"<r>{storage}{storage}</r>".encode())["storage"]
    assert len(twice) == 2
    in_wrapper = read(f"<r><storage>{storage}{storage}</storage></r>".encode())["storage"]
    assert in_wrapper == twice


def test_the_standards_item_names_for_messages() -> None:
    session = schemas().named("ExecutionSession")
    wrapped = b"<s><meta><messages><message><template>t</template></message></messages></meta></s>"
    unwrapped = b"<s><meta><message><template>a</template></message><message><template>b"
    unwrapped += b"</template></message></meta></s>"
    assert parse_xml(wrapped, schemas=schemas(), schema=session)["meta"]["messages"] == [
        {"template": "t"}
    ]
    assert parse_xml(unwrapped, schemas=schemas(), schema=session)["meta"]["messages"] == [
        {"template": "a"},
        {"template": "b"},
    ]


def test_an_abstract_type_reads_as_the_subtype_its_discriminator_maps_the_kind_to() -> None:
    """As the standard's schemas have it (and Jackson reads them): the abstract base names its
    subtypes in ``discriminator.mapping``, and each subtype's ``allOf`` names the base again."""
    ref = "#/components/schemas/"
    components = {
        "Component": {"type": "object", "properties": {"kind": {"type": "string"},
                                                       "phase": {"type": "string"}}},
        "AbstractCompute": {
            "type": "object",
            "discriminator": {"propertyName": "kind", "mapping": {"simple": ref + "Simple"}},
            "allOf": [{"$ref": ref + "Component"}],
        },
        "Simple": {
            "type": "object",
            "allOf": [
                {"$ref": ref + "AbstractCompute"},
                {"properties": {"cores": {"type": "integer"},
                                "names": {"type": "array", "items": {"type": "string"}}}},
            ],
        },
        "Session": {"type": "object", "properties": {"compute": {"$ref": ref + "AbstractCompute"}}},
    }  # fmt: skip
    standard = Schemas(components)
    raw = b'<s><compute kind="%s"><phase>WAITING</phase><cores>8</cores>'
    raw += b"<names><names>007</names></names></compute></s>"
    read = parse_xml(raw % b"simple", schemas=standard, schema=standard.named("Session"))
    assert read["compute"] == {"kind": "simple", "phase": "WAITING", "cores": 8, "names": ["007"]}
    # a kind the mapping does not name has only the base's members: the rest stays text
    other = parse_xml(raw % b"other", schemas=standard, schema=standard.named("Session"))
    assert other["compute"]["cores"] == "8" and other["compute"]["names"] == {"names": "007"}
    # the writer follows the mapping too, so what it writes reads back the same
    doc = {"compute": read["compute"]}
    written = dump_xml(doc, "s", standard, standard.named("Session"))
    assert b"xsi:type" not in written
    assert parse_xml(written, schemas=standard, schema=standard.named("Session")) == doc


def test_free_form_values_nulls_odd_keys_and_characters_round_trip() -> None:
    session = schemas().named("ExecutionSession")
    doc = {
        "kind": "k",
        "meta": {
            "uuid": None,
            "messages": [
                {
                    "template": "{n} cores at {t}",
                    "values": {"n": 8, "t": "now", "ok": True, "x": 1.5, "s": "8", "l": [1, "a"]},
                }
            ],
        },
        "executable": {"kind": DOCKER, "environment": {"A B": "1", "2x": "<&>\"'", "xmlns": "y"}},
        "phase": "OFFERED",
    }
    raw = dump_xml(doc, "execution", schemas(), session)
    DefusedET.fromstring(raw)  # well-formed
    assert parse_xml(raw, schemas=schemas(), schema=session) == doc
    odd = {"kind": "k", "meta": {"name": "a\x00b\x1fc\ud800"}}
    back = parse_xml(
        dump_xml(odd, "execution", schemas(), session), schemas=schemas(), schema=session
    )
    assert back["meta"]["name"] == "a\ufffdb\ufffdc\ufffd"  # XML 1.0 cannot hold these


def test_media_types() -> None:
    for mt in ("application/xml", "text/xml", "application/vnd.ivoa.eb+xml"):
        assert is_xml(mt)
    for mt in ("application/xhtml+xml", "application/json", "text/html", ""):
        assert not is_xml(mt)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("application/xml", "xml"),
        ("text/xml", "xml"),
        ("application/problem+xml", "xml"),
        ("application/xml;q=0.5, application/json", "json"),
        ("application/xml, application/json", "json"),
        ("application/xml, application/yaml;q=0.9", "xml"),
        ("application/xml;q=0.9, */*;q=0.8", "xml"),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "json"),
        ("application/yml", "yaml"),
        ("text/yml", "yaml"),
        ("", "json"),
    ],
)
def test_preferred_format(accept: str, expected: str) -> None:
    assert preferred_format(accept) == expected


# --------------------------------------------------------------------------- hostile XML

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<r><executable><meta><name>&lol9;</name></meta></executable></r>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<r><executable><meta><name>&x;</name></meta></executable></r>"""
EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE r SYSTEM "http://127.0.0.1:9/evil.dtd">
<r><executable/></r>"""
PLAIN_DTD = b"<!DOCTYPE r><r><executable/></r>"
PARAMETER_ENTITY = b"""<!DOCTYPE r [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><r/>"""
DEEP = b"<a>" * 100_000 + b"</a>" * 100_000
HOSTILE = {
    "billion-laughs": BILLION_LAUGHS,
    "external-entity": EXTERNAL_ENTITY,
    "external-dtd": EXTERNAL_DTD,
    "dtd": PLAIN_DTD,
    "parameter-entity": PARAMETER_ENTITY,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_dtds_and_entities_refused(name: str) -> None:
    err = refused(HOSTILE[name])
    assert "DTD" in err.detail


def test_100k_deep_refused_quickly() -> None:
    assert "nesting deeper than 64 levels" in refused(DEEP).detail


def test_depth_limit_counts_json_levels() -> None:
    limits = BodyLimits(max_depth=3)
    read = lambda raw: parse_body(raw, "text/xml", limits)  # noqa: E731
    assert read(b"<a><b><c><d>x</d></c></b></a>") == {"b": {"c": {"d": "x"}}}
    err = refused(b"<a><b><c><d><e>x</e></d></c></b></a>", limits=limits)
    assert "nesting deeper than 3 levels" in err.detail


def test_too_many_elements_refused_quickly() -> None:
    groups = b"<g>" + b"<c/>" * 999 + b"</g>"  # under the limit of children of one element
    raw = b"<r><executable><command>" + groups * 101 + b"</command></executable></r>"
    assert len(raw) < MIB
    assert "100000" in refused(raw).detail


def test_oversized_refused() -> None:
    raw = b"<r><executable><meta><name>" + b"x" * MIB + b"</name></meta></executable></r>"
    refused(raw, status=413)


@pytest.mark.parametrize(
    "raw",
    [b"<r><a>1</a>", b"<r></s>", b"not xml at all <", b"<r>&undefined;</r>", b"<r/><r/>"],
)
def test_malformed_xml_is_a_bad_request(raw: bytes) -> None:
    refused(raw)


def test_text_next_to_elements_is_refused_with_a_pointer() -> None:
    err = refused(b"<r><compute>text<cores><min>1</min></cores></compute></r>")
    assert err.pointer == "/compute"


def test_unknown_xsi_type_is_refused() -> None:
    xsi = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    err = refused(f'<r {xsi}><kind xsi:type="xs:dateTime">x</kind></r>'.encode())
    assert err.pointer == "/kind"


def test_attribute_and_element_with_one_name_refused() -> None:
    refused(b'<r><executable kind="a"><kind>b</kind></executable></r>')


# --------------------------------------------------------------------------- over HTTP


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_example_posted_as_xml_gets_the_answer_yaml_gets(client: TestClient, name: str) -> None:
    text = (EXAMPLES / name).read_bytes()
    as_yaml = client.post("/requests", content=text, headers=YAML_CT)
    as_xml = client.post("/requests", content=to_xml(yaml.safe_load(text)), headers=XML_CT)
    assert as_yaml.status_code == as_xml.status_code == 200, as_xml.text
    assert essentials(as_xml.json()) == essentials(as_yaml.json())


@pytest.mark.parametrize("path", sorted(DOCUMENTS.glob("0*.xml")), ids=lambda p: p.stem)
def test_hand_written_xml_gets_the_answer_yaml_gets(client: TestClient, path: Path) -> None:
    as_yaml = client.post(
        "/requests", content=(EXAMPLES / f"{path.stem}.yaml").read_bytes(), headers=YAML_CT
    )
    as_xml = client.post("/requests", content=path.read_bytes(), headers=XML_CT)
    assert as_yaml.status_code == as_xml.status_code == 200, as_xml.text
    assert essentials(as_xml.json()) == essentials(as_yaml.json())


@pytest.mark.parametrize("content_type", ["text/xml", "application/vnd.example+xml", None])
def test_other_xml_media_types(client: TestClient, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    r = client.post("/requests", content=to_xml(request_doc((2, 2))), headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["offers"][0]["compute"]["cores"] == {"min": 2, "max": 2}


def test_a_value_of_the_wrong_type_is_named_by_validation(client: TestClient) -> None:
    raw = to_xml(request_doc()).replace(b"<min>1</min>", b"<min>one</min>", 1)
    body = problem(client.post("/requests", content=raw, headers=XML_CT), 400)
    assert [e["pointer"] for e in body["errors"]] == ["/compute/cores/min"]


def test_answer_in_xml_reads_back_as_the_json_answer(client: TestClient) -> None:
    r = client.post("/requests", json=request_doc(), headers=ACCEPT_XML)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].split(";")[0] == "application/xml"
    assert int(r.headers["content-length"]) == len(r.content)
    root = DefusedET.fromstring(r.content)
    assert root.tag == "offers-response"
    assert root.find("offers/execution") is not None
    doc = parse_xml(r.content, schemas=schemas(), schema=schemas().named("OfferSetResponse"))
    again = client.get(f"/offersets/{doc['meta']['uuid']}")
    assert again.headers["content-type"].split(";")[0] == "application/json"
    assert doc == again.json()


def test_get_endpoints_answer_in_xml(client: TestClient) -> None:
    offer_set = client.post("/requests", json=request_doc()).json()
    session = offer_set["offers"][0]["meta"]["uuid"]
    for path, root, schema in (
        (f"/offersets/{offer_set['meta']['uuid']}", "offers-response", "OfferSetResponse"),
        (f"/sessions/{session}", "execution", "ExecutionSession"),
        ("/node", "node", "NodeDescription"),
        ("/health/live", "health", "Health"),
        ("/usage", "usage", "UsageReport"),
    ):
        as_json = client.get(path)
        as_xml = client.get(path, headers=ACCEPT_XML)
        assert as_json.status_code == as_xml.status_code == 200, (path, as_xml.text)
        assert as_xml.headers["content-type"].split(";")[0] == "application/xml", path
        assert DefusedET.fromstring(as_xml.content).tag == root
        assert parse_xml(as_xml.content, schemas=schemas(), schema=schemas().named(schema)) == (
            as_json.json()
        ), path


def test_the_spec_stays_json(client: TestClient) -> None:
    r = client.get("/openapi.json", headers=ACCEPT_XML)
    assert r.headers["content-type"].split(";")[0] == "application/json"
    json.loads(r.content)


def test_browsers_still_get_json(client: TestClient) -> None:
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    r = client.get("/node", headers={"Accept": browser})
    assert r.headers["content-type"].split(";")[0] == "application/json"


def test_accept_update_in_xml(client: TestClient) -> None:
    offers = client.post("/requests", content=to_xml(request_doc()), headers=XML_CT).json()
    uuid = offers["offers"][0]["meta"]["uuid"]
    r = client.post(
        f"/sessions/{uuid}",
        content=(DOCUMENTS / "accept.xml").read_bytes(),
        headers={**XML_CT, **ACCEPT_XML},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].split(";")[0] == "application/xml"
    doc = parse_xml(r.content, schemas=schemas(), schema=schemas().named("ExecutionSession"))
    assert doc["phase"] == "ACCEPTED"
    # read back as JSON: the same session (the lifecycle engine may have moved its phases on)
    again = client.get(f"/sessions/{uuid}").json()
    assert (again["kind"], again["meta"]["uuid"]) == (doc["kind"], doc["meta"]["uuid"])
    assert again["compute"]["cores"] == doc["compute"]["cores"]
    assert again["executable"]["image"] == doc["executable"]["image"]


def test_legacy_update_in_xml(client: TestClient) -> None:
    offers = client.post("/requests", json=request_doc()).json()
    uuid = offers["offers"][0]["meta"]["uuid"]
    raw = b"<request><update><kind>uri:enum-value-update</kind><path>phase</path>"
    raw += b"<value>REJECTED</value></update></request>"
    r = client.post(f"/sessions/{uuid}", content=raw, headers=XML_CT)
    assert r.status_code == 200, r.text
    assert r.json()["phase"] == "REJECTED"


def test_problems_in_xml(client: TestClient) -> None:
    document = request_doc()
    document["compute"]["cores"]["min"] = "four"  # a type error: min > max would be a NO
    r = client.post("/requests", json=document, headers=ACCEPT_XML)
    doc = xml_problem(r, 400)
    assert [e["pointer"] for e in doc["errors"]] == ["/compute/cores/min"]
    assert b"<errors><i>" in r.content  # RFC 9457 appendix B: array members are <i>
    missing = client.get("/sessions/00000000-0000-4000-8000-000000000000", headers=ACCEPT_XML)
    xml_problem(missing, 404)


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_xml_over_http(client: TestClient, name: str) -> None:
    r = timed(lambda: client.post("/requests", content=HOSTILE[name], headers=XML_CT))
    assert "DTD" in problem(r, 400)["detail"]
    r = timed(
        lambda: client.post("/requests", content=HOSTILE[name], headers={**XML_CT, **ACCEPT_XML})
    )
    assert "DTD" in xml_problem(r, 400)["detail"]


def test_deep_and_oversized_xml_over_http(client: TestClient) -> None:
    r = timed(lambda: client.post("/requests", content=DEEP, headers=XML_CT))
    assert "nesting" in problem(r, 400)["detail"]
    big = b"<r>" + b"x" * (MIB + 1) + b"</r>"
    problem(timed(lambda: client.post("/requests", content=big, headers=XML_CT)), 413)


# --------------------------------------------------------------------------- yml


@pytest.mark.parametrize("content_type", ["application/yml", "text/yml"])
def test_yml_media_types(client: TestClient, content_type: str) -> None:
    body = yaml.safe_dump(request_doc((2, 2))).encode()
    r = client.post(
        "/requests", content=body, headers={"Content-Type": content_type, "Accept": content_type}
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].split(";")[0] == "application/yaml"
    doc = yaml.safe_load(r.content)
    assert doc["offers"][0]["compute"]["cores"] == {"min": 2, "max": 2}
    update = client.post(
        f"/sessions/{doc['offers'][0]['meta']['uuid']}",
        content=yaml.safe_dump(ACCEPT).encode(),
        headers={"Content-Type": content_type},
    )
    assert update.status_code == 200 and update.json()["phase"] == "ACCEPTED"
    assert doc["offers"][0]["executable"]["kind"] == DOCKER


def test_integer_updates_get_integers() -> None:
    raw = b'<update kind="uri:integer-value-update"><path>x</path><value> 42 </value></update>'
    doc = parse_body(raw, "application/xml", DEFAULT_LIMITS, (schemas(), XML_UPDATE_SCHEMA))
    assert doc["value"] == " 42 "  # a string or an integer: the schema cannot say which
    assert _typed_update_value(doc)["value"] == 42
    raw = b'<update kind="uri:integer-delta-update"><path>x</path><delta>-60</delta></update>'
    doc = parse_body(raw, "application/xml", DEFAULT_LIMITS, (schemas(), XML_UPDATE_SCHEMA))
    assert doc["delta"] == -60
    enum = {"kind": "uri:enum-value-update", "path": "phase", "value": "42"}
    assert _typed_update_value(dict(enum)) == enum
