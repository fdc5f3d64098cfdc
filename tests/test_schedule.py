"""Tests for broker_core.schedule: ISO-8601 instants, durations and intervals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker_core.schedule import (
    MAX_DURATION,
    MAX_TEXT_LENGTH,
    Interval,
    ScheduleError,
    format_duration,
    format_instant,
    format_interval,
    instant,
    parse_duration,
    parse_instant,
    parse_interval,
    parse_intervals,
    span,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- parse_instant -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-22T08:00:00Z", utc(2026, 11, 22, 8)),
        ("2026-11-22T08:00Z", utc(2026, 11, 22, 8)),
        ("2026-11-22T08Z", utc(2026, 11, 22, 8)),
        ("20261122T080000Z", utc(2026, 11, 22, 8)),
        ("2026-11-22T08:00:00+02:00", utc(2026, 11, 22, 6)),
        ("2026-11-22T08:00:00+0200", utc(2026, 11, 22, 6)),
        ("2026-11-22T08:00:00+02", utc(2026, 11, 22, 6)),
        ("2026-11-22T08:00:00-05:30", utc(2026, 11, 22, 13, 30)),
        ("2026-11-22T01:00:00+02:00", utc(2026, 11, 21, 23)),
        ("2026-11-22T08:00:00-00:00", utc(2026, 11, 22, 8)),
        ("2026-11-22T08:00:00", utc(2026, 11, 22, 8)),  # naive -> UTC
        ("2026-11-22T08:00:00.250Z", utc(2026, 11, 22, 8, 0, 0, 250_000)),
        ("2026-11-22T08:30,5Z", utc(2026, 11, 22, 8, 30, 30)),
        ("2026-11-22", utc(2026, 11, 22)),  # plain date -> midnight UTC
        ("20261122", utc(2026, 11, 22)),
        ("2026-326", utc(2026, 11, 22)),  # ordinal date
        ("2026-W47-7", utc(2026, 11, 22)),  # week date
        ("  2026-11-22T08:00Z\n", utc(2026, 11, 22, 8)),
    ],
)
def test_parse_instant(text: str, expected: datetime) -> None:
    result = parse_instant(text)
    assert result == expected
    assert result.tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "2026",  # reduced precision: a year, not an instant
        "2026-11",
        "2026-W47",
        "2026T08:00",
        "2026-11-22 08:00:00",
        "2026-11-22t08:00z",
        "2026-11-22T",
        "2026-11-22Z",
        "T08:00",
        "2026-13-01",
        "2026-02-30T00:00Z",
        "2026-11-22T24:00Z",
        "2026-11-22T23:59:60Z",
        "2026-11-22T08:00+02:75",
        "2026-11-22T08:00+25:00",
        "99999-01-01T00:00Z",
        "+2026-11-22",
        "\uff12\uff10\uff12\uff16-11-22",  # full-width digits
        "0001-01-01T00:00+01:00",  # before datetime.min once converted to UTC
        "9999-12-31T23:00-01:00",  # after datetime.max once converted to UTC
        "2026-11-22T08:00Z" + "0" * 300,
    ],
)
def test_parse_instant_rejects(text: str) -> None:
    with pytest.raises(ScheduleError):
        parse_instant(text)


def test_parse_instant_error_names_text() -> None:
    with pytest.raises(ScheduleError, match=r"'2026-02-30' \(day is out of range for month\)"):
        parse_instant("2026-02-30")
    with pytest.raises(ScheduleError, match=r"not an ISO-8601 date-time: 'tomorrow'"):
        parse_instant("tomorrow")


@pytest.mark.parametrize("value", [None, 1, 1.5, b"2026-11-22", ["2026-11-22"], utc(2026, 1, 1)])
def test_parse_instant_rejects_non_strings(value: object) -> None:
    with pytest.raises(ScheduleError, match="expected a string"):
        parse_instant(value)  # type: ignore[arg-type]


# --- parse_duration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT1H", timedelta(hours=1)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("PT30M", timedelta(minutes=30)),
        ("P2W", timedelta(weeks=2)),
        ("PT1H30M15S", timedelta(hours=1, minutes=30, seconds=15)),
        ("PT36H", timedelta(hours=36)),
        ("P1.5D", timedelta(days=1, hours=12)),
        ("PT1,5H", timedelta(hours=1, minutes=30)),
        ("PT0.5S", timedelta(milliseconds=500)),
        ("PT0S", timedelta(0)),
        ("P0D", timedelta(0)),
        ("-PT0S", timedelta(0)),
        ("+PT1H", timedelta(hours=1)),
        ("P3650D", MAX_DURATION),
        ("P521W", timedelta(weeks=521)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["P1Y", "P0Y", "P1M", "P0.5Y", "P1Y2M3D", "P1MT1H"])
def test_parse_duration_rejects_years_and_months(text: str) -> None:
    with pytest.raises(ScheduleError, match=rf"duration '{text}' uses years or months"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["-PT1H", "-P1D"])
def test_parse_duration_rejects_negative(text: str) -> None:
    with pytest.raises(ScheduleError, match="is negative"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["P3651D", "P522W", "PT87601H", "P999999999D", "P9999999999D"])
def test_parse_duration_rejects_too_long(text: str) -> None:
    with pytest.raises(ScheduleError, match="exceeds the maximum of 3650 days"):
        parse_duration(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "P",
        "PT",
        "P1DT",
        "1D",
        "pt1h",
        "P1H",
        "PT1D",
        "PT-1H",
        "P1e3D",
        "P.5D",
        "P1.D",
        "PT1H1H",
        "P0001-02-03T04:05:06",
        "P" + "9" * 5000 + "D",
        "P\u0661D",  # Arabic-Indic digit
    ],
)
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ScheduleError):
        parse_duration(text)


@pytest.mark.parametrize("value", [None, 3600, timedelta(hours=1), ["PT1H"]])
def test_parse_duration_rejects_non_strings(value: object) -> None:
    with pytest.raises(ScheduleError, match="expected a string"):
        parse_duration(value)  # type: ignore[arg-type]


# --- parse_interval ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("2026-11-22T08:00Z/2026-11-22T10:00Z", utc(2026, 11, 22, 8), utc(2026, 11, 22, 10)),
        ("2026-11-22T08:00Z/PT2H", utc(2026, 11, 22, 8), utc(2026, 11, 22, 10)),
        ("PT2H/2026-11-22T10:00Z", utc(2026, 11, 22, 8), utc(2026, 11, 22, 10)),
        ("2026-11-22T08:00Z--2026-11-22T10:00Z", utc(2026, 11, 22, 8), utc(2026, 11, 22, 10)),
        ("2026-11-22T08:00Z--PT2H", utc(2026, 11, 22, 8), utc(2026, 11, 22, 10)),
        ("PT2H--2026-11-22T10:00Z", utc(2026, 11, 22, 8), utc(2026, 11, 22, 10)),
        ("2026-11-22T10:00+02:00/PT2H", utc(2026, 11, 22, 8), utc(2026, 11, 22, 10)),
        ("2026-11-22T08:00-02:00--PT1H", utc(2026, 11, 22, 10), utc(2026, 11, 22, 11)),
        ("2026-11-22T08:00/2026-11-22T10:00", utc(2026, 11, 22, 8), utc(2026, 11, 22, 10)),
        ("2026-11-22/2026-11-23", utc(2026, 11, 22), utc(2026, 11, 23)),
        ("2026-11-22/P1D", utc(2026, 11, 22), utc(2026, 11, 23)),
        ("2026-11-22T08:00Z", utc(2026, 11, 22, 8), utc(2026, 11, 22, 8)),  # bare instant
        ("2026-11-22", utc(2026, 11, 22), utc(2026, 11, 22)),
        ("2026-11-22T08:00Z/PT0S", utc(2026, 11, 22, 8), utc(2026, 11, 22, 8)),
        ("2026-11-22T08:00Z/2026-11-22T08:00Z", utc(2026, 11, 22, 8), utc(2026, 11, 22, 8)),
        # start and end in different offsets: compared in UTC
        ("2026-11-22T09:00+02:00/2026-11-22T08:00Z", utc(2026, 11, 22, 7), utc(2026, 11, 22, 8)),
    ],
)
def test_parse_interval(text: str, start: datetime, end: datetime) -> None:
    interval = parse_interval(text)
    assert interval == Interval(start, end)
    assert interval.start.tzinfo is UTC
    assert interval.end.tzinfo is UTC
    assert interval.duration == end - start


def test_parse_interval_garbage_message() -> None:
    with pytest.raises(ScheduleError) as info:
        parse_interval("abc")
    assert str(info.value) == (
        "not an ISO-8601 interval: 'abc' (expected start/end, start/duration or duration/end)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-11-22T10:00Z/2026-11-22T08:00Z", "end '2026-11-22T08:00Z' is before start"),
        ("PT1H/PT2H", "both parts are durations"),
        ("PT1H", "is a duration alone"),
        ("2026-11-22T08:00Z/P1M", "uses years or months"),
        ("2026-11-22T08:00Z/-PT1H", "is negative"),
        ("2026-11-22T08:00Z/P4000D", "exceeds the maximum of 3650 days"),
        ("2026-11-22T08:00Z/soon", "not an ISO-8601 date-time: 'soon'"),
        ("2026-02-30/PT1H", "day is out of range for month"),
        ("9999-12-31T23:00Z/PT2H", "outside the supported date range"),
        ("PT2H/0001-01-01T01:00Z", "outside the supported date range"),
        ("2026-11-22T08:00Z/", "expected start/end"),
        ("/2026-11-22T08:00Z", "expected start/end"),
        ("/", "expected start/end"),
        ("a/b/c", "expected start/end"),
        ("2026-11-22T08:00Z / PT1H", "expected start/end"),
        ("2026-11-22T08:00Z--PT1H--PT1H", "expected start/end"),
        ("R5/2026-11-22T08:00Z/PT1H", "expected start/end"),
        ("2026", "expected start/end"),
        ("", "expected start/end"),
        ("x" * (MAX_TEXT_LENGTH + 1), "too long"),
        ("2026-11-22T08:00:00+02:00/" * 10, "too long"),
    ],
)
def test_parse_interval_rejects(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        parse_interval(text)


@pytest.mark.parametrize("value", [None, 42, 1.0, b"2026-11-22", ["2026-11-22"], {"start": 1}])
def test_parse_interval_rejects_non_strings(value: object) -> None:
    with pytest.raises(ScheduleError, match="expected a string"):
        parse_interval(value)  # type: ignore[arg-type]


# --- parse_intervals -----------------------------------------------------------------------


def test_parse_intervals_single_string() -> None:
    assert parse_intervals("2026-11-22T08:00Z/PT1H") == [
        Interval(utc(2026, 11, 22, 8), utc(2026, 11, 22, 9))
    ]


def test_parse_intervals_sorts_and_merges() -> None:
    result = parse_intervals(
        [
            "2026-11-23T00:00Z/PT1H",  # separate, last
            "2026-11-22T12:00Z/PT1H",  # overlaps the next one
            "2026-11-22T12:30Z/PT1H",
            "2026-11-22T08:00Z/PT1H",  # adjacent to the next one
            "2026-11-22T09:00Z/PT1H",
            "2026-11-22T08:15Z/PT15M",  # contained in an earlier one
            "2026-11-22T20:00Z",  # single instant, separate
            "2026-11-22T20:00Z",  # duplicate
        ]
    )
    assert result == [
        Interval(utc(2026, 11, 22, 8), utc(2026, 11, 22, 10)),
        Interval(utc(2026, 11, 22, 12), utc(2026, 11, 22, 13, 30)),
        Interval(utc(2026, 11, 22, 20), utc(2026, 11, 22, 20)),
        Interval(utc(2026, 11, 23, 0), utc(2026, 11, 23, 1)),
    ]


def test_parse_intervals_merges_across_offsets() -> None:
    result = parse_intervals(["2026-11-22T10:00+02:00/PT1H", "2026-11-22T09:00Z/PT1H"])
    assert result == [Interval(utc(2026, 11, 22, 8), utc(2026, 11, 22, 10))]


def test_parse_intervals_instant_touching_interval_is_merged() -> None:
    result = parse_intervals(["2026-11-22T09:00Z", "2026-11-22T08:00Z/PT1H"])
    assert result == [Interval(utc(2026, 11, 22, 8), utc(2026, 11, 22, 9))]


def test_parse_intervals_accepts_tuple() -> None:
    assert len(parse_intervals(("2026-11-22", "2026-11-24"))) == 2  # type: ignore[arg-type]


def test_parse_intervals_rejects_empty_list() -> None:
    with pytest.raises(ScheduleError, match="at least one interval is required"):
        parse_intervals([])


def test_parse_intervals_names_bad_item() -> None:
    with pytest.raises(ScheduleError, match=r"^interval at index 1: not an ISO-8601 interval: 'x'"):
        parse_intervals(["2026-11-22", "x"])
    with pytest.raises(ScheduleError, match=r"interval at index 0: .*expected a string, got int"):
        parse_intervals([7])  # type: ignore[list-item]


@pytest.mark.parametrize("value", [None, 3, {"a": "b"}, b"2026-11-22", {"2026-11-22"}])
def test_parse_intervals_rejects_other_types(value: object) -> None:
    with pytest.raises(ScheduleError, match="expected an ISO-8601 interval or a list"):
        parse_intervals(value)  # type: ignore[arg-type]


# --- Interval ------------------------------------------------------------------------------


def test_interval_normalises_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    interval = Interval(datetime(2026, 11, 22, 10, tzinfo=plus_two), utc(2026, 11, 22, 9))
    assert interval.start == utc(2026, 11, 22, 8)
    assert interval.start.tzinfo is UTC
    assert interval.duration == timedelta(hours=1)


def test_interval_validates() -> None:
    with pytest.raises(ScheduleError, match="timezone-aware"):
        Interval(datetime(2026, 11, 22), utc(2026, 11, 23))
    with pytest.raises(ScheduleError, match="before start"):
        Interval(utc(2026, 11, 23), utc(2026, 11, 22))
    with pytest.raises(TypeError):
        Interval("2026-11-22", utc(2026, 11, 22))  # type: ignore[arg-type]


def test_interval_is_frozen() -> None:
    interval = Interval(utc(2026, 11, 22), utc(2026, 11, 23))
    with pytest.raises(AttributeError):
        interval.start = utc(2026, 11, 21)  # type: ignore[misc]


# --- formatting ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dt", "expected"),
    [
        (utc(2026, 11, 22, 8), "2026-11-22T08:00:00Z"),
        (utc(2026, 11, 22, 8, 0, 59, 999_999), "2026-11-22T08:00:59Z"),  # truncated
        (datetime(2026, 11, 22, 10, tzinfo=timezone(timedelta(hours=2))), "2026-11-22T08:00:00Z"),
        (datetime(2026, 11, 22, 8), "2026-11-22T08:00:00Z"),  # naive taken as UTC
        (utc(5, 1, 2, 3, 4, 5), "0005-01-02T03:04:05Z"),
    ],
)
def test_format_instant(dt: datetime, expected: str) -> None:
    assert format_instant(dt) == expected


@pytest.mark.parametrize(
    ("td", "expected"),
    [
        (timedelta(0), "PT0S"),
        (timedelta(hours=1), "PT1H"),
        (timedelta(hours=1, minutes=30), "PT1H30M"),
        (timedelta(days=1, hours=2), "P1DT2H"),
        (timedelta(days=14), "P14D"),
        (timedelta(days=1, seconds=1), "P1DT1S"),
        (timedelta(minutes=30), "PT30M"),
        (timedelta(hours=25, minutes=1, seconds=1), "P1DT1H1M1S"),
        (timedelta(seconds=59, microseconds=999_999), "PT59S"),  # sub-second part dropped
        (timedelta(microseconds=1), "PT0S"),
        (timedelta(seconds=-90), "-PT1M30S"),
    ],
)
def test_format_duration(td: timedelta, expected: str) -> None:
    assert format_duration(td) == expected


def test_format_interval() -> None:
    interval = parse_interval("2026-11-22T10:00+02:00/PT1H30M")
    assert format_interval(interval) == "2026-11-22T08:00:00Z/2026-11-22T09:30:00Z"
    assert parse_interval(format_interval(interval)) == interval


def test_instant_and_span_format_the_booking_tables_epoch_seconds() -> None:
    """The booking table's epoch seconds as the wire documents write them (these helpers
    lived in sessions/views.py; one formatter serves both)."""
    assert instant(0) == "1970-01-01T00:00:00Z"
    assert instant(1_800_000_000) == "2027-01-15T08:00:00Z"
    assert instant(1_800_000_000) == format_instant(datetime.fromtimestamp(1_800_000_000, UTC))
    assert span(1_800_000_000, 5400) == {"start": "2027-01-15T08:00:00Z", "duration": "PT1H30M"}
    assert span(1_800_000_000, 0)["duration"] == "PT0S"


# --- properties ----------------------------------------------------------------------------

utc_seconds = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)
).map(lambda dt: dt.replace(microsecond=0, tzinfo=UTC))
whole_second_durations = st.integers(0, MAX_DURATION.days * 86_400).map(
    lambda seconds: timedelta(seconds=seconds)
)


@given(utc_seconds)
def test_instant_round_trip(dt: datetime) -> None:
    assert parse_instant(format_instant(dt)) == dt


@given(whole_second_durations)
def test_duration_round_trip(td: timedelta) -> None:
    assert parse_duration(format_duration(td)) == td


@given(utc_seconds, utc_seconds)
def test_interval_round_trip(a: datetime, b: datetime) -> None:
    interval = Interval(min(a, b), max(a, b))
    assert parse_interval(format_interval(interval)) == interval


# Text that looks like ISO-8601 often enough to reach the deeper code paths.
iso_alphabet = st.sampled_from([*"0123456789-:+.,/TZPWYMDHS ", "--", "P1", "T0", "\x00"])
iso_like_text = st.lists(iso_alphabet, max_size=40).map("".join)
iso_like_parts = st.sampled_from(
    [
        "2026-11-22T08:00:00Z",
        "2026-11-22T08:00+02:00",
        "2026-11-22",
        "0001-01-01T00:00Z",
        "9999-12-31T23:59:59Z",
        "PT1H",
        "P3650D",
        "P9999999999D",
        "-PT1H",
        "P1M",
        "/",
        "--",
        "T",
        "Z",
        "+14:00",
        "-23:59",
        ".999999999",
    ]
)
iso_like_composed = st.lists(st.one_of(iso_like_parts, iso_like_text), max_size=5).map("".join)
any_text = st.one_of(st.text(max_size=300), iso_like_text, iso_like_composed)
any_object = st.one_of(
    any_text,
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.binary(max_size=20),
    st.datetimes(),
    st.timedeltas(),
    st.lists(any_text, max_size=5),
    st.dictionaries(st.text(max_size=5), any_text, max_size=3),
)


def check_interval(interval: Interval) -> None:
    assert interval.start.tzinfo is UTC
    assert interval.end.tzinfo is UTC
    assert interval.start <= interval.end
    assert interval.duration >= timedelta(0)
    format_interval(interval)


@settings(max_examples=500)
@given(st.one_of(any_object, st.lists(any_object, max_size=5)))
def test_fuzz_parse_interval(value: object) -> None:
    try:
        interval = parse_interval(value)  # type: ignore[arg-type]
    except ScheduleError as exc:
        assert str(exc)
    else:
        check_interval(interval)


@settings(max_examples=500)
@given(st.one_of(any_object, st.lists(any_object, max_size=5)))
def test_fuzz_parse_intervals(value: object) -> None:
    try:
        intervals = parse_intervals(value)  # type: ignore[arg-type]
    except ScheduleError as exc:
        assert str(exc)
    else:
        assert intervals
        for interval in intervals:
            check_interval(interval)
        for before, after in pairwise(intervals):
            assert before.end < after.start  # sorted, no overlap, no adjacency


@settings(max_examples=500)
@given(any_object)
def test_fuzz_parse_duration(value: object) -> None:
    try:
        td = parse_duration(value)  # type: ignore[arg-type]
    except ScheduleError as exc:
        assert str(exc)
    else:
        assert timedelta(0) <= td <= MAX_DURATION
        format_duration(td)


@settings(max_examples=500)
@given(any_object)
def test_fuzz_parse_instant(value: object) -> None:
    try:
        dt = parse_instant(value)  # type: ignore[arg-type]
    except ScheduleError as exc:
        assert str(exc)
    else:
        assert dt.tzinfo is UTC
        format_instant(dt)
