"""A real OIDC issuer for tests: its own keys, discovery and JWKS served over HTTP.

Usage::

    with OidcIssuer() as issuer:
        config = {"auth": issuer.auth_config()}          # or {"issuers": [issuer.issuer_config()]}
        headers = {"Authorization": f"Bearer {issuer.token(sub='alice', groups=['admins'])}"}

The issuer publishes one RSA key (``RS256``, the default for :meth:`OidcIssuer.token`) and one
EC P-256 key (``ES256``). It can rotate its RSA key, go down (``down = True``: every response a
500), answer slowly (``delay``) or serve a broken JWKS (``jwks_body``), and counts what it serves.

It also serves the OAuth 2.0 device authorization grant (RFC 8628), for the client's ``login``:
``POST /device`` gives a device code and a user code, and ``POST /token`` answers
``authorization_pending`` until the test plays the user, with :meth:`OidcIssuer.approve` (or
:meth:`OidcIssuer.deny`) of the user code (:meth:`OidcIssuer.wait_for_user_code` waits for a
client to ask for one). An approved code gives a token of :meth:`OidcIssuer.token` for the
subject and groups approved, and a refresh token the ``refresh_token`` grant takes.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import EllipsisType
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    """The public half of ``key`` as a JWK, as an issuer's JWKS lists it."""
    if isinstance(key, rsa.RSAPrivateKey):
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        jwk["alg"] = "RS256"
    else:
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        jwk["alg"] = "ES256"
    jwk.update(kid=kid, use="sig")
    return jwk


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class OidcIssuer:
    """An OIDC issuer on ``127.0.0.1`` with a free port, served from a daemon thread."""

    def __init__(self, audience: str = "ebroker") -> None:
        self.audience = audience
        self.rsa_key: rsa.RSAPrivateKey = rsa_key()
        self.rsa_kid = f"rsa-{secrets.token_hex(4)}"
        self.ec_key: ec.EllipticCurvePrivateKey = ec_key()
        self.ec_kid = f"ec-{secrets.token_hex(4)}"
        self.down = False  # every response is a 500
        self.delay = 0.0  # seconds before each response
        self.jwks_body: bytes | None = None  # served instead of the real JWKS (a 200)
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        # the device grant: seconds between polls it asks for, how long a code lives, and
        # slow_down answers still to give before the next real one
        self.device_interval = 1
        self.device_expires_in = 600
        self.slow_downs = 0
        self.devices: dict[str, dict[str, Any]] = {}  # device code -> its state
        self.refresh_tokens: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.token_polls = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.jwks_uri = f"{self.url}/jwks"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # so that stop() is quick
            name=f"oidc-issuer-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def __enter__(self) -> OidcIssuer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Healthy again, counters at zero (keys are kept): for an issuer shared by tests."""
        with self._lock:
            self.down, self.delay, self.jwks_body = False, 0.0, None
            self.jwks_fetches = self.discovery_fetches = self.token_polls = 0
            self.devices.clear()
            self.refresh_tokens.clear()
            self.slow_downs = 0

    def stop(self) -> None:
        """Stop serving; later fetches get 'connection refused'."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    # --- what it publishes

    def jwks(self) -> dict[str, Any]:
        keys = [public_jwk(self.rsa_key, self.rsa_kid), public_jwk(self.ec_key, self.ec_kid)]
        return {"keys": keys}

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.url,
            "jwks_uri": self.jwks_uri,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "device_authorization_endpoint": f"{self.url}/device",
            "grant_types_supported": [
                "urn:ietf:params:oauth:grant-type:device_code",
                "refresh_token",
            ],
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        }

    def rotate(self) -> str:
        """A new RSA signing key; the old one leaves the JWKS. Returns the new kid."""
        key, kid = rsa_key(), f"rsa-{secrets.token_hex(4)}"
        with self._lock:
            self.rsa_key, self.rsa_kid = key, kid
        return kid

    @property
    def public_pem(self) -> bytes:
        """The RSA public key as PEM (e.g. for an HS256-with-the-public-key forgery)."""
        return public_pem(self.rsa_key)

    # --- tokens

    def token(
        self,
        sub: str | None = "alice",
        groups: Iterable[str] | Any = ("federation",),
        aud: str | list[str] | EllipsisType | None = ...,
        expires_in: float = 300,
        kid: str | None = None,
        key: Any = None,
        alg: str = "RS256",
        *,
        with_kid: bool = True,
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A signed token of this issuer.

        ``aud`` defaults to the issuer's audience (None: no ``aud``); ``key``/``kid`` default
        to the issuer's current key for ``alg`` (pass another ``key`` to forge, e.g.
        ``rsa_key()``, or a string secret with ``alg="HS256"``); ``with_kid=False`` leaves
        ``kid`` out of the header. ``claims`` are added or override; a claim given as None is
        left out (``iss=None``: no issuer, ``sub=None``: no subject); ``groups`` may be any
        JSON value, for tests of odd claims.
        """
        now = int(time.time())
        with self._lock:  # a concurrent rotate() must not pair one key with another's kid
            ec_pair, rsa_pair = (self.ec_key, self.ec_kid), (self.rsa_key, self.rsa_kid)
        default_key, default_kid = ec_pair if alg.startswith("ES") else rsa_pair
        key = default_key if key is None else key
        if kid is None and with_kid:
            # a foreign key gets the issuer's kid for alg: a forgery naming a real key
            kid = ec_pair[1] if key is ec_pair[0] else default_kid
        payload: dict[str, Any] = {
            "iss": self.url,
            "sub": sub,
            "aud": self.audience if aud is ... else aud,
            "iat": now,
            "exp": now + int(expires_in),
            "groups": list(groups) if isinstance(groups, tuple | set | frozenset) else groups,
            **claims,
        }
        payload = {k: v for k, v in payload.items() if v is not None}
        header = dict(headers or {})
        if with_kid:
            header["kid"] = kid
        return jwt.encode(payload, key, algorithm=alg, headers=header)

    # --- the device grant (RFC 8628): the test plays the user

    def device_authorization(self, client_id: str, scope: str) -> dict[str, Any]:
        device_code = secrets.token_urlsafe(16)
        user_code = "-".join(secrets.token_hex(2).upper() for _ in range(2))
        with self._lock:
            self.devices[device_code] = {
                "user_code": user_code, "client_id": client_id, "scope": scope,
                "state": "pending", "expires": time.monotonic() + self.device_expires_in,
            }  # fmt: skip
        return {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": f"{self.url}/activate",
            "verification_uri_complete": f"{self.url}/activate?user_code={user_code}",
            "expires_in": self.device_expires_in,
            "interval": self.device_interval,
        }

    def pending_user_codes(self) -> list[str]:
        with self._lock:
            return [d["user_code"] for d in self.devices.values() if d["state"] == "pending"]

    def wait_for_user_code(self, timeout: float = 10) -> str:
        """The user code of the first pending device authorization, once a client asked."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            codes = self.pending_user_codes()
            if codes:
                return codes[0]
            time.sleep(0.02)
        raise TimeoutError("no client asked for a device code")

    def approve(
        self, user_code: str, sub: str = "alice", groups: Iterable[str] = ("federation",)
    ) -> None:
        self._decide(user_code, "approved", sub=sub, groups=tuple(groups))

    def deny(self, user_code: str) -> None:
        self._decide(user_code, "denied")

    def _decide(self, user_code: str, state: str, **grant: Any) -> None:
        with self._lock:
            for device in self.devices.values():
                if device["user_code"] == user_code and device["state"] == "pending":
                    device.update(state=state, **grant)
                    return
        raise KeyError(f"no pending device authorization with user code {user_code}")

    def token_grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The token endpoint: the device code grant and the refresh token grant."""
        grant = form.get("grant_type")
        with self._lock:
            self.token_polls += 1
        if grant == "refresh_token":
            with self._lock:
                known = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
            if known is None:
                return 400, {"error": "invalid_grant"}
            return 200, self._tokens(*known)
        if grant != "urn:ietf:params:oauth:grant-type:device_code":
            return 400, {"error": "unsupported_grant_type"}
        with self._lock:
            device = self.devices.get(form.get("device_code", ""))
            if device is None or device["client_id"] != form.get("client_id"):
                return 400, {"error": "invalid_grant"}
            if self.slow_downs:
                self.slow_downs -= 1
                return 400, {"error": "slow_down"}
            if time.monotonic() > device["expires"]:
                return 400, {"error": "expired_token"}
            state = device["state"]
            if state == "approved":
                device["state"] = "used"
        if state == "pending":
            return 400, {"error": "authorization_pending"}
        if state == "denied":
            return 400, {"error": "access_denied"}
        if state == "used":
            return 400, {"error": "invalid_grant"}
        return 200, self._tokens(device["sub"], device["groups"])

    def _tokens(self, sub: str, groups: tuple[str, ...]) -> dict[str, Any]:
        refresh = secrets.token_urlsafe(16)
        with self._lock:
            self.refresh_tokens[refresh] = (sub, groups)
        return {
            "access_token": self.token(sub=sub, groups=groups),
            "token_type": "Bearer",
            "expires_in": 300,
            "refresh_token": refresh,
        }

    # --- configuration for a node

    def issuer_config(self, name: str = "test", **overrides: Any) -> dict[str, Any]:
        """One entry of ``auth.issuers``; keys are found by OIDC discovery unless
        ``jwks_uri=issuer.jwks_uri`` is passed."""
        return {"name": name, "issuer": self.url, "audience": [self.audience], **overrides}

    def auth_config(self, anonymous: bool = False, **overrides: Any) -> dict[str, Any]:
        """The ``auth`` section of a node trusting only this issuer."""
        return {"anonymous": anonymous, "issuers": [self.issuer_config(**overrides)]}

    def _count(self, path: str) -> None:
        with self._lock:
            if path == "/jwks":
                self.jwks_fetches += 1
            elif path == "/.well-known/openid-configuration":
                self.discovery_fetches += 1


