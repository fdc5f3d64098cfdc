"""The project's own example documents (``examples/requests``, ``examples/updates``), posted as
YAML exactly as they are on disk, the way the README has a newcomer post them."""

from __future__ import annotations

import copy
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from starlette.testclient import TestClient

from tests.conftest import COMPUTE, DOCKER, offered_start

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
REQUESTS = EXAMPLES / "requests"
UPDATES = EXAMPLES / "updates"
YAML_CT = {"Content-Type": "application/yaml"}
# what the README walks through; a missing file fails here rather than shrinking the test set
KNOWN_REQUESTS = [
    "01-minimal.yaml",
    "02-compute.yaml",
    "03-notebook-with-data.yaml",
    "04-storage.yaml",
    "05-legacy-types.yaml",
    "06-legacy-urn.yaml",
]
KNOWN_UPDATES = ["accept.yaml", "accept-legacy.yaml", "cancel.yaml"]
REQUEST_FILES = sorted({*KNOWN_REQUESTS, *(p.name for p in REQUESTS.glob("*.yaml"))})
ACCEPTS = ["accept.yaml", "accept-legacy.yaml"]
# where an accepted session may be by the time it is read: the test node books no preparation,
# so its lifecycle engine may have moved it on already
ON_ITS_WAY = ("ACCEPTED", "WAITING", "PREPARING", "AVAILABLE", "RUNNING")


def read(path: Path) -> bytes:
    assert path.is_file(), f"example {path} is missing"
    return path.read_bytes()


def post_request(client: TestClient, name: str, raw: bytes | None = None) -> dict[str, Any]:
    r = client.post("/requests", content=raw or read(REQUESTS / name), headers=YAML_CT)
    assert r.status_code == 200, f"{name}: {r.status_code} {r.text}"
    return dict(r.json())


