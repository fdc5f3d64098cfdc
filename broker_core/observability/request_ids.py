"""One id per request, from the client's ``X-Request-ID`` or made here: in every log line of
the request (:mod:`.logs`), in the answer's ``X-Request-ID``, and passed on upstream by the
aggregator, so that one request reads as one id from the aggregator to the node."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

HEADER = "X-Request-ID"
# what is taken from a client: short, and nothing a log line or a header could be bent with
_ACCEPTED = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

current: ContextVar[str | None] = ContextVar("ebroker_request_id", default=None)


def chosen(given: str | None) -> str:
    """The client's id when it is an acceptable one, else a new one."""
    if given is not None and _ACCEPTED.match(given):
        return given
    return uuid.uuid4().hex


def outgoing() -> dict[str, str]:
    """The header that passes the current request's id on (none outside a request)."""
    value = current.get()
    return {HEADER: value} if value else {}
