"""The recurrence rule of a recurring request (``broker_core.recurrence``): checked, bounded,
and expanded in its zone's wall-clock time across DST changes. Pure, no node."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from broker_core.errors import DocumentInvalid
from broker_core.kinds.request import RecurrenceRequest
from broker_core.recurrence import parse
from broker_core.schedule import instant


def rule(text: str, zone: str | None = "Europe/London", most: int = 100, **more):
    return parse(RecurrenceRequest(rule=text, timezone=zone, **more), most)


def at(*parts: int, zone: str = "UTC") -> int:
    return int(datetime(*parts, tzinfo=ZoneInfo(zone)).timestamp())


def local(seconds: int, zone: str = "Europe/London") -> str:
    return datetime.fromtimestamp(seconds, UTC).astimezone(ZoneInfo(zone)).strftime("%a %H:%M")


def refusal(text: str, zone: str | None = "Europe/London", most: int = 100) -> tuple[str, str]:
    with pytest.raises(DocumentInvalid) as caught:
        rule(text, zone, most).expand(at(2026, 3, 17, 10))
    error = caught.value.errors[0]
    return error.pointer, error.detail


def test_weekly_keeps_its_local_time_across_the_spring_change():
    starts = rule("FREQ=WEEKLY;BYDAY=TU;COUNT=6").expand(at(2026, 3, 17, 10))
    assert [instant(s) for s in starts] == [
        "2026-03-17T10:00:00Z", "2026-03-24T10:00:00Z",  # GMT
        "2026-03-31T09:00:00Z", "2026-04-07T09:00:00Z",  # BST from 29 March
        "2026-04-14T09:00:00Z", "2026-04-21T09:00:00Z",
    ]  # fmt: skip
    assert {local(s) for s in starts} == {"Tue 10:00"}


def test_and_across_the_autumn_change_in_another_zone():
    anchor = at(2026, 10, 20, 9, zone="America/New_York")
    starts = rule("FREQ=WEEKLY;COUNT=4", "America/New_York").expand(anchor)
    assert [instant(s)[11:16] for s in starts] == ["13:00", "13:00", "14:00", "14:00"]
    assert {local(s, "America/New_York") for s in starts} == {"Tue 09:00"}


def test_weekdays_of_one_week():
    starts = rule("FREQ=DAILY;BYDAY=MO,TU,WE,TH,FR;UNTIL=20261204").expand(
        at(2026, 11, 30, 9, zone="Europe/London")
    )
    assert [local(s) for s in starts] == [
        "Mon 09:00", "Tue 09:00", "Wed 09:00", "Thu 09:00", "Fri 09:00"]  # fmt: skip


def test_an_until_in_utc_and_an_anchor_off_the_rule():
    # the anchor is a Monday: the rule's first Tuesday at the anchor's time comes first
    starts = rule("RRULE:FREQ=WEEKLY;BYDAY=TU;UNTIL=20260331T090000Z").expand(at(2026, 3, 16, 10))
    assert [instant(s) for s in starts] == [
        "2026-03-17T10:00:00Z", "2026-03-24T10:00:00Z", "2026-03-31T09:00:00Z"]  # fmt: skip


def test_a_local_time_that_does_not_exist_is_read_before_the_gap():
    # 01:30 on 29 March 2026 does not exist in London: read with GMT, it is 01:30Z (02:30 BST)
    starts = rule("FREQ=DAILY;COUNT=3").expand(at(2026, 3, 28, 1, 30))
    assert [instant(s) for s in starts] == [
        "2026-03-28T01:30:00Z", "2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z"]  # fmt: skip


def test_no_zone_means_utc_and_the_rule_is_normalised():
    recurrence = rule("freq=daily;until=20260320;interval=2", None)
    assert recurrence.zone == "UTC"
    assert recurrence.rule == "FREQ=DAILY;UNTIL=20260320T235959Z;INTERVAL=2"
    assert len(recurrence.expand(at(2026, 3, 17, 10))) == 2


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("FREQ=WEEKLY", "exactly one of COUNT and UNTIL"),
        ("FREQ=WEEKLY;COUNT=2;UNTIL=20261231", "must not both"),
        ("COUNT=2", "FREQ is required"),
        ("FREQ=SECONDLY;COUNT=2", "booked to the minute"),
        ("FREQ=DAILY;COUNT=2;BYSECOND=5", "BYSECOND"),
        ("FREQ=DAILY;COUNT=2;BYSETPOS=1", "BYSETPOS"),
        ("FREQ=DAILY;COUNT=2;DTSTART=20260101T000000Z", "schedule.requested.start"),
        ("FREQ=DAILY;COUNT=0", "at least 1"),
        ("FREQ=DAILY;COUNT=101", "max_occurrences"),
        ("FREQ=DAILY;COUNT=x", "no positive integer"),
        ("FREQ=DAILY;COUNT=2;COUNT=3", "given twice"),
        ("FREQ=DAILY;COUNT=2;BYDAY=XX", "no weekday"),
        ("FREQ=DAILY;COUNT=2;BYDAY=2TU", "only MONTHLY and YEARLY"),
        ("FREQ=MONTHLY;COUNT=2;BYDAY=6TU", "1..5"),
        ("FREQ=DAILY;COUNT=2;BYHOUR=24", "out of range"),
        ("FREQ=WEEKLY;COUNT=2;BYMONTHDAY=3", "not taken with FREQ=WEEKLY"),
        ("FREQ=YEARLY;COUNT=2;BYMONTH=4;BYMONTHDAY=31", "never occurs"),
        ("FREQ=MINUTELY;COUNT=2;BYMONTH=2", "takes no BYMONTH"),
        ("FREQ=DAILY;UNTIL=2026", "no date"),
        ("FREQ=DAILY;UNTIL=20261340", "no valid date"),
        ("FREQ=DAILY;UNTIL=20991231", "more than 100 occurrences"),
        ("FREQ=DAILY;COUNT=2;INTERVAL=5000", "more than 1000"),
        ("FREQ=DAILY;COUNT=2;X-NAME=1", "unknown rule part"),
        ("FREQ=DAILY;COUNT=2\nRRULE:FREQ=DAILY;COUNT=2", "one RRULE value"),
        ("FREQ", "no NAME=VALUE part"),
    ],
)
def test_malformed_rules_point_at_the_rule(text, said):
    pointer, detail = refusal(text)
    assert pointer == "/schedule/requested/recurrence/rule"
    assert said in detail


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../etc/passwd", "/etc/localtime", "Europe/"])
def test_unknown_zones_point_at_the_zone(zone):
    pointer, _ = refusal("FREQ=DAILY;COUNT=2", zone)
    assert pointer == "/schedule/requested/recurrence/timezone"


def test_the_most_occurrences_is_configurable():
    assert len(rule("FREQ=DAILY;COUNT=5", most=5).expand(at(2026, 3, 17, 10))) == 5
    _, detail = refusal("FREQ=DAILY;UNTIL=20260330", most=5)
    assert "more than 5 occurrences" in detail


@pytest.mark.parametrize(
    "text",
    [
        "FREQ=HOURLY;BYMONTH=2;BYMONTHDAY=29;BYDAY=MO;COUNT=2",  # 29 February on a Monday
        "FREQ=YEARLY;BYMONTH=2;BYDAY=5MO;COUNT=2",
        "FREQ=MINUTELY;INTERVAL=7;BYDAY=SU;BYHOUR=3;BYMINUTE=59;COUNT=100",
    ],
)
def test_sparse_rules_are_expanded_in_bounded_time(text):
    began = time.perf_counter()
    starts = rule(text).expand(at(2026, 3, 17, 10))
    assert starts and time.perf_counter() - began < 2
