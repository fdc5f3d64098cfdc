"""``eb admin`` against a real node process (``ebroker serve``, the simulated platform, tokens of
the tests' real OIDC issuer; the admin is in the node's ``auth.admin_groups`` by the token's
groups): a drain turning requests into a NO (exit 1) that gives the drain's reason, and the
undrain opening the pool again; maintenance booked in the user's zone (sent as UTC), listed
with the session it overlaps, and deleted; an inventory change checked (a dry run exits 0, a
conflict without --force is a 409, exit 1, its sessions as a table), applied and reset; the
audit log with its actors, a page or every page; and a caller who is no admin refused (exit 1,
saying why). The pure parts are in tests/test_client_admin_units.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from client.app import app
from tests.nodes import ROOT, Node, oidc_node
from tests.oidc_issuer import OidcIssuer

pytestmark = pytest.mark.slow  # a real node process: `-m 'not slow'` leaves it out

IMAGE = "localhost/busybox"
ROOT_OWNER, ALICE_OWNER = "test:root", "test:alice"



@pytest.fixture(scope="module")
def node(issuer: OidcIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("client-admin")
    started = oidc_node(issuer, tmp, "cli-admin")  # one pool, sim/main: 16 cores, 64 GiB
    yield started
    started.stop()


@pytest.fixture(scope="module")
def tokens(issuer: OidcIssuer) -> dict[str, str]:
    return {
        "alice": issuer.token(sub="alice", expires_in=3600),
        "root": issuer.token(sub="root", groups=["admins"], expires_in=3600),
    }


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    return {"XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path), "COLUMNS": "250",
            "EBROKER_TOKEN": "", "EBROKER_URL": "", "EBROKER_PROFILE": ""}  # fmt: skip


def eb(node: Node, home: dict[str, str], token: str | None, *args: str) -> Result:
    env = {**home, **({"EBROKER_TOKEN": token} if token else {})}
    return CliRunner().invoke(app, ["--url", node.url, *args], env=env)


def parsed(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def main_pool(node: Node, home: dict[str, str], token: str) -> dict[str, Any]:
    [pool] = [p for p in parsed(eb(node, home, token, "admin", "pools", "-o", "json"))
              if p["name"] == "sim/main"]  # fmt: skip
    return pool


def booked(node: Node, home: dict[str, str], token: str, window: str, cores: int = 10) -> str:
    """An accepted session of ``cores`` for an hour, starting in ``window``; its uuid."""
    offers = parsed(eb(node, home, token, "request", "--image", IMAGE, "--cores", str(cores),
                       "--duration", "1h", "--window", window, "-o", "json"))  # fmt: skip
    uuid = offers["offers"][0]["meta"]["uuid"]
    assert parsed(eb(node, home, token, "accept", uuid, "-o", "json"))["phase"] == "ACCEPTED"
    assert eb(node, home, token, "withdraw", offers["meta"]["uuid"]).exit_code == 0  # the rest
    return uuid


def test_a_drain_turns_requests_into_a_no_saying_why_until_undrained(node, home, tokens) -> None:
    alice, root = tokens["alice"], tokens["root"]
    drained = eb(node, home, root, "admin", "drain", "sim/main", "--reason", "disk swap")
    assert drained.exit_code == 0, drained.output
    assert "drained" in drained.stdout and "disk swap" in drained.stdout
    pool = main_pool(node, home, alice)  # GET /node: everyone sees the drain
    assert pool["state"] == "drained"
    assert (pool["drain"]["reason"], pool["drain"]["by"]) == ("disk swap", ROOT_OWNER)
    table = eb(node, home, alice, "admin", "pools")
    assert table.exit_code == 0
    row = next(line for line in table.stdout.splitlines() if line.startswith("sim/main"))
    assert all(text in row for text in ("drained", ROOT_OWNER, "disk swap", "16", "64"))

    refused = eb(node, home, alice, "request", "--image", IMAGE, "--window", "+1h..+2h")
    assert refused.exit_code == 1, refused.output
    assert "no offers (result NO)" in refused.stderr
    assert "sim/main is drained" in refused.stderr and "(disk swap)" in refused.stderr

    undrained = eb(node, home, root, "admin", "undrain", "sim/main", "-o", "json")
    assert parsed(undrained)["state"] == "open" and "drain" not in parsed(undrained)
    offers = parsed(eb(node, home, alice, "request", "--image", IMAGE, "--window", "+1h..+2h",
                       "-o", "json"))  # fmt: skip
    assert offers["result"] == "YES" and offers["offers"]
    assert eb(node, home, alice, "withdraw", offers["meta"]["uuid"]).exit_code == 0


def test_maintenance_is_booked_in_the_users_zone_listed_and_deleted(node, home, tokens) -> None:
    alice, root = tokens["alice"], tokens["root"]
    session = booked(node, home, alice, "+5h..+5h1m")
    # from half an hour before the session, for an hour: it overlaps the session's first half
    result = eb(node, home, root, "admin", "maintenance", "book", "sim/main", "--from",
                "+4h31m", "--to", "+1h", "--reason", "firmware")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "firmware" in result.stdout and "not moved nor cancelled" in result.stdout
    overlapping = next(line for line in result.stdout.splitlines() if session in line)
    assert ALICE_OWNER in overlapping and "cores 10" in overlapping
    # as a user runs it, in Amsterdam: the times typed are Amsterdam's, sent as UTC
    env = {**os.environ, **home, "EBROKER_URL": node.url, "EBROKER_TOKEN": root,
           "TZ": "Europe/Amsterdam"}  # fmt: skip
    zoned = subprocess.run(
        [sys.executable, "-m", "client", "admin", "maintenance", "book", "sim/main", "--from",
         "2030-01-07 09:00", "--to", "13:00", "--reason", "racks", "--cores", "4", "--memory",
         "16", "-o", "json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert zoned.returncode == 0, zoned.stderr
    window = json.loads(zoned.stdout)
    assert (window["start"], window["end"]) == ("2030-01-07T08:00:00Z", "2030-01-07T12:00:00Z")
    assert window["amounts"] == {"cores": 4, "memory": 16} and window["created_by"] == ROOT_OWNER

    listed = parsed(eb(node, home, root, "admin", "maintenance", "list", "sim/main", "-o", "json"))
    reasons = {w["reason"]: w for w in listed}
    assert {"firmware", "racks"} <= set(reasons)
    assert [s["session"] for s in reasons["firmware"]["overlapping"]] == [session]
    table = eb(node, home, root, "admin", "maintenance", "list", "sim/main")
    assert table.exit_code == 0 and window["uuid"] in table.stdout and "cores 4" in table.stdout
    assert f"sessions in window {reasons['firmware']['uuid']}" in table.stdout
    shown = main_pool(node, home, alice)["maintenance"]  # everyone sees the windows
    assert window["uuid"] in {w["uuid"] for w in shown}

    deleted = eb(node, home, root, "admin", "maintenance", "delete", "sim/main", window["uuid"])
    assert deleted.exit_code == 0, deleted.output
    assert "deleted" in deleted.stdout and window["uuid"] in deleted.stdout
    left = parsed(eb(node, home, root, "admin", "maintenance", "list", "sim/main", "-o", "json"))
    assert window["uuid"] not in {w["uuid"] for w in left}
    again = eb(node, home, root, "admin", "maintenance", "delete", "sim/main", window["uuid"])
    assert again.exit_code == 1 and "404" in again.stderr
    firmware = reasons["firmware"]["uuid"]
    assert eb(node, home, root, "admin", "maintenance", "delete", "sim/main",
              firmware).exit_code == 0  # fmt: skip
    assert eb(node, home, alice, "cancel", session).exit_code == 0


def test_an_inventory_change_is_checked_against_what_is_booked(node, home, tokens) -> None:
    alice, root = tokens["alice"], tokens["root"]
    session = booked(node, home, alice, "+9h..+9h1m")
    dry = eb(node, home, root, "admin", "inventory", "sim/main", "--set", "cores=4", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "dry run: nothing changed" in dry.stdout and "what no longer fits" in dry.stdout
    row = next(line for line in dry.stdout.splitlines() if session in line)
    assert ALICE_OWNER in row and "cores 10" in row and "capacity 4" in row
    as_json = parsed(eb(node, home, root, "admin", "inventory", "sim/main", "--set", "cores=4",
                        "--dry-run", "-o", "json"))  # fmt: skip
    assert as_json["applied"] is False and as_json["inventories"]["cores"]["capacity"] == 4
    assert main_pool(node, home, root)["inventories"]["cores"]["capacity"] == 16  # unchanged

    refused = eb(node, home, root, "admin", "inventory", "sim/main", "--set", "cores=4")
    assert refused.exit_code == 1, refused.output
    assert "409" in refused.stderr and "--force" in refused.stderr
    assert session in refused.stdout and "no longer fits" in refused.stdout
    problem = eb(node, home, root, "admin", "inventory", "sim/main", "--set", "cores=4",
                 "-o", "json")  # fmt: skip
    assert problem.exit_code == 1
    conflicts = json.loads(problem.stdout)["conflicts"]
    assert session in {s["session"] for c in conflicts for s in c["sessions"]}
    assert main_pool(node, home, root)["inventories"]["cores"]["capacity"] == 16

    # a change that fits applies; --reset goes back to the platform's values
    fits = parsed(eb(node, home, root, "admin", "inventory", "sim/main", "--set",
                     "memory.reserved=2", "--set", "cores=12", "--reason", "two DIMMs out",
                     "-o", "json"))  # fmt: skip
    assert fits["applied"] is True and fits["conflicts"] == []
    pool = main_pool(node, home, root)
    assert pool["override"]["inventories"] == {"cores": {"total": 12}, "memory": {"reserved": 2}}
    assert pool["override"]["by"] == ROOT_OWNER and pool["inventories"]["memory"]["capacity"] == 62
    table = eb(node, home, root, "admin", "pools")
    assert "cores.total=12, memory.reserved=2" in table.stdout
    reset = eb(node, home, root, "admin", "inventory", "sim/main", "--reset", "cores",
               "--reset", "memory")  # fmt: skip
    assert reset.exit_code == 0 and "every booking fits" in reset.stdout, reset.output
    assert "override" not in main_pool(node, home, root)
    assert eb(node, home, alice, "cancel", session).exit_code == 0


def test_the_audit_log_shows_who_did_what(node, home, tokens) -> None:
    alice, root = tokens["alice"], tokens["root"]
    session = booked(node, home, alice, "+13h..+13h1m", cores=1)
    assert eb(node, home, root, "admin", "drain", "sim/main", "--reason", "audit me").exit_code == 0
    assert eb(node, home, root, "admin", "undrain", "sim/main").exit_code == 0

    events = parsed(eb(node, home, root, "admin", "audit", "--action", "drain,undrain",
                       "--subject", "sim/main", "--all", "-o", "json"))  # fmt: skip
    mine = [e for e in events if "audit me" in e.get("detail", "")]
    assert [e["action"] for e in mine] == ["drain", "undrain"]
    assert {e["actor"] for e in mine} == {ROOT_OWNER} and mine[0]["subject"] == "pool:sim/main"
    accepted = eb(node, home, root, "admin", "audit", "--actor", ALICE_OWNER, "--action",
                  "accept", "--all")  # fmt: skip
    assert accepted.exit_code == 0, accepted.output
    row = next(line for line in accepted.stdout.splitlines() if session in line)
    assert ALICE_OWNER in row and "accept" in row
    # the first page only says there is more; --all follows the cursors to the end
    whole = parsed(eb(node, home, root, "admin", "audit", "--all", "-o", "json"))
    paged = parsed(eb(node, home, root, "admin", "audit", "--all", "--limit", "2", "-o", "json"))
    assert paged == whole and len(whole) >= 4
    assert [e["id"] for e in whole] == sorted(e["id"] for e in whole)
    first = eb(node, home, root, "admin", "audit", "--limit", "2", "-o", "json")
    assert parsed(first) == whole[:2] and "more events" in first.stderr
    later = parsed(eb(node, home, root, "admin", "audit", "--from", "+1h", "-o", "json"))
    recent = parsed(eb(node, home, root, "admin", "audit", "--from", "-10m", "--all", "-o", "json"))
    assert later == [] and {e["id"] for e in mine} <= {e["id"] for e in recent}
    assert eb(node, home, alice, "cancel", session).exit_code == 0


@pytest.mark.parametrize(
    "args",
    [
        ["admin", "drain", "sim/main", "--reason", "mine now"],
        ["admin", "undrain", "sim/main"],
        ["admin", "maintenance", "list", "sim/main"],
        ["admin", "inventory", "sim/main", "--set", "cores=1", "--dry-run"],
        ["admin", "audit"],
    ],
)
def test_a_caller_who_is_no_admin_is_refused_saying_why(node, home, tokens, args) -> None:
    result = eb(node, home, tokens["alice"], *args)
    assert result.exit_code == 1, result.output
    assert "Forbidden (403): only admins may" in result.stderr
    assert "auth.admin_groups" in result.stderr
    assert main_pool(node, home, tokens["alice"])["state"] == "open"


def test_without_a_token_or_on_an_unknown_pool_the_node_refuses(node, home, tokens) -> None:
    anonymous = eb(node, home, None, "admin", "maintenance", "list", "sim/main")
    assert anonymous.exit_code == 1 and "401" in anonymous.stderr
    unknown = eb(node, home, tokens["root"], "admin", "drain", "sim/nope", "--reason", "x")
    assert unknown.exit_code == 1 and "no pool sim/nope" in unknown.stderr


BOOK = ["admin", "maintenance", "book", "sim/main", "--reason", "x"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["admin", "drain", "main", "--reason", "x"], "PLATFORM/POOL"),
        (["admin", "drain", "sim/main"], "--reason"),
        (["admin", "drain", "sim/main", "--reason", " "], "say why"),
        ([*BOOK, "--from", "+2h", "--to", "2020-01-01 00:00"], "is not after --from"),
        ([*BOOK, "--from", "someday", "--to", "+1h"], "--from"),
        ([*BOOK, "--from", "+1h", "--to", "+2h", "--cores", "-1"], "--cores"),
        (["admin", "maintenance", "delete", "sim/main", "not-a-uuid"], "400"),
        (["admin", "inventory", "sim/main"], "nothing to change"),
        (["admin", "inventory", "sim/main", "--set", "cores=many"], "not a whole number"),
        (["admin", "inventory", "sim/main", "--set", "cores.size=2"], "unknown field"),
        (["admin", "inventory", "sim/main", "--set", "cores=2", "--reset", "cores"], "one or"),
        (["admin", "audit", "--action", "reboot"], "unknown action"),
        (["admin", "audit", "--subject", "main"], "--subject"),
        (["admin", "audit", "--limit", "0"], "limit"),
    ],
)
def test_bad_flags_are_usage_errors(node, home, tokens, args: list[str], says: str) -> None:
    result = eb(node, home, tokens["root"], *args)
    assert result.exit_code == 2, result.output
    assert says in result.output
