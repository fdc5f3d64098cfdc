"""The pure parts of ``eb admin``: the documents made from its flags (client/documents.py: pools,
maintenance times in the user's zone with a fixed clock, inventory changes, audit filters),
the answers read into typed results and the calls made (client/api.py, over httpx's mock
transport: no broker), and the tables printed (client/output.py), compared with snapshots in
``tests/snapshots/client`` (EBROKER_UPDATE_SNAPSHOTS=1 writes them, to be read in the diff)."""

from __future__ import annotations

import io
import json
import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from dateutil import tz
from rich.console import Console

from client import documents as d
from client.api import (
    AuditEvent,
    Broker,
    Conflicts,
    InventoryResult,
    MaintenanceWindow,
    PoolState,
    Refused,
)
from client.output import Format, Printer, amounts_text, classes_of, override_text

AMSTERDAM = tz.gettz("Europe/Amsterdam")
CET = timezone(timedelta(hours=1), "CET")  # the tables' zone: its name the same all year
NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)  # a Tuesday, 10:30 in Amsterdam
SNAPSHOTS = Path(__file__).parent / "snapshots" / "client"
SESSION = "7c3e2a10-5b4d-4e6f-8a9b-0c1d2e3f4a5b"
WINDOW = "9a1b2c3d-0000-4000-8000-000000000001"

# --- documents ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "platform", "pool"),
    [("sim/main", "sim", "main"), (" slurm/gpu-a100 ", "slurm", "gpu-a100"), ("k8s/a.b_c", "k8s",
     "a.b_c")],
)  # fmt: skip
def test_pools_are_platform_slash_pool(text: str, platform: str, pool: str) -> None:
    name = d.parse_pool(text)
    assert (name.platform, name.pool, str(name)) == (platform, pool, f"{platform}/{pool}")


@pytest.mark.parametrize("text", ["main", "sim/", "/main", "sim/main/x", "Sim/main", "sim/-a", ""])
def test_bad_pools_say_how_to_write_one(text: str) -> None:
    with pytest.raises(d.DocumentError, match="PLATFORM/POOL"):
        d.parse_pool(text)


@pytest.mark.parametrize(
    ("start", "end", "interval"),
    [
        # in Amsterdam (UTC+1): a time of day alone is on the start's day (or the next)
        ("tomorrow 08:00", "12:00", ("2026-12-02T07:00:00Z", "2026-12-02T11:00:00Z")),
        ("friday 22:00", "02:00", ("2026-12-04T21:00:00Z", "2026-12-05T01:00:00Z")),
        ("+1h", "+4h", ("2026-12-01T10:30:00Z", "2026-12-01T14:30:00Z")),  # +D: after the start
        ("2027-01-07 08:00", "2027-01-08 18:00",
         ("2027-01-07T07:00:00Z", "2027-01-08T17:00:00Z")),
        ("2027-07-07T08:00Z", "5pm", ("2027-07-07T08:00:00Z", "2027-07-07T15:00:00Z")),  # CEST
    ],
)  # fmt: skip
def test_maintenance_times_are_the_users_sent_as_utc(
    start: str, end: str, interval: tuple[str, str]
) -> None:
    doc = d.maintenance_document(start, end, "firmware", {}, NOW, AMSTERDAM)
    assert doc == {"start": interval[0], "end": interval[1], "reason": "firmware"}


def test_maintenance_of_some_amounts() -> None:
    doc = d.maintenance_document("+1h", "+2h", "racks", {"cores": 4, "memory": None, "gpus": 0},
                                 NOW, AMSTERDAM)  # fmt: skip
    assert doc["amounts"] == {"cores": 4, "gpus": 0}


