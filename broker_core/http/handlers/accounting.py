"""GET /usage and GET /projects/{name}: allocations and what was used of them."""

from __future__ import annotations

from typing import Any

from ...accounting import project_report, usage_report
from ..context import broker
from ..identity import identity
from . import respond


def usage() -> tuple[dict[str, Any], int, dict]:
    return respond(usage_report(broker(), identity()), 200)


def project(name: str) -> tuple[dict[str, Any], int, dict]:
    return respond(project_report(broker(), identity(), name), 200)
