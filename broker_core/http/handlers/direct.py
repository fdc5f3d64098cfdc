"""POST /direct (and its older alias POST /sessions): book and accept a slot starting now."""

from __future__ import annotations

from typing import Any

from ...offers.service import request_offers
from ..context import broker
from ..identity import identity
from . import respond


def post(body: dict[str, Any], project: str | None = None) -> tuple[dict[str, Any], int, dict]:
    node = broker()
    offerset = request_offers(node, body, direct=True, identity=identity(), project=project)
    if offerset["result"] == "YES":
        node.session_changed()  # the lifecycle engine starts it now
    return respond(offerset, 201 if offerset["result"] == "YES" else 200)