@pytest.mark.parametrize(
    ("start", "end", "reason", "amounts", "says"),
    [
        ("+2h", "+1h", "x", {}, None),  # +1h after the start: fine (checked below)
        ("+2h", "2026-12-01 09:00", "x", {}, "is not after --from"),
        ("soon", "+1h", "x", {}, "--from: time 'soon'"),
        ("+1h", "later", "x", {}, "--to: time 'later'"),
        ("+1h", "+2x", "x", {}, "--to: duration"),
        ("+1h", "+2h", " ", {}, "say why"),
        ("+1h", "+2h", "x", {"cores": -2}, "cannot be negative"),
    ],
)
def test_bad_maintenance_says_which_flag(start, end, reason, amounts, says) -> None:
    if says is None:
        assert d.maintenance_document(start, end, reason, amounts, NOW, AMSTERDAM)["end"] == (
            "2026-12-01T12:30:00Z"
        )
        return
    with pytest.raises(d.DocumentError, match=says):
        d.maintenance_document(start, end, reason, amounts, NOW, AMSTERDAM)


def test_the_inventory_change_from_set_and_reset() -> None:
    doc = d.inventory_document(
        ["cores=12", "memory.reserved=4", "memory.allocation_ratio=1.5", "gpus.max_unit=none",
         "cores.step_size=2"], ["storage"], dry_run=True, reason="two DIMMs out",
    )  # fmt: skip
    assert doc == {
        "inventories": {
            "cores": {"total": 12, "step_size": 2},
            "memory": {"reserved": 4, "allocation_ratio": 1.5},
            "gpus": {"max_unit": None},
            "storage": None,
        },
        "dry_run": True,
        "reason": "two DIMMs out",
    }
    assert d.inventory_document(["cores=4"], [], force=True) == {
        "inventories": {"cores": {"total": 4}}, "force": True}  # fmt: skip
    assert json.loads(json.dumps(doc))["inventories"]["storage"] is None  # null, on the wire


@pytest.mark.parametrize(
    ("sets", "resets", "says"),
    [
        ([], [], "nothing to change"),
        (["cores"], [], "CLASS=TOTAL"),
        (["cores="], [], "CLASS=TOTAL"),
        (["=4"], [], "CLASS=TOTAL"),
        (["cores=four"], [], "not a whole number"),
        (["cores=-1"], [], "cannot be negative"),
        (["cores.min_unit=0"], [], "at least 1"),
        (["cores.allocation_ratio=0"], [], "above 0"),
        (["cores.allocation_ratio=x"], [], "not a number"),
        (["cores.capacity=3"], [], "unknown field 'capacity'"),
        (["cores=2"], ["cores"], "one or the other"),
        ([], [" "], "name a resource class"),
    ],
)
def test_bad_inventory_changes_say_what_would_do(sets, resets, says) -> None:
    with pytest.raises(d.DocumentError, match=says):
        d.inventory_document(sets, resets)


def test_times_before_now() -> None:
    assert d.parse_moment("-2h", NOW, AMSTERDAM) == datetime(2026, 12, 1, 7, 30, tzinfo=UTC)
    assert d.parse_moment("90m ago", NOW, AMSTERDAM) == datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    with pytest.raises(d.DocumentError, match="is not a duration"):
        d.parse_moment("-soon", NOW, AMSTERDAM)


def test_audit_filters() -> None:
    assert d.parse_actions(["drain,undrain", "Drain", " book-maintenance "]) == [
        "drain", "undrain", "book-maintenance"]  # fmt: skip
    with pytest.raises(d.DocumentError, match="unknown action 'reboot'"):
        d.parse_actions(["drain,reboot"])
    assert d.parse_subject("sim/main") == "pool:sim/main"
    assert d.parse_subject(f"session:{SESSION}") == f"session:{SESSION}"
    assert d.parse_subject("pool:sim/main") == "pool:sim/main"
    for bad in ("main", "node:x", "session:"):
        with pytest.raises(d.DocumentError, match="--subject"):
            d.parse_subject(bad)


# --- the answers, and the calls ----------------------------------------------------------------

BOOKED = {"session": SESSION, "phase": "ACCEPTED", "owner": "test:alice",
          "start": "2026-12-02T09:00:00Z", "end": "2026-12-02T10:00:00Z",
          "amounts": {"cores": 10, "memory": 1}}  # fmt: skip
