"""ISO-8601 time expressions for execution requests (``schedule.requested``).

Clients send instants, durations and intervals as ISO-8601 text; this module turns
them into timezone-aware UTC values and formats values back for responses.

The input comes straight from an HTTP API, so every parser raises :class:`ScheduleError`
(whose message is meant for the client) and nothing else, whatever it is given. `isodate`
does the conversions, but it is lenient (it accepts reduced dates such as ``2026``,
offsets such as ``+02:75`` and empty durations such as ``PT``), so the text is first
checked against the strict grammar below.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import isodate

__all__ = [
    "MAX_DURATION",
    "MAX_TEXT_LENGTH",
    "Interval",
    "ScheduleError",
    "format_duration",
    "format_instant",
    "format_interval",
    "instant",
    "instants_without_zone",
    "parse_duration",
    "parse_instant",
    "parse_interval",
    "parse_intervals",
    "span",
]

#: Longest duration accepted, so that later arithmetic on parsed values cannot overflow.
MAX_DURATION = timedelta(days=3650)

#: Longest text accepted for one expression; real ones are under 70 characters, and the cap
#: keeps regexes, int conversion and error messages cheap on hostile input.
MAX_TEXT_LENGTH = 200

_INTERVAL_FORMS = "expected start/end, start/duration or duration/end"
_INSTANT_EXAMPLE = "e.g. 2026-11-22T08:00:00Z or 2026-11-22"
_DURATION_EXAMPLE = "e.g. PT1H, PT30M, P1DT2H or P2W"

# Complete dates only (calendar, ordinal, week; extended or basic): reduced forms such as
# "2026" or "2026-11" name a period, not an instant.
_DATE = (
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{8}"
    r"|[0-9]{4}-[0-9]{3}|[0-9]{7}"
    r"|[0-9]{4}-W[0-9]{2}-[0-9]|[0-9]{4}W[0-9]{3}"
)
_TIME = r"(?:[0-9]{2}(?::[0-9]{2}(?::[0-9]{2})?)?|[0-9]{4}(?:[0-9]{2})?)(?:[.,][0-9]+)?"
_TZ = r"Z|[+-][0-9]{2}(?::?(?P<tz_minutes>[0-9]{2}))?"
_INSTANT_RE = re.compile(rf"(?:{_DATE})(?P<time>T(?:{_TIME})(?:{_TZ})?)?", re.ASCII)

_NUM = r"[0-9]+(?:[.,][0-9]+)?"
_DURATION_RE = re.compile(
    rf"(?P<sign>[+-])?P(?P<years>{_NUM}Y)?(?P<months>{_NUM}M)?(?:{_NUM}W)?(?:{_NUM}D)?"
    rf"(?P<time>T(?:{_NUM}H)?(?:{_NUM}M)?(?:{_NUM}S)?)?",
    re.ASCII,
)


class ScheduleError(ValueError):
    """A time expression from a client is malformed or out of range.

    The message is returned to the API client, so it names the offending text and says
    what was expected.
    """


@dataclass(frozen=True)
class Interval:
    """A closed time range ``[start, end]`` in UTC; ``start == end`` is a single instant."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        # Normalise here so that every Interval compares, sorts and formats as UTC.
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, datetime):
                raise TypeError(f"Interval.{name} must be a datetime, not {type(value).__name__}")
            if value.utcoffset() is None:
                raise ScheduleError(f"Interval.{name} must be timezone-aware: {value!r}")
            object.__setattr__(self, name, value.astimezone(UTC))
        if self.end < self.start:
            raise ScheduleError(
                f"interval end {format_instant(self.end)} is before start "
                f"{format_instant(self.start)}"
            )

    @property
    def duration(self) -> timedelta:
        """Length of the interval (zero for a single instant)."""
        return self.end - self.start


def _clean(text: object, what: str) -> str:
    """Return ``text`` stripped, or raise ScheduleError if it is not a usable string."""
    if not isinstance(text, str):
        raise ScheduleError(f"not an ISO-8601 {what}: expected a string, got {type(text).__name__}")
    if len(text) > MAX_TEXT_LENGTH:
        raise ScheduleError(
            f"not an ISO-8601 {what}: text is too long "
            f"({len(text)} characters, at most {MAX_TEXT_LENGTH})"
        )
    return text.strip()


