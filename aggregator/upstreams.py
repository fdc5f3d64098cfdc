"""Talking to upstreams: one shared aiohttp session (bounded connections), a deadline per call,
a circuit breaker per upstream, answers read whole up to a size cap, and each upstream's node
description cached for a while."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import aiohttp

from broker_core import reading
from broker_core.booking.pools import PoolView
from broker_core.observability import request_ids

from . import accelerators
from .config import AggregatorConfig, BreakerConfig, UpstreamConfig
from .metrics import UPSTREAM_CALLS

log = logging.getLogger(__name__)


def bearer(config: UpstreamConfig, token: str | None, service: bool = False) -> str | None:
    """The token a call to this upstream carries: the caller's, where it is passed on; the
    service credential for the aggregator's own housekeeping (``service``) where there is no
    caller's; else the aggregator's own token."""
    if config.forward_token and token:
        return token
    if service and config.service_token:
        return config.service_token
    return config.token


class UpstreamError(Exception):
    """An upstream could not be asked, or answered with something unusable."""


async def read_whole(response: aiohttp.ClientResponse, cap: int) -> bytes:
    """The whole answer up to ``cap`` bytes; a larger one is the upstream's fault."""
    try:
        return await reading.read_whole(response, cap)
    except reading.AnswerTooLarge as exc:
        raise UpstreamError(str(exc)) from None


@dataclass
class Answer:
    status: int
    document: Any
    location: str | None = None  # a redirect's target, absolute
    followed: bool = False  # the document is the redirect target's (a 303 followed)


@dataclass
class Breaker:
    """Closed while calls succeed; open (skipped) for a growing back-off after ``failures``
    consecutive failures; then one call is let through to probe it. A named breaker (an
    upstream's own) logs each change of state once: failing, open, recovered; never a line per
    call."""

    config: BreakerConfig
    failures: int = 0
    open_until: float = 0.0
    opened: int = 0
    name: str | None = None

    def allows(self, now: float) -> bool:
        return now >= self.open_until

    def success(self) -> None:
        if self.failures and self.name:
            log.info("upstream %s answers again, after %d failed calls", self.name, self.failures)
        self.failures, self.open_until, self.opened = 0, 0.0, 0

    def failure(self, now: float, reason: str = "") -> None:
        self.failures += 1
        if self.failures == 1 and self.name:
            log.warning("upstream %s failing: %s", self.name, reason or "a failed call")
        if self.failures >= self.config.failures:
            backoff = self.config.backoff.total_seconds() * 2 ** min(self.opened, 30)
            self.open_until = now + min(backoff, self.config.max_backoff.total_seconds())
            if self.opened == 0 and self.name:
                log.warning("upstream %s skipped for %.0f s after %d failed calls (last: %s); "
                            "then one call probes it", self.name, self.open_until - now,
                            self.failures, reason or "a failed call")  # fmt: skip
            self.opened += 1

    def state(self, now: float) -> str:
        if not self.allows(now):
            wait = self.open_until - now
            return f"open: backing off for {wait:.0f} s after {self.failures} failures"
        return "ok" if self.failures == 0 else f"degraded: {self.failures} recent failures"

    def state_code(self, now: float) -> int:
        """0 closed, 1 degraded (recent failures), 2 open: the breaker-state metric."""
        if not self.allows(now):
            return 2
        return 1 if self.failures else 0


@dataclass
class Upstream:
    config: UpstreamConfig
    breaker: Breaker
    kinds: frozenset[str] | None = None  # from its node description, when known
    # its open pools, from the same description (for the accelerators it has); None: unknown
    pools: tuple[PoolView, ...] | None = None
    described_at: float = 0.0
    # it has no node description (a 404 on /node, as a node of another implementation may
    # answer): it is taken to accept anything
    undescribed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def name(self) -> str:
        return self.config.name


