"""Bearer tokens of the configured OIDC issuers, verified into an :class:`Identity`.

The cryptography and the claim checks are PyJWT's (``jwt.decode`` with a key from the issuer's
JWKS through ``jwt.PyJWKClient``). This module only decides which configured issuer a token
claims to come from, where that issuer's keys are (configured, or OIDC discovery), how often they
may be fetched, and how every failure is reported: a bad token is ``Unauthenticated`` (401), an
issuer whose keys cannot be had is ``IdentityUnavailable`` (503, the client may retry).

Fetching is bounded so that forged tokens cannot make the node hammer an issuer: a token whose
``kid`` is not among the cached keys triggers at most one refetch per ``refetch_interval`` per
issuer (key rotation still works at once), and after a failed fetch no new attempt is made for
``retry_interval``. During an outage keys already fetched keep verifying tokens, even past their
``jwks_cache`` lifespan, until a fetch succeeds again.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import threading
import time
import urllib.request
from typing import Any
from urllib.error import HTTPError
from urllib.parse import urlparse

import jwt
from jwt import PyJWK, PyJWKClient, PyJWKSet

from ..config import AuthConfig, ConfigError, IssuerConfig
from ..errors import IdentityUnavailable, Unauthenticated
from ..identity import ANONYMOUS_IDENTITY, Identity, memberships
from .basic import CACHE_TTL, BasicUsers
from .groups import issuer_names

log = logging.getLogger(__name__)

DISCOVERY_PATH = "/.well-known/openid-configuration"
MAX_TOKEN_LENGTH = 16_384  # far above any real JWT; refuses garbage before parsing it
MAX_DISCOVERY_BYTES = 1_048_576
REQUIRED_CLAIMS = ["exp", "iss", "sub", "aud"]
# the NumericDates (RFC 7519 section 2: JSON numbers of seconds), as messages name them
TIME_CLAIMS = {"exp": "expiry", "nbf": "start of validity", "iat": "issue time"}

# PyJWKClient wraps connection errors, but lets invalid JSON (ValueError) and some socket
# errors raised while reading the body (OSError) through.
_FETCH_ERRORS = (jwt.PyJWTError, OSError, ValueError, http.client.HTTPException)
# attacker-controlled input can reach odd corners of the decoder; none of it may become a 500
_TOKEN_ERRORS = (jwt.PyJWTError, ValueError, TypeError, OverflowError, RecursionError)


def _short(value: object, limit: int = 80) -> str:
    """A client-supplied value quoted for an error detail: ASCII only, and bounded."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return ascii(text)


