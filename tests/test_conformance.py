"""Every answer of every endpoint validates against the IVOA ExecutionBroker schema.

The schema is the standard's own (Calycopis-openapi v1.0, OpenAPI 3.1 with relative ``$ref``s
between its files), read from the folder ``EBROKER_STANDARD_SCHEMA`` names (``.ci/run``
points it at the copy beside the repository on the CI machine); without it these tests skip,
and under ``EBROKER_REQUIRE_INTEGRATION=1`` fail. Each answer is checked against the schema of the
operation's 200 answer in the standard's ``execution-broker.yaml``, in JSON, YAML and XML.

JSON Schema itself ignores OpenAPI's ``discriminator``, but the standard's generated clients
pick the class of a document by it, so the validator here does too: a ``kind`` must be one the
mapping names, and the document must then validate against the schema it maps to.

An XML answer is read as a client generated from the standard reads it: by the standard's
schemas (bundled into one ``components`` mapping), each abstract type taken as the subtype its
discriminator maps the element's ``kind`` to, as Jackson does. What that reading makes of it
must validate, and must be what the same client reads from the JSON answer: every member the
standard's schemas describe, equal. (What ebroker adds, e.g. ``site``, is outside them: such a
client skips it, and without a schema no XML reader can tell a list of one from an object.)
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
import yaml
from jsonschema import Draft202012Validator, ValidationError
from jsonschema.validators import extend
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.testclient import TestClient

from broker_core.http.xml import Schemas, parse_xml
from tests.conftest import ACCEPT, COMPUTE, DOCKER, POOL_CONFIG, request_doc, unavailable

SCHEMA_ENV = "EBROKER_STANDARD_SCHEMA"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
REQUEST_FILES = sorted(p.name for p in (EXAMPLES / "requests").glob("*.yaml"))
YAML_CT = {"Content-Type": "application/yaml"}
JSON, YAML, XML = "application/json", "application/yaml", "application/xml"
FORMATS = (JSON, YAML, XML)
REJECT = {**ACCEPT, "value": "REJECTED"}
CANCEL = {**ACCEPT, "value": "CANCELLED"}

OFFERSET = ("/requests", "post")  # the standard's operations whose answers are checked
OFFERSET_GET = ("/offersets/{uuid}", "get")
SESSION_GET = ("/sessions/{uuid}", "get")
SESSION_POST = ("/sessions/{uuid}", "post")
DIRECT = ("/direct", "post")


# --- the standard's schema ---------------------------------------------------------------------


class Standard:
    """The standard's schema files in one registry, and a validator per operation's answer."""

    def __init__(self, folder: Path):
        self.folder = folder.resolve()
        self.base = self.folder.as_uri() + "/"
        resources = []
        bundled: dict[str, Any] = {}
        for path in sorted(self.folder.rglob("*.yaml")):
            uri = path.as_uri()
            contents = yaml.safe_load(path.read_text())
            bundled.update(_local_refs(contents.get("components", {}).get("schemas", {})))
            _absolute_mappings(contents, uri)
            resources.append((uri, Resource.from_contents(contents, DRAFT202012)))
        self.registry: Registry = Registry().with_resources(resources)
        self.validator_class = extend(Draft202012Validator, {"discriminator": _discriminator})
        self.operations = yaml.safe_load((self.folder / "execution-broker.yaml").read_text())
        self.schemas = Schemas(bundled)  # how the standard's clients read XML
        self.validated: Counter[str] = Counter()  # answers, by operation and format
        self.read_alike = 0  # XML answers read as the JSON ones

    def answer_schema(self, operation: tuple[str, str], media: str) -> dict[str, Any]:
        path, method = operation
        pointer = "/".join(
            part.replace("~", "~0").replace("/", "~1")
            for part in ("paths", path, method, "responses", "200", "content", media, "schema")
        )
        return {"$ref": f"{self.base}execution-broker.yaml#/{pointer}"}

    def schema(self, name: str) -> dict[str, Any]:
        return {"$ref": f"{self.base}components.yaml#/components/schemas/{name}"}

    def read_xml(self, operation: tuple[str, str], raw: bytes) -> Any:
        """An XML answer as a client generated from the standard reads it."""
        path, method = operation
        answer = self.operations["paths"][path][method]["responses"]["200"]["content"][XML]
        name = answer["schema"]["$ref"].rsplit("/", 1)[1]
        return parse_xml(raw, schemas=self.schemas, schema=self.schemas.named(name))

    def described(self, operation: tuple[str, str], document: Any) -> Any:
        """What of a document the standard's schemas describe (what its clients read)."""
        path, method = operation
        answer = self.operations["paths"][path][method]["responses"]["200"]["content"][JSON]
        name = answer["schema"]["$ref"].rsplit("/", 1)[1]
        return _described(self.schemas, self.schemas.named(name), document)

    def errors(self, schema: dict[str, Any], document: Any) -> list[str]:
        validator = self.validator_class(
            schema,
            registry=self.registry,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        found = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        return [_describe(e) for e in found]


_FILE_REF = re.compile(r"^[^#]*#/components/schemas/")


def _local_refs(node: Any) -> Any:
    """A copy with each ``./file.yaml#/components/schemas/Name`` (in ``$ref``s and in
    discriminator mappings) made ``#/components/schemas/Name``: the standard's 96 schema names
    are unique across its files, so they bundle into one mapping."""
    local = "#/components/schemas/"
    if isinstance(node, list):
        return [_local_refs(value) for value in node]
    if not isinstance(node, dict):
        return node
    copy = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            copy[key] = _FILE_REF.sub(local, value)
        elif key == "mapping" and isinstance(value, dict):
            copy[key] = {kind: _FILE_REF.sub(local, ref) for kind, ref in value.items()}
        else:
            copy[key] = _local_refs(value)
    return copy


def _described(schemas: Schemas, schema: Any, value: Any) -> Any:
    if isinstance(value, dict):
        members = schemas.members(schema, value.get("kind"))
        if members is None:
            return value
        props, additional = members
        return {
            key: _described(schemas, props.get(key, additional), item)
            for key, item in value.items()
            if key in props or additional is not None
        }
    if isinstance(value, list):
        return [_described(schemas, schemas.items(schema), item) for item in value]
    return value


def _absolute_mappings(node: Any, uri: str) -> None:
    """Make every discriminator mapping an absolute URI (relative to the file it is in)."""
    if isinstance(node, dict):
        mapping = (node.get("discriminator") or {}).get("mapping")
        if isinstance(mapping, dict):
            for key, ref in mapping.items():
                mapping[key] = urljoin(uri, ref)
        for value in node.values():
            _absolute_mappings(value, uri)
    elif isinstance(node, list):
        for value in node:
            _absolute_mappings(value, uri)


_dispatching: set[tuple[int, str]] = set()  # (instance, mapped schema) being validated now


def _discriminator(
    validator: Any, discriminator: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    """OpenAPI's discriminator as the standard's generated clients read it."""
    if not isinstance(instance, dict):
        return
    name = discriminator.get("propertyName")
    mapping = discriminator.get("mapping") or {}
    if not name or not mapping:
        return
    value = instance.get(name)
    if value not in mapping:
        yield ValidationError(
            f"{name} {value!r} is none of the discriminator's mapping: {sorted(mapping)}"
        )
        return
    key = (id(instance), mapping[value])
    if key in _dispatching:  # the mapped schema is a subtype of this one: checked already
        return
    _dispatching.add(key)
    try:
        yield from validator.descend(instance, {"$ref": mapping[value]})
    finally:
        _dispatching.discard(key)


def _describe(error: ValidationError) -> str:
    where = "/" + "/".join(str(p) for p in error.absolute_path)
    return f"{where}: {error.message[:300]}"


def load_standard(request: pytest.FixtureRequest) -> Iterator[Standard]:
    """The standard's schema from ``EBROKER_STANDARD_SCHEMA``; afterwards, how many answers
    were validated, by operation and format."""
    folder = os.environ.get(SCHEMA_ENV)
    if not folder:
        unavailable(f"{SCHEMA_ENV} names no folder with the standard's schema")
    path = Path(folder)
    if not (path / "execution-broker.yaml").is_file():
        unavailable(f"{SCHEMA_ENV}={folder} holds no execution-broker.yaml")
    standard = Standard(path)
    yield standard
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None and standard.validated:
        counts = ", ".join(f"{n} {what}" for what, n in sorted(standard.validated.items()))
        with capture.global_and_fixture_disabled():
            reporter.write_line(
                f"\n{request.node.name}: {standard.validated.total()} answers validated, "
                f"{standard.read_alike} XML answers read as the JSON ones ({counts})"
            )


standard = pytest.fixture(scope="module")(load_standard)


# --- a node and its answers --------------------------------------------------------------------


@pytest.fixture
def node(broker_factory, client_factory, sqlite_url, tmp_path) -> Callable[..., TestClient]:
    """A node whose simulated work runs for ``run_time`` (the lifecycle on short timers),
    reached at its own address, as its clients reach it."""

    def make(run_time: str = "PT1S", exit_code: int = 0) -> TestClient:
        platform = POOL_CONFIG["platforms"][0]
        options = {**platform["options"], "run_time": run_time, "exit_code": exit_code}
        broker = broker_factory(
            sqlite_url,
            platforms=[{**platform, "options": options}],
            lifecycle={"workdir": str(tmp_path / "sessions"), "poll_interval": "PT1S"},
            offers={"granularity": "PT1S"},
        )
        client = client_factory(broker)
        client.base_url = broker.base_url
        return client

    return make


def conforms(
    standard: Standard,
    client: httpx.Client,
    method: str,
    url: str,
    operation: tuple[str, str],
    *,
    status: int = 200,
    **kwargs: Any,
) -> dict[str, Any]:
    """Ask in JSON, YAML and XML: every answer must validate, and the XML one must read as the
    JSON one. The JSON answer. (A POST that makes something, an offer set or a direct
    session, is asked once, in JSON: ``posted_in_yaml_and_xml`` asks again.)"""
    headers = kwargs.pop("headers", {})
    repeatable = method == "GET" or operation == SESSION_POST
    answers = {}
    for media in FORMATS if repeatable else (JSON,):
        r = client.request(method, url, headers={"Accept": media, **headers}, **kwargs)
        assert r.status_code == status, r.text
        answers[media] = read_answer(standard, operation, media, r)
    if XML in answers:
        reads_as_json(standard, client, answers[XML])
    return answers[JSON]


def read_answer(
    standard: Standard, operation: tuple[str, str], media: str, r: httpx.Response
) -> Any:
    """An answer in the format asked for, read (XML as the standard's clients read it) and
    validated."""
    assert r.headers["content-type"].split(";")[0] == media, r.headers["content-type"]
    if media == JSON:
        document = r.json()
    elif media == YAML:
        document = yaml.safe_load(r.text)
    else:
        document = standard.read_xml(operation, r.content)
    check(standard, operation, media, document)
    return document


def check(standard: Standard, operation: tuple[str, str], media: str, document: Any) -> None:
    if operation == DIRECT:  # 303 (the standard's 200 body) or 400: a session either way
        errors = standard.errors(standard.schema("AbstractExecutionSession"), document)
    else:
        errors = standard.errors(standard.answer_schema(operation, media), document)
    assert not errors, f"{operation} {media}: " + "\n".join(errors)
    standard.validated[f"{operation[1].upper()} {operation[0]} {media.split('/')[1]}"] += 1


def reads_as_json(standard: Standard, client: httpx.Client, read: dict[str, Any]) -> None:
    """What the standard's clients read from an XML answer is what they read from the JSON
    answer of a GET of the same offer set or session. While it moves on (a session the
    lifecycle drives), both are read again, a few times."""
    uuid = read["meta"]["uuid"]
    if "result" in read:
        get, url = OFFERSET_GET, f"/offersets/{uuid}"
    else:
        get, url = SESSION_GET, f"/sessions/{uuid}"
    for _ in range(5):
        as_json = client.get(url, headers={"Accept": JSON}).json()
        if standard.described(get, read) == standard.described(get, as_json):
            break
        read = standard.read_xml(get, client.get(url, headers={"Accept": XML}).content)
    assert standard.described(get, read) == standard.described(get, as_json)
    standard.read_alike += 1


def posted_in_yaml_and_xml(
    standard: Standard,
    client: httpx.Client,
    url: str,
    body: bytes,
    operation: tuple[str, str] = OFFERSET,
    status: int = 200,
) -> list[Any]:
    """The YAML and XML answers of a POST that makes something (asked again: it makes another).
    The answers."""
    answers = []
    for media in (YAML, XML):
        r = client.post(url, content=body, headers={**YAML_CT, "Accept": media})
        assert r.status_code == status, r.text
        answers.append(read_answer(standard, operation, media, r))
        if media == XML:
            reads_as_json(standard, client, answers[-1])
    return answers


def sessions_conform(standard: Standard, client: httpx.Client, offerset: dict[str, Any]) -> None:
    conforms(standard, client, "GET", f"/offersets/{offerset['meta']['uuid']}", OFFERSET_GET)
    for offer in offerset["offers"]:
        conforms(standard, client, "GET", f"/sessions/{offer['meta']['uuid']}", SESSION_GET)


# --- the tests ---------------------------------------------------------------------------------


def test_the_standard_is_read_and_its_discriminators_apply(standard: Standard) -> None:
    """The validator is no rubber stamp: a wrong session kind and an integer message value fail."""
    session = {"kind": "https://example.org/not-a-session-kind", "phase": "OFFERED"}
    assert standard.errors(standard.schema("AbstractExecutionSession"), session)
    offerset = {"result": "NO", "meta": {"messages": [{"template": "{n}", "values": {"n": 1}}]}}
    assert standard.errors(standard.answer_schema(OFFERSET, "application/json"), offerset)
    assert not standard.errors(
        standard.answer_schema(OFFERSET, "application/json"), {"result": "NO", "offers": []}
    )
    scheduled = {
        "kind": "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/session/"
        "scheduled-execution-session.yaml",
        "schedule": {"available": {"start": "2026-12-01T09:00:00Z/PT0S", "duration": "PT1H"}},
    }
    assert not standard.errors(standard.schema("AbstractExecutionSession"), scheduled)
    scheduled["schedule"]["available"]["start"] = "2026-12-01T09:00:00Z"  # an instant
    assert standard.errors(standard.schema("AbstractExecutionSession"), scheduled)


def test_xml_is_read_as_the_standards_clients_read_it(standard: Standard) -> None:
    """Each abstract type as the subtype its kind maps to: numbers where the standard has
    numbers, and a port given as a bare number (not ``{port: N}``) is no DockerNetworkPort."""
    kinds = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/"
    raw = (
        f'<execution kind="{kinds}session/scheduled-execution-session.yaml"><phase>OFFERED</phase>'
        f'<executable kind="{DOCKER}"><network><ports><port><internal>{{internal}}</internal>'
        f'</port></ports></network></executable><compute kind="{COMPUTE}"><cores><min>2</min>'
        "<max>4</max></cores></compute></execution>"
    )
    session = standard.read_xml(SESSION_GET, raw.format(internal="<port>8080</port>").encode())
    assert session["compute"]["cores"] == {"min": 2, "max": 4}
    assert session["executable"]["network"]["ports"] == [{"internal": {"port": 8080}}]
    assert not standard.errors(standard.schema("AbstractExecutionSession"), session)
    bare = standard.read_xml(SESSION_GET, raw.format(internal="8080").encode())
    assert standard.errors(standard.schema("AbstractExecutionSession"), bare)


@pytest.mark.parametrize("name", REQUEST_FILES)
def test_offers_for_every_example_conform(standard: Standard, client: TestClient, name: str):
    body = (EXAMPLES / "requests" / name).read_bytes()
    answer = conforms(standard, client, "POST", "/requests", OFFERSET, content=body,
                      headers=YAML_CT)  # fmt: skip
    assert answer["result"] == "YES", answer["meta"].get("messages")
    posted_in_yaml_and_xml(standard, client, "/requests", body)
    sessions_conform(standard, client, answer)


@pytest.mark.parametrize(
    "document",
    [
        request_doc(cores=(4096, 4096)),  # far more cores than the node has
        request_doc(memory=(10**6, 10**6)),
        request_doc(start="2020-01-01T00:00:00Z/PT1H"),  # in the past
        request_doc(start="2099-01-01T00:00:00Z/PT1H"),  # beyond the look-ahead
        {**request_doc(), "executable": {"kind": "https://example.org/unknown-executable"}},
        request_doc(start="2030-01-01T09:00:00/PT1H"),  # no zone: WARN, and NO (too far)
    ],
    ids=["cores", "memory", "past", "beyond-look-ahead", "unknown-kind", "no-zone"],
)
def test_no_answers_conform(standard: Standard, client: TestClient, document: dict[str, Any]):
    answer = conforms(standard, client, "POST", "/requests", OFFERSET, json=document)
    assert answer["result"] == "NO"
    assert answer["meta"]["messages"]
    posted_in_yaml_and_xml(standard, client, "/requests", yaml.safe_dump(document).encode())
    conforms(standard, client, "GET", f"/offersets/{answer['meta']['uuid']}", OFFERSET_GET)


def _semantic(change: str) -> dict[str, Any]:
    """A request of the standard's types that breaks one of its rules."""
    doc = request_doc()
    kinds = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/"
    if change == "port":
        doc["executable"]["network"] = {"ports": [{"internal": {"port": 70000}, "protocol": "FTP"}]}
    elif change == "data":
        doc["data"] = [{"kind": kinds + "data/simple-data-resource.yaml"}]
    elif change == "volume":
        doc["compute"]["volumes"] = [
            {"kind": kinds + "volume/simple-volume-mount.yaml", "path": "/x", "resource": "none"}
        ]
    elif change == "range":
        doc["compute"]["cores"] = {"min": 8, "max": 2}
    return doc


@pytest.mark.parametrize("change", ["port", "data", "volume", "range"])
def test_semantic_no_answers_conform(standard: Standard, client: TestClient, change: str):
    """The standard's schema accepts the request; the answer is a NO pointing at the field."""
    document = _semantic(change)
    assert not standard.errors(standard.schema("ExecutionRequest"), document)
    answer = conforms(standard, client, "POST", "/requests", OFFERSET, json=document)
    assert answer["result"] == "NO"
    assert all(m["values"]["pointer"].startswith("/") for m in answer["meta"]["messages"])
    posted_in_yaml_and_xml(standard, client, "/requests", yaml.safe_dump(document).encode())


def test_the_legacy_offersets_path_conforms(standard: Standard, client: TestClient) -> None:
    body = (EXAMPLES / "requests" / "05-legacy-types.yaml").read_bytes()
    answer = conforms(standard, client, "POST", "/offersets", OFFERSET, content=body,
                      headers=YAML_CT)  # fmt: skip
    posted_in_yaml_and_xml(standard, client, "/offersets", body)
    sessions_conform(standard, client, answer)


def test_accept_reject_and_cancel_answers_conform(standard: Standard, node: Any) -> None:
    client = node(run_time="PT1H")
    answer = conforms(standard, client, "POST", "/requests", OFFERSET,
                      json=request_doc(start="2030-01-01T00:00:00Z/PT1H"))  # fmt: skip
    answer = conforms(standard, client, "POST", "/requests", OFFERSET, json=request_doc())
    first, *others = answer["offers"]
    assert others, "the node offers more than one slot"
    url = f"/sessions/{first['meta']['uuid']}"
    accepted = conforms(standard, client, "POST", url, SESSION_POST, json=ACCEPT)
    assert accepted["phase"] in ("ACCEPTED", "WAITING", "PREPARING", "AVAILABLE", "RUNNING")
    sessions_conform(standard, client, answer)  # the siblings are REJECTED now
    extended = {"kind": "uri:integer-delta-update", "path": "schedule.duration", "delta": 60}
    conforms(standard, client, "POST", url, SESSION_POST, json=extended)
    cancelled = conforms(standard, client, "POST", url, SESSION_POST, json=CANCEL)
    assert cancelled["phase"] == "CANCELLED"

    second = conforms(standard, client, "POST", "/requests", OFFERSET, json=request_doc())
    other = f"/sessions/{second['offers'][0]['meta']['uuid']}"
    rejected = conforms(standard, client, "POST", other, SESSION_POST, json=REJECT)
    assert rejected["phase"] == "REJECTED"
    wait_until(standard, client, url, {"CANCELLED"}, final=True)
    sessions_conform(standard, client, second)


def wait_until(
    standard: Standard, client: httpx.Client, url: str, phases: set[str], *, final: bool = False
) -> set[str]:
    """Follow a session, validating every answer; the phases seen."""
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while True:
        doc = conforms(standard, client, "GET", url, SESSION_GET)
        seen.add(doc["phase"])
        if doc["phase"] in phases and (not final or not doc.get("components") or all(
            c["phase"] != "PREPARING" for c in doc["components"]
        )):  # fmt: skip
            return seen
        assert time.monotonic() < deadline, f"still {doc['phase']}"
        time.sleep(0.05)


@pytest.mark.slow  # the lifecycle runs each session for a second
@pytest.mark.parametrize(("exit_code", "end"), [(0, "COMPLETED"), (3, "FAILED")])
def test_sessions_the_lifecycle_moved_on_conform(
    standard: Standard, node: Any, exit_code: int, end: str
) -> None:
    client = node(run_time="PT1S", exit_code=exit_code)
    body = (EXAMPLES / "requests" / "03-notebook-with-data.yaml").read_bytes()
    answer = conforms(standard, client, "POST", "/requests", OFFERSET, content=body,
                      headers=YAML_CT)  # fmt: skip
    offer = answer["offers"][0]
    url = f"/sessions/{offer['meta']['uuid']}"
    conforms(standard, client, "POST", url, SESSION_POST, json=ACCEPT)
    seen = wait_until(standard, client, url, {end}, final=True)
    done = conforms(standard, client, "GET", url, SESSION_GET)
    assert done["phase"] == end, seen
    assert done["executable"]["phase"] == end
    sessions_conform(standard, client, answer)


@pytest.mark.slow  # the lifecycle runs each session for a second
def test_direct_sessions_conform(standard: Standard, node: Any) -> None:
    """303 See Other to the session, the session as the body; 400 with a FAILED session."""
    client = node(run_time="PT1S")
    for media in FORMATS:
        r = client.post("/direct", json=request_doc(duration="PT1M"),
                        headers={"Accept": media}, follow_redirects=False)  # fmt: skip
        assert r.status_code == 303, r.text
        document = read_answer(standard, DIRECT, media, r)
        assert r.headers["location"] == document["meta"]["url"]
        assert r.headers["location"].startswith(("http://", "https://"))  # format: url
        if media == XML:
            reads_as_json(standard, client, document)
    wait_until(standard, client, r.headers["location"], {"COMPLETED", "FAILED"}, final=True)
    cannot_start = request_doc(cores=(4096, 4096))
    failed = conforms(standard, client, "POST", "/direct", DIRECT, status=400, json=cannot_start)
    assert failed["phase"] == "FAILED" and failed["meta"]["messages"]
    conforms(standard, client, "GET", f"/sessions/{failed['meta']['uuid']}", SESSION_GET)
    body = yaml.safe_dump(cannot_start).encode()
    posted_in_yaml_and_xml(standard, client, "/direct", body, DIRECT, status=400)


def test_the_sessions_of_refused_updates_conform(standard: Standard, client: TestClient) -> None:
    """A refused update's problem carries the session, in the standard's form."""
    answer = conforms(standard, client, "POST", "/requests", OFFERSET, json=request_doc())
    url = f"/sessions/{answer['offers'][0]['meta']['uuid']}"
    schema = standard.schema("AbstractExecutionSession")
    for value, status in (("FAILED", 409), ("BANANA", 400)):
        r = client.post(url, json={**ACCEPT, "value": value})
        assert r.status_code == status, r.text
        assert not standard.errors(schema, r.json()["session"])
    withdrawn = conforms(standard, client, "POST", url, SESSION_POST, json=CANCEL)
    assert withdrawn["phase"] == "CANCELLED"
    sessions_conform(standard, client, answer)


def test_components_carry_their_own_phase_and_schedule(standard: Standard, client: TestClient):
    body = (EXAMPLES / "requests" / "03-notebook-with-data.yaml").read_bytes()
    offer = conforms(standard, client, "POST", "/requests", OFFERSET, content=body,
                     headers=YAML_CT)["offers"][0]  # fmt: skip
    assert offer["kind"].endswith("/session/scheduled-execution-session.yaml")
    for part in (offer["executable"], offer["compute"], *offer["storage"], *offer["data"]):
        assert part["phase"] == "WAITING"
        assert part["schedule"]["available"] == offer["schedule"]["available"]
    assert offer["schedule"]["available"]["start"].endswith("/PT0S")
    (storage,) = offer["storage"]
    (data,) = offer["data"]
    assert data["storage"] == storage["meta"]["uuid"]


def test_a_data_resource_without_storage_gets_one(standard: Standard, client: TestClient):
    doc = {**request_doc(), "data": [{
        "kind": "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/data/"
                "simple-data-resource.yaml",
        "meta": {"name": "input"}, "location": "https://archive.example.org/a.fits",
    }]}  # fmt: skip
    offer = conforms(standard, client, "POST", "/requests", OFFERSET, json=doc)["offers"][0]
    (storage,) = offer["storage"]
    assert offer["data"][0]["storage"] == storage["meta"]["uuid"]
    assert storage["kind"].endswith("/storage/simple-storage-resource.yaml")


def test_a_request_with_costs_conforms(standard: Standard, client: TestClient) -> None:
    """A request's costs are limits; a node with no price list quotes no costs."""
    doc = {**request_doc(), "costs": [{"min": 1.0, "max": 2.5, "units": "GBP"}]}
    offer = conforms(standard, client, "POST", "/requests", OFFERSET, json=doc)["offers"][0]
    assert offer["costs"] == [] and offer["metrics"] == []


def test_offers_with_costs_and_metrics_conform(
    standard: Standard, broker_factory, client_factory, sqlite_url
) -> None:
    platform = {**POOL_CONFIG["platforms"][0], "pricing": {
        "money": {"currency": "EUR", "per_hour": {"cores": 0.05, "memory": 0.01}},
        "energy": {"per_hour": {"cores": 0.01}},
        "carbon": {"per_kwh": 200},
        "metrics": [{"name": "speed", "value": 1.5, "units": "x", "description": "relative"}],
    }}  # fmt: skip
    client = client_factory(broker_factory(sqlite_url, platforms=[platform]))
    doc = {**request_doc(cores=(2, 2)), "costs": [{"max": 10, "units": "EUR"}]}
    answer = conforms(standard, client, "POST", "/requests", OFFERSET, json=doc)
    offer = answer["offers"][0]
    assert [c["kind"].rsplit("/", 1)[1] for c in offer["costs"]] == [
        "simple-minmax-float-cost.yaml"] * 3  # fmt: skip
    (metric,) = offer["metrics"]
    assert metric["kind"].endswith("/metrics/simple-minmax-float-metric.yaml")
    session = standard.schema("AbstractExecutionSession")
    bad = {**offer, "costs": [{**offer["costs"][0], "min": "0.1"}]}  # the costs are checked
    assert not standard.errors(session, offer) and standard.errors(session, bad)
    posted_in_yaml_and_xml(standard, client, "/requests", yaml.safe_dump(doc).encode())
    sessions_conform(standard, client, answer)


def test_published_ports_conform(standard: Standard, client: TestClient) -> None:
    """The executable's ports as the standard's DockerNetworkPort: ``{port: N}`` objects."""
    executable = {
        "kind": DOCKER,
        "image": {"locations": ["localhost/busybox:latest"]},
        "network": {"ports": [{"internal": {"port": 8080}, "protocol": "HTTP", "path": "/"}]},
    }
    doc = {**request_doc(), "executable": executable}
    answer = conforms(standard, client, "POST", "/requests", OFFERSET, json=doc)
    (port,) = answer["offers"][0]["executable"]["network"]["ports"]
    assert port["internal"] == {"port": 8080}
