"""Recurring sessions: an RFC 5545 recurrence rule in ``schedule.requested.recurrence``.

A request for "every Tuesday 10:00-12:00 Europe/London, 6 times" names the first occurrence's
local time with ``start``, its length with ``duration`` and the repetition with
``recurrence: {rule: "FREQ=WEEKLY;BYDAY=TU;COUNT=6", timezone: "Europe/London"}``. The rule is
expanded in wall-clock time of its zone (python-dateutil's ``rrule`` over ``zoneinfo``
datetimes), so 10:00 stays 10:00 across a DST change; a local time that does not exist (the
hour skipped in spring) is read with the offset before the gap and an ambiguous one (the hour
repeated in autumn) as its first instance, as RFC 5545 says of DTSTART.

The cost of a rule is bounded before it is expanded: COUNT or UNTIL is required, at most
``max_occurrences`` are made, SECONDLY and BYSECOND are refused, and only the parts whose
every combination is met within a few decades are taken (BYSETPOS, BYWEEKNO and BYYEARDAY
are not, a BYMONTH with a BYMONTHDAY no month has is refused, and MINUTELY rules take neither):
dateutil scans period after period, up to the year 9999, for a rule that never matches, so an
unbounded rule would stall the request. Pure functions, no database.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import rrulestr

from .errors import DocumentInvalid, FieldError
from .kinds.request import RecurrenceRequest

WHERE = "/schedule/requested/recurrence"
RULE_AT, ZONE_AT = f"{WHERE}/rule", f"{WHERE}/timezone"

FREQUENCIES = ("MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY")
PARTS = ("FREQ", "COUNT", "UNTIL", "INTERVAL", "BYDAY", "BYMONTHDAY", "BYMONTH", "BYHOUR",
         "BYMINUTE", "WKST")  # fmt: skip
REFUSED = {
    "BYSECOND": "sessions are booked to the minute",
    "BYSETPOS": "not supported",
    "BYWEEKNO": "not supported",
    "BYYEARDAY": "not supported",
    "DTSTART": "the first occurrence is schedule.requested.start",
    "TZID": "the zone is recurrence.timezone",
}
WEEKDAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_BYDAY = re.compile(r"^([+-]?)([0-9]{1,2})?(MO|TU|WE|TH|FR|SA|SU)$")
_UNTIL = re.compile(r"^([0-9]{8})(?:T([0-9]{6})(Z?))?$")
_ZONE = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){0,2}$")
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
MAX_INTERVAL = 1000


@dataclass(frozen=True)
class Recurrence:
    """A checked rule: ``rule`` as normalised (UNTIL in UTC), ``zone`` its time zone's name,
    ``partial`` whether a series may be offered without the occurrences that cannot be
    booked."""

    rule: str
    zone: str
    partial: bool
    limit: int  # the most occurrences one series may have

    def expand(self, anchor: int) -> list[int]:
        """The occurrences' starts (epoch seconds) of a series whose first occurrence is at
        or after ``anchor``: the rule's instants from the anchor's local time on. More than
        ``limit`` is a malformed request (the rule's COUNT or UNTIL allows too many)."""
        zone = ZoneInfo(self.zone)
        start = datetime.fromtimestamp(anchor, UTC).astimezone(zone)
        found: list[int] = []
        for occurrence in _occurrences(self.rule, start):
            seconds = int(occurrence.timestamp())
            if found and seconds <= found[-1]:
                continue  # a local time that exists twice, or not at all: taken once
            found.append(seconds)
            if len(found) > self.limit:
                raise DocumentInvalid([FieldError(RULE_AT, (
                    f"the rule makes more than {self.limit} occurrences, the most a series "
                    "may have here (offers.recurrence.max_occurrences); lower COUNT or UNTIL"
                ))])  # fmt: skip
        return found


def _occurrences(rule: str, start: datetime) -> Iterator[datetime]:
    try:
        yield from rrulestr(rule, dtstart=start)  # type: ignore[union-attr]
    except (ValueError, TypeError, OverflowError) as exc:
        raise _invalid(f"the rule cannot be expanded: {exc}") from None


def parse(request: RecurrenceRequest, max_occurrences: int) -> Recurrence:
    """The checked rule, or a :class:`DocumentInvalid` pointing at what is wrong."""
    zone_name = request.timezone or "UTC"
    if zone_name.upper() == "UTC":
        zone_name = "UTC"
    zone = _zone(zone_name)
    text = request.rule.strip()
    if text.upper().startswith("RRULE:"):
        text = text[6:]
    if not text or any(c in text for c in "\r\n"):
        raise _invalid("one RRULE value is expected, e.g. FREQ=WEEKLY;BYDAY=TU;COUNT=6")
    parts: dict[str, str] = {}
    for item in text.upper().split(";"):
        name, equals, value = item.partition("=")
        name = name.strip()
        if not equals or not value.strip():
            raise _invalid(f"{item[:40]!r} is no NAME=VALUE part")
        if name in parts:
            raise _invalid(f"{name} is given twice")
        if name in REFUSED:
            raise _invalid(f"{name} is not taken here ({REFUSED[name]})")
        if name not in PARTS:
            raise _invalid(f"unknown rule part {name[:32]!r}; taken: {', '.join(PARTS)}")
        parts[name] = value.strip()
    _check(parts, max_occurrences)
    if "UNTIL" in parts:
        parts["UNTIL"] = _until_utc(parts["UNTIL"], zone)
    rule = ";".join(f"{name}={parts[name]}" for name in PARTS if name in parts)
    return Recurrence(rule, zone_name, request.partial, max_occurrences)


def _check(parts: dict[str, str], max_occurrences: int) -> None:
    freq = parts.get("FREQ")
    if freq is None:
        raise _invalid("FREQ is required")
    if freq not in FREQUENCIES:
        raise _invalid(f"FREQ={freq[:16]} is not taken; one of {', '.join(FREQUENCIES)}"
                       + (" (sessions are booked to the minute)" if freq == "SECONDLY"
                          else ""))  # fmt: skip
    if freq == "MINUTELY" and ("BYMONTH" in parts or "BYMONTHDAY" in parts):
        raise _invalid("FREQ=MINUTELY takes no BYMONTH or BYMONTHDAY (use FREQ=HOURLY or "
                       "slower with them)")  # fmt: skip
    if ("COUNT" in parts) == ("UNTIL" in parts):
        raise _invalid("give exactly one of COUNT and UNTIL: a series has an end"
                       if "COUNT" not in parts else "COUNT and UNTIL must not both be given")
    if "COUNT" in parts:
        _integer(parts, "COUNT", 1, max_occurrences)
    if "INTERVAL" in parts:
        _integer(parts, "INTERVAL", 1, MAX_INTERVAL)
    if "WKST" in parts and parts["WKST"] not in WEEKDAYS:
        raise _invalid(f"WKST={parts['WKST'][:8]} is no weekday ({', '.join(WEEKDAYS)})")
    if "BYDAY" in parts:
        for day in _list(parts, "BYDAY"):
            match = _BYDAY.match(day)
            if match is None or (match.group(1) and not match.group(2)):
                raise _invalid(f"BYDAY value {day[:8]!r} is no weekday such as TU or 2TU")
            if match.group(2):
                most = 5 if freq == "MONTHLY" else 53
                if freq not in ("MONTHLY", "YEARLY"):
                    raise _invalid(f"BYDAY={day} numbers a weekday, which only MONTHLY and "
                                   "YEARLY rules do")  # fmt: skip
                if not 1 <= int(match.group(2)) <= most:
                    raise _invalid(f"BYDAY={day}: the number must be 1..{most}")
    months = [_value(v, "BYMONTH", 1, 12) for v in _list(parts, "BYMONTH")]
    days = [_value(v, "BYMONTHDAY", -31, 31, zero=False) for v in _list(parts, "BYMONTHDAY")]
    if days and freq == "WEEKLY":
        raise _invalid("BYMONTHDAY is not taken with FREQ=WEEKLY (RFC 5545)")
    for v in _list(parts, "BYHOUR"):
        _value(v, "BYHOUR", 0, 23)
    for v in _list(parts, "BYMINUTE"):
        _value(v, "BYMINUTE", 0, 59)
    if months and days and not any(
        abs(d) <= _DAYS_IN_MONTH[m - 1] for m in months for d in days
    ):
        raise _invalid("no month of BYMONTH has a day of BYMONTHDAY: the rule never occurs")


def _list(parts: dict[str, str], name: str) -> list[str]:
    if name not in parts:
        return []
    values = [v.strip() for v in parts[name].split(",")]
    if len(values) > 60 or not all(values):
        raise _invalid(f"{name} takes 1..60 comma-separated values")
    return values


def _value(text: str, name: str, low: int, high: int, *, zero: bool = True) -> int:
    if not re.fullmatch(r"[+-]?[0-9]{1,4}", text):
        raise _invalid(f"{name} value {text[:8]!r} is no integer")
    value = int(text)
    if not low <= value <= high or (value == 0 and not zero):
        raise _invalid(f"{name} value {value} is out of range {low}..{high}")
    return value


def _integer(parts: dict[str, str], name: str, low: int, high: int) -> int:
    text = parts[name]
    if not re.fullmatch(r"[0-9]{1,9}", text):
        raise _invalid(f"{name}={text[:12]} is no positive integer")
    value = int(text)
    if value < low:
        raise _invalid(f"{name} must be at least {low}")
    if value > high:
        if name == "COUNT":
            raise _invalid(f"COUNT={value} is more than {high}, the most occurrences a series "
                           "may have here (offers.recurrence.max_occurrences)")  # fmt: skip
        raise _invalid(f"{name}={value} is more than {high}")
    return value


def _until_utc(text: str, zone: ZoneInfo) -> str:
    """UNTIL as RFC 5545 wants it beside a zoned start: in UTC. A date, or a local time
    without Z, is read in the series' zone (a date: up to the end of that day)."""
    match = _UNTIL.match(text)
    if match is None:
        raise _invalid(f"UNTIL={text[:20]} is no date (YYYYMMDD) or time (YYYYMMDDTHHMMSS[Z])")
    try:
        day = datetime.strptime(match.group(1), "%Y%m%d").date()
        clock = time(23, 59, 59)
        if match.group(2):
            clock = datetime.strptime(match.group(2), "%H%M%S").time()
    except ValueError:
        raise _invalid(f"UNTIL={text[:20]} is no valid date or time") from None
    moment = datetime.combine(day, clock, UTC if match.group(3) else zone)
    if day < date(1971, 1, 1) or day > date(9000, 1, 1):
        raise _invalid(f"UNTIL={text[:20]} is out of range")
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _zone(name: str) -> ZoneInfo:
    if name.upper() == "UTC":
        return ZoneInfo("UTC")
    if not _ZONE.match(name) or ".." in name:
        raise DocumentInvalid([FieldError(ZONE_AT, (
            f"{name[:64]!r} is no IANA time zone name such as Europe/London"
        ))])  # fmt: skip
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise DocumentInvalid([FieldError(ZONE_AT, (
            f"unknown time zone {name[:64]!r}; give an IANA name such as Europe/London"
        ))]) from None  # fmt: skip


def _invalid(detail: str) -> DocumentInvalid:
    return DocumentInvalid([FieldError(RULE_AT, detail)])