class _IssuerKeys:
    """The signing keys of one issuer: a lazily built PyJWKClient whose JWK-set cache (lifespan
    ``jwks_cache``) serves known keys without I/O, plus the rate limits and the outage fallback
    that PyJWKClient does not provide (its cooldown counts only successful fetches, so an issuer
    that is down would be asked again on every token with an unknown kid)."""

    def __init__(
        self, config: IssuerConfig, refetch_interval: float, retry_interval: float
    ) -> None:
        self.config = config
        self._refetch_interval = refetch_interval
        self._retry_interval = retry_interval
        self._lock = threading.Lock()  # one fetch at a time per issuer
        self._client: PyJWKClient | None = None
        self._last_good: PyJWKSet | None = None  # kept past its lifespan, for outages
        self._last_refetch = -math.inf  # monotonic time of the last unknown-kid refetch
        self._retry_at = -math.inf  # no fetch before this, after a failure
        self._failure: str | None = None  # why the last fetch failed; None once one succeeds
        for url, key in ((config.issuer, "issuer"), (config.jwks_uri, "jwks_uri")):
            if url is not None and urlparse(url).scheme.lower() not in ("http", "https"):
                raise ConfigError(
                    f"auth.issuers[{config.name}].{key}: {url!r} is not an http(s) URL"
                )
        if config.jwks_uri is not None:
            self._client = self._new_client(config.jwks_uri)  # no I/O: PyJWKClient is lazy

    def signing_key(self, kid: str | None) -> PyJWK:
        """The key to verify a token naming ``kid``; fetches only when the cache cannot say."""
        client = self._client
        if client is not None:
            key = _match(_fresh(client), kid)
            if key is not None:
                return key
        if not self._lock.acquire(blocking=False):
            # another thread is fetching: a key we already know need not wait for it
            key = _match(self._last_good, kid)
            if key is not None:
                return key
            self._lock.acquire()
        try:
            return self._signing_key_locked(kid)
        finally:
            self._lock.release()

    def _signing_key_locked(self, kid: str | None) -> PyJWK:
        now = time.monotonic()
        client = self._client or self._discover_client(now)
        fresh = _fresh(client)
        if fresh is not None:
            key = _match(fresh, kid)  # another thread may have fetched it meanwhile
            if key is not None:
                return key
            # an unknown kid while the keys are fresh: the issuer may have rotated its key,
            # or the token is forged; either way, at most one refetch per interval
            if now - self._last_refetch < self._refetch_interval or now < self._retry_at:
                raise self._unknown(kid)
            self._last_refetch = now
            log.info("issuer %s: refetching keys for unknown kid %s", self.config.name, _short(kid))
        elif now < self._retry_at:  # expired (or never fetched), and the issuer just failed
            key = _match(self._last_good, kid)
            if key is not None:
                return key
            raise self._unavailable()
        try:
            fetched = client.get_jwk_set(refresh=True)
        except _FETCH_ERRORS as exc:
            if isinstance(exc, HTTPError):
                exc.close()
            self._failed(now, f"fetching its keys from {client.uri} failed: {exc}")
            key = _match(self._last_good, kid)
            if key is not None:
                return key  # an outage does not break tokens signed with keys we know
            raise self._unavailable() from None
        self._last_good, self._failure, self._retry_at = fetched, None, -math.inf
        key = _match(fetched, kid)
        if key is None:
            raise self._unknown(kid)
        return key

    def _discover_client(self, now: float) -> PyJWKClient:
        """The JWKS client, its URI found by OIDC discovery; the document is fetched once."""
        if now < self._retry_at:
            raise self._unavailable()
        url = self.config.issuer.rstrip("/") + DISCOVERY_PATH
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                body = response.read(MAX_DISCOVERY_BYTES + 1)
            if len(body) > MAX_DISCOVERY_BYTES:
                raise ValueError("the document is too large")
            document = json.loads(body)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            if isinstance(exc, HTTPError):
                exc.close()
            self._failed(now, f"OIDC discovery at {url} failed: {exc}")
            raise self._unavailable() from None
        jwks_uri = document.get("jwks_uri") if isinstance(document, dict) else None
        if not isinstance(jwks_uri, str) or urlparse(jwks_uri).scheme not in ("http", "https"):
            self._failed(now, f"OIDC discovery at {url} gave no http(s) jwks_uri")
            raise self._unavailable()
        if document.get("issuer") != self.config.issuer:  # OIDC Discovery 1.0, section 4.3
            self._failed(now, f"OIDC discovery at {url} names another issuer")
            raise self._unavailable()
        self._client = self._new_client(jwks_uri)
        return self._client

    def _new_client(self, uri: str) -> PyJWKClient:
        # our own rate limits replace PyJWKClient's cooldown (see the class docstring);
        # PyJWKClient refuses a zero lifespan, so a zero jwks_cache means "a millisecond"
        return PyJWKClient(
            uri,
            cache_jwk_set=True,
            lifespan=max(self.config.jwks_cache.total_seconds(), 0.001),
            timeout=self._timeout,
            cooldown_duration=0,
        )

    @property
    def _timeout(self) -> float:
        return self.config.timeout.total_seconds()

    def _failed(self, now: float, reason: str) -> None:
        self._failure = reason
        self._retry_at = now + self._retry_interval
        log.warning("issuer %s: %s", self.config.name, reason)

    def _unavailable(self) -> IdentityUnavailable:
        reason = (self._failure or "unknown error")[:300]
        return IdentityUnavailable(f"the keys of issuer '{self.config.name}' are unavailable: "
                                   f"{reason}")  # fmt: skip

    def _unknown(self, kid: str | None) -> Unauthenticated | IdentityUnavailable:
        if self._failure is not None:  # the key may exist but the issuer cannot be asked
            return self._unavailable()
        if kid is None:
            return Unauthenticated(
                f"token names no key ('kid') and issuer '{self.config.name}' has several"
            )
        return Unauthenticated(
            f"no signing key of issuer '{self.config.name}' has kid {_short(kid, 40)}"
        )


def _fresh(client: PyJWKClient) -> PyJWKSet | None:
    """The client's cached key set while within its lifespan; never fetches."""
    cache = client.jwk_set_cache
    return cache.get() if cache is not None else None