def parse_instant(text: str) -> datetime:
    """Parse an ISO-8601 date-time or complete date into an aware UTC datetime.

    A time without an offset is taken as UTC, and a plain date means midnight UTC, since
    the broker has no notion of a client's local time zone.
    """
    text = _clean(text, "date-time")
    match = _INSTANT_RE.fullmatch(text)
    if match is None or int(match["tz_minutes"] or 0) > 59:
        raise ScheduleError(f"not an ISO-8601 date-time: {text!r} ({_INSTANT_EXAMPLE})")
    try:
        if match["time"] is None:
            day: date = isodate.parse_date(text)
            return datetime.combine(day, time(), tzinfo=UTC)
        value: datetime = isodate.parse_datetime(text)
        if value.utcoffset() is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    except OverflowError:
        raise ScheduleError(f"date-time out of range: {text!r}") from None
    except (ValueError, ArithmeticError) as exc:
        # The grammar is already checked, so this is a field out of range (e.g. month 13).
        raise ScheduleError(f"not a valid date-time: {text!r} ({exc})") from None


def parse_duration(text: str) -> timedelta:
    """Parse an ISO-8601 duration made of weeks, days, hours, minutes and seconds.

    Years and months are rejected because their length depends on the calendar; negative
    durations are rejected, zero is allowed; at most MAX_DURATION is accepted.
    """
    text = _clean(text, "duration")
    match = _DURATION_RE.fullmatch(text)
    if match is None or text.lstrip("+-") == "P" or match["time"] == "T":
        raise ScheduleError(f"not an ISO-8601 duration: {text!r} ({_DURATION_EXAMPLE})")
    if match["years"] or match["months"]:
        raise ScheduleError(
            f"duration {text!r} uses years or months, whose length varies; "
            "use weeks, days, hours, minutes or seconds"
        )
    try:
        value = isodate.parse_duration(text)
    except OverflowError:
        raise ScheduleError(
            f"duration {text!r} exceeds the maximum of {MAX_DURATION.days} days"
        ) from None
    except (ValueError, ArithmeticError) as exc:
        raise ScheduleError(f"not a valid duration: {text!r} ({exc})") from None
    if not isinstance(value, timedelta):  # pragma: no cover - excluded by the grammar above
        raise ScheduleError(f"not an ISO-8601 duration: {text!r} ({_DURATION_EXAMPLE})")
    if value < timedelta(0):
        raise ScheduleError(f"duration {text!r} is negative")
    if value > MAX_DURATION:
        raise ScheduleError(f"duration {text!r} exceeds the maximum of {MAX_DURATION.days} days")
    return value


def _is_duration(part: str) -> bool:
    return part.lstrip("+-")[:1] == "P"


def parse_interval(text: str) -> Interval:
    """Parse an ISO-8601 interval: start/end, start/duration, duration/end or a bare start.

    A bare instant is the single instant [start, start]; ``--`` is accepted in place of
    ``/`` as ISO-8601 allows.
    """
    text = _clean(text, "interval")
    if "/" in text:
        parts = text.split("/")
    elif "--" in text:
        parts = text.split("--")
    else:
        parts = [text]
    if len(parts) > 2 or not all(part and part == part.strip() for part in parts):
        raise ScheduleError(f"not an ISO-8601 interval: {text!r} ({_INTERVAL_FORMS})")

    if len(parts) == 1:
        if _is_duration(text):
            raise ScheduleError(
                f"not an ISO-8601 interval: {text!r} is a duration alone ({_INTERVAL_FORMS})"
            )
        if _INSTANT_RE.fullmatch(text) is None:
            raise ScheduleError(f"not an ISO-8601 interval: {text!r} ({_INTERVAL_FORMS})")
        start = parse_instant(text)  # its own error names the text precisely enough
        return Interval(start, start)

    first, second = parts
    try:
        if _is_duration(first) and _is_duration(second):
            raise ScheduleError(f"both parts are durations ({_INTERVAL_FORMS})")
        if _is_duration(first):
            end = parse_instant(second)
            return Interval(end - parse_duration(first), end)
        start = parse_instant(first)
        if _is_duration(second):
            return Interval(start, start + parse_duration(second))
        end = parse_instant(second)
        if end < start:
            raise ScheduleError(f"end {second!r} is before start {first!r}")
        return Interval(start, end)
    except OverflowError:
        raise ScheduleError(
            f"invalid interval {text!r}: outside the supported date range"
        ) from None
    except ScheduleError as exc:
        raise ScheduleError(f"invalid interval {text!r}: {exc}") from None


