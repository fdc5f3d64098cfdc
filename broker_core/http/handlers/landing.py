"""GET /: the landing page (HTML for a browser, JSON for a program)."""

from __future__ import annotations

from typing import Any

from connexion import request

from ..context import broker
from ..landing import landing_page


def get() -> tuple[Any, int, dict[str, str]]:
    node = broker()
    accept = request.headers.get("accept", "")
    return landing_page(node.config.site.name, "node", node.base_url, accept)