def _match(jwk_set: PyJWKSet | None, kid: str | None) -> PyJWK | None:
    """The signing key named ``kid``; a token without a kid may use an issuer's only key."""
    if jwk_set is None:
        return None
    keys = [k for k in jwk_set.keys if k.public_key_use in ("sig", None)]
    if kid is None:
        return keys[0] if len(keys) == 1 else None
    return next((k for k in keys if k.key_id == kid), None)


def _groups(claims: dict[str, Any], path: str) -> frozenset[str]:
    """The groups at ``path``: a top-level claim of that exact name (namespaced claims such as
    ``https://example.org/groups`` contain dots), else the dotted path into nested objects."""
    value: Any = claims.get(path)
    if path not in claims:
        value = claims
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, str):
        return frozenset([value])
    if isinstance(value, list):
        return frozenset(g for g in value if isinstance(g, str))
    return frozenset()


def _bearer(authorization: str) -> str:
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise Unauthenticated("the Authorization header is not 'Bearer <token>'",
                              error="invalid_request")  # fmt: skip
    if len(token) > MAX_TOKEN_LENGTH:
        raise Unauthenticated("token too long")
    return token


def _token_error(exc: BaseException) -> Unauthenticated:
    """A short, client-safe detail for why PyJWT refused a token."""
    if isinstance(exc, jwt.ExpiredSignatureError):
        return Unauthenticated("token expired")
    if isinstance(exc, jwt.ImmatureSignatureError):
        return Unauthenticated("token not yet valid")
    if isinstance(exc, jwt.InvalidSignatureError):
        return Unauthenticated("signature verification failed")
    if isinstance(exc, jwt.InvalidAudienceError):
        return Unauthenticated("token audience not accepted")
    if isinstance(exc, jwt.InvalidIssuerError):
        return Unauthenticated("token issuer not accepted")
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return Unauthenticated("token algorithm not accepted")
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return Unauthenticated(f"token lacks the '{exc.claim}' claim")
    if isinstance(exc, jwt.exceptions.InvalidSubjectError):
        return Unauthenticated("token subject ('sub') is not a string")
    if isinstance(exc, jwt.InvalidIssuedAtError):
        return Unauthenticated("token issue time ('iat') is invalid")
    if isinstance(exc, jwt.DecodeError):
        return Unauthenticated("malformed token")
    return Unauthenticated("token cannot be verified")


