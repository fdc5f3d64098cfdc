"""POST /direct (and its older alias POST /sessions): book and accept a slot starting now.

As the standard answers it: ``303 See Other`` to ``/sessions/{uuid}`` with the session as the
body (a client that does not follow redirects has it too), or ``400`` with a FAILED session
whose ``meta.messages`` say why it cannot start."""

from __future__ import annotations

from typing import Any

from ...offers.direct import execute_direct
from ..context import broker
from ..identity import identity
from . import JSON_HEADERS


def post(body: dict[str, Any], project: str | None = None) -> tuple[dict[str, Any], int, dict]:
    node = broker()
    session, started = execute_direct(node, body, identity=identity(), project=project)
    if not started:
        return session, 400, JSON_HEADERS
    node.session_changed()  # the lifecycle engine starts it now
    return session, 303, {**JSON_HEADERS, "Location": session["meta"]["url"]}
