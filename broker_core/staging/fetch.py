"""Downloads that reach only the addresses the staging rules allow.

Every socket a download opens is made by :meth:`Guard.socket`, which refuses an address the
rules do not allow before connecting: the check is on the address actually connected to, so a
name cannot resolve to one address when checked and another when connected to (DNS rebinding),
and no request reaches a forbidden address. The resolver returns only a name's allowed
addresses (so a name with a public and a private address is connected to on the public one) and
says why when there are none; IP literals, which never reach a resolver, are checked before
each request. Redirects are followed by hand, up to ``max_redirects``, each target checked as
the first. There is a connect and read timeout, a deadline for the whole download and a byte
cap; content is stored as served (no decoding). Environment proxies are not used: a proxy would
connect on the download's behalf, unchecked.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import aiohttp
from aiohttp.abc import ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from .addresses import IPAddress, parse_address
from .files import Staged, too_large
from .rules import (
    MAX_REDIRECTS,
    SCHEME,
    StagingFailed,
    StagingRefused,
    StagingRules,
    http_host,
    parse_location,
)

CHUNK = 1 << 20
REDIRECTS = (301, 302, 303, 307, 308)


def download(location: str, out: Path, rules: StagingRules) -> Staged:
    """Fetch the http(s) ``location`` into the empty directory ``out`` (the file keeps the URL's
    last path segment as its name). Blocking: runs its own event loop."""
    return asyncio.run(_download(location, out, rules))


class Guard:
    """One download's address checks: what it refused first, and the addresses of allowed
    host names (``allow_hosts``), which may be anything."""

    def __init__(self, rules: StagingRules):
        self.rules = rules
        self.refused: StagingRefused | None = None
        self.named: set[IPAddress] = set()

    def refuse(self, refusal: StagingRefused) -> None:
        if self.refused is None:
            self.refused = refusal

    def socket(self, addr_info: tuple[Any, ...]) -> socket.socket:
        """The socket for one address a connection is about to be made to: refused (OSError)
        unless the rules allow the address."""
        family, kind, proto, _, sockaddr = addr_info
        address = parse_address(str(sockaddr[0]).split("%")[0])
        if address is None:
            raise OSError(f"staging: {sockaddr[0]!r} is not an IP address")
        if address not in self.named:
            refusal = self.rules.address_refusal(str(sockaddr[0]), address, literal=True)
            if refusal is not None:
                self.refuse(refusal)
                raise OSError(refusal.text)
        return socket.socket(family=family, type=kind, proto=proto)


class GuardedResolver(ThreadedResolver):
    """Resolves a host name to the addresses staging may reach."""

    def __init__(self, guard: Guard):
        super().__init__()
        self.guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await super().resolve(host, port, family)
        name = host.rstrip(".").lower()
        rules = self.guard.rules
        allowed = []
        for result in results:
            address = parse_address(result["host"].split("%")[0])
            if address is None:
                continue
            if name in rules.allow_hosts:
                self.guard.named.add(address)
                allowed.append(result)
                continue
            refusal = rules.address_refusal(name, address, literal=False)
            if refusal is None:
                allowed.append(result)
            else:
                self.guard.refuse(refusal)
        if not allowed:
            raise OSError(f"{name}: no address staging may reach")
        return allowed


def guarded_session(
    guard: Guard, timeout: aiohttp.ClientTimeout, user_agent: str = "ebroker-staging"
) -> aiohttp.ClientSession:
    """A client session whose every connection goes through ``guard``'s checks, with no
    proxy from the environment and no content decoding: what staging downloads with, and
    what a notification's webhook is posted with."""
    connector = aiohttp.TCPConnector(
        resolver=GuardedResolver(guard),
        socket_factory=guard.socket,
        use_dns_cache=False,
        force_close=True,
        limit=1,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers={"Accept-Encoding": "identity", "User-Agent": user_agent},
        auto_decompress=False,
        trust_env=False,
    )


def content_length(location: str, rules: StagingRules, seconds: float) -> tuple[int, int | None]:
    """A HEAD of the http(s) ``location`` within the rules (redirects followed and checked as
    a download's are), in at most ``seconds``: its status and the length it announces.
    Raises ``StagingRefused`` or ``StagingFailed`` as a download would. Blocking."""
    return asyncio.run(_head(location, rules, seconds))


async def _head(location: str, rules: StagingRules, seconds: float) -> tuple[int, int | None]:
    guard = Guard(rules)
    host = parse_location(location).host
    with _reaching(guard, host):
        async with guarded_session(guard, aiohttp.ClientTimeout(total=seconds)) as session:
            response = await _followed(session, "HEAD", location, rules)
            async with response:
                return response.status, response.content_length
    raise AssertionError("unreachable")  # _reaching re-raises every error as StagingFailed


def get_text(
    location: str, rules: StagingRules, seconds: float, limit: int, headers: dict[str, str]
) -> tuple[int, bytes]:
    """A GET of the http(s) ``location`` within the rules, in at most ``seconds``: its status
    and at most ``limit`` bytes of its body (more is a ``StagingFailed``). Blocking."""
    return asyncio.run(_get(location, rules, seconds, limit, headers))


