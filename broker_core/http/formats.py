"""Every ``format`` the spec uses, checked wherever a request is validated against it.

jsonschema's Draft 4 checker knows none of the spec's formats that matter here (``uuid`` and
``int64`` are not Draft 4 formats, and ``date-time`` is only checked when an optional package is
installed), so a malformed value would reach the database: ``/sessions/%00`` was a 500 on
PostgreSQL. This checker knows each of them, strictly.
"""

from __future__ import annotations

import re
from datetime import datetime

from jsonschema import Draft4Validator, FormatChecker

# RFC 4122's textual form, as the node writes its uuids (no braces, no urn: prefix)
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# RFC 3339 section 5.6: full-date "T" full-time, with a mandatory offset
_DATE_TIME = re.compile(
    r"(?P<base>\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2})(?:\.(?P<fraction>\d{1,9}))?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})",
    re.ASCII,  # \d is 0-9 only, not every script's digits
)
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s\x00-\x1f\x7f]*")
_INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}

SPEC_FORMATS = FormatChecker(formats=())
for _name in Draft4Validator.FORMAT_CHECKER.checkers:  # email, ipv4, ... as Draft 4 has them
    SPEC_FORMATS.checkers[_name] = Draft4Validator.FORMAT_CHECKER.checkers[_name]


@SPEC_FORMATS.checks("uuid")
def is_uuid(value: object) -> bool:
    return not isinstance(value, str) or _UUID.fullmatch(value) is not None


@SPEC_FORMATS.checks("date-time")
def is_date_time(value: object) -> bool:
    """RFC 3339, and an instant that exists (no 31 February, no hour 25)."""
    if not isinstance(value, str):
        return True
    found = _DATE_TIME.fullmatch(value)
    if found is None:
        return False
    fraction = (found["fraction"] or "")[:6].ljust(6, "0")  # Python reads microseconds
    offset = "+00:00" if found["offset"] in "Zz" else found["offset"]
    text = f"{found['base'].upper()}.{fraction}{offset}"
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


@SPEC_FORMATS.checks("uri")
def is_uri(value: object) -> bool:
    """An absolute URI: a scheme, then no whitespace or control characters."""
    return not isinstance(value, str) or _URI.fullmatch(value) is not None


def _integer_format(name: str) -> None:
    low, high = _INT_RANGES[name]

    @SPEC_FORMATS.checks(name)
    def check(value: object) -> bool:
        return not isinstance(value, int) or isinstance(value, bool) or low <= value <= high


for _name in _INT_RANGES:
    _integer_format(_name)
