"""Messages that say what would work: each refusal names what was wrong and what to do instead."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from starlette.testclient import TestClient

from broker_core.config import ConfigError, parse_config
from broker_core.db.engine import DatabaseUnavailable, check_reachable, masked_url
from broker_core.errors import DocumentInvalid
from broker_core.http.app import create_app
from broker_core.kinds.registry import load_registry
from broker_core.kinds.request import parse_request
from broker_core.node import build_broker
from broker_core.schedule import instants_without_zone
from broker_core.suggest import did_you_mean, duration_from_words, unknown_field
from platforms.registry import build_platforms
from policies.registry import build_policies
from tests.conftest import ACCEPT, make_config, offered_start, request_doc
from tests.nodes import ROOT, start_node

# --- did you mean: one helper for request documents and config keys -----------------------------


def test_the_helper_suggests_the_closest_known_name():
    assert unknown_field("excutable", ["executable", "compute"]) == (
        "unknown field 'excutable'; did you mean 'executable'?"
    )
    assert unknown_field("zzz", ["executable", "compute"]) == "unknown field 'zzz'"
    assert did_you_mean("accepted", ["ACCEPTED", "REJECTED"]) == "; did you mean 'ACCEPTED'?"
    assert unknown_field("hold", ["offers"], ["offers.hold", "offers.lookahead"]) == (
        "unknown field 'hold'; did you mean 'offers.hold'?"
    )


def _errors(client, doc):
    r = client.post("/requests", json=doc)
    assert r.status_code == 400, r.text
    return {e["pointer"]: e["detail"] for e in r.json()["errors"]}


def test_a_misspelt_request_field_gets_did_you_mean_in_the_problem(client):
    doc = request_doc()
    doc["excutable"] = doc.pop("executable")
    errors = _errors(client, doc)
    assert errors["/excutable"] == "unknown field 'excutable'; did you mean 'executable'?"

    doc = request_doc()
    doc["compute"]["corse"] = doc["compute"].pop("cores")
    errors = _errors(client, doc)
    assert errors == {"/compute/corse": "unknown field 'corse'; did you mean 'cores'?"}

    doc = request_doc(start="PT1H/2030-01-01T00:00:00Z")
    doc["schedule"]["requested"]["duraton"] = "PT1H"
    errors = _errors(client, doc)
    assert errors["/schedule/requested/duraton"] == (
        "unknown field 'duraton'; did you mean 'duration'?"
    )


def test_a_field_close_to_nothing_is_named_without_a_guess(client):
    doc = request_doc()
    doc["colour"] = "blue"
    assert _errors(client, doc) == {"/colour": "unknown field 'colour'"}


def test_the_kind_models_suggest_too_without_the_spec():
    """The pydantic models (what the aggregator and plugins' kinds go through) say the same."""
    registry = load_registry()
    doc = request_doc()
    doc["compute"]["corse"] = doc["compute"].pop("cores")
    doc["executable"]["imag"] = doc["executable"].pop("image")
    with pytest.raises(DocumentInvalid) as info:
        parse_request(doc, registry)
    errors = {e.pointer: e.detail for e in info.value.errors}
    assert errors["/compute/corse"] == "unknown field 'corse'; did you mean 'cores'?"
    assert errors["/executable/imag"] == "unknown field 'imag'; did you mean 'image'?"
    doc = request_doc()
    doc["excutable"] = doc.pop("executable")
    with pytest.raises(DocumentInvalid) as info:
        parse_request(doc, registry)
    errors = {e.pointer: e.detail for e in info.value.errors}
    assert errors["/excutable"] == "unknown field 'excutable'; did you mean 'executable'?"


def _config_error(data) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "node.yaml")
    return str(info.value)


