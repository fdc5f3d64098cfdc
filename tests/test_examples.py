"""The shared example documents, posted as YAML exactly as they are on disk.

The examples live next to the project (``shared/examples``); if that folder is missing these
tests fail rather than skip, since then nothing checks that the examples still work.
"""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import yaml
from starlette.testclient import TestClient

from broker_core.broker import Broker
from tests.conftest import COMPUTE, DOCKER

EXAMPLES = Path(__file__).resolve().parents[2] / "shared" / "examples"
YAML_CT = {"Content-Type": "application/yaml"}
KNOWN_REQUESTS = [
    "01-minimal.yaml",
    "02-compute-and-window.yaml",
    "03-notebook-with-data.yaml",
    "04-legacy-format.yaml",
]
ACCEPT_FILE = "05-accept.yaml"

# example 02 asks for a one-hour slot starting between these instants
WINDOW_02 = (datetime(2026, 11, 22, 8, tzinfo=UTC), datetime(2026, 11, 22, 12, tzinfo=UTC))
DURATION_02 = timedelta(hours=1)


def _is_update(path: Path) -> bool:
    doc = yaml.safe_load(path.read_bytes())
    if not isinstance(doc, dict):
        return False
    kind = str(doc.get("kind") or doc.get("type") or "")
    return kind.endswith("-update") or "update" in doc


def _request_files() -> list[str]:
    """Every request example on disk (the known list when the folder is missing, so that the
    tests fail on opening the files instead of being collected as an empty, skipped set)."""
    if not EXAMPLES.is_dir():
        return KNOWN_REQUESTS
    return sorted(p.name for p in EXAMPLES.glob("*.yaml") if not _is_update(p))


REQUEST_FILES = _request_files()


def read(name: str) -> bytes:
    path = EXAMPLES / name
    assert path.is_file(), f"example {path} is missing"
    return path.read_bytes()


def post_example(client: TestClient, name: str) -> httpx.Response:
    r = client.post("/requests", content=read(name), headers=YAML_CT)
    assert r.status_code == 200, f"{name}: {r.status_code} {r.text}"
    return r


