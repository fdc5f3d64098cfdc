"""Accelerators end to end: three real node processes (A100s, T4s, no GPU at all) behind a real
aggregator process. A request for GPUs of a model reaches only the nodes that have them (the
others are skipped, the answer says why and what they have), an offer is accepted through the
aggregator and booked on its node with its GPUs, and a request no node can serve is a NO."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import ACCEPT, request_doc
from tests.nodes import Node, start_node

pytestmark = pytest.mark.slow  # real processes

SIM = {"base_preparation": "PT0S", "image_pull": "PT0S", "data_staging": "PT0S"}
CPU = {"cores": {"total": 16}, "memory": {"total": 64}}
SITES: dict[str, list[dict[str, Any]]] = {
    "a100": [{"name": "gpu", "inventories": {**CPU, "gpus": {"total": 4}},
              "traits": ["GPU_A100", "GPU_MEM_80G"]}],
    "t4": [{"name": "gpu", "inventories": {**CPU, "gpus": {"total": 2}},
            "traits": ["GPU_MEM_16G", "GPU_T4"]}],
    "cpu": [{"name": "main", "inventories": CPU}],
}  # fmt: skip


def write(tmp: Path, name: str, config: dict[str, Any]) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    tmp = tmp_path_factory.mktemp("accelerators")
    nodes: dict[str, Node] = {}
    try:
        for name, pools in SITES.items():
            config = {
                "site": {"name": name},
                "database": {"url": f"sqlite:///{tmp / f'{name}.db'}"},
                "offers": {"max_offers": 2},
                "holds": {"anonymous": {}},
                "lifecycle": {"workdir": str(tmp / f"{name}-sessions")},
                "platforms": [{"name": "sim", "type": "simulated", "options": SIM,
                               "pools": pools}],
            }  # fmt: skip
            nodes[name] = start_node(write(tmp, name, config), tmp, name)
        aggregator = {
            "site": {"name": "federation"},
            "server": {"validate_responses": True},
            "database": {"url": f"sqlite:///{tmp / 'federation.db'}"},
            "fanout": {"deadline": "PT5S", "max_offers": 8},
            "upstreams": [{"name": n, "url": nodes[n].url} for n in SITES],
        }
        nodes["federation"] = start_node(
            write(tmp, "federation", aggregator), tmp, "federation", command="aggregator"
        )
        yield nodes
    finally:
        for node in nodes.values():
            node.stop()


def gpus(*items: dict[str, Any]) -> dict[str, Any]:
    doc = request_doc(duration="PT1H")
    doc["compute"]["accelerators"] = list(items)
    return doc


def ask(url: str, doc: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(f"{url}/requests", json=doc, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def texts(answer: dict[str, Any]) -> str:
    return " | ".join(m["message"] for m in answer["meta"].get("messages", []))


def release(url: str, answer: dict[str, Any]) -> None:
    for offer in answer.get("offers", []):
        reject = {**ACCEPT, "value": "REJECTED"}
        httpx.post(f"{url}/sessions/{offer['meta']['uuid']}", json=reject, timeout=30)


def test_a_model_reaches_only_the_nodes_that_have_it(federation) -> None:
    url = federation["federation"].url
    answer = ask(url, gpus({"type": "gpu", "count": {"min": 2, "max": 2}, "model": "A100"}))
    assert answer["result"] == "YES", texts(answer)
    assert {o["site"]["upstream"] for o in answer["offers"]} == {"a100"}
    assert all(
        o["compute"]["accelerators"][0] == {"type": "gpu", "count": {"min": 2, "max": 2},
                                             "model": ["A100"], "memory": {"min": 80, "max": 80}}
        for o in answer["offers"]
    )  # fmt: skip
    said = texts(answer)
    assert (
        "upstream t4 skipped: none of its open pools has GPU_A100 "
        "(pool sim/gpu has 2 GPUs (GPU_MEM_16G, GPU_T4))" in said
    )
    assert "upstream cpu skipped: none of its open pools has GPUs" in said
    release(url, answer)


def test_any_gpu_reaches_both_gpu_nodes_and_cpu_requests_every_node(federation) -> None:
    url = federation["federation"].url
    answer = ask(url, gpus({"type": "gpu", "memory": {"min": 16}}))
    assert {o["site"]["upstream"] for o in answer["offers"]} == {"a100", "t4"}, texts(answer)
    assert "upstream cpu skipped" in texts(answer)
    release(url, answer)
    plain = ask(url, request_doc(duration="PT1H"))
    assert {o["site"]["upstream"] for o in plain["offers"]} == {"a100", "t4", "cpu"}
    assert "skipped" not in texts(plain)
    release(url, plain)


def test_an_offer_accepted_through_the_aggregator_books_the_nodes_gpus(federation) -> None:
    url = federation["federation"].url
    answer = ask(url, gpus({"type": "gpu", "count": {"min": 1, "max": 4}, "model": ["T4"]}))
    offer = answer["offers"][0]
    assert offer["site"]["upstream"] == "t4"
    assert offer["compute"]["accelerators"][0]["count"] == {"min": 2, "max": 2}
    r = httpx.post(f"{url}/sessions/{offer['meta']['uuid']}", json=ACCEPT, timeout=30)
    assert r.status_code == 200, r.text
    # the node has booked both its T4s over the session's window: no more are offered then
    again = ask(federation["t4"].url, gpus({"type": "gpu", "count": {"min": 1}}))
    start = offer["schedule"]["available"]["start"].split("/")[0]
    assert all(o["schedule"]["available"]["start"].split("/")[0] != start for o in again["offers"])
    release(federation["t4"].url, again)
    cancel = {**ACCEPT, "value": "CANCELLED"}
    assert httpx.post(f"{url}/sessions/{offer['meta']['uuid']}", json=cancel, timeout=30).is_success


def test_what_no_node_has_is_a_no_naming_each_node(federation) -> None:
    url = federation["federation"].url
    answer = ask(url, gpus({"type": "gpu", "model": "H100"}))
    assert answer["result"] == "NO"
    said = texts(answer)
    for name in ("a100", "t4", "cpu"):
        assert f"upstream {name} skipped: none of its open pools has" in said, said
    assert "GPU_H100 (pool sim/gpu has 4 GPUs (GPU_A100, GPU_MEM_80G))" in said
    direct = httpx.post(f"{url}/direct", json=gpus({"type": "fpga"}), timeout=30)
    assert direct.status_code in (200, 400, 409), direct.text
    assert "none of its open pools has FPGAs" in direct.text
