"""Posting one event to a request's webhook, reaching only what the node may reach.

The connection goes through staging's guarded connector (``staging.fetch``): the host's
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

from ..staging.addresses import parse_address
from ..staging.fetch import Guard, GuardedResolver
from ..staging.rules import StagingRefused, StagingRules, http_host, parse_location
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
    """Post ``body`` to ``url``, signed; a 2xx answer is a delivery."""
    try:
        target = parse_location(url)
        host = http_host(target, url)
        literal = parse_address(host)
        if literal is not None and host not in rules.allow_hosts:
            refused = rules.address_refusal(host, literal, literal=True)
            if refused is not None:
                raise refused
    except StagingRefused as refused:
        return Attempt(False, _refusal(refused), retry=False)
    guard = Guard(rules)
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(guard), socket_factory=guard.socket, use_dns_cache=False,
        force_close=True, limit=1,
    )  # fmt: skip
    timeout = aiohttp.ClientTimeout(total=rules.max_time, sock_connect=rules.timeout)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "ebroker-notifications",
        **signing.headers(key, message_id, timestamp, body),
    }
    try:
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, trust_env=False, auto_decompress=False
        ) as client, client.post(
            target, data=body, headers=headers, allow_redirects=False
        ) as response:
            await response.content.read(rules.max_bytes)
            if 200 <= response.status < 300:
                return Attempt(True)
            if 300 <= response.status < 400:
                return Attempt(False, f"{url} answered {response.status}: redirects are "
                               "not followed; give the receiver's own URL")  # fmt: skip
            return Attempt(False, f"{url} answered {response.status} "
                           f"{response.reason or ''}".rstrip())  # fmt: skip
    except aiohttp.ClientConnectorError as exc:
        if guard.refused is not None:
            return Attempt(False, _refusal(guard.refused), retry=False)
        return Attempt(False, f"cannot connect to {target.host}: {exc.os_error or exc}")
    except TimeoutError:
        return Attempt(False, f"{url}: no answer within {rules.max_time:g} s")
    except aiohttp.ClientError as exc:
        return Attempt(False, f"{url}: {type(exc).__name__}: {exc}")


def _refusal(refused: StagingRefused) -> str:
    return "refused: " + refused.text.replace("staging does not reach", "the node does not post to")
