"""GET and POST /sessions/{uuid}: read a session, update it; GET its logs."""

from __future__ import annotations

from typing import Any

from ...lifecycle.logs import session_logs
from ...sessions.updates import get_session, update_session
from ..context import broker
from ..identity import identity
from . import respond


def get(uuid: str) -> tuple[dict[str, Any], int, dict]:
    return respond(get_session(broker(), str(uuid), identity()), 200)


def post(uuid: str, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict]:
    return respond(update_session(broker(), str(uuid), body, identity()), 200)


def logs(uuid: str) -> tuple[str, int, dict]:
    return session_logs(broker(), str(uuid), identity()), 200, {"Content-Type": "text/plain"}