@pytest.mark.parametrize(
    ("data", "line"),
    [
        ({"offers": {"hodl": "PT5M"}}, "offers.hodl: unknown field 'hodl'; did you mean 'hold'?"),
        ({"offer": {"hold": "PT5M"}}, "offer: unknown field 'offer'; did you mean 'offers'?"),
        ({"hold": "PT5M"}, "hold: unknown field 'hold'; did you mean 'offers.hold'?"),
        ({"sever": {}}, "sever: unknown field 'sever'; did you mean 'server'?"),
        ({"platforms": [{"name": "p", "pools": [{"name": "a", "inventories": {
            "cores": {"totl": 4}}}]}]},
         "platforms.0.pools.0.inventories.cores.totl: unknown field 'totl'; "
         "did you mean 'total'?"),
    ],
)  # fmt: skip
def test_a_misspelt_config_key_gets_did_you_mean(data, line):
    message = _config_error(data)
    assert "node.yaml" in message
    assert f"  {line}" in message.splitlines()


def test_plugin_options_suggest_too():
    config = parse_config({"platforms": [{"name": "x", "options": {"image_pul": "PT1S"}}]})
    with pytest.raises(ConfigError) as info:
        build_platforms(config.platforms)
    assert (
        "platforms.0.options.image_pul: unknown field 'image_pul'; did you mean 'image_pull'?"
        in str(info.value)
    )
    config = parse_config(
        {"policies": [{"name": "r", "type": "local-rules", "options": {"acces": []}}]}
    )
    with pytest.raises(ConfigError) as info:
        build_policies(config.policies, None)
    assert "policies.0.options.acces: unknown field 'acces'; did you mean 'access'?" in str(
        info.value
    )


# --- durations in the config --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "suggested"),
    [("5 minutes", "PT5M"), ("300s", "PT5M"), ("1h", "PT1H"), ("1h30m", "PT1H30M"),
     ("1 week", "P7D"), ("90 sec", "PT1M30S")],
)  # fmt: skip
def test_a_duration_in_words_gets_its_iso_form(written, suggested):
    message = _config_error({"offers": {"hold": written}})
    assert (
        f"  offers.hold: {written!r} is not an ISO-8601 duration; write ISO-8601, e.g. {suggested}"
        in message.splitlines()
    )


def test_a_duration_that_means_nothing_gets_a_generic_example():
    message = _config_error({"offers": {"lookahead": "soon"}})
    assert (
        "  offers.lookahead: 'soon' is not an ISO-8601 duration; "
        "write ISO-8601, e.g. PT5M, PT1H or P7D" in message.splitlines()
    )
    assert duration_from_words("soon") is None


def test_platform_option_durations_suggest_too():
    config = parse_config({"platforms": [{"name": "x", "options": {"image_pull": "30 s"}}]})
    with pytest.raises(ConfigError, match=r"write ISO-8601, e\.g\. PT30S"):
        build_platforms(config.platforms)


def test_iso_durations_and_seconds_still_read():
    config = parse_config({"offers": {"hold": "PT5M", "lookahead": 3600}})
    assert config.offers.hold.total_seconds() == 300
    assert config.offers.lookahead.total_seconds() == 3600


# --- requested start windows ----------------------------------------------------------------------


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _messages(answer) -> list[str]:
    return [m["message"] for m in answer["meta"]["messages"]]


def test_a_window_wholly_in_the_past_is_no_saying_so_and_what_would_work(client):
    r = client.post("/requests", json=request_doc(start="2020-01-01T00:00:00Z/PT4H"))
    assert r.status_code == 200
    answer = r.json()
    assert answer["result"] == "NO"
    (text,) = _messages(answer)
    assert text.startswith(
        "the requested start window 2020-01-01T00:00:00Z/2020-01-01T04:00:00Z ended at "
        "2020-01-01T04:00:00Z, before now ("
    )
    now = re.search(r"before now \(([^)]+)\)", text)[1]
    assert abs(datetime.fromisoformat(now) - datetime.now(UTC)) < timedelta(minutes=1)
    assert text.endswith(
        "); ask for a start window after now, or leave out schedule.requested.start "
        "to start as soon as possible"
    )
    assert answer["meta"]["messages"][0]["level"] == "WARN"


def test_a_window_partly_in_the_past_is_clipped_to_now_silently(client):
    now = datetime.now(UTC)
    start = _iso(now - timedelta(hours=1))
    answer = client.post("/requests", json=request_doc(start=f"{start}/PT4H")).json()
    assert answer["result"] == "YES" and _messages(answer) == []
    first = offered_start(answer["offers"][0])
    assert datetime.fromisoformat(first) >= now - timedelta(seconds=1)