MAINTENANCE = {
    "uuid": WINDOW, "start": "2026-12-02T08:30:00Z", "end": "2026-12-02T09:30:00Z",
    "reason": "firmware", "amounts": {"cores": 8}, "pool": "sim/main", "created_by": "test:root",
    "created": "2026-12-01T09:00:00Z",
    "taken": [{"start": "2026-12-02T08:30:00Z", "end": "2026-12-02T09:00:00Z",
               "amounts": {"cores": 8}},
              {"start": "2026-12-02T09:00:00Z", "end": "2026-12-02T09:30:00Z",
               "amounts": {"cores": 6}}],
    "complete": False, "short": ["cores"], "overlapping": [BOOKED],
}  # fmt: skip


def inventory(total: int, reserved: int = 0, ratio: float = 1.0) -> dict[str, Any]:
    return {"total": total, "reserved": reserved, "allocation_ratio": ratio,
            "capacity": int((total - reserved) * ratio), "min_unit": 1, "max_unit": None,
            "step_size": 1}  # fmt: skip


POOLS = [
    {"name": "sim/main", "generation": 5, "state": "drained",
     "drain": {"since": "2026-12-01T08:00:00Z", "by": "test:root", "reason": "disk swap"},
     "maintenance": [{k: MAINTENANCE[k] for k in ("uuid", "start", "end", "reason", "amounts")}],
     "inventories": {"cores": inventory(16), "memory": inventory(64, 2),
                     "storage": inventory(1000)},
     "override": {"inventories": {"memory": {"reserved": 2}}, "by": "test:root",
                  "at": "2026-12-01T08:30:00Z", "reason": "os"}},
    {"name": "sim/small", "generation": 1, "state": "open", "maintenance": [],
     "inventories": {"cores": inventory(2), "memory": inventory(8), "gpus": inventory(1)}},
]  # fmt: skip
NODE = {"site": {"name": "n"}, "kinds": [],
        "platforms": [{"name": "sim", "pools": POOLS[:1]},
                      {"name": "sim2", "pools": POOLS[1:]}]}  # fmt: skip
CONFLICT = {"resource_class": "cores", "capacity": 4, "needed": 10,
            "from": "2026-12-02T09:00:00Z", "to": "2026-12-02T10:00:00Z",
            "sessions": [{**{k: v for k, v in BOOKED.items() if k != "amounts"},
                          "amount": 10}]}  # fmt: skip
DRY_RUN = {"pool": "sim/main", "applied": False, "conflicts": [CONFLICT],
           "inventories": {"cores": inventory(4), "memory": inventory(64, 2)},
           "override": {"inventories": {"cores": {"total": 4}, "memory": {"reserved": 2}},
                        "by": "test:root", "at": "2026-12-01T09:00:00Z"}}  # fmt: skip
EVENTS = [
    {"id": 1, "at": "2026-12-01T09:00:00Z", "actor": "test:alice", "action": "accept",
     "subject": f"session:{SESSION}", "detail": "OFFERED -> ACCEPTED"},
    {"id": 2, "at": "2026-12-01T09:05:00Z", "actor": "test:root", "action": "drain",
     "subject": "pool:sim/main", "detail": "disk swap"},
    {"id": 3, "at": "2026-12-01T09:06:00Z", "actor": "test:root", "action": "undrain",
     "subject": "pool:sim/main"},
]  # fmt: skip


