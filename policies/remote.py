"""A global policy decided by a remote policy service, so that a federation (or a site) can keep
one set of rules for many nodes instead of copying them into every node's configuration.

Before the node offers anything it asks the service about the caller and the request; the
answer allows, denies or limits the request. Answers are cached briefly (many offers requests
repeat), and a service that cannot be asked in time refuses the request (``on_failure: deny``,
the default: fail closed) or lets it through with a warning (``on_failure: allow``).

Options::

    url: https://policy.example.org/decide   # required, http or https
    timeout: PT2S          # the whole call, queueing included (ISO 8601 or seconds)
    on_failure: deny       # deny | allow
    cache_ttl: PT30S       # how long an answer is reused; 0 disables the cache
    cache_size: 10000      # answers kept at most (oldest dropped first)
    headers: {X-Api-Key: ...}   # extra request headers, e.g. credentials

Wire protocol (what a policy service implements)
------------------------------------------------
Request: ``POST <url>`` with ``Content-Type: application/json`` and the configured headers;
redirects are not followed (so credentials in ``headers`` go nowhere else)::

    {"node": "<the node's site name, or null>",
     "request": {"identity": {"subject": "alice", "issuer": "main", "groups": ["federation"],
                              "anonymous": false},
                 "amounts": {"cores": {"min": 1, "max": 4}, ...},
                 "duration": 3600,                  # seconds the session is to be available
                 "windows": [[from, to], ...] | null,   # epoch seconds; null = as soon as possible
                 "pools": ["platform/pool", ...],   # every pool the node could draw on
                 "kinds": {"compute": ["<kind URI>", ...], ...},
                 "project": "<project>" | null,
                 "direct": false}}

Answer: status 2xx and a JSON body::

    {"decision": "allow" | "deny" | "limit",
     "messages": ["why", ...],                          # optional
     "limits": {"pools": ["platform/pool", ...],       # optional; only these pools may be used
                "caps": {"cores": 100, "memory": 64},   # optional; per-session caps per class
                "max_duration": 3600,                   # optional; seconds
                "windows": [[from, to], ...]}}          # optional; [from, to) epoch seconds the
                                                        # session's available period must lie in

``limits`` is read only with ``"limit"`` (and ignored otherwise). The answer is validated
strictly (unknown keys, resource classes or wrong types are errors): an answer the node does not
fully understand is not half applied. A non-2xx status, a malformed answer, a timeout or a
connection failure is a failure, handled by ``on_failure``; failures are never cached.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from datetime import timedelta
from typing import Annotated, Any, Literal

import aiohttp
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from yarl import URL

from broker_core.config import Model, NonNegativeDuration, PositiveDuration, ResourceClass
from broker_core.kinds.base import message
from broker_core.reading import AnswerTooLarge, read_whole

from .contract import Decision, Limit, PolicyBase, PolicyHost, PolicyRequest, PoolRef

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 1 << 20  # a policy answer is small; a huge one is a faulty service


class RemotePolicyOptions(Model):
    url: str
    timeout: PositiveDuration = Field(default=timedelta(seconds=2))
    on_failure: Literal["deny", "allow"] = "deny"
    cache_ttl: NonNegativeDuration = Field(default=timedelta(seconds=30))
    cache_size: int = Field(default=10000, ge=1)
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        try:
            url = URL(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        return value


class _Strict(Model):
    model_config = ConfigDict(extra="forbid", strict=True)


Window = Annotated[list[int], Field(min_length=2, max_length=2)]  # [from, to), epoch seconds


class AnswerLimits(_Strict):
    pools: list[str] | None = None
    caps: dict[ResourceClass, int] = Field(default_factory=dict)
    max_duration: int | None = Field(default=None, ge=0)
    windows: list[Window] | None = None

    @field_validator("pools")
    @classmethod
    def _pool_names(cls, pools: list[str] | None) -> list[str] | None:
        for pool in pools or []:
            if pool.count("/") != 1 or not all(pool.split("/")):
                raise ValueError(f"{pool!r} is not 'platform/pool'")
        return pools

    @field_validator("caps")
    @classmethod
    def _caps(cls, caps: dict[str, int]) -> dict[str, int]:
        for name, cap in caps.items():
            if cap < 0:
                raise ValueError(f"the cap on {name} is negative")
        return caps

    @field_validator("windows")
    @classmethod
    def _windows(cls, windows: list[list[int]] | None) -> list[list[int]] | None:
        for start, end in windows or []:
            if start >= end:
                raise ValueError(f"window [{start}, {end}] is empty or reversed")
        return windows


class Answer(_Strict):
    """The policy service's answer (see the module docstring)."""

    decision: Literal["allow", "deny", "limit"]
    messages: list[str] = Field(default_factory=list)
    limits: AnswerLimits | None = None

    @model_validator(mode="before")
    @classmethod
    def _limits_only_with_limit(cls, data: Any) -> Any:
        """Limits sent with allow or deny are ignored, not validated."""
        if isinstance(data, dict) and data.get("decision") != "limit":
            return {k: v for k, v in data.items() if k != "limits"}
        return data