def test_a_window_beyond_the_lookahead_names_the_key_and_the_latest_start(client):
    answer = client.post("/requests", json=request_doc(start="2040-01-01T00:00:00Z/PT4H")).json()
    assert answer["result"] == "NO"
    (text,) = _messages(answer)
    assert text.startswith(
        "the requested start window 2040-01-01T00:00:00Z/2040-01-01T04:00:00Z begins at "
        "2040-01-01T00:00:00Z, beyond this node's look-ahead (offers.lookahead: P7D); "
        "the latest start it serves is "
    )
    latest = datetime.fromisoformat(text.rsplit(" ", 1)[1])
    assert abs(latest - (datetime.now(UTC) + timedelta(days=7))) < timedelta(minutes=1)


def test_the_lookahead_named_is_the_configured_one(broker_factory, client_factory, sqlite_url):
    client = client_factory(broker_factory(sqlite_url, offers={"lookahead": "P2D"}))
    start = _iso(datetime.now(UTC) + timedelta(days=3))
    answer = client.post("/requests", json=request_doc(start=f"{start}/PT1H")).json()
    assert answer["result"] == "NO"
    assert "(offers.lookahead: P2D)" in _messages(answer)[0]


def test_windows_past_and_beyond_get_both_messages_one_in_range_none(client):
    past, beyond = "2020-01-01T00:00:00Z/PT1H", "2040-01-01T00:00:00Z/PT1H"
    answer = client.post("/requests", json=request_doc(start=[past, beyond])).json()
    assert answer["result"] == "NO"
    texts = _messages(answer)
    assert len(texts) == 2
    assert "before now" in texts[0] and "offers.lookahead" in texts[1]
    soon = _iso(datetime.now(UTC) + timedelta(hours=1))
    answer = client.post("/requests", json=request_doc(start=[past, f"{soon}/PT1H"])).json()
    assert answer["result"] == "YES" and _messages(answer) == []


def test_a_time_without_a_zone_is_taken_as_utc_and_the_answer_says_so(client):
    day = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    answer = client.post("/requests", json=request_doc(start=f"{day}T09:00:00/PT4H")).json()
    assert answer["result"] == "YES"
    (note,) = answer["meta"]["messages"]
    assert note["level"] == "WARN"
    assert note["message"] == (
        f"start {day}T09:00:00 has no time zone: taken as UTC ({day}T09:00:00Z); add Z or an "
        "offset such as +01:00 to say which zone is meant"
    )
    start = offered_start(answer["offers"][0])
    assert start.startswith(f"{day}T09:00:00")
    # with a zone: nothing to say
    answer = client.post("/requests", json=request_doc(start=f"{day}T09:00:00Z/PT4H")).json()
    assert answer["result"] == "YES" and _messages(answer) == []
    answer = client.post("/requests", json=request_doc(start=f"{day}T09:00:00+01:00/PT4H")).json()
    assert _messages(answer) == []


def test_a_zoneless_time_is_noted_in_a_no_answer_too(client):
    answer = client.post("/requests", json=request_doc(start="2020-01-01T09:00:00/PT4H")).json()
    assert answer["result"] == "NO"
    texts = _messages(answer)
    assert texts[0].startswith("start 2020-01-01T09:00:00 has no time zone: taken as UTC")
    assert "before now" in texts[1]


def test_instants_without_zone_are_found_in_every_form():
    assert instants_without_zone("2026-12-02T09:00:00/PT4H") == ["2026-12-02T09:00:00"]
    assert instants_without_zone("PT4H/2026-12-02T09:00") == ["2026-12-02T09:00"]
    assert instants_without_zone(["2026-12-02T09:00:00Z/PT1H", "2026-12-03/P1D"]) == ["2026-12-03"]
    assert instants_without_zone("2026-12-02T09:00:00-05:00/2026-12-02T10:00:00+01") == []


# --- session updates ----------------------------------------------------------------------------


def _offer(client) -> str:
    return client.post("/requests", json=request_doc()).json()["offers"][0]["meta"]["uuid"]