def test_the_answers_read_into_typed_results() -> None:
    pool = PoolState.of(POOLS[0])
    assert (pool.name, pool.state, pool.capacity("memory"), pool.capacity("gpus")) == (
        "sim/main", "drained", 62, None)  # fmt: skip
    assert pool.drain is not None
    assert (pool.drain.by, pool.drain.reason) == ("test:root", "disk swap")
    assert pool.override is not None and pool.override.inventories == {"memory": {"reserved": 2}}
    assert [w.uuid for w in pool.maintenance] == [WINDOW]
    assert PoolState.of(POOLS[1]).drain is None and PoolState.of(POOLS[1]).override is None
    window = MaintenanceWindow.of(MAINTENANCE)
    assert (window.complete, window.short, len(window.taken)) == (False, ["cores"], 2)
    assert window.overlapping[0].amounts == {"cores": 10, "memory": 1}
    result = InventoryResult.of(DRY_RUN)
    [conflict] = result.conflicts
    assert (result.applied, conflict.start, conflict.end, conflict.needed) == (
        False, "2026-12-02T09:00:00Z", "2026-12-02T10:00:00Z", 10)  # fmt: skip
    assert conflict.sessions[0].amount == 10 and conflict.sessions[0].amounts == {}


def broker_over(handler: Any) -> tuple[Broker, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    return Broker("http://node", "t0ken", transport=httpx.MockTransport(record)), seen


def test_the_admin_calls_and_their_answers() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/node":
            return httpx.Response(200, json=NODE)
        if path.endswith("/drain"):
            return httpx.Response(200, json=POOLS[0] if request.method == "PUT" else POOLS[1])
        if path.endswith("/maintenance"):
            if request.method == "POST":
                return httpx.Response(201, json=MAINTENANCE)
            return httpx.Response(200, json={"items": [MAINTENANCE]})
        if "/maintenance/" in path:
            return httpx.Response(200, json={**MAINTENANCE, "deleted": "2026-12-01T10:00:00Z"})
        return httpx.Response(404, json={"title": "Not Found", "detail": "no such thing"})

    broker, seen = broker_over(answer)
    assert [p.name for p in broker.pools()] == ["sim/main", "sim/small"]
    assert broker.drain("sim/main", "disk swap").state == "drained"
    assert broker.undrain("sim/main").state == "open"
    assert [w.uuid for w in broker.maintenance("sim/main")] == [WINDOW]
    doc = {"start": MAINTENANCE["start"], "end": MAINTENANCE["end"], "reason": "firmware"}
    assert broker.book_maintenance("sim/main", doc).overlapping[0].session == SESSION
    assert broker.delete_maintenance("sim/main", WINDOW).deleted == "2026-12-01T10:00:00Z"
    assert [(r.method, r.url.path) for r in seen] == [
        ("GET", "/node"), ("PUT", "/pools/sim/main/drain"), ("DELETE", "/pools/sim/main/drain"),
        ("GET", "/pools/sim/main/maintenance"), ("POST", "/pools/sim/main/maintenance"),
        ("DELETE", f"/pools/sim/main/maintenance/{WINDOW}"),
    ]  # fmt: skip
    assert json.loads(seen[1].content) == {"reason": "disk swap"}
    assert json.loads(seen[4].content) == doc
    assert all(r.headers["authorization"] == "Bearer t0ken" for r in seen)


def test_a_409_with_conflicts_is_typed_and_other_refusals_are_not() -> None:
    problem = {"title": "Conflict", "status": 409, "detail": "the change leaves 1 stretches",
               "conflicts": [CONFLICT]}  # fmt: skip
    broker, seen = broker_over(lambda r: httpx.Response(409, json=problem))
    with pytest.raises(Conflicts) as caught:
        broker.change_inventory("sim/main", {"inventories": {"cores": {"total": 4}}})
    assert caught.value.status == 409 and caught.value.conflicts[0].capacity == 4
    assert "Conflict (409): the change leaves" in str(caught.value)
    assert seen[0].method == "PATCH" and seen[0].url.path == "/pools/sim/main/inventory"
    other, _ = broker_over(lambda r: httpx.Response(409, json={"title": "Conflict"}))
    with pytest.raises(Refused) as plain:
        other.change_inventory("sim/main", {"inventories": {"cores": None}})
    assert not isinstance(plain.value, Conflicts)


def test_the_audit_log_follows_the_cursors_with_the_same_filters() -> None:
    pages = {None: (EVENTS[:2], "c2"), "c2": (EVENTS[2:], None)}

    def answer(request: httpx.Request) -> httpx.Response:
        items, after = pages[request.url.params.get("cursor")]
        return httpx.Response(200, json={"items": items, "limit": 2,
                                         **({"next": after} if after else {})})  # fmt: skip

    broker, seen = broker_over(answer)
    log = broker.audit(every=True, actor="test:root", action=["drain", "undrain"], limit=2,
                       subject=None)  # fmt: skip
    assert [e.id for e in log.events] == [1, 2, 3] and log.raw == EVENTS and not log.more
    assert [r.url.params.get_list("action") for r in seen] == [["drain", "undrain"]] * 2
    assert all(r.url.params["actor"] == "test:root" and "subject" not in r.url.params
               for r in seen)  # fmt: skip
    first, seen = broker_over(answer)
    page = first.audit(every=False, limit=2)
    assert [e.action for e in page.events] == ["accept", "drain"] and page.more and len(seen) == 1


# --- the tables --------------------------------------------------------------------------------


def check_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("EBROKER_UPDATE_SNAPSHOTS") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"no snapshot {path}; run with EBROKER_UPDATE_SNAPSHOTS=1"
    assert text == path.read_text(), f"{name} differs from {path}"


def printed(show: Any, zone: Any = CET) -> str:
    """What a Printer method prints, without colours, 160 columns wide, in ``zone``."""
    out = io.StringIO()
    console = Console(file=out, width=160, color_system=None, soft_wrap=False, highlight=False)
    show(Printer(Format.table, out=console, err=console, zone=zone))
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"


def test_the_pools_table() -> None:
    text = printed(lambda p: p.pools([PoolState.of(doc) for doc in POOLS]))
    check_snapshot("admin-pools.txt", text)
    assert "01 Dec 09:00:00" in text  # the drain's since, at UTC+1
    assert printed(lambda p: p.pools([])).startswith("no pools")


def test_the_maintenance_tables() -> None:
    window = MaintenanceWindow.of(MAINTENANCE)
    check_snapshot("admin-maintenance-list.txt", printed(lambda p: p.windows([window], "sim/main")))
    check_snapshot("admin-maintenance-booked.txt", printed(lambda p: p.window(window, "booked")))
    assert "no maintenance windows on sim/main" in printed(lambda p: p.windows([], "sim/main"))


def test_the_inventory_and_conflicts_tables() -> None:
    result = InventoryResult.of(DRY_RUN)
    check_snapshot("admin-inventory-dry-run.txt", printed(lambda p: p.inventory(result)))
    applied = InventoryResult.of({**DRY_RUN, "applied": True, "conflicts": []})
    assert "every booking fits" in printed(lambda p: p.inventory(applied))


def test_the_audit_table() -> None:
    check_snapshot(
        "admin-audit.txt", printed(lambda p: p.audit([AuditEvent.of(e) for e in EVENTS]), UTC)
    )
    assert printed(lambda p: p.audit([])).strip() == "no events"


def test_the_cells() -> None:
    assert amounts_text({"memory": 32, "cores": 8, "fpga": 1}) == "cores 8, memory 32, fpga 1"
    assert amounts_text({}) == "all of the pool" and amounts_text({}, "all") == "all"
    assert override_text({"memory": {"reserved": 2}, "cores": {"total": 12, "step_size": 2}}) == (
        "cores.total=12, cores.step_size=2, memory.reserved=2"
    )
    assert classes_of([{"gpus": {}, "memory": {}}, {"cores": {}, "fpga": {}}]) == [
        "cores", "memory", "gpus", "fpga"]  # fmt: skip
    span = printed(lambda p: p.out.print(p.span("2026-12-02T08:00:00Z", "2026-12-02T12:00:00Z")))
    assert span.strip() == "02 Dec 09:00:00 → 13:00:00"
    across = printed(lambda p: p.out.print(p.span("2026-12-02T22:00:00Z", "2026-12-03T01:00:00Z")))
    assert across.strip() == "02 Dec 23:00:00 → 03 Dec 02:00:00"
