"""GET /usage and GET /projects/{name}: allocations and usage are kept by each broker node,
which knows its own projects; an aggregator has none to show."""

from __future__ import annotations

from typing import Any

from broker_core.errors import NotFound


def usage() -> tuple[dict[str, Any], int, dict]:
    raise NotFound("accounting on this aggregator; ask the broker nodes for", "usage")


def project(name: str) -> tuple[dict[str, Any], int, dict]:
    raise NotFound("accounting on this aggregator; ask the broker nodes for project", name)