def parse_intervals(value: str | list[str]) -> list[Interval]:
    """Parse one interval or a list of them into sorted, non-overlapping intervals.

    The request field may hold either form. Overlapping and adjacent intervals are merged
    so that callers see each requested moment exactly once.
    """
    if isinstance(value, str):
        return [parse_interval(value)]
    if not isinstance(value, list | tuple):
        raise ScheduleError(
            f"expected an ISO-8601 interval or a list of them, got {type(value).__name__}"
        )
    if not value:
        raise ScheduleError("empty list of intervals: at least one interval is required")
    parsed: list[Interval] = []
    for index, item in enumerate(value):
        try:
            parsed.append(parse_interval(item))
        except ScheduleError as exc:
            raise ScheduleError(f"interval at index {index}: {exc}") from None
    parsed.sort(key=lambda interval: (interval.start, interval.end))
    merged = [parsed[0]]
    for interval in parsed[1:]:
        last = merged[-1]
        if interval.start <= last.end:
            if interval.end > last.end:
                merged[-1] = Interval(last.start, interval.end)
        else:
            merged.append(interval)
    return merged


def instants_without_zone(value: str | list[str]) -> list[str]:
    """The instants of one interval expression (or a list of them) written without a time zone
    (``2026-12-02T09:00:00``, or a plain date): :func:`parse_instant` takes them as UTC, and
    the client should be told so. Text that does not parse is left to the parsers."""
    found = []
    for item in [value] if isinstance(value, str) else value:
        if not isinstance(item, str) or len(item) > MAX_TEXT_LENGTH:
            continue
        text = item.strip()
        parts = text.split("/") if "/" in text else text.split("--") if "--" in text else [text]
        for part in parts:
            match = _INSTANT_RE.fullmatch(part)
            if match is None:
                continue
            clock = match["time"]
            if clock is None or not any(c in clock for c in "Z+-"):
                found.append(part)
    return found


def format_instant(dt: datetime) -> str:
    """Format as ``YYYY-MM-DDThh:mm:ssZ`` (UTC, seconds truncated); naive means UTC."""
    if dt.utcoffset() is not None:
        dt = dt.astimezone(UTC)
    # Not strftime: "%Y" does not zero-pad years before 1000 on every platform.
    return (
        f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}Z"
    )


def format_duration(td: timedelta) -> str:
    """Format as a canonical ISO-8601 duration in days, hours, minutes and whole seconds.

    Sub-second parts are dropped; zero is ``PT0S``; a negative value gets a leading ``-``.
    Days are not folded into weeks so the output always parses back to the same value.
    """
    micros = td // timedelta(microseconds=1)
    sign = "-" if micros < 0 else ""
    seconds = abs(micros) // 1_000_000
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes, seconds = divmod(seconds, 60)
    clock = "".join(
        f"{amount}{unit}"
        for amount, unit in ((hours, "H"), (minutes, "M"), (seconds, "S"))
        if amount
    )
    if not days and not clock:
        return "PT0S"
    return f"{sign}P{f'{days}D' if days else ''}{f'T{clock}' if clock else ''}"


def format_seconds(seconds: int) -> str:
    """A whole number of seconds as an ISO-8601 duration (:func:`format_duration`)."""
    return format_duration(timedelta(seconds=seconds))


def format_interval(interval: Interval) -> str:
    """Format as ``start/end`` using :func:`format_instant`."""
    return f"{format_instant(interval.start)}/{format_instant(interval.end)}"


def instant(seconds: int) -> str:
    """An instant in epoch seconds (as the booking table keeps them) as ISO-8601 text."""
    return format_instant(datetime.fromtimestamp(seconds, UTC))


def span(start: int, seconds: int) -> dict[str, str]:
    """A schedule span of the wire documents: its ``start`` instant and ``duration``."""
    return {"start": instant(start), "duration": format_seconds(seconds)}