def _handler(issuer: OidcIssuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            issuer._count(path)
            if issuer.delay:
                time.sleep(issuer.delay)
            if issuer.down:
                self._send(500, b'{"error": "down"}')
            elif path == "/.well-known/openid-configuration":
                self._send(200, json.dumps(issuer.discovery()).encode())
            elif path == "/jwks":
                body = issuer.jwks_body
                with issuer._lock:
                    jwks = issuer.jwks()
                self._send(200, body if body is not None else json.dumps(jwks).encode())
            else:
                self._send(404, b'{"error": "not found"}')

        def do_POST(self) -> None:
            path = self.path.split("?", 1)[0]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
            form = {k: v[0] for k, v in parse_qs(raw).items()}
            if issuer.delay:
                time.sleep(issuer.delay)
            if issuer.down:
                self._send(500, b'{"error": "down"}')
            elif path == "/device":
                answer = issuer.device_authorization(
                    form.get("client_id", ""), form.get("scope", "")
                )
                self._send(200, json.dumps(answer).encode())
            elif path == "/token":
                status, answer = issuer.token_grant(form)
                self._send(status, json.dumps(answer).encode())
            else:
                self._send(404, b'{"error": "not found"}')

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client gave up (e.g. its timeout)
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

    return Handler


__all__ = ["OidcIssuer", "ec_key", "public_jwk", "public_pem", "rsa_key"]