class Upstreams:
    """Every upstream of one aggregator; lives on one event loop."""

    def __init__(self, config: AggregatorConfig):
        self.config = config
        self.by_name = {
            u.name: Upstream(u, Breaker(config.breaker, name=u.name)) for u in config.upstreams
        }
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.config.fanout.max_connections),
                headers={"Accept": "application/json"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(
        self,
        upstream: Upstream,
        method: str,
        url: str,
        *,
        document: Any = None,
        body: bytes | None = None,
        token: str | None = None,
        deadline: float | None = None,
        follow: bool = False,
        late_after: float | None = None,
        judged: bool = True,
        service: bool = False,
    ) -> Answer:
        """One call within the upstream's timeout (and the overall deadline, if sooner); a
        failure to connect, a timeout, a 5xx or an unreadable success counts against its
        breaker. A 4xx whose body is empty or not JSON (a bare 404) has no document. With
        ``follow``, a ``303 See Other`` is followed with a GET within the same deadline unless
        its body already is the document (the status stays 303, ``followed`` says which). An
        answer after ``late_after`` (when the fan-out stopped waiting for it) is read but counts
        against the breaker as a timeout would; a call not ``judged`` is not held back by the
        breaker and does not count for it. ``service``: the aggregator's own housekeeping,
        which has no caller's token (see ``bearer``)."""
        answer = await self._once(upstream, method, url, document=document, body=body,
                                  token=token, deadline=deadline, late_after=late_after,
                                  judged=judged, service=service)  # fmt: skip
        if not follow or answer.status != 303 or answer.location is None:
            return answer
        if isinstance(answer.document, dict) and answer.document.get("kind"):
            return answer  # the session (or offer set) came with the redirect
        target = await self._once(upstream, "GET", answer.location, token=token,
                                  deadline=deadline, late_after=late_after, judged=judged,
                                  service=service)  # fmt: skip
        if target.status != 200:
            raise UpstreamError(f"it redirected to {answer.location}, which answered "
                                f"{target.status}")  # fmt: skip
        return Answer(303, target.document, answer.location, followed=True)

    async def _once(
        self,
        upstream: Upstream,
        method: str,
        url: str,
        *,
        document: Any = None,
        body: bytes | None = None,
        token: str | None = None,
        deadline: float | None = None,
        late_after: float | None = None,
        judged: bool = True,
        service: bool = False,
    ) -> Answer:
        # housekeeping (a rejection in the background) neither waits for the breaker nor
        # counts for it: a fresh breaker takes its outcome
        breaker = upstream.breaker if judged else Breaker(upstream.breaker.config)
        now = time.monotonic()
        if not breaker.allows(now):
            raise UpstreamError(breaker.state(now))
        timeout = upstream.config.timeout.total_seconds()
        if deadline is not None:
            timeout = max(min(timeout, deadline - now), 0.001)
        headers = request_ids.outgoing()
        if body is not None:  # the same request to many upstreams is encoded once
            headers["Content-Type"] = "application/json"
        carried = bearer(upstream.config, token, service)
        if carried:
            headers["Authorization"] = f"Bearer {carried}"
        started = time.perf_counter()
        try:
            answer = await self._request(upstream, method, url, document, body, headers,
                                         timeout, breaker, late_after)  # fmt: skip
        except UpstreamError as exc:
            UPSTREAM_CALLS.labels(upstream.name, "error").observe(time.perf_counter() - started)
            breaker.failure(time.monotonic(), str(exc))
            raise
        UPSTREAM_CALLS.labels(upstream.name, "ok").observe(time.perf_counter() - started)
        return answer

    async def _request(
        self,
        upstream: Upstream,
        method: str,
        url: str,
        document: Any,
        body: bytes | None,
        headers: dict[str, str],
        timeout: float,
        breaker: Breaker,
        late_after: float | None,
    ) -> Answer:
        """One HTTP exchange; anything that counts against the breaker is an UpstreamError."""
        try:
            async with self.session.request(
                method,
                url,
                json=document if body is None else None,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                status = response.status
                location = response.headers.get("Location")
                content_type = response.content_type
                raw = await read_whole(response, self.config.fanout.max_answer_bytes)
        except UpstreamError:
            raise
        except TimeoutError:
            raise UpstreamError(f"no answer within {timeout:.1f} s") from None
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamError(f"its answer was cut short ({exc})"[:300]) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"cannot reach it ({type(exc).__name__}: {exc})"[:300]) from None
        if status >= 500:
            raise UpstreamError(f"it answered {status}")
        try:
            document = json.loads(raw) if raw.strip() else None
        except ValueError:
            if status < 300:
                raise UpstreamError(f"its answer ({status}, {content_type}) is not JSON") from None
            document = None  # a bare 404, an HTML error page: the status says enough
        now = time.monotonic()
        if late_after is not None and now > late_after:
            breaker.failure(now, f"it answered after the fan-out stopped waiting ({status})")
        else:
            breaker.success()
        return Answer(status, document, urljoin(url, location) if location else None)

    async def text(self, upstream: Upstream, url: str, *, token: str | None) -> str | None:
        """A text resource (session logs); None when the upstream has no such resource."""
        headers = {"Accept": "text/plain", **request_ids.outgoing()}
        carried = bearer(upstream.config, token)
        if carried:
            headers["Authorization"] = f"Bearer {carried}"
        timeout = aiohttp.ClientTimeout(total=upstream.config.timeout.total_seconds())
        try:
            async with self.session.get(url, headers=headers, timeout=timeout) as response:
                if response.status == 404:
                    return None
                if response.status != 200:
                    raise UpstreamError(f"it answered {response.status}")
                raw = await read_whole(response, self.config.fanout.max_answer_bytes)
                return raw.decode("utf-8", errors="replace")
        except TimeoutError:
            raise UpstreamError("no answer in time") from None
        except aiohttp.ClientPayloadError:
            raise UpstreamError("its answer was cut short") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"cannot reach it ({type(exc).__name__})") from None

    async def kinds(
        self, upstream: Upstream, deadline: float | None = None
    ) -> frozenset[str] | None:
        """The kinds the upstream accepts (its /node), cached; None when unknown."""
        ttl = self.config.fanout.description_ttl.total_seconds()
        if time.monotonic() - upstream.described_at < ttl:
            return upstream.kinds
        if upstream.lock.locked():
            return upstream.kinds  # being described now: nobody waits for it
        async with upstream.lock:
            # a failed or missing description is not asked again for a while either, so a hung
            # upstream costs each request one deadline, not two
            upstream.described_at = time.monotonic()
            try:
                answer = await self.call(
                    upstream, "GET", f"{upstream.config.base}/node", deadline=deadline
                )
            except UpstreamError:
                return upstream.kinds  # the last known, or unknown
            kinds = answer.document.get("kinds") if isinstance(answer.document, dict) else None
            if answer.status == 200 and isinstance(kinds, list):
                upstream.kinds = frozenset(k for k in kinds if isinstance(k, str))
                upstream.pools = accelerators.pools_of(answer.document)
                upstream.undescribed = False
            elif answer.status in (404, 405, 501):
                upstream.kinds, upstream.undescribed = None, True
            return upstream.kinds