def _phase(value):
    return {"kind": "uri:enum-value-update", "path": "phase", "value": value}


SETTABLE = (
    "a client may set the phase to ACCEPTED, REJECTED or CANCELLED "
    "(the session's meta.options lists those it allows now)"
)


def test_a_phase_update_to_no_phase_is_a_400_naming_value_and_the_phases(client):
    chosen = _offer(client)
    r = client.post(f"/sessions/{chosen}", json=_phase("BANANA"))
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["errors"] == [
        {"pointer": "/value", "detail": f"'BANANA' is not a phase; {SETTABLE}"}
    ]
    r = client.post(f"/sessions/{chosen}", json=_phase("accepted"))
    assert r.status_code == 400
    assert r.json()["errors"][0]["detail"] == (
        f"'accepted' is not a phase (did you mean 'ACCEPTED'?); {SETTABLE}"
    )
    # the session is untouched, and can still be accepted
    assert client.get(f"/sessions/{chosen}").json()["phase"] == "OFFERED"
    assert client.post(f"/sessions/{chosen}", json=_phase("ACCEPTED")).status_code == 200


def test_a_phase_update_without_a_phase_name_is_a_400_too(client):
    chosen = _offer(client)
    r = client.post(f"/sessions/{chosen}", json=_phase(7))
    assert r.status_code == 400
    assert r.json()["errors"][0]["pointer"] == "/value"
    r = client.post(f"/sessions/{chosen}", json={"kind": "uri:enum-value-update", "path": "phase"})
    assert r.status_code == 400
    assert r.json()["errors"][0] == {
        "pointer": "/value",
        "detail": f"value is required; {SETTABLE}",
    }


def test_impossible_transitions_between_phases_stay_409(client):
    chosen = _offer(client)
    r = client.post(f"/sessions/{chosen}", json=_phase("RUNNING"))
    assert r.status_code == 409 and r.json()["phase"] == "OFFERED"
    r = client.post(f"/sessions/{chosen}", json=_phase("FAILED"))
    assert r.status_code == 409 and r.json()["session"]["phase"] == "OFFERED"


# --- an unreachable database ----------------------------------------------------------------------


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ebroker", *args],
        cwd=cwd or ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


@pytest.mark.parametrize("command", [["serve"], ["db", "upgrade"]])
def test_an_unreachable_postgresql_is_one_line_with_the_password_masked(command):
    done = _cli(*command, "--database", "postgresql+psycopg://u:secret@127.0.0.1:1/x")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        "ebroker: cannot reach database postgresql+psycopg://u:***@127.0.0.1:1/x: "
    )
    assert "secret" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [["serve"], ["db", "upgrade"]])
def test_sqlite_in_a_directory_that_does_not_exist_is_one_line(tmp_path, command):
    missing = tmp_path / "no" / "such" / "dir"
    done = _cli(*command, "--database", f"sqlite:///{missing}/ebroker.db")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"ebroker: cannot open database sqlite:///{missing}/ebroker.db: "
        f"directory {missing} does not exist"
    )
    assert not missing.exists()


def test_the_broker_refuses_an_unreachable_database_without_migrating(tmp_path):
    url = f"sqlite:///{tmp_path}/missing/ebroker.db"
    config = make_config(url, database={"url": url, "migrate_on_start": False})
    with pytest.raises(DatabaseUnavailable, match=r"directory .* does not exist"):
        build_broker(config)
    with pytest.raises(ConfigError, match="not a database URL"):
        check_reachable("bogus")
    assert masked_url("postgresql+psycopg://u:pw@h:5432/db") == (
        "postgresql+psycopg://u:***@h:5432/db"
    )


# --- less capacity than the confirmed bookings need ---------------------------------------------


def _node_config(db: str, cores: int) -> dict:
    config = make_config(db).model_dump(mode="json")
    config["platforms"][0]["pools"][0]["inventories"]["cores"]["total"] = cores
    config["server"]["validate_responses"] = False
    return config


