"""The broker serving the current request (set by the outer middleware, read by handlers)."""

from __future__ import annotations

from contextvars import ContextVar

from ..broker import Broker

current_broker: ContextVar[Broker] = ContextVar("current_broker")


def broker() -> Broker:
    return current_broker.get()
