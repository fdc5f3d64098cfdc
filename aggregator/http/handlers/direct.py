"""POST /direct (and POST /sessions): start now on the first upstream that can."""

from __future__ import annotations

from typing import Any

from broker_core.errors import DocumentInvalid, FieldError
from broker_core.http.handlers import JSON_HEADERS

from ...combined.request import is_combined
from ..context import aggregator, bearer_token

NOT_DIRECT = (
    "a combined request (parts at several sites) is booked through offers, all or nothing: "
    "POST it to /requests and accept one of its combined offers"
)


async def post(
    body: dict[str, Any], project: str | None = None
) -> tuple[dict[str, Any], int, dict]:
    if is_combined(body):
        raise DocumentInvalid([FieldError("/parts", NOT_DIRECT)])
    document, status, headers = await aggregator().direct(body, bearer_token(), project)
    return document, status, {**JSON_HEADERS, **headers}
