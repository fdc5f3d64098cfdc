"""GET /sessions.ics: the caller's sessions as an iCalendar feed; POST /feed-tokens: a token
for a calendar app's feed URL."""

from __future__ import annotations

import time
from typing import Any

from ...auth.feeds import feed_token_document
from ...sessions.feed import MEDIA_TYPE, session_feed
from ..context import broker
from ..identity import identity
from . import respond


def sessions(token: str | None = None) -> tuple[bytes, int, dict[str, str]]:
    # a feed token was read (and checked) by the authentication layer, in front
    headers = {"Content-Type": MEDIA_TYPE, "Cache-Control": "private, max-age=60"}
    return session_feed(broker(), identity()), 200, headers


def token() -> tuple[dict[str, Any], int, dict]:
    node = broker()
    document = feed_token_document(node.config.auth, node.base_url, identity(), int(time.time()))
    return respond(document, 201)
