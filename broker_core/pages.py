"""Pages of a list (GET /sessions, GET /offersets): opaque keyset cursors, the filters they are
valid with, the time window of a filter, and the ``Link`` to the next page.

A list is read in one stable order (a time, then a uuid) and each page starts after the last
key of the page before (keyset pagination, not OFFSET): a row made or changed meanwhile never
moves a page boundary, so a page never repeats or skips a row that was there before. The
cursor is the last key, with a digest of the filters it was made for: it is opaque to clients
(base64url of JSON, which may change) and refused with other filters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from .errors import ParameterInvalid

MAX_LIMIT = 200  # the spec's ``limit`` maximum
DEFAULT_LIMIT = 50
CURSOR_VERSION = 1

Key = tuple[int, str]


def digest(filters: Mapping[str, Any]) -> str:
    """What a cursor remembers of the filters it was made for."""
    text = json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def encode_cursor(key: Key, filters: Mapping[str, Any]) -> str:
    raw = json.dumps({"v": CURSOR_VERSION, "k": list(key), "f": digest(filters)},
                     separators=(",", ":"))  # fmt: skip
    return base64.urlsafe_b64encode(raw.encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str | None, filters: Mapping[str, Any]) -> Key | None:
    """The key a page starts after (None: the first page); a cursor that is not one of ours,
    or was made for other filters, is a 400 naming ``cursor``."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        version, (at, uuid), made_for = data["v"], data["k"], data["f"]
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise ParameterInvalid("cursor", "not a cursor of this list") from None
    if version != CURSOR_VERSION or not isinstance(at, int) or not isinstance(uuid, str):
        raise ParameterInvalid("cursor", "not a cursor of this list")
    if made_for != digest(filters):
        raise ParameterInvalid(
            "cursor", "the cursor was made for other filters: repeat the filters of its page"
        )
    return at, uuid


def epoch(name: str, value: str | None) -> int | None:
    """An instant parameter (``from``, ``to``) as epoch seconds; one without a zone is a 400."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ParameterInvalid(name, f"{value[:64]!r} is not an ISO-8601 instant") from None
    if parsed.tzinfo is None:
        raise ParameterInvalid(name, f"{value[:64]!r} has no time zone (add Z for UTC)")
    return int(parsed.timestamp())


def window(start: str | None, end: str | None) -> tuple[int | None, int | None]:
    """The time window [from, to) of a filter, either end open."""
    first, last = epoch("from", start), epoch("to", end)
    if first is not None and last is not None and last <= first:
        raise ParameterInvalid("to", "must be after 'from'")
    return first, last


def split(values: Sequence[str] | None) -> list[str]:
    """A repeatable parameter's values (each of which may be a comma list), in order, once."""
    found: list[str] = []
    for value in values or ():
        for item in value.split(","):
            if item and item not in found:
                found.append(item)
    return found


def bounded(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise ParameterInvalid("limit", f"must be between 1 and {MAX_LIMIT}")
    return limit


def page(items: list[dict[str, Any]], limit: int, next_cursor: str | None) -> dict[str, Any]:
    """The answer: the items, the limit and, unless this is the last page, ``next``."""
    return {"items": items, "limit": limit, **({"next": next_cursor} if next_cursor else {})}


def next_link(url: str, query: Mapping[str, Any], next_cursor: str | None) -> dict[str, str]:
    """The ``Link`` header (RFC 8288) to the next page: the same query with its cursor."""
    if not next_cursor:
        return {}
    params: list[tuple[str, str]] = []
    for name, value in query.items():
        if name in ("cursor",) or value is None:
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            params.append((name, str(item)))
    params.append(("cursor", next_cursor))
    return {"Link": f'<{url}?{urlencode(params)}>; rel="next"'}
