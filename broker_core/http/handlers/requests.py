"""POST /requests (and its older alias POST /offersets): ask for offers, or probe (``?probe=true``:
offers that hold nothing)."""

from __future__ import annotations

from typing import Any

from ...offers.service import request_offers
from ..context import broker
from ..identity import identity
from . import respond


def post(
    body: dict[str, Any], project: str | None = None, probe: bool = False
) -> tuple[dict[str, Any], int, dict]:
    answer = request_offers(broker(), body, identity=identity(), project=project, probe=probe)
    return respond(answer, 200)