class PolicyServiceError(Exception):
    """The service could not be asked. ``reason`` is short and safe to show to the client;
    ``detail`` (URL, exception text) only goes to the log."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


class RemotePolicy(PolicyBase):
    """Asks a remote global policy service (see the module docstring for the protocol)."""

    options_model = RemotePolicyOptions  # names the known keys in config errors

    def __init__(self, name: str, options: dict[str, Any], host: PolicyHost | None):
        super().__init__(name, options, host)
        self.options = RemotePolicyOptions.model_validate(options)
        config = getattr(host, "config", None)
        self.node_name: str | None = config.site.name if config is not None else None
        self._timeout = self.options.timeout.total_seconds()
        self._ttl = self.options.cache_ttl.total_seconds()
        self._cache: OrderedDict[str, tuple[float, Answer]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._closed = False
        # one event loop in a daemon thread and one shared client session on it: evaluate()
        # runs in many worker threads at once, which all share its connection pool
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name=f"policy-{name}", daemon=True)
        self._thread.start()
        self._session: aiohttp.ClientSession = asyncio.run_coroutine_threadsafe(
            self._new_session(), self._loop
        ).result()

    # --- the event loop thread -------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:  # stopped by close(): finish what is left so nothing is destroyed pending
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _new_session(self) -> aiohttp.ClientSession:
        headers = {"Accept": "application/json", **self.options.headers}
        return aiohttp.ClientSession(headers=headers)

    async def _ask(self, body: dict[str, Any]) -> Answer:
        url = self.options.url
        try:
            async with asyncio.timeout(self._timeout):
                async with self._session.post(url, json=body, allow_redirects=False) as response:
                    status = response.status
                    raw = await read_whole(response, MAX_ANSWER_BYTES)
        except TimeoutError:
            raise PolicyServiceError(f"timed out after {self._timeout:g}s", url) from None
        except AnswerTooLarge:
            raise PolicyServiceError("its answer is too large", url) from None
        except aiohttp.ClientConnectionError as exc:
            raise PolicyServiceError("cannot connect to it", f"{url}: {exc}") from None
        except aiohttp.ClientError as exc:
            reason = f"the request failed ({type(exc).__name__})"
            raise PolicyServiceError(reason, f"{url}: {exc}") from None
        if not 200 <= status < 300:
            raise PolicyServiceError(f"it answered HTTP {status}", url)
        try:
            return Answer.model_validate_json(raw)
        except ValidationError as exc:
            detail = f"{url}: {exc}".replace("\n", "; ")
            raise PolicyServiceError("its answer is malformed", detail) from None

    # --- called from worker threads ----------------------------------------------------------

    def evaluate(self, request: PolicyRequest) -> Decision:
        """The service's decision; never raises (a failure is decided by ``on_failure``)."""
        body = {"node": self.node_name, "request": request.summary()}
        key = hashlib.sha256(
            json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        answer = self._cached(key)
        if answer is None:
            try:
                answer = self._call(body)
            except PolicyServiceError as exc:
                return self._failure(exc.reason, exc.detail)
            except Exception as exc:  # a fault of ours must not take the node's request down
                log.exception("global policy %s: unexpected error", self.name)
                return self._failure(f"internal error ({type(exc).__name__})")
            self._store(key, answer)
        return self._decision(answer)

    def _call(self, body: dict[str, Any]) -> Answer:
        with self._state_lock:
            if self._closed:
                raise PolicyServiceError("the policy is closed")
            future = asyncio.run_coroutine_threadsafe(self._ask(body), self._loop)
        try:
            # the coroutine has its own timeout; this one also covers queueing on the loop
            return future.result(timeout=self._timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise PolicyServiceError(
                f"timed out after {self._timeout:g}s", self.options.url
            ) from None
        except concurrent.futures.CancelledError:
            raise PolicyServiceError("the policy is closed") from None

    def _decision(self, answer: Answer) -> Decision:
        """A fresh Decision per call: decisions are mutable, cached answers must not change."""
        template = "global policy {policy}: {reason}"
        if answer.decision == "deny":
            messages = [
                message(template, level="WARN", policy=self.name, reason=text)
                for text in answer.messages
            ] or [message("global policy {policy} refused the request", "WARN", policy=self.name)]
            return Decision(allowed=False, messages=messages)
        decision = Decision(
            messages=[message(template, policy=self.name, reason=t) for t in answer.messages]
        )
        limits = answer.limits if answer.decision == "limit" else None
        if limits is not None:
            if limits.pools is not None:
                decision.pools = frozenset(PoolRef(*p.split("/")) for p in limits.pools)
            rule = f"global policy {self.name}"
            decision.limits = [Limit(c, cap, rule=rule) for c, cap in limits.caps.items()]
            decision.max_duration = limits.max_duration
            if limits.windows is not None:
                decision.windows = [(start, end) for start, end in limits.windows]
        return decision

    def _failure(self, reason: str, detail: str | None = None) -> Decision:
        outcome = "allowing" if self.options.on_failure == "allow" else "refusing"
        log.warning(
            "global policy %s: the policy service could not be asked: %s%s; %s the request",
            self.name, reason, f" ({detail})" if detail else "", outcome,
        )  # fmt: skip
        if self.options.on_failure == "allow":
            return Decision(
                messages=[
                    message(
                        "global policy {policy}: the policy service could not be asked "
                        "({reason}); allowed without asking it",
                        level="WARN",
                        policy=self.name,
                        reason=reason,
                    )
                ]
            )
        return Decision.deny(
            "global policy {policy}: the policy service could not be asked ({reason})",
            policy=self.name,
            reason=reason,
        )

    # --- the cache -----------------------------------------------------------------------------

    def _cached(self, key: str) -> Answer | None:
        if self._ttl <= 0:
            return None
        with self._cache_lock:
            entry = self._cache.get(key)
            if entry is None:
                return None
            expires, answer = entry
            if expires <= time.monotonic():
                del self._cache[key]
                return None
            return answer

    def _store(self, key: str, answer: Answer) -> None:
        if self._ttl <= 0:
            return
        with self._cache_lock:
            self._cache[key] = (time.monotonic() + self._ttl, answer)
            self._cache.move_to_end(key)
            while len(self._cache) > self.options.cache_size:
                self._cache.popitem(last=False)

    def close(self) -> None:
        """Close the shared session and stop the loop thread; later calls fail (on_failure)."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._session.close(), self._loop).result(5)
        except Exception:  # closing is best effort: the loop stops either way
            log.debug("global policy %s: closing the session failed", self.name, exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        with self._cache_lock:
            self._cache.clear()
