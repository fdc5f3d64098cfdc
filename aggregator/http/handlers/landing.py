"""GET /: the landing page (HTML for a browser, JSON for a program)."""

from __future__ import annotations

from typing import Any

from connexion import request

from broker_core.http.landing import landing_page

from ..context import aggregator


async def get() -> tuple[Any, int, dict[str, str]]:
    service = aggregator()
    accept = request.headers.get("accept", "")
    return landing_page(service.config.site.name, "aggregator", service.base_url, accept)
