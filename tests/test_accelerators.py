"""Accelerators: a request's ``compute.accelerators`` matched against pools' GPU/FPGA inventories
and traits (``broker_core.offers.accelerators``), booked without overbooking, capped by local
rules and charged to allocations in GPU-hours; through the API on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy
from starlette.testclient import TestClient

from broker_core.booking.pools import InventoryView, PoolView
from broker_core.broker import Broker
from broker_core.config import ConfigError, parse_config
from broker_core.errors import Conflict
from broker_core.kinds.base import Range
from broker_core.offers import accelerators
from broker_core.offers.accelerators import AcceleratorNeed, model_trait
from broker_core.offers.service import request_offers
from tests.conftest import ACCEPT, request_doc
from tests.invariants import overbookings, state_problems
from tests.oidc_issuer import OidcIssuer

SIM_OPTIONS = {"base_preparation": "PT0S", "image_pull": "PT0S", "data_staging": "PT0S"}
CPU = {"cores": {"total": 16}, "memory": {"total": 64}}
GPU_POOLS: list[dict[str, Any]] = [
    {"name": "cpu", "inventories": CPU},
    {"name": "gpu-a", "inventories": {**CPU, "gpus": {"total": 8}},
     "traits": ["GPU_A100", "GPU_MEM_80G"]},
    {"name": "gpu-t", "inventories": {**CPU, "gpus": {"total": 4}},
     "traits": ["GPU_MEM_16G", "GPU_T4"]},
    {"name": "fpga", "inventories": {**CPU, "fpgas": {"total": 2}},
     "traits": ["FPGA_XILINX_U250"]},
]  # fmt: skip


def platforms(pools: list[dict[str, Any]] = GPU_POOLS, **extra: Any) -> list[dict[str, Any]]:
    return [{"name": "sim", "type": "simulated", "options": SIM_OPTIONS, "pools": pools, **extra}]


def gpu_request(*items: dict[str, Any], cores: tuple[int, int] = (1, 1), **schedule: Any) -> dict:
    doc = request_doc(cores, (1, 1), **schedule)
    doc["compute"]["accelerators"] = list(items)
    return doc


def texts(answer: dict[str, Any]) -> str:
    return " | ".join(m["message"] for m in answer["meta"].get("messages", []))


# --- matching, without a database ------------------------------------------------------------


def view(name: str, traits: tuple[str, ...], **inventories: int) -> PoolView:
    invs = {"cores": InventoryView(8), **{c: InventoryView(n) for c, n in inventories.items()}}
    return PoolView(hash(name) % 1000, f"sim/{name}", "sim", invs, traits=frozenset(traits))


A100 = view("gpu-a", ("GPU_A100", "GPU_MEM_80G"), gpus=8)
T4 = view("gpu-t", ("GPU_T4", "GPU_MEM_16G"), gpus=4)
PLAIN = view("cpu", ())


@pytest.mark.parametrize(
    ("kind", "model", "trait"),
    [
        ("gpu", "A100", "GPU_A100"),
        ("gpu", "a100", "GPU_A100"),
        ("gpu", "GPU_H100", "GPU_H100"),
        ("gpu", "rtx 4090", "GPU_RTX_4090"),
        ("gpu", "CUSTOM_MI300X", "CUSTOM_MI300X"),
        ("fpga", "xilinx-u250", "FPGA_XILINX_U250"),
    ],
)
def test_a_model_names_the_trait_of_pools_having_it(kind: str, model: str, trait: str) -> None:
    assert model_trait(kind, model) == trait


def need(count: tuple[int, int] = (1, 1), models: tuple[str, ...] = (), memory: int | None = None):
    return AcceleratorNeed("gpu", Range(*count), models, memory)


def test_a_pool_serves_a_need_with_its_class_model_and_memory() -> None:
    assert accelerators.serves(A100, need())
    assert accelerators.serves(A100, need(models=("GPU_H100", "GPU_A100"), memory=80))
    assert not accelerators.serves(A100, need(models=("GPU_H100",)))
    assert not accelerators.serves(A100, need(memory=96))
    assert not accelerators.serves(PLAIN, need())
    assert accelerators.serves(T4, need(memory=16)) and not accelerators.serves(T4, need(memory=17))


def test_a_combined_pool_set_never_draws_the_wrong_model() -> None:
    a100 = need(models=("GPU_A100",))
    assert accelerators.pool_set_serves([A100, PLAIN], [a100])  # cores from both, GPUs from one
    assert not accelerators.pool_set_serves([A100, T4], [a100])  # T4's GPUs would be taken
    assert not accelerators.pool_set_serves([PLAIN], [a100])
    assert accelerators.pool_set_serves([PLAIN], [need(count=(0, 0))])  # none needed


def test_unmatched_needs_say_what_is_missing_and_what_the_pools_have() -> None:
    [reason] = accelerators.unmatched([need(models=("GPU_H100",))], [A100, PLAIN])
    assert reason.message == (
        "no pool open to you has GPU_H100; pool sim/gpu-a has 8 GPUs (GPU_A100, GPU_MEM_80G)"
    )
    [reason] = accelerators.unmatched([need(memory=96)], [A100, T4])
    assert (
        "GPU_MEM_<N>G with N >= 96" in reason.message and "pool sim/gpu-t has 4" in reason.message
    )
    [reason] = accelerators.unmatched([AcceleratorNeed("fpga", Range(1, 1))], [A100])
    assert reason.message == "no pool open to you has FPGAs; no pool of this node has FPGAs"
    assert accelerators.unmatched([need()], [A100]) == []


def test_pool_traits_are_validated_and_kept_sorted() -> None:
    pools = [{"name": "g", "inventories": {**CPU, "gpus": {"total": 1}},
              "traits": ["GPU_MEM_80G", "GPU_A100", "GPU_A100"]}]  # fmt: skip
    config = parse_config({"platforms": platforms(pools)})
    assert config.platforms[0].pools[0].traits == ["GPU_A100", "GPU_MEM_80G"]
    bad = [{**pools[0], "traits": ["gpu_a100"]}]
    with pytest.raises((ConfigError, ValueError), match="traits"):
        parse_config({"platforms": platforms(bad)})


# --- through the API ---------------------------------------------------------------------------


@pytest.fixture
def node(
    broker_factory: Callable[..., Broker],
    client_factory: Callable[[Broker], TestClient],
    database_url: str,
) -> tuple[Broker, TestClient]:
    broker = broker_factory(database_url, platforms=platforms())
    return broker, client_factory(broker)


def ask(client: TestClient, doc: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/requests", json=doc)
    assert r.status_code == 200, r.text
    return r.json()


def test_gpus_are_booked_on_a_pool_with_the_model_and_echoed_in_the_offer(node) -> None:
    _, client = node
    item = {"type": "gpu", "count": {"min": 2, "max": 4}, "model": ["H100", "A100"],
            "memory": {"min": 40}}  # fmt: skip
    answer = ask(client, gpu_request(item))
    assert answer["result"] == "YES", texts(answer)
    for offer in answer["offers"]:
        assert offer["site"]["pools"] == ["sim/gpu-a"]
        assert offer["compute"]["accelerators"] == [
            {"type": "gpu", "count": {"min": 4, "max": 4}, "model": ["A100"],
             "memory": {"min": 80, "max": 80}}
        ]  # fmt: skip
    accepted = client.post(f"/sessions/{answer['offers'][0]['meta']['uuid']}", json=ACCEPT)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["compute"]["accelerators"][0]["count"] == {"min": 4, "max": 4}


def test_a_model_or_memory_no_pool_has_is_a_no_naming_what_there_is(node) -> None:
    _, client = node
    answer = ask(client, gpu_request({"type": "gpu", "model": "H100"}))
    assert answer["result"] == "NO"
    assert texts(answer) == (
        "no pool open to you has GPU_H100; pool sim/gpu-a has 8 GPUs (GPU_A100, GPU_MEM_80G); "
        "pool sim/gpu-t has 4 GPUs (GPU_MEM_16G, GPU_T4)"
    )
    answer = ask(client, gpu_request({"type": "gpu", "memory": {"min": 96}}))
    assert answer["result"] == "NO" and "GPU_MEM_<N>G with N >= 96" in texts(answer)
    answer = ask(client, gpu_request({"type": "gpu", "count": {"min": 9}}))
    assert answer["result"] == "NO"
    assert "this node has at most 8 GPUs in any pool; 9 needed" in texts(answer)


def test_any_model_takes_either_gpu_pool_and_fpgas_their_own(node) -> None:
    _, client = node
    answer = ask(client, gpu_request({"type": "gpu", "count": {"min": 1, "max": 6}}))
    assert answer["result"] == "YES", texts(answer)
    assert {p for o in answer["offers"] for p in o["site"]["pools"]} <= {"sim/gpu-a", "sim/gpu-t"}
    fpga = ask(client, gpu_request({"type": "fpga", "model": ["xilinx u250"]}))
    assert fpga["result"] == "YES", texts(fpga)
    offer = fpga["offers"][0]
    assert offer["site"]["pools"] == ["sim/fpga"]
    assert offer["compute"]["accelerators"] == [
        {"type": "fpga", "count": {"min": 1, "max": 1}, "model": ["XILINX_U250"]}
    ]


@pytest.mark.parametrize(
    ("items", "pointer"),
    [
        ([{"type": "tpu"}], "/compute/accelerators/0/type"),
        ([{"count": {"min": 1}}], "/compute/accelerators/0/type"),
        ([{"type": "gpu", "count": {"min": 3, "max": 1}}], "/compute/accelerators/0/count"),
        ([{"type": "gpu", "count": {"min": -1}}], "/compute/accelerators/0/count/min"),
        ([{"type": "gpu", "model": ["A100", " "]}], "/compute/accelerators/0/model/1"),
        ([{"type": "gpu"}, {"type": "gpu"}], "/compute/accelerators/1/type"),
    ],
)
def test_well_formed_but_unservable_items_are_a_no_pointing_at_them(
    client: TestClient, items: list[dict[str, Any]], pointer: str
) -> None:
    answer = ask(client, gpu_request(*items))
    assert answer["result"] == "NO"
    assert [m["message"].split(":")[0] for m in answer["meta"]["messages"]] == [pointer]


@pytest.mark.parametrize(
    ("items", "pointer"),
    [
        ([{"type": "gpu", "colour": "green"}], "/compute/accelerators/0/colour"),
        ([{"type": "gpu"}] * 9, "/compute/accelerators"),
        ([{"type": "gpu", "model": ["x" * 65]}], "/compute/accelerators/0/model"),
    ],
)
def test_malformed_items_are_a_400_with_a_pointer(
    client: TestClient, items: list[dict[str, Any]], pointer: str
) -> None:
    r = client.post("/requests", json=gpu_request(*items))
    assert r.status_code == 400, r.text
    assert any(e["pointer"].startswith(pointer) for e in r.json()["errors"]), r.json()


def test_a_legacy_document_asks_for_accelerators_too(node) -> None:
    _, client = node
    legacy = {
        "name": "old-style",
        "executable": {"type": "urn:docker-container-0.1",
                       "image": {"locations": ["localhost/busybox:latest"]}},
        "computer": {"type": "urn:simple-compute-resource-0.1", "cores": {"min": 1, "max": 1},
                     "accelerators": [{"type": "gpu", "model": "T4"}]},
    }  # fmt: skip
    answer = ask(client, legacy)
    assert answer["result"] == "YES", texts(answer)
    assert answer["offers"][0]["site"]["pools"] == ["sim/gpu-t"]


def test_the_node_lists_each_pools_traits(node) -> None:
    _, client = node
    pools = {p["name"]: p for p in client.get("/node").json()["platforms"][0]["pools"]}
    assert pools["sim/gpu-a"]["traits"] == ["GPU_A100", "GPU_MEM_80G"]
    assert pools["sim/gpu-a"]["inventories"]["gpus"]["capacity"] == 8
    assert pools["sim/cpu"]["traits"] == []


def test_changed_traits_are_synced_and_bump_the_generation(
    broker_factory: Callable[..., Broker], client_factory, database_url: str
) -> None:
    broker_factory(database_url, platforms=platforms())
    changed = [dict(p) for p in GPU_POOLS]
    changed[1]["traits"] = ["GPU_H100", "GPU_MEM_80G"]
    client = client_factory(broker_factory(database_url, platforms=platforms(changed)))
    pool = next(p for p in client.get("/node").json()["platforms"][0]["pools"]
                if p["name"] == "sim/gpu-a")  # fmt: skip
    assert pool["traits"] == ["GPU_H100", "GPU_MEM_80G"]
    answer = ask(client, gpu_request({"type": "gpu", "model": "H100"}))
    assert answer["result"] == "YES" and answer["offers"][0]["site"]["pools"] == ["sim/gpu-a"]


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_racing_direct_gpu_bookings_never_overbook(
    backend: str, request: pytest.FixtureRequest, broker_factory: Callable[..., Broker]
) -> None:
    """Two brokers on one database, 30 threads each booking 2 A100s at once: exactly 4 fit."""
    database_url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    brokers = [broker_factory(database_url, platforms=platforms()) for _ in range(2)]
    count = 30
    barrier = threading.Barrier(count, timeout=30)
    results: list[str] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        doc = gpu_request({"type": "gpu", "count": {"min": 2, "max": 2}, "model": "A100"},
                          duration="PT1H")  # fmt: skip
        barrier.wait()
        try:
            request_offers(brokers[i % 2], doc, direct=True)
            outcome = "booked"
        except Conflict:
            outcome = "conflict"
        except Exception as exc:  # anything else is a failure of the test
            outcome = f"{type(exc).__name__}: {exc}"
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert Counter(results) == {"booked": 4, "conflict": count - 4}, Counter(results)
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as conn:
            assert overbookings(conn) == []
            assert state_problems(conn) == []
            gpus = conn.execute(sqlalchemy.text(
                "SELECT p.name, SUM(a.amount) FROM allocation a "
                "JOIN resource_pool p ON p.id = a.pool_id WHERE a.resource_class = 'gpus' "
                "GROUP BY p.name"
            )).all()  # fmt: skip
    finally:
        engine.dispose()
    assert [tuple(row) for row in gpus] == [("sim/gpu-a", 8)]


# --- policies: caps per group, allocations in GPU-hours ---------------------------------------

MONTH = {"start": "2020-01-01", "end": "2100-01-01"}
POLICIES = [
    {"name": "site-rules", "type": "local-rules", "options": {
        "limits": [{"name": "students", "groups": ["students"], "caps": {"gpus": 1}}]}},
    {"name": "allocations", "type": "allocations", "options": {"projects": [
        {"name": "ml", "members": {"groups": ["ml"]},
         "allocations": [{"resource": "gpus", "hours": 6, **MONTH}]}]}},
]  # fmt: skip


@pytest.fixture
def governed(
    issuer: OidcIssuer,
    broker_factory: Callable[..., Broker],
    client_factory: Callable[[Broker], TestClient],
    database_url: str,
) -> TestClient:
    broker = broker_factory(
        database_url, platforms=platforms(), auth=issuer.auth_config(), policies=POLICIES,
        holds={"caller": {}, "replace": False},
    )  # fmt: skip
    return client_factory(broker)


def bearer(issuer: OidcIssuer, sub: str, *groups: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issuer.token(sub=sub, groups=groups)}"}


def test_local_rules_cap_the_gpus_of_a_group(governed: TestClient, issuer: OidcIssuer) -> None:
    student = bearer(issuer, "sam", "students")
    r = governed.post("/requests", json=gpu_request({"type": "gpu", "count": {"min": 1, "max": 4}}),
                      headers=student)  # fmt: skip
    assert r.json()["result"] == "YES", texts(r.json())
    assert {o["compute"]["accelerators"][0]["count"]["max"] for o in r.json()["offers"]} == {1}
    r = governed.post("/requests", json=gpu_request({"type": "gpu", "count": {"min": 2}}),
                      headers=student)  # fmt: skip
    assert r.json()["result"] == "NO"
    assert "rule students: at most 1 GPUs per session; 2 needed" in texts(r.json())


def test_an_allocation_counts_gpu_hours(governed: TestClient, issuer: OidcIssuer) -> None:
    member = bearer(issuer, "mia", "ml")
    four = gpu_request({"type": "gpu", "count": {"min": 4, "max": 4}}, duration="PT1H")
    r = governed.post("/requests", json=four, headers=member)
    assert r.json()["result"] == "YES", texts(r.json())
    uuid = r.json()["offers"][0]["meta"]["uuid"]
    assert governed.post(f"/sessions/{uuid}", json=ACCEPT, headers=member).status_code == 200
    # 6 GPU-hours, 4 committed: 4 more GPUs for an hour do not fit, 2 do
    r = governed.post("/requests", json=four, headers=member)
    assert r.json()["result"] == "NO"
    assert "project ml has 2 GPU-hours left" in texts(r.json())
    two = gpu_request({"type": "gpu", "count": {"min": 1, "max": 4}}, duration="PT1H")
    r = governed.post("/requests", json=two, headers=member)
    assert r.json()["result"] == "YES", texts(r.json())
    assert max(o["compute"]["accelerators"][0]["count"]["max"] for o in r.json()["offers"]) == 2
    report = governed.get("/projects/ml", headers=member).json()
    gpus = report["allocations"][0]
    assert gpus["resource_class"] == "gpus" and gpus["committed_hours"] == 4
