"""The rules of the house, checked over every module's imports (read with ``ast``, so imports
inside functions and under ``TYPE_CHECKING`` count too):

- ``broker_core`` (the node) imports nothing of the aggregator, of the command line above both
  (``ebroker``), or of a concrete plugin: of ``platforms`` and ``policies`` only their contracts
  and the registries that load plugins by entry point;
- plugins (every other module of ``platforms`` and ``policies``) import of the core only the
  vocabulary the contracts speak: the configuration types, the data model (kinds), identities,
  time formats, and a few small helpers; never the node, its database, booking table, offer
  engine, sessions, lifecycle or HTTP app (a policy reads those through its ``PolicyHost``);
- the contracts do not import the node (``Broker``) back, nor anything of its machinery;
- the booking table (``booking/``) imports nothing of the offers (``offers/``);
- the node takes ``Identity`` from its own room, ``broker_core/identity.py``;
- the client (``client``, the user's command line) is a client of the wire format only: it
  imports nothing of the server packages, and none of them imports it.

tests/test_rooms.py has the rules of the other rooms (staging, host pools, time formats).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.imports import ROOT, imports_of, module_of

CONTRACTS = {"platforms.contract", "platforms.registry", "policies.contract", "policies.registry"}
# what of the core a plugin may import: the contracts' vocabulary
VOCABULARY = {
    "broker_core.config",
    "broker_core.identity",
    "broker_core.kinds",
    "broker_core.reading",
    "broker_core.schedule",
    "broker_core.staging",  # the data fetchers, for platforms/staging.py beside the contract
    "broker_core.suggest",
}
# the node itself: what neither a plugin nor a contract may import
MACHINERY = {
    "broker_core.accounting",
    "broker_core.auth",
    "broker_core.booking.ledger",
    "broker_core.broker",
    "broker_core.cli",
    "broker_core.db",
    "broker_core.http",
    "broker_core.lifecycle",
    "broker_core.node",
    "broker_core.offers",
    "broker_core.policy_host",
    "broker_core.sessions",
}


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def within(name: str, packages: set[str]) -> bool:
    return any(name == p or name.startswith(f"{p}.") for p in packages)


def test_the_import_reader_sees_relative_and_late_imports() -> None:
    """What the rules stand on: relative imports are made absolute, and imports inside
    functions count."""
    found = imports_of(ROOT / "broker_core" / "offers" / "policy.py")
    assert "broker_core.broker" in found  # from ..broker import Broker
    assert "policies.contract" in found
    cli = imports_of(ROOT / "ebroker" / "cli.py")
    assert "aggregator.cli" in cli  # imported inside a function
    assert "broker_core.cli" in cli  # from broker_core import cli as node


@pytest.mark.parametrize("path", modules("broker_core"), ids=module_of)
def test_the_node_imports_neither_the_aggregator_nor_a_concrete_plugin(path: Path) -> None:
    found = imports_of(path)
    assert not {n for n in found if within(n, {"aggregator", "ebroker"})}
    plugins = {n for n in found if within(n, {"platforms", "policies"})}
    assert {n for n in plugins if not within(n, CONTRACTS)} == set()


@pytest.mark.parametrize("path", modules("broker_core/booking"), ids=module_of)
def test_the_booking_table_imports_nothing_of_the_offers(path: Path) -> None:
    """The pool and slot views are the booking table's (booking/pools.py): the ledger reads and
    books them without the offer engine that sweeps them."""
    assert not {n for n in imports_of(path) if within(n, {"broker_core.offers"})}


PLUGINS = [
    path
    for package in ("platforms", "policies")
    for path in modules(package)
    # a plugin that is a package (platforms/slurm/) is its __init__.py too; the two
    # namespaces' own __init__.py are no plugin
    if module_of(path) not in CONTRACTS | {"platforms", "policies"}
]


@pytest.mark.parametrize("path", PLUGINS, ids=module_of)
def test_plugins_import_the_core_only_through_the_contracts(path: Path) -> None:
    found = imports_of(path)
    core = {n for n in found if within(n, {"broker_core"}) and n != "broker_core"}
    assert {n for n in core if not within(n, VOCABULARY)} == set()
    assert not {n for n in found if within(n, {"aggregator", "ebroker"})}


@pytest.mark.parametrize("contract", sorted(CONTRACTS))
def test_the_contracts_do_not_import_the_node(contract: str) -> None:
    """The contracts are what core and plugins share: ``broker.py`` imports the policy contract,
    and the contract no longer imports ``broker.py`` back (a plugin gets a ``PolicyHost``)."""
    found = imports_of(ROOT / (contract.replace(".", "/") + ".py"))
    assert {n for n in found if within(n, MACHINERY)} == set()


def test_the_plugins_found_are_the_ones_installed() -> None:
    """The plugin rule covers every concrete plugin the project registers."""
    from importlib.metadata import entry_points

    names = {
        ep.value.split(":")[0]
        for group in ("ebroker.platforms", "ebroker.policies")
        for ep in entry_points(group=group)
    }
    assert names and names <= {module_of(path) for path in PLUGINS}


def test_the_benchmark_checks_the_booking_table_with_the_tests_checker() -> None:
    """The overbooking invariant is written once (tests/invariants.py)."""
    assert "tests.invariants" in imports_of(ROOT / "bench" / "bench_requests.py")


@pytest.mark.parametrize("path", modules("broker_core"), ids=module_of)
def test_the_node_takes_identities_from_its_own_room(path: Path) -> None:
    """``Identity`` lives in broker_core/identity.py; policies.contract names it only for the
    plugins."""
    borrowed = {
        alias.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module == "policies.contract"
        for alias in node.names
    }
    assert not borrowed & {"Identity", "ANONYMOUS", "ANONYMOUS_IDENTITY", "memberships"}


SERVER = {"broker_core", "aggregator", "platforms", "policies", "ebroker"}


@pytest.mark.parametrize("path", modules("client"), ids=module_of)
def test_the_client_speaks_only_the_wire_format(path: Path) -> None:
    """``client`` talks to a node or an aggregator over HTTP, as any user's program would; it
    shares no code with them, so it can be installed and versioned on its own."""
    assert {n for n in imports_of(path) if within(n, SERVER)} == set()


@pytest.mark.parametrize(
    "path", [p for package in sorted(SERVER) for p in modules(package)], ids=module_of
)
def test_no_server_package_imports_the_client(path: Path) -> None:
    assert {n for n in imports_of(path) if within(n, {"client"})} == set()


def test_the_client_rule_sees_the_client() -> None:
    """The rule is no empty loop: the client's modules are found, and their imports read."""
    assert {module_of(p) for p in modules("client")} >= {
        "client.app",
        "client.api",
        "client.documents",
    }
    assert "client.api" in imports_of(ROOT / "client" / "app.py")
