"""Plugins arrive through entry points: kinds (``ebroker.kinds``) and platforms
(``ebroker.platforms``)."""

from __future__ import annotations

from datetime import timedelta
from importlib.metadata import EntryPoint
from typing import Literal

import pytest

import broker_core.kinds.registry as kinds_registry
import platforms.registry as platforms_registry
from broker_core.config import PoolConfig, parse_config
from broker_core.kinds.base import Component, kind_uri
from platforms.contract import Platform, WorkState, WorkStatus, inventory


class QuantumCircuit(Component):
    CATEGORY = "executable"
    NAME = "quantum-circuit"
    kind: Literal[kind_uri("executable", "quantum-circuit")]  # type: ignore[valid-type]
    qubits: int


PLUGIN_KINDS = [QuantumCircuit]


class QuantumPlatform(Platform):
    def pools(self) -> list[PoolConfig]:
        return [PoolConfig(name="qpu", inventories={"cores": inventory(2)})]

    def accepted_kinds(self) -> frozenset[str]:
        return frozenset(
            {QuantumCircuit.kind_uri(), kind_uri("compute", "simple-compute-resource")}
        )

    def preparation_estimate(self, request) -> timedelta:
        return timedelta(minutes=5)

    # the execution side: a circuit "runs" at once
    def prepare_executable(self, execution) -> None:
        return None

    def start(self, execution) -> None:
        execution.state["ran"] = True

    def poll(self, execution) -> WorkStatus:
        return WorkStatus(WorkState.SUCCEEDED if execution.state else WorkState.MISSING, 0)

    def stop(self, execution, reason: str) -> None:
        return None

    def release(self, execution) -> None:
        return None


def _entry_points(group: str, name: str, value: str):
    def entry_points(*, group: str = group) -> list[EntryPoint]:
        return [EntryPoint(name=name, value=value, group=group)]

    return entry_points


def test_a_kind_plugin_is_registered(monkeypatch):
    monkeypatch.setattr(
        kinds_registry, "entry_points",
        _entry_points("ebroker.kinds", "quantum", "tests.test_plugins:PLUGIN_KINDS"),
    )  # fmt: skip
    registry = kinds_registry.load_registry()
    assert registry.model("executable", QuantumCircuit.kind_uri()) is QuantumCircuit
    assert registry.kinds("executable")  # the built-ins are still there
    assert kind_uri("executable", "docker-container") in registry.kinds("executable")


def test_a_platform_plugin_serves_its_kind(monkeypatch, broker_factory, client_factory, sqlite_url):
    monkeypatch.setattr(
        kinds_registry, "entry_points",
        _entry_points("ebroker.kinds", "quantum", "tests.test_plugins:PLUGIN_KINDS"),
    )  # fmt: skip
    monkeypatch.setattr(
        platforms_registry, "entry_points",
        _entry_points("ebroker.platforms", "quantum", "tests.test_plugins:QuantumPlatform"),
    )  # fmt: skip
    broker = broker_factory(sqlite_url, platforms=[{"name": "q", "type": "quantum"}])
    client = client_factory(broker)
    node = client.get("/node").json()
    assert node["platforms"][0]["type"] == "quantum"
    assert node["platforms"][0]["pools"][0]["name"] == "q/qpu"
    r = client.post(
        "/requests", json={"executable": {"kind": QuantumCircuit.kind_uri(), "qubits": 5}}
    )
    assert r.status_code == 200 and r.json()["result"] == "YES", r.text
    offer = r.json()["offers"][0]
    assert offer["site"]["platform"] == "q"
    assert offer["schedule"]["preparing"]["duration"] == "PT5M"
    # the plugin kind is validated by its own model
    r = client.post("/requests", json={"executable": {"kind": QuantumCircuit.kind_uri()}})
    assert r.status_code == 400 and r.json()["errors"][0]["pointer"] == "/executable/qubits"


def test_an_unknown_platform_type_names_the_installed_ones():
    config = parse_config({"platforms": [{"name": "x", "type": "mainframe"}]})
    with pytest.raises(
        Exception, match="installed: kubernetes, local, openstack, simulated, slurm"
    ):
        platforms_registry.build_platforms(config.platforms)
