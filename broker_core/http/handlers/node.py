"""GET /node: the node description."""

from __future__ import annotations

from typing import Any

from ...node import describe
from ..context import broker
from . import respond


def get() -> tuple[dict[str, Any], int, dict]:
    return respond(describe(broker()), 200)
