"""Domain exceptions. ``broker_core.http.problems`` maps each one to an HTTP problem response."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FieldError:
    pointer: str  # RFC 6901 JSON pointer into the request document
    detail: str


class BrokerError(Exception):
    """Base of every error a client can cause."""


@dataclass
class DocumentInvalid(BrokerError):
    """The document is malformed: 400, naming the offending fields."""

    errors: list[FieldError]
    # the session the refused update was for, rendered (the problem's ``session`` member)
    session: dict[str, Any] | None = None

    def __str__(self) -> str:
        return "; ".join(f"{e.pointer or '/'}: {e.detail}" for e in self.errors)


@dataclass
class ParameterInvalid(BrokerError):
    """A query (or path) parameter is malformed: 400, naming the parameter."""

    parameter: str
    detail: str

    def __str__(self) -> str:
        return f"query parameter '{self.parameter}': {self.detail}"


@dataclass
class NotFound(BrokerError):
    what: str
    uuid: str

    def __str__(self) -> str:
        return f"no {self.what} {self.uuid}"


@dataclass
class Conflict(BrokerError):
    """The request is well-formed but clashes with the current state (409)."""

    detail: str
    phase: str | None = None
    messages: list[str] = field(default_factory=list)
    # the session the refused update was for, rendered (the problem's ``session`` member)
    session: dict[str, Any] | None = None

    def __str__(self) -> str:
        return self.detail


@dataclass
class CannotStart(Conflict):
    """A direct execution that cannot start now. ``reasons`` are the messages saying why, as
    message documents (``{level, template, values}``); the node answers with a FAILED session."""

    reasons: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class CapacityConflict(Conflict):
    """A change to a pool's capacity that its bookings would no longer fit (409): each
    stretch of time where they would not, with the sessions booked in it (``conflicts``)."""

    conflicts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class UpstreamUnavailable(BrokerError):
    """An aggregator's upstream holding the resource could not be asked: 502, or 504 when it
    did not answer in time."""

    detail: str
    status: int = 502

    def __str__(self) -> str:
        return self.detail


def pointer(*parts: object) -> str:
    """An RFC 6901 pointer from path parts (escaping ``~`` and ``/``)."""
    escaped = (str(p).replace("~", "~0").replace("/", "~1") for p in parts)
    return "".join("/" + p for p in escaped)


@dataclass
class Unauthenticated(BrokerError):
    """No acceptable credentials: 401 with a ``WWW-Authenticate: Bearer`` challenge.
    ``error`` is the RFC 6750 error code (``invalid_token``, or None when none was sent)."""

    detail: str
    error: str | None = "invalid_token"

    def __str__(self) -> str:
        return self.detail


@dataclass
class IdentityUnavailable(BrokerError):
    """The token's issuer could not be asked for its keys: 503, the client may retry."""

    detail: str

    def __str__(self) -> str:
        return self.detail


@dataclass
class Forbidden(BrokerError):
    """Authenticated, but not allowed to do this (403)."""

    detail: str

    def __str__(self) -> str:
        return self.detail


@dataclass
class TooManyHolds(BrokerError):
    """The caller (or its project) already holds as much as its hold limits allow, in open
    offers that will expire: 429 with ``Retry-After`` (seconds until enough of them expire).
    ``limit`` names the configuration key, e.g. ``holds.caller.offer_sets``."""

    detail: str
    retry_after: int
    limit: str
    messages: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.detail
