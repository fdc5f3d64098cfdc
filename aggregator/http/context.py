"""The aggregator serving the current request (set by the content layer, read by handlers)."""

from __future__ import annotations

from contextvars import ContextVar

from ..service import Aggregator

current_aggregator: ContextVar[Aggregator] = ContextVar("current_aggregator")


def aggregator() -> Aggregator:
    return current_aggregator.get()


def bearer_token() -> str | None:
    """The caller's bearer token, to forward to upstreams configured for it."""
    from connexion import request

    value = request.headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
