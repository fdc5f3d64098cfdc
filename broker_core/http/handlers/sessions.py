"""GET and POST /sessions/{uuid}: read a session, update its phase."""

from __future__ import annotations

from typing import Any

from ...sessions.updates import get_session, update_session
from ..context import broker
from . import respond


def get(uuid: str) -> tuple[dict[str, Any], int, dict]:
    return respond(get_session(broker(), str(uuid)), 200)


def post(uuid: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict]:
    return respond(update_session(broker(), str(uuid), body), 200)