def parse_instant(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def window_02_expectation(broker: Broker) -> bool | None:
    """True when example 02's window can still be offered, False when it cannot, None when it
    depends on the interpretation (between the last start that fits and the window's end)."""
    now = datetime.now(UTC)
    start, end = WINDOW_02
    lookahead = broker.config.offers.lookahead
    if now > end or start > now + lookahead:
        return False
    if now + timedelta(minutes=5) < end - DURATION_02:
        return True
    return None


def test_examples_folder_is_present() -> None:
    assert EXAMPLES.is_dir(), f"the shared examples folder {EXAMPLES} is missing"
    names = sorted(p.name for p in EXAMPLES.iterdir() if p.is_file())
    assert set(KNOWN_REQUESTS) | {ACCEPT_FILE} <= set(names), names


def test_every_example_is_yaml_and_is_exercised() -> None:
    assert EXAMPLES.is_dir(), f"the shared examples folder {EXAMPLES} is missing"
    files = sorted(p for p in EXAMPLES.iterdir() if p.is_file())
    assert files
    for path in files:
        doc = yaml.safe_load(path.read_bytes())
        assert isinstance(doc, dict), path.name
        assert path.name in REQUEST_FILES or path.name == ACCEPT_FILE, (
            f"{path.name} is neither a request example nor the accept example; add a test"
        )


@pytest.mark.parametrize("name", REQUEST_FILES)
def test_request_example_gets_offers(client: TestClient, broker: Broker, name: str) -> None:
    started = time.monotonic()
    body = post_example(client, name).json()
    assert time.monotonic() - started < 2.0
    expected_yes = True
    if name.startswith("02-"):
        expected_yes = window_02_expectation(broker)  # type: ignore[assignment]
        if expected_yes is None:
            expected_yes = body["result"] == "YES"
    if not expected_yes:
        assert body["result"] == "NO", body
        assert body["offers"] == []
        assert [m["message"] for m in body["meta"]["messages"]], body
        return
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
    starts = [parse_instant(o["schedule"]["available"]["start"]) for o in body["offers"]]
    assert starts == sorted(starts)
    assert len(set(starts)) == len(starts)


def test_example_02_window_and_ranges(client: TestClient, broker: Broker) -> None:
    body = post_example(client, "02-compute-and-window.yaml").json()
    expected = window_02_expectation(broker)
    if expected is False or (expected is None and body["result"] == "NO"):
        assert body["result"] == "NO" and body["meta"]["messages"]
        return
    assert body["result"] == "YES", body["meta"].get("messages")
    for offer in body["offers"]:
        available = offer["schedule"]["available"]
        assert WINDOW_02[0] <= parse_instant(available["start"]) <= WINDOW_02[1]
        assert available["duration"] == "PT1H"
        assert 2 <= offer["compute"]["cores"]["min"] <= 4
        assert 4 <= offer["compute"]["memory"]["min"] <= 8
        assert offer["executable"]["environment"] == {"OMP_NUM_THREADS": "4"}
        assert offer["executable"]["image"]["digest"].startswith("sha256:")


def test_example_03_notebook_with_data(client: TestClient) -> None:
    body = post_example(client, "03-notebook-with-data.yaml").json()
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
    assert data["meta"]["name"] == "cube-data" and data["storage"] == "scratch"


@pytest.mark.parametrize("name", REQUEST_FILES)
def test_accept_example_accepts_the_first_offer(
    client: TestClient, broker: Broker, name: str
) -> None:
    body = post_example(client, name).json()
    if body["result"] == "NO":
        # only example 02, once its window has passed: nothing to accept then (no skip, so
        # that a CI run requiring every test to run stays green)
        assert name.startswith("02-") and window_02_expectation(broker) is not True, body
        return
    first = body["offers"][0]
    path = urlparse(first["meta"]["url"]).path
    assert path == f"/sessions/{first['meta']['uuid']}"
    r = client.post(path, content=read(ACCEPT_FILE), headers=YAML_CT)
    assert r.status_code == 200, r.text
    assert r.json()["phase"] == "ACCEPTED"
    offerset = client.get(urlparse(first["offerset"]["url"]).path)
    assert offerset.status_code == 200, offerset.text
    phases = {o["meta"]["uuid"]: o["phase"] for o in offerset.json()["offers"]}
    assert phases.pop(first["meta"]["uuid"]) in ("ACCEPTED", "WAITING")  # the engine moves on
    assert set(phases.values()) <= {"REJECTED"}
    assert len(phases) == len(body["offers"]) - 1
    # accepting again is harmless; accepting a sibling is a conflict
    again = client.post(path, content=read(ACCEPT_FILE), headers=YAML_CT)
    # (the lifecycle engine may have moved it on to WAITING already)
    assert again.status_code == 200 and again.json()["phase"] in ("ACCEPTED", "WAITING")
    for sibling in phases:
        r = client.post(f"/sessions/{sibling}", content=read(ACCEPT_FILE), headers=YAML_CT)
        assert r.status_code == 409, r.text


def _modern_04() -> dict[str, Any]:
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
    return {
        "name": offer["meta"].get("name"),
        "executable": offer["executable"],
        "compute": offer["compute"],
        "storage": offer["storage"],
        "data": offer["data"],
        "duration": offer["schedule"]["available"]["duration"],
    }


def test_legacy_example_04_matches_its_modern_equivalent(client: TestClient) -> None:
    legacy = post_example(client, "04-legacy-format.yaml").json()
    modern_body = yaml.safe_dump(_modern_04(), sort_keys=False)
    modern = client.post("/requests", content=modern_body, headers=YAML_CT)
    assert modern.status_code == 200, modern.text
    modern = modern.json()
    assert legacy["result"] == modern["result"] == "YES"
    legacy_offer, modern_offer = legacy["offers"][0], modern["offers"][0]
    assert legacy_offer["compute"]["kind"] == COMPUTE
    assert legacy_offer["compute"]["cores"] == {"min": 1, "max": 1}
    assert legacy_offer["compute"]["memory"] == {"min": 1, "max": 1}
    assert legacy_offer["executable"]["kind"] == DOCKER
    assert legacy_offer["executable"]["meta"]["name"] == "legacy-exec"
    assert legacy_offer["compute"]["meta"]["name"] == "legacy-compute"
    assert legacy_offer["meta"]["name"] == "legacy-request"
    assert _resolved(legacy_offer) == _resolved(modern_offer)