def parse_instant(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def tomorrow_window(hour: int = 8, span: str = "PT4H") -> tuple[str, datetime]:
    """The start line the README appends to example 02, built from today's date."""
    day = date.today() + timedelta(days=1)
    start = datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
    return f"    start: {start:%Y-%m-%dT%H:%M:%SZ}/{span}\n", start


def test_every_example_is_known_and_exercised() -> None:
    on_disk = {p.relative_to(EXAMPLES).as_posix() for p in EXAMPLES.rglob("*.yaml")}
    documents = {f"requests/{n}" for n in KNOWN_REQUESTS} | {f"updates/{n}" for n in KNOWN_UPDATES}
    configs = {"node.yaml", "aggregator.yaml"}
    assert on_disk == documents | configs, "an example with no test, or a test with no example"


@pytest.mark.parametrize("name", REQUEST_FILES)
def test_no_request_example_holds_a_date(name: str) -> None:
    """A fixed date goes stale: the examples ask for the earliest slot, and the README builds a
    window from today's date where it shows one."""
    doc = yaml.safe_load(read(REQUESTS / name))
    assert "start" not in ((doc.get("schedule") or {}).get("requested") or {}), name


@pytest.mark.parametrize("name", REQUEST_FILES)
def test_request_example_gets_offers(client: TestClient, name: str) -> None:
    started = time.monotonic()
    body = post_request(client, name)
    assert time.monotonic() - started < 2.0
    assert body["result"] == "YES", body["meta"].get("messages")
    assert body["offers"]
    for offer in body["offers"]:
        assert offer["phase"] == "OFFERED"
        assert offer["meta"]["uuid"] and offer["expires"]
        for part in ("preparing", "available", "releasing"):
            assert set(offer["schedule"][part]) == {"start", "duration"}
        for component in (offer["executable"], offer["compute"], *offer["storage"], *offer["data"]):
            assert component["kind"].startswith("https://"), component
            assert component["meta"]["uuid"]
        cores, memory = offer["compute"]["cores"], offer["compute"]["memory"]
        assert cores["min"] == cores["max"] >= 1
        assert memory["min"] == memory["max"] >= 1
    starts = [parse_instant(offered_start(o)) for o in body["offers"]]
    assert starts == sorted(starts)
    assert len(set(starts)) == len(starts)
    assert starts[0] - datetime.now(UTC) < timedelta(minutes=10)  # as soon as possible


def test_example_02_ranges(client: TestClient) -> None:
    body = post_request(client, "02-compute.yaml")
    assert body["result"] == "YES", body["meta"].get("messages")
    for offer in body["offers"]:
        assert offer["schedule"]["available"]["duration"] == "PT1H"
        assert 2 <= offer["compute"]["cores"]["min"] <= 4
        assert 4 <= offer["compute"]["memory"]["min"] <= 8
        assert offer["executable"]["environment"] == {"OMP_NUM_THREADS": "4"}
        assert offer["executable"]["image"]["digest"].startswith("sha256:")


def test_example_02_with_a_window_built_from_today(client: TestClient) -> None:
    line, start = tomorrow_window()
    raw = read(REQUESTS / "02-compute.yaml") + line.encode()
    body = post_request(client, "02-compute.yaml", raw)
    assert body["result"] == "YES", body["meta"].get("messages")
    for offer in body["offers"]:
        available = offer["schedule"]["available"]
        assert start <= parse_instant(offered_start(offer)) <= start + timedelta(hours=4)
        assert available["duration"] == "PT1H"


def test_example_03_notebook_with_data(client: TestClient) -> None:
    body = post_request(client, "03-notebook-with-data.yaml")
    assert body["result"] == "YES", body["meta"].get("messages")
    offer = body["offers"][0]
    assert offer["executable"]["location"].endswith("cube-explorer.ipynb")
    assert offer["schedule"]["available"]["duration"] == "PT3H"
    (volume,) = offer["compute"]["volumes"]
    assert (volume["path"], volume["mode"], volume["resource"]) == (
        "/data/cube",
        "READONLY",
        "cube-data",
    )
    (storage,) = offer["storage"]
    assert storage["meta"]["name"] == "scratch" and 10 <= storage["size"]["min"] <= 20
    (data,) = offer["data"]
    assert data["meta"]["name"] == "cube-data"
    assert data["storage"] == storage["meta"]["uuid"]  # the storage it names, by uuid


def test_example_04_storage(client: TestClient) -> None:
    body = post_request(client, "04-storage.yaml")
    assert body["result"] == "YES", body["meta"].get("messages")
    offer = body["offers"][0]
    (storage,) = offer["storage"]
    assert storage["meta"]["name"] == "scratch"
    assert 50 <= storage["size"]["min"] == storage["size"]["max"] <= 100
    (volume,) = offer["compute"]["volumes"]
    assert (volume["path"], volume["mode"], volume["resource"]) == (
        "/scratch",
        "READWRITE",
        "scratch",
    )
    assert offer["schedule"]["available"]["duration"] == "PT2H"


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize("name", REQUEST_FILES)
def test_accept_example_accepts_the_first_offer(client: TestClient, name: str, accept: str) -> None:
    body = post_request(client, name)
    first = body["offers"][0]
    path = urlparse(first["meta"]["url"]).path
    assert path == f"/sessions/{first['meta']['uuid']}"
    r = client.post(path, content=read(UPDATES / accept), headers=YAML_CT)
    assert r.status_code == 200, r.text
    assert r.json()["phase"] == "ACCEPTED"
    offerset = client.get(urlparse(first["offerset"]["url"]).path)
    assert offerset.status_code == 200, offerset.text
    phases = {o["meta"]["uuid"]: o["phase"] for o in offerset.json()["offers"]}
    assert phases.pop(first["meta"]["uuid"]) in ON_ITS_WAY  # the engine moves it on at once
    assert set(phases.values()) <= {"REJECTED"}
    assert len(phases) == len(body["offers"]) - 1
    # accepting again is harmless; accepting a sibling is a conflict
    again = client.post(path, content=read(UPDATES / accept), headers=YAML_CT)
    assert again.status_code == 200 and again.json()["phase"] in ON_ITS_WAY
    for sibling in phases:
        r = client.post(f"/sessions/{sibling}", content=read(UPDATES / accept), headers=YAML_CT)
        assert r.status_code == 409, r.text


def test_cancel_example_cancels_an_accepted_session(client: TestClient) -> None:
    first = post_request(client, "01-minimal.yaml")["offers"][0]
    path = urlparse(first["meta"]["url"]).path
    accepted = client.post(path, content=read(UPDATES / "accept.yaml"), headers=YAML_CT)
    assert accepted.status_code == 200, accepted.text
    r = client.post(path, content=read(UPDATES / "cancel.yaml"), headers=YAML_CT)
    assert r.status_code == 200, r.text
    assert r.json()["phase"] == "CANCELLED"
    assert client.get(path).json()["phase"] == "CANCELLED"


def _modern_05() -> dict[str, Any]:
    return {
        "meta": {"name": "legacy-request"},
        "executable": {
            "kind": DOCKER,
            "meta": {"name": "legacy-exec"},
            "image": {"locations": ["localhost/busybox:latest"]},
        },
        "compute": {
            "kind": COMPUTE,
            "meta": {"name": "legacy-compute"},
            "cores": {"min": 1, "max": 1},
            "memory": {"min": 1, "max": 1},
        },
    }


def _resolved(offer: dict[str, Any]) -> dict[str, Any]:
    offer = copy.deepcopy(offer)
    for part in ("executable", "compute", "storage", "data"):
        items = offer[part] if isinstance(offer[part], list) else [offer[part]]
        for item in items:
            item["meta"].pop("uuid")
            item.pop("schedule")  # each component's schedule is the offer's
    return {
        "name": offer["meta"].get("name"),
        "executable": offer["executable"],
        "compute": offer["compute"],
        "storage": offer["storage"],
        "data": offer["data"],
        "duration": offer["schedule"]["available"]["duration"],
    }


def test_legacy_example_05_matches_its_modern_equivalent(client: TestClient) -> None:
    legacy = post_request(client, "05-legacy-types.yaml")
    modern = post_request(client, "modern", yaml.safe_dump(_modern_05()).encode())
    assert legacy["result"] == modern["result"] == "YES"
    legacy_offer, modern_offer = legacy["offers"][0], modern["offers"][0]
    assert legacy_offer["compute"]["kind"] == COMPUTE
    assert legacy_offer["executable"]["kind"] == DOCKER
    assert legacy_offer["executable"]["meta"]["name"] == "legacy-exec"
    assert legacy_offer["compute"]["meta"]["name"] == "legacy-compute"
    assert legacy_offer["meta"]["name"] == "legacy-request"
    assert _resolved(legacy_offer) == _resolved(modern_offer)


def test_legacy_example_06_urn_kinds_resolve_to_canonical_kinds(client: TestClient) -> None:
    offer = post_request(client, "06-legacy-urn.yaml")["offers"][0]
    assert offer["executable"]["kind"] == DOCKER
    assert offer["compute"]["kind"] == COMPUTE
    (storage,) = offer["storage"]
    assert storage["kind"].endswith("/storage/simple-storage-resource.yaml")
    assert storage["meta"]["name"] == "work" and 1 <= storage["size"]["min"] <= 5
    assert offer["schedule"]["available"]["duration"] == "PT30M"
    assert 1 <= offer["compute"]["cores"]["min"] <= 2


def test_examples_are_the_ones_the_readme_names() -> None:
    readme = (EXAMPLES.parent / "README.md").read_text()
    for name in ("01-minimal.yaml", "02-compute.yaml"):
        assert f"examples/requests/{name}" in readme
    assert "examples/updates/accept.yaml" in readme


def test_offer_sets_and_sessions_carry_a_name(client: TestClient) -> None:
    """The standard's clients show ``meta.name``: the request's, else the executable's."""
    named = post_request(client, "05-legacy-types.yaml")  # names the request
    assert {o["meta"]["name"] for o in named["offers"]} == {"legacy-request"}
    assert named["meta"]["name"] == "legacy-request"
    body = post_request(client, "01-minimal.yaml")  # names only its executable
    assert {o["meta"]["name"] for o in body["offers"]} == {"hello"}
    assert body["meta"]["name"]
    unnamed = post_request(client, "06-legacy-urn.yaml")  # names nothing
    for offer in unnamed["offers"]:
        assert offer["meta"]["name"] == "docker-container"  # its executable's kind
        again = client.get(urlparse(offer["meta"]["url"]).path).json()
        assert again["meta"]["name"] == offer["meta"]["name"]
    offerset = client.get(urlparse(unnamed["meta"]["url"]).path).json()
    assert offerset["meta"]["name"] == unnamed["meta"]["name"]


def test_the_embedded_default_serves_the_readme_walk_to_an_anonymous_caller_on_a_small_host(
    broker_factory, client_factory, sqlite_url, monkeypatch
) -> None:
    """The README's walk, on ``ebroker serve`` with no configuration (the default hold limits
    and a pool sized from the host) on a 2-core machine: the quick start's offer accepted, then
    the window built from today, then every other example, each left open as a new user leaves
    them."""
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    from broker_core.config import NodeConfig
    from broker_core.node import build_broker

    config = NodeConfig.model_validate({"database": {"url": sqlite_url}})
    assert config.holds.anonymous.limits_holds()  # the defaults, not the tests' {}
    client = client_factory(build_broker(config))
    first = post_request(client, "01-minimal.yaml")["offers"][0]
    r = client.post(f"/sessions/{first['meta']['uuid']}", content=read(UPDATES / "accept.yaml"),
                    headers=YAML_CT)  # fmt: skip
    assert r.status_code == 200, r.text
    line, _ = tomorrow_window()
    answer = post_request(
        client, "02-compute.yaml", read(REQUESTS / "02-compute.yaml") + line.encode()
    )
    assert answer["result"] == "YES", answer["meta"].get("messages")
    for name in REQUEST_FILES:
        answer = post_request(client, name)
        assert answer["result"] == "YES", (name, answer["meta"].get("messages"))
