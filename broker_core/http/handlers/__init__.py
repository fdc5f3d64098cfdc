"""HTTP handlers, one module per resource; thin wrappers over the domain services.

Handlers always answer JSON; the content layer re-encodes it as YAML when asked.
"""

from __future__ import annotations

from typing import Any

JSON_HEADERS = {"Content-Type": "application/json"}


def respond(document: dict[str, Any], status: int = 200) -> tuple[dict[str, Any], int, dict]:
    return document, status, JSON_HEADERS