async def _get(
    location: str, rules: StagingRules, seconds: float, limit: int, headers: dict[str, str]
) -> tuple[int, bytes]:
    guard = Guard(rules)
    host = parse_location(location).host
    with _reaching(guard, host):
        async with guarded_session(guard, aiohttp.ClientTimeout(total=seconds)) as session:
            response = await _followed(session, "GET", location, rules, headers)
            async with response:
                body = bytearray()
                async for chunk in response.content.iter_chunked(CHUNK):
                    body += chunk
                    if len(body) > limit:
                        raise StagingFailed(f"{host} answered more than {limit} bytes")
                return response.status, bytes(body)
    raise AssertionError("unreachable")  # _reaching re-raises every error as StagingFailed


@contextmanager
def _reaching(guard: Guard, host: str) -> Iterator[None]:
    """A failure to reach ``host`` as staging's: the guard's refusal, or what failed."""
    try:
        yield
    except aiohttp.ClientConnectorError:
        if guard.refused is not None:
            raise guard.refused from None
        raise StagingFailed(f"cannot reach {host}") from None
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise StagingFailed(f"no answer from {host}: {type(exc).__name__}") from None


async def _followed(
    session: aiohttp.ClientSession,
    method: str,
    location: str,
    rules: StagingRules,
    headers: dict[str, str] | None = None,
) -> aiohttp.ClientResponse:
    """The answer to ``method`` on ``location`` once its redirects are followed, each target
    checked as the first; the caller releases it."""
    url = parse_location(location)
    for _ in range(rules.max_redirects + 1):
        check_url(url, location, rules)
        response = await session.request(method, url, allow_redirects=False, headers=headers)
        if response.status not in REDIRECTS:
            return response
        async with response:
            url = _redirect_target(response, url, location)
    raise StagingRefused(
        MAX_REDIRECTS,
        "{location} redirects more than {limit} times; give the data's final URL",
        location=location,
        limit=rules.max_redirects,
    )


async def _download(location: str, out: Path, rules: StagingRules) -> Staged:
    guard = Guard(rules)
    timeout = aiohttp.ClientTimeout(
        total=rules.max_time, sock_connect=rules.timeout, sock_read=rules.timeout
    )
    host = parse_location(location).host
    try:
        async with guarded_session(guard, timeout) as session:
            response = await _followed(session, "GET", location, rules)
            async with response:
                if response.status != 200:
                    raise StagingFailed(
                        f"cannot stage {location}: {response.url} answered {response.status} "
                        f"{response.reason or ''}".rstrip()
                    )
                return await _save(response, location, out, rules)
    except aiohttp.ClientConnectorError:
        if guard.refused is not None:
            raise guard.refused from None
        raise StagingFailed(f"cannot stage {location}: cannot connect to {host}") from None
    except (TimeoutError, aiohttp.ServerTimeoutError):
        raise StagingFailed(
            f"cannot stage {location}: no answer within {rules.timeout:g} s, or not done "
            f"within {rules.max_time:g} s"
        ) from None
    except aiohttp.ClientError as exc:
        raise StagingFailed(f"cannot stage {location}: {type(exc).__name__}: {exc}") from None


def check_url(url: URL, location: str, rules: StagingRules) -> None:
    """A request's target: http(s), with a host; an IP literal (which no resolver sees) must
    be one the rules reach."""
    if url.scheme.lower() not in ("http", "https"):
        raise StagingRefused(
            SCHEME,
            "{location} leads to {target}; downloads follow only http(s):// URLs",
            location=location,
            target=str(url),
        )
    host = http_host(url, location)
    address = parse_address(host)
    if address is not None and host not in rules.allow_hosts:
        refusal = rules.address_refusal(host, address, literal=True)
        if refusal is not None:
            raise refusal


def _redirect_target(response: aiohttp.ClientResponse, url: URL, location: str) -> URL:
    target = response.headers.get("Location")
    if not target:
        raise StagingFailed(f"cannot stage {location}: {url} redirects without a Location")
    try:
        return url.join(URL(target))
    except ValueError:
        raise StagingFailed(
            f"cannot stage {location}: {url} redirects to an invalid URL {target[:200]!r}"
        ) from None


async def _save(
    response: aiohttp.ClientResponse, location: str, out: Path, rules: StagingRules
) -> Staged:
    length = response.content_length
    if length is not None and length > rules.max_bytes:
        raise too_large(rules.max_bytes, location)
    staged = Staged(files=1)
    target = out / file_name(location)
    with open(target, "xb") as sink:
        async for chunk in response.content.iter_chunked(CHUNK):
            staged.bytes += len(chunk)
            if staged.bytes > rules.max_bytes:
                raise too_large(rules.max_bytes, location)
            sink.write(chunk)
    return staged


def file_name(location: str) -> str:
    """The URL's last path segment, when it is a usable file name; else ``data``."""
    name = PurePosixPath(URL(location).path).name
    if name in ("", ".", "..") or "\0" in name:
        return "data"
    return name[:255]
