"""Posting one event to a request's webhook, reaching only what the node may reach.

The connection is staging's guarded session (``staging.fetch.guarded_session``): the host's
addresses are judged by the notification allow lists, and the check is made on the address
actually connected to, so a name cannot be judged on one address and connect to another (DNS
rebinding). Redirects are not followed (a receiver answers; it does not send the node on), the
whole attempt is bounded in time, and at most ``max_response_bytes`` of the answer are read.
Environment proxies are not used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from ..staging.fetch import Guard, check_url, guarded_session
from ..staging.rules import StagingRefused, StagingRules, parse_location
from . import signing


@dataclass(frozen=True)
class Attempt:
    """How one delivery went: ``ok``, or the error and whether trying again may help."""

    ok: bool
    error: str | None = None
    retry: bool = True


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


async def post(
    url: str, key: bytes, message_id: str, timestamp: int, body: bytes, rules: StagingRules
) -> Attempt:
    """Post ``body`` to ``url``, signed; a 2xx answer is a delivery. What an error says names
    only the URL's origin (:func:`origin`): it is stored, logged and shown to the owner."""
    try:
        target = parse_location(url)
        where = origin(target)
        check_url(target, where, rules)
    except StagingRefused as refused:
        return Attempt(False, _refusal(refused), retry=False)
    guard = Guard(rules)
    timeout = aiohttp.ClientTimeout(total=rules.max_time, sock_connect=rules.timeout)
    headers = {"Content-Type": "application/json", **signing.headers(key, message_id, timestamp,
                                                                      body)}  # fmt: skip
    try:
        async with (
            guarded_session(guard, timeout, "ebroker-notifications") as client,
            client.post(target, data=body, headers=headers, allow_redirects=False) as response,
        ):
            await response.content.read(rules.max_bytes)
            if 200 <= response.status < 300:
                return Attempt(True)
            if 300 <= response.status < 400:
                return Attempt(False, f"{where} answered {response.status}: redirects are "
                               "not followed; give the receiver's own URL")  # fmt: skip
            return Attempt(False, f"{where} answered {response.status} "
                           f"{response.reason or ''}".rstrip())  # fmt: skip
    except aiohttp.ClientConnectorError as exc:
        if guard.refused is not None:
            return Attempt(False, _refusal(guard.refused), retry=False)
        return Attempt(False, f"cannot connect to {where}: {exc.os_error or type(exc).__name__}")
    except TimeoutError:
        return Attempt(False, f"{where}: no answer within {rules.max_time:g} s")
    except aiohttp.ClientError as exc:
        return Attempt(False, f"{where}: {type(exc).__name__}")


def origin(url: URL) -> str:
    """A URL's scheme, host and port: a receiver's URL may carry a token in its path or
    query (and credentials are refused at request time), so errors name no more of it."""
    try:
        return str(url.origin())
    except ValueError:
        return "the webhook's URL"


def _refusal(refused: StagingRefused) -> str:
    return "refused: " + refused.text.replace("staging does not reach", "the node does not post to")
