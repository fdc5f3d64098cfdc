"""The client's documents from flags (client/documents.py), and the pure helpers of its output
and its watch (client/output.py, client/app.py): ranges, durations, windows in the user's zone
(a fixed clock and zone), the request document and its amendments, the update documents, the
log follower's new text, and the watch's poll timing. No broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from dateutil import tz

from client import documents as d
from client.api import Session, problem_message
from client.app import build_request, describe, new_output, next_poll
from client.output import short, when

AMSTERDAM = tz.gettz("Europe/Amsterdam")
# a Tuesday, 10:30 in Amsterdam (UTC+1 in December)
NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4", d.Range(4, 4)),
        ("2..4", d.Range(2, 4)),
        (" 2 .. 4 ", d.Range(2, 4)),
        ("2..", d.Range(2, None)),
        ("..8", d.Range(None, 8)),
        ("0..0", d.Range(0, 0)),
    ],
)
def test_ranges(text: str, expected: d.Range) -> None:
    assert d.parse_range(text) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [("four", "is no range"), ("4..2", "above the max"), ("..", "neither"),
     ("-1..2", "negative"), ("1.5", "is no range"), ("2...4", "is no range")],
)  # fmt: skip
def test_bad_ranges_say_what_would_do(text: str, says: str) -> None:
    with pytest.raises(d.DocumentError, match=says):
        d.parse_range(text, "--cores")


def test_a_range_document_leaves_out_the_missing_bound() -> None:
    assert d.parse_range("2..").document() == {"min": 2}
    assert d.parse_range("2..4").document() == {"min": 2, "max": 4}


@pytest.mark.parametrize(
    ("text", "seconds", "iso"),
    [
        ("2h", 7200, "PT2H"),
        ("30m", 1800, "PT30M"),
        ("90s", 90, "PT1M30S"),
        ("1h30m", 5400, "PT1H30M"),
        ("1d", 86400, "PT24H"),
        ("1.5h", 5400, "PT1H30M"),
        ("PT2H", 7200, "PT2H"),
        ("pt45m", 2700, "PT45M"),
        ("P1DT1H", 90000, "PT25H"),
        ("3S", 3, "PT3S"),
    ],
)
def test_durations(text: str, seconds: int, iso: str) -> None:
    span = d.parse_duration(text)
    assert span == timedelta(seconds=seconds)
    assert d.iso_duration(span) == iso


@pytest.mark.parametrize("text", ["2", "2x", "h", "0m", "P1M", "PT", "2h junk", "-1h", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(d.DocumentError):
        d.parse_duration(text)


@pytest.mark.parametrize(
    ("text", "interval"),
    [
        # the user's zone is Amsterdam (UTC+1): 09:00 there is 08:00Z
        ("tomorrow 09:00..12:00", "2026-12-02T08:00:00Z/2026-12-02T11:00:00Z"),
        ("today 14:00..16:30", "2026-12-01T13:00:00Z/2026-12-01T15:30:00Z"),
        ("tomorrow 9am..11am", "2026-12-02T08:00:00Z/2026-12-02T10:00:00Z"),
        ("today 22:00..02:00", "2026-12-01T21:00:00Z/2026-12-02T01:00:00Z"),  # past midnight
        ("now..+3h", "2026-12-01T09:30:00Z/2026-12-01T12:30:00Z"),
        ("+1h..+2h", "2026-12-01T10:30:00Z/2026-12-01T12:30:00Z"),  # +2h after its start
        ("friday 14:00..18:00", "2026-12-04T13:00:00Z/2026-12-04T17:00:00Z"),
        ("tuesday 12:00..13:00", "2026-12-01T11:00:00Z/2026-12-01T12:00:00Z"),  # today
        ("2026-12-03 09:00..2026-12-04 18:00", "2026-12-03T08:00:00Z/2026-12-04T17:00:00Z"),
        ("2026-12-03T09:00Z..2026-12-03T10:00Z", "2026-12-03T09:00:00Z/2026-12-03T10:00:00Z"),
        ("tomorrow..+1d", "2026-12-01T23:00:00Z/2026-12-02T23:00:00Z"),  # local midnight
        # an ISO interval is the standard's own form: sent as it is
        ("2026-12-02T08:00:00Z/PT4H", "2026-12-02T08:00:00Z/PT4H"),
    ],
)
def test_windows_in_the_users_zone(text: str, interval: str) -> None:
    assert d.parse_window(text, NOW, AMSTERDAM) == interval


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("tomorrow 09:00", "write FROM..TO"),
        ("..12:00", "write FROM..TO"),
        ("tomorrow 12:00..2026-12-01 09:00", "before it starts"),
        ("someday..+1h", "is not a time"),
        ("/PT1H", "ISO-8601 interval"),
        ("now..+forever", "is not a duration"),
    ],
)
def test_bad_windows(text: str, says: str) -> None:
    with pytest.raises(d.DocumentError, match=says):
        d.parse_window(text, NOW, AMSTERDAM)


def test_the_request_from_flags_is_the_standards_document() -> None:
    doc = d.request_document(
        image="localhost/busybox",
        command=["sh", "-c", "echo hi"],
        environment={"A": "1"},
        cores=d.Range(2, 4),
        memory=d.Range(4, 8),
        duration=timedelta(hours=2),
        windows=["2026-12-02T08:00:00Z/2026-12-02T11:00:00Z"],
        name="analysis",
    )
    assert doc == {
        "executable": {
            "kind": d.EXECUTABLES["docker"],
            "image": {"locations": ["localhost/busybox"]},
            "command": ["sh", "-c", "echo hi"],
            "environment": {"A": "1"},
        },
        "compute": {"kind": d.COMPUTE, "cores": {"min": 2, "max": 4},
                    "memory": {"min": 4, "max": 8}},
        "schedule": {"requested": {"duration": "PT2H",
                                   "start": ["2026-12-02T08:00:00Z/2026-12-02T11:00:00Z"]}},
        "meta": {"name": "analysis"},
    }  # fmt: skip


def test_flags_amend_a_file_and_leave_the_rest() -> None:
    base = d.load_document(
        "executable: {kind: " + d.EXECUTABLES["docker"] + ", image: {locations: [a]},"
        " command: [x], environment: {KEEP: '1'}}\n"
        "compute: {cores: {min: 1, max: 1}, memory: {min: 2, max: 2}}\n"
        "schedule: {requested: {duration: PT1M, start: [2026-12-02T08:00Z/PT1H]}}\n"
        "data: [{kind: k, location: l}]\n"
    )
    doc = d.request_document(base, cores=d.Range(4, 4), environment={"ADD": "2"},
                             duration=timedelta(minutes=5))  # fmt: skip
    assert doc["compute"] == {"cores": {"min": 4, "max": 4}, "memory": {"min": 2, "max": 2},
                              "kind": d.COMPUTE}  # fmt: skip
    assert doc["executable"]["environment"] == {"KEEP": "1", "ADD": "2"}
    assert doc["executable"]["image"] == {"locations": ["a"]}
    assert doc["schedule"]["requested"] == {"duration": "PT5M", "start": ["2026-12-02T08:00Z/PT1H"]}
    assert doc["data"] == base["data"]
    assert base["compute"]["cores"] == {"min": 1, "max": 1}  # the file's document is untouched


def test_other_executables() -> None:
    sing = d.request_document(image="docker://busybox", executable="singularity")
    assert sing["executable"]["kind"] == d.EXECUTABLES["singularity"]
    nb = d.request_document(notebook="https://example.org/a.ipynb")
    assert nb["executable"] == {
        "kind": d.EXECUTABLES["notebook"],
        "location": "https://example.org/a.ipynb",
    }
    with pytest.raises(d.DocumentError, match="container"):
        d.request_document(notebook="https://example.org/a.ipynb", command=["x"])


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda: d.request_document(cores=d.Range(1, 1)), "nothing to execute"),
        (lambda: d.load_document("[1, 2]"), "not a document"),
        (lambda: d.load_document("a: [1"), "neither YAML nor JSON"),
        (lambda: d.parse_environment(["NOVALUE"]), "NAME=VALUE"),
        (lambda: d.parse_phases(["running,nope"]), "unknown phase 'NOPE'"),
    ],
)
def test_what_makes_no_document(call, says: str) -> None:
    with pytest.raises(d.DocumentError, match=says):
        call()


def test_build_request_from_the_commands_arguments(tmp_path) -> None:
    path = tmp_path / "req.yaml"
    path.write_text(
        "executable: {kind: " + d.EXECUTABLES["docker"] + ", image: {locations: [a]}}\n"
    )
    doc = build_request(str(path), None, False, None, "sh -c 'echo hello world'", [], "2..4",
                        None, "2h", ["now..+1h"], now=NOW)  # fmt: skip
    assert doc["executable"]["command"] == ["sh", "-c", "echo hello world"]
    assert doc["compute"]["cores"] == {"min": 2, "max": 4}
    assert doc["schedule"]["requested"] == {
        "duration": "PT2H", "start": ["2026-12-01T09:30:00Z/2026-12-01T10:30:00Z"]}  # fmt: skip
    with pytest.raises(d.DocumentError, match="cannot read"):
        build_request(str(tmp_path / "missing.yaml"), None, False, None, None, [], None, None,
                      None, [])  # fmt: skip
    with pytest.raises(d.DocumentError, match="--command"):
        build_request(None, "img", False, None, "sh -c 'unclosed", [], None, None, None, [])


def test_updates() -> None:
    assert d.phase_update("ACCEPTED") == {"kind": "uri:enum-value-update", "path": "phase",
                                          "value": "ACCEPTED"}  # fmt: skip
    assert d.extend_update(d.parse_duration("30m")) == {
        "kind": "uri:integer-delta-update", "path": "schedule.duration", "delta": 1800,
        "units": "seconds"}  # fmt: skip
    assert d.parse_phases(["running,Completed", "FAILED"]) == ["RUNNING", "COMPLETED", "FAILED"]


def test_short_durations_and_local_times() -> None:
    assert [short(x) for x in ("PT1H30M", "PT0S", "PT5S", "P1DT2H", "bogus", None)] == [
        "1h30m", "0s", "5s", "1d2h", "bogus", ""]  # fmt: skip
    assert when("2026-12-02T08:00:00Z", AMSTERDAM) == "2026-12-02 09:00:00 CET"
    assert when("2026-12-02T08:00:00Z", AMSTERDAM, zoned=False) == "2026-12-02 09:00:00"
    assert when("not a time") == "not a time"


def test_problems_read_as_sentences() -> None:
    text = problem_message(400, {
        "title": "Bad Request", "detail": "the document is not valid",
        "errors": [{"pointer": "/compute/cores/min", "detail": "'x' is not of type 'integer'"}],
    })  # fmt: skip
    assert text.splitlines() == [
        "Bad Request (400): the document is not valid",
        "  /compute/cores/min: 'x' is not of type 'integer'",
    ]
    assert "the session is EXPIRED" in problem_message(
        409, {"title": "Conflict", "phase": "EXPIRED"}
    )
    assert problem_message(404, {}, "Not Found") == "Not Found (404)"


def test_new_log_output() -> None:
    assert new_output("", "a\nb\n") == "a\nb\n"
    assert new_output("a\n", "a\nb\n") == "b\n"
    assert new_output("a\nb\n", "a\nb\n") == ""
    # the node keeps the last MiB: the head went, the tail of what was shown is found again
    before = "".join(f"line {i}\n" for i in range(1000))
    after = before[5000:] + "new\n"
    assert new_output(before, after) == "new\n"
    assert new_output("a\n" * 10, "a\n" * 4 + "b\n") == "b\n"  # repeated lines: the longest tail
    assert new_output("old\n", "other\n") == "other\n"  # nothing in common: all of it is new


def session(phase: str, start: datetime, seconds: int = 60, prep: int = 10) -> Session:
    def z(t: datetime) -> str:
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")

    return Session.of({
        "meta": {"uuid": "u"}, "phase": phase,
        "schedule": {
            "preparing": {"start": z(start - timedelta(seconds=prep)), "duration": f"PT{prep}S"},
            "available": {"start": f"{z(start)}/PT0S", "duration": f"PT{seconds}S"},
            "releasing": {"start": z(start + timedelta(seconds=seconds)), "duration": "PT0S"},
        },
    })  # fmt: skip


def test_the_watch_wakes_at_the_next_booked_change() -> None:
    start = NOW + timedelta(seconds=100)
    waiting = session("WAITING", start)
    assert next_poll(15, waiting, NOW, floor=0.5) == 15  # nothing booked within 15 s
    assert next_poll(15, waiting, start - timedelta(seconds=14), floor=0.5) == 4.5
    running = session("RUNNING", start)
    assert next_poll(15, running, start + timedelta(seconds=58), floor=0.5) == 2.5
    assert next_poll(15, running, start + timedelta(seconds=3600), floor=0.5) == 15  # all past


def test_the_watch_line() -> None:
    start = NOW + timedelta(seconds=100)
    assert describe(session("WAITING", start), NOW) == ("WAITING: preparation in 1m30s", None, None)
    assert describe(session("PREPARING", start), start - timedelta(seconds=5))[0] == (
        "PREPARING: starts in 5s")  # fmt: skip
    assert describe(session("RUNNING", start), start + timedelta(seconds=15)) == (
        "RUNNING: ends in 45s", 15.0, 60.0)  # fmt: skip
    assert describe(session("COMPLETED", start), NOW) == ("COMPLETED", None, None)
