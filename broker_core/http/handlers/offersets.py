"""GET /offersets/{uuid}."""

from __future__ import annotations

from typing import Any

from ...offers.service import get_offerset
from ..context import broker
from ..identity import identity
from . import respond


def get(uuid: str) -> tuple[dict[str, Any], int, dict]:
    return respond(get_offerset(broker(), str(uuid), identity()), 200)