def _accept_12_cores(tmp_path: Path) -> tuple[str, str]:
    db = f"sqlite:///{tmp_path / 'ebroker.db'}"
    broker = build_broker(parse_config(_node_config(db, 16)))
    try:
        with TestClient(create_app(broker, lifecycle=False)) as client:
            offers = client.post("/requests", json=request_doc(cores=(12, 12))).json()["offers"]
            chosen = offers[0]["meta"]["uuid"]
            r = client.post(f"/sessions/{chosen}", json=ACCEPT)
            assert r.status_code == 200 and r.json()["phase"] == "ACCEPTED"
    finally:
        broker.close()
    return db, chosen


def test_a_node_with_less_capacity_than_its_bookings_warns_naming_them(tmp_path):
    db, chosen = _accept_12_cores(tmp_path)
    broker = build_broker(parse_config(_node_config(db, 8)))
    try:
        (warning,) = broker.capacity_warnings
        assert warning.startswith(
            "pool sim/main has 8 cores but its confirmed sessions need 12 at "
        )
        assert warning.endswith(
            f": {chosen}; the bookings stand: raise the pool's capacity or cancel sessions"
        )
        # the node still serves, and the booking is still there
        with TestClient(create_app(broker, lifecycle=False)) as client:
            assert client.get(f"/sessions/{chosen}").json()["phase"] == "ACCEPTED"
    finally:
        broker.close()
    broker = build_broker(parse_config(_node_config(db, 16)))
    try:
        assert broker.capacity_warnings == []
    finally:
        broker.close()


def test_a_pool_that_left_the_config_is_named_too(tmp_path):
    db, chosen = _accept_12_cores(tmp_path)
    config = _node_config(db, 16)
    config["platforms"][0]["pools"][0]["name"] = "other"
    broker = build_broker(parse_config(config))
    try:
        cores, memory = broker.capacity_warnings  # every class it had, in order
        assert cores.startswith(
            "pool sim/main is no longer configured (0 cores) but its confirmed sessions need 12 at "
        )
        assert memory.startswith(
            "pool sim/main is no longer configured (0 GiB of memory) but its confirmed sessions"
        )
        assert chosen in cores and chosen in memory
    finally:
        broker.close()


def test_check_config_reports_the_overbooking_without_touching_the_pools(tmp_path):
    db, chosen = _accept_12_cores(tmp_path)
    node_yaml = tmp_path / "node.yaml"
    node_yaml.write_text(yaml.safe_dump(_node_config(db, 8)))
    done = _cli("check-config", "-c", str(node_yaml))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].startswith("warning: pool sim/main has 8 cores but its confirmed sessions")
    assert chosen in lines[0]
    assert lines[-1].startswith("configuration OK")
    # only read: the pool row still has the 16 cores it was synced with
    broker = build_broker(parse_config(_node_config(db, 16)))
    try:
        assert broker.capacity_warnings == []
    finally:
        broker.close()


def test_check_config_says_when_there_is_no_database_yet(tmp_path):
    node_yaml = tmp_path / "node.yaml"
    node_yaml.write_text(yaml.safe_dump(_node_config(f"sqlite:///{tmp_path / 'new.db'}", 8)))
    done = _cli("check-config", "-c", str(node_yaml))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == (
        f"database sqlite:///{tmp_path / 'new.db'} does not exist yet: no bookings to check"
    )
    assert not (tmp_path / "new.db").exists()


def test_check_config_with_an_unreachable_database_is_one_line():
    done = _cli("check-config", "--database", "postgresql+psycopg://u:secret@127.0.0.1:1/x")
    assert done.returncode == 2
    assert done.stderr.strip().startswith(
        "ebroker: cannot reach database postgresql+psycopg://u:***@127.0.0.1:1/x: "
    )
    assert len(done.stderr.strip().splitlines()) == 1 and "secret" not in done.stderr


def test_serve_prints_the_overbooking_at_start(tmp_path):
    db, chosen = _accept_12_cores(tmp_path)
    node_yaml = tmp_path / "node.yaml"
    node_yaml.write_text(yaml.safe_dump(_node_config(db, 8)))
    node = start_node(node_yaml, tmp_path, "overbooked")
    try:
        assert node.ready()
    finally:
        node.stop()
    output = node.output()
    (line,) = [line for line in output.splitlines() if "pool sim/main has 8 cores" in line]
    assert chosen in line