class Authenticator:
    """Turns an ``Authorization`` header into an :class:`Identity`: a bearer token of a
    configured issuer, or the Basic credentials of a local user (:mod:`.basic`).

    Safe to call from many threads at once; keys are fetched lazily, on the first token of
    each issuer, so building one does no I/O. ``refetch_interval`` bounds the refetches caused by
    unknown kids and ``retry_interval`` the fetch attempts after a failure, per issuer (seconds).
    Basic credentials are CPU-heavy to verify: call :meth:`authenticate` off the event loop, and
    :meth:`cached` (cheap) first.
    """

    def __init__(
        self, auth: AuthConfig, *, refetch_interval: float = 10.0, retry_interval: float = 5.0,
        basic_cache_ttl: float = CACHE_TTL,
    ) -> None:  # fmt: skip
        self.auth = auth
        self.issuer_names = issuer_names(auth)  # what qualifies a group name
        self._issuers: dict[str, list[_IssuerKeys]] = {}  # by exact 'iss'
        for config in auth.issuers:
            keys = _IssuerKeys(config, refetch_interval, retry_interval)
            self._issuers.setdefault(config.issuer, []).append(keys)
        self.basic: BasicUsers | None = None
        if auth.basic.users:
            self.basic = BasicUsers(
                auth.basic, cache_ttl=basic_cache_ttl, issuers=self.issuer_names
            )

    def cached(self, authorization: str) -> Identity | None:
        """The identity of Basic credentials verified moments ago; never verifies anything."""
        scheme, _, credentials = authorization.strip().partition(" ")
        if self.basic is None or scheme.lower() != "basic":
            return None
        return self.basic.cached(credentials.strip())

    def challenges(self, exc: Unauthenticated) -> list[str]:
        """The ``WWW-Authenticate`` values of a 401: Bearer (RFC 6750; the error only when a
        token was sent) where issuers are configured, or where nothing else is; Basic (RFC 7617)
        where Basic users are."""
        values = []
        if self.auth.issuers or self.basic is None:
            value = 'Bearer realm="ebroker"'
            if exc.error:
                detail = exc.detail.replace('"', "'").replace("\\", "/")[:200]
                value += f', error="{exc.error}", error_description="{detail}"'
            values.append(value)
        if self.basic is not None:
            values.append(f'Basic realm="{self.auth.basic.realm}", charset="UTF-8"')
        return values

    def _accepted(self) -> str:
        """What this node accepts, for messages refusing what it does not."""
        what = []
        if self.auth.issuers:
            names = ", ".join(i.name for i in self.auth.issuers)
            plural = "s" if len(self.auth.issuers) > 1 else ""
            what.append(f"bearer tokens from issuer{plural} {names}")
        if self.basic is not None:
            what.append("Basic credentials of its users")
        if self.auth.anonymous:
            what.append("anonymous calls (no Authorization header)")
        return " and ".join(what)

    def authenticate(self, authorization: str | None) -> Identity:
        """The caller's identity; raises Unauthenticated (401) or IdentityUnavailable (503)."""
        if authorization is None:
            if self.auth.anonymous:
                return ANONYMOUS_IDENTITY
            wanted = ["a bearer token"] if self.auth.issuers else []
            if self.basic is not None:
                wanted.append("Basic credentials (user name and password)")
            raise Unauthenticated(f"this node requires {' or '.join(wanted)}", error=None)
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "basic":
            if self.basic is None:
                raise Unauthenticated(
                    f"this node accepts no Basic credentials; it accepts {self._accepted()}",
                    error="invalid_request",
                )
            return self.basic.authenticate(credentials.strip())
        if scheme.lower() == "bearer" and not self.auth.issuers:
            raise Unauthenticated(
                f"this node accepts no bearer tokens; it accepts {self._accepted()}",
                error="invalid_request" if self.basic is None else None,
            )
        if self.basic is not None and scheme.lower() != "bearer":
            if self.auth.issuers:
                raise Unauthenticated(
                    "the Authorization header is not 'Bearer <token>' or 'Basic <credentials>'",
                    error="invalid_request",
                )
            raise Unauthenticated("the Authorization header is not 'Basic <credentials>'",
                                  error=None)  # fmt: skip
        token = _bearer(authorization)
        try:
            unverified = jwt.decode_complete(token, options={"verify_signature": False})
        except _TOKEN_ERRORS:
            raise Unauthenticated("malformed token") from None
        header, payload = unverified["header"], unverified["payload"]
        _check_numeric_dates(payload)
        iss = payload.get("iss")
        if not isinstance(iss, str):
            raise Unauthenticated("token lacks the 'iss' claim")
        candidates = self._issuers.get(iss)
        if not candidates:
            raise Unauthenticated(f"tokens of issuer {_short(iss)} are not accepted here")
        # several configured issuers may share an 'iss' (e.g. different audiences): first wins
        first_error: Unauthenticated | None = None
        for keys in candidates:
            try:
                return self._verify(token, header, keys)
            except Unauthenticated as exc:
                first_error = first_error or exc
        assert first_error is not None
        raise first_error

    def _verify(self, token: str, header: dict[str, Any], keys: _IssuerKeys) -> Identity:
        config = keys.config
        alg = header.get("alg")
        if alg not in config.algorithms:  # before any fetch: 'none' and HS* never cost I/O
            raise Unauthenticated(f"token algorithm {_short(alg, 20)} not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("token 'kid' is not a string")
        key = keys.signing_key(kid)
        try:
            claims = jwt.decode(
                token,
                key=key,  # a PyJWK: PyJWT also insists the token's alg is the key's
                algorithms=config.algorithms,
                audience=config.audience,
                issuer=config.issuer,
                leeway=config.leeway.total_seconds(),
                options={"require": REQUIRED_CLAIMS},
            )
        except _TOKEN_ERRORS as exc:
            raise _token_error(exc) from None
        subject = claims["sub"]
        if not subject:
            raise Unauthenticated("token subject ('sub') is empty")
        groups = _groups(claims, config.groups_claim)
        return Identity(
            subject=subject,
            groups=groups,
            issuer=config.name,
            claims=claims,
            memberships=memberships(config.name, groups, self.issuer_names),
        )


def _check_numeric_dates(payload: dict[str, Any]) -> None:
    """``exp``, ``nbf`` and ``iat`` are numbers of seconds. PyJWT reads them with ``int()``, so
    a string (``"exp": "99999999999"``) or a boolean would otherwise pass for a time."""
    for claim, what in TIME_CLAIMS.items():
        value = payload.get(claim, 0)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise Unauthenticated(
                f"token {what} ('{claim}') is not a NumericDate (a number of seconds)"
            )


__all__ = ["Authenticator"]
