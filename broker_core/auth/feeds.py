"""Feed tokens: what a calendar app puts in the URL of ``GET /sessions.ics``, since it cannot
send a bearer header.

A feed token is a capability of one owner to read their own session feed, and nothing else:

- it is accepted on ``/sessions.ics`` only (``http.identity.Authentication`` reads the
  ``token`` query parameter there and nowhere else), and is no bearer token: sent to any other
  operation, or as an ``Authorization`` header, it is refused like any bad credentials;
- it names its scope (``sessions.ics``) and its owner, and expires (``auth.feeds.lifetime``,
  180 days by default, at most 400);
- it is signed (HMAC-SHA256) with a key derived from the node's ``auth.feeds.secret``, so
  nobody can make one, and changing the secret revokes every token at once;
- the identity it gives has no groups, so it is never an admin's, whoever asked for it, and it
  reads nothing once its owner's issuer (or Basic users) are no longer configured;
- it is made only for a caller who authenticated (``POST /feed-tokens``), never for the
  anonymous caller, whose sessions are everyone's who calls anonymously.

Tokens are not stored: the node keeps no list of them. A URL with a token ends up in calendar
apps, proxies' logs and browser histories, which is why it reads one feed and expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass

from ..config import BASIC_ISSUER, AuthConfig
from ..errors import Conflict, Forbidden, Unauthenticated
from ..identity import Identity
from ..schedule import instant

PREFIX = "ebf1"  # the format's version, and what tells a feed token from any other text
SCOPE = "sessions.ics"
MAX_TOKEN_CHARS = 1024


@dataclass(frozen=True)
class FeedToken:
    token: str
    owner: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(secret: str) -> bytes:
    """The signing key: the configured secret, bound to this one use of it."""
    return hmac.new(secret.encode(), b"ebroker feed tokens v1", hashlib.sha256).digest()


def _signature(secret: str, signed: str) -> str:
    return _b64(hmac.new(_key(secret), signed.encode(), hashlib.sha256).digest())


def enabled(config: AuthConfig) -> bool:
    return config.feeds.secret is not None


def make_token(config: AuthConfig, identity: Identity, now: int) -> FeedToken:
    """A feed token of this (authenticated) caller, valid from ``now`` for the configured
    lifetime."""
    secret = config.feeds.secret
    if secret is None:
        raise ValueError("feed tokens are not configured")
    expires = now + int(config.feeds.lifetime.total_seconds())
    payload = _b64(
        json.dumps({"o": identity.owner, "s": SCOPE, "x": expires}, separators=(",", ":")).encode()
    )
    signed = f"{PREFIX}.{payload}"
    return FeedToken(f"{signed}.{_signature(secret, signed)}", identity.owner, expires)


def read_token(config: AuthConfig, token: str, now: int) -> Identity:
    """The identity a feed token gives (its owner, no groups); Unauthenticated for anything
    that is not a valid, unexpired feed token of this node, or whose owner's issuer is gone."""
    secret = config.feeds.secret
    if secret is None:
        raise Unauthenticated("feed tokens are not enabled on this node")
    bad = Unauthenticated("the feed token is not valid")
    parts = token.split(".")
    if len(token) > MAX_TOKEN_CHARS or len(parts) != 3 or parts[0] != PREFIX:
        raise bad
    signed = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_signature(secret, signed), parts[2]):
        raise bad
    try:
        claims = json.loads(_unb64(parts[1]))
        owner, scope, expires = claims["o"], claims["s"], claims["x"]
    except (binascii.Error, ValueError, TypeError, KeyError, UnicodeDecodeError):
        raise bad from None
    if scope != SCOPE or not isinstance(owner, str) or not isinstance(expires, int):
        raise bad
    if expires <= now:
        raise Unauthenticated("the feed token has expired: make a new one (POST /feed-tokens)")
    issuer, colon, subject = owner.partition(":")
    known = {i.name for i in config.issuers} | ({BASIC_ISSUER} if config.basic.users else set())
    if not colon or issuer not in known:
        raise bad
    return Identity(subject=subject, issuer=issuer)


def feed_token_document(
    config: AuthConfig, base_url: str, identity: Identity, now: int
) -> dict[str, str]:
    """``POST /feed-tokens``: a new feed token of the caller and the feed URL with it; a 403
    for the anonymous caller, a 409 where the node has no feed secret."""
    if identity.anonymous:
        raise Forbidden("sign in to make a feed token: an anonymous caller's feed is everyone's")
    if not enabled(config):
        raise Conflict(
            "feed tokens are not enabled on this node (auth.feeds.secret); the feed still "
            "answers a bearer token or Basic credentials"
        )
    made = make_token(config, identity, now)
    return {
        "token": made.token,
        "url": f"{base_url}/sessions.ics?token={made.token}",
        "scope": SCOPE,
        "owner": made.owner,
        "expires": instant(made.expires),
    }


_IN_TEXT = re.compile(rf"\b{PREFIX}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class MaskFeedTokens(logging.Filter):
    """Feed tokens are in URLs (``/sessions.ics?token=...``), so in the server's access log
    lines: this masks them there, as the configuration's secrets are masked everywhere."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(a, str) and PREFIX in a for a in record.args
        ):
            record.args = tuple(
                _IN_TEXT.sub(f"{PREFIX}.***", a) if isinstance(a, str) else a for a in record.args
            )
        if isinstance(record.msg, str) and PREFIX in record.msg:
            record.msg = _IN_TEXT.sub(f"{PREFIX}.***", record.msg)
        return True


def mask_in_access_log() -> None:
    """Mask feed tokens in uvicorn's access log (once per process)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, MaskFeedTokens) for f in access.filters):
        access.addFilter(MaskFeedTokens())
