"""Data where it lands, through real processes (issue 19, part 5): a node whose site maps
``ivo://example.org/survey/`` and the Rucio scope ``user.jdoe`` to its own directories offers
ivoa and rucio data resources with their staging time, stages the mapped files into the
session (simulated with ``stage_data``, podman, Slurm), and answers NO for what it does not
map; an aggregator in front of it passes both on.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from broker_core.schedule import parse_duration
from broker_core.staging.mappings import rucio_path
from tests.conftest import ACCEPT, COMPUTE, DOCKER, unavailable
from tests.nodes import Node, start_node
from tests.test_staging_sandbox import IMAGE, _podman_image, real_platform

pytestmark = pytest.mark.slow  # real node and aggregator processes

KINDS = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/"
IVOA = KINDS + "data/ivoa-data-resource.yaml"
RUCIO = KINDS + "data/rucio-data-resource.yaml"
MOUNT = KINDS + "volume/simple-volume-mount.yaml"
SURVEY_BYTES = b"survey-field-7\n" * 200_000  # 3,000,000 bytes: 3 s at 1 MB/s
RUCIO_BYTES = b"rucio-file-bytes\n"
ENDED = ("COMPLETED", "FAILED", "CANCELLED")


@pytest.fixture
def site() -> Iterator[dict[str, Path]]:
    """The site's data (a survey file, a Rucio file at its hash path) in a directory every
    user may enter (staging on Slurm runs as the job's user)."""
    tmp = Path(tempfile.mkdtemp(prefix="ebroker-datamap-")).resolve()
    tmp.chmod(0o755)
    survey = tmp / "survey" / "field-7"
    survey.mkdir(parents=True)
    (survey / "image.fits").write_bytes(SURVEY_BYTES)
    rucio = tmp / "rucio"
    path = rucio / rucio_path("user.jdoe", "test.file.1", "hash")
    path.parent.mkdir(parents=True)
    path.write_bytes(RUCIO_BYTES)
    for directory in [tmp / "survey", survey, *path.parents]:
        if directory.is_relative_to(tmp):
            directory.chmod(0o755)
    yield {"tmp": tmp, "survey": tmp / "survey", "rucio": rucio}
    shutil.rmtree(tmp, ignore_errors=True)


def node_config(site: dict[str, Path], platform: dict[str, Any]) -> Path:
    tmp = site["tmp"]
    config = {
        "site": {"name": "mapped"},
        "database": {"url": f"sqlite:///{tmp / 'node.db'}"},
        "offers": {"granularity": "PT1S", "max_offers": 1},
        "holds": {"anonymous": {}},
        "lifecycle": {"workdir": str(tmp / "sessions"), "poll_interval": "PT1S"},
        "staging": {"mappings": {
            "bandwidth": "1 MB/s",
            "ivoa": [{"prefix": "ivo://example.org/survey/",
                      "target": f"{site['survey'].as_uri()}/{{rest}}"}],
            "rucio": [{"scope": "user.jdoe", "target": site["rucio"].as_uri(), "lfn2pfn": "hash"}],
        }},
        "platforms": [platform],
    }  # fmt: skip
    path = tmp / "node.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


SIMULATED = {
    "name": "sim", "type": "simulated",
    "options": {"base_preparation": "PT0S", "image_pull": "PT0S", "data_staging": "PT1M",
                "run_time": "PT1S", "stage_data": True},
    "pools": [{"name": "main", "inventories": {"cores": {"total": 4}, "memory": {"total": 8}}}],
}  # fmt: skip


def request(command: list[str] | None = None) -> dict[str, Any]:
    executable: dict[str, Any] = {"kind": DOCKER, "image": {"locations": [IMAGE]}}
    if command:
        executable["command"] = command
    return {
        "executable": executable,
        "compute": {"kind": COMPUTE, "cores": {"min": 1, "max": 1}, "memory": {"min": 1, "max": 1},
                    "volumes": [
                        {"kind": MOUNT, "path": f"/{name}", "mode": "READONLY", "resource": name}
                        for name in ("survey", "rucio")
                    ]},
        "data": [
            {"kind": IVOA, "meta": {"name": "survey"},
             "ivoid": "ivo://example.org/survey/field-7/image.fits"},
            {"kind": RUCIO, "meta": {"name": "rucio"}, "scope": "user.jdoe",
             "objectname": "test.file.1", "objecttype": "FILE"},
        ],
        "schedule": {"requested": {"duration": "PT2M"}},
    }  # fmt: skip


def seconds(text: str) -> int:
    return int(parse_duration(text).total_seconds())


def offered(url: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The one offer for ``doc``, having checked the staging times it books."""
    answer = httpx.post(f"{url}/requests", json=doc, timeout=30).json()
    assert answer["result"] == "YES", answer
    offer = answer["offers"][0]
    survey, rucio = (d["schedule"]["preparing"] for d in offer["data"])
    assert seconds(survey["duration"]) == 3  # 3,000,000 bytes at 1 MB/s
    assert seconds(rucio["duration"]) == 1
    assert seconds(offer["schedule"]["preparing"]["duration"]) >= 4
    return offer


def finished(url: str, session: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (doc := httpx.get(f"{url}/sessions/{session}", timeout=30).json())["phase"] not in ENDED:
        assert time.monotonic() < deadline, doc["phase"]
        time.sleep(0.3)
    return doc


def staged_files(site: dict[str, Path], offer: dict[str, Any]) -> tuple[bytes, bytes]:
    """What the session's data directories hold: the survey file and the Rucio file."""
    data = site["tmp"] / "sessions" / offer["meta"]["uuid"] / "data"
    survey, rucio = (d["meta"]["uuid"] for d in offer["data"])
    return (data / survey / "image.fits").read_bytes(), (data / rucio / "test.file.1").read_bytes()


def unmapped() -> dict[str, Any]:
    doc = request()
    doc["data"] = [{"kind": IVOA, "ivoid": "ivo://elsewhere.org/catalogue/x.fits"}]
    doc["compute"].pop("volumes")
    return doc


def unmapped_no(url: str) -> None:
    answer = httpx.post(f"{url}/requests", json=unmapped(), timeout=30).json()
    assert answer["result"] == "NO", answer
    text = " | ".join(m["message"] for m in answer["meta"]["messages"])
    assert "/data/0/ivoid: ivo://elsewhere.org/catalogue/x.fits is not data this node" in text
    assert "ivo:// identifiers under: ivo://example.org/survey/; Rucio scopes: user.jdoe" in text


@pytest.fixture
def simulated_node(site) -> Iterator[Node]:
    node = start_node(node_config(site, SIMULATED), site["tmp"], "mapped-sim")
    yield node
    node.stop()


def test_a_simulated_node_stages_mapped_data_into_the_session(simulated_node, site) -> None:
    offer = offered(simulated_node.url, request())
    accepted = httpx.post(f"{simulated_node.url}/sessions/{offer['meta']['uuid']}", json=ACCEPT,
                          timeout=30)  # fmt: skip
    assert accepted.status_code == 200, accepted.text
    doc = finished(simulated_node.url, offer["meta"]["uuid"])
    text = " | ".join(m["message"] for m in doc["meta"]["messages"])
    assert doc["phase"] == "COMPLETED", text
    assert "staged ivo://example.org/survey/field-7/image.fits from this node's data" in text
    assert staged_files(site, offer) == (SURVEY_BYTES, RUCIO_BYTES)
    # the data's own preparation, as it was made
    prepared = {c["name"]: c for c in doc["components"] if c["category"] == "data"}
    assert set(prepared) == {"survey", "rucio"}
    unmapped_no(simulated_node.url)


def test_an_aggregator_passes_on_the_staging_time_and_the_no(simulated_node, site) -> None:
    tmp = site["tmp"]
    config = {
        "site": {"name": "federation"},
        "server": {"validate_responses": True},
        "database": {"url": f"sqlite:///{tmp / 'agg.db'}"},
        "upstreams": [{"name": "mapped", "url": simulated_node.url}],
    }
    path = tmp / "agg.yaml"
    path.write_text(yaml.safe_dump(config))
    agg = start_node(path, tmp, "agg", command="aggregator")
    try:
        offer = offered(agg.url, request())
        assert offer["meta"]["url"].startswith(agg.url)
        again = httpx.get(offer["meta"]["url"], timeout=30).json()
        assert seconds(again["data"][0]["schedule"]["preparing"]["duration"]) == 3
        answer = httpx.post(f"{agg.url}/requests", json=unmapped(), timeout=30).json()
        assert answer["result"] == "NO", answer
        text = " | ".join(m["message"] for m in answer["meta"]["messages"])
        assert "upstream mapped answered NO" in text, text
        assert "ivo://elsewhere.org/catalogue/x.fits is not data this node can stage" in text
    finally:
        agg.stop()


@pytest.mark.parametrize("kind", ["local", "slurm"])
def test_a_real_platform_stages_mapped_data_that_the_work_reads(site, kind) -> None:
    """Podman (local) and Slurm: the container reads the mapped files from its volumes."""
    platform = real_platform(kind)
    if not _podman_image():
        unavailable(f"podman with the image {IMAGE} (run .ci/setup-podman.sh)")
    node = start_node(node_config(site, platform), site["tmp"], f"mapped-{kind}")
    try:
        doc = request(["/bin/busybox", "sh", "-c", "wc -c /survey/image.fits; cat /rucio/*"])
        offer = offered(node.url, doc)
        session = offer["meta"]["uuid"]
        accepted = httpx.post(f"{node.url}/sessions/{session}", json=ACCEPT, timeout=30)
        assert accepted.status_code == 200, accepted.text
        done = finished(node.url, session, timeout=180)
        text = " | ".join(m["message"] for m in done["meta"]["messages"])
        assert done["phase"] == "COMPLETED", text
        logs = httpx.get(f"{node.url}/sessions/{session}/logs", timeout=30).text
        assert f"{len(SURVEY_BYTES)} /survey/image.fits" in logs, logs
        assert RUCIO_BYTES.decode() in logs, logs
        unmapped_no(node.url)
    finally:
        node.stop()
