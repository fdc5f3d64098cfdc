"""Logging in with the OAuth 2.0 device authorization grant (RFC 8628), for issuers that offer
it: read the issuer's discovery document, ask for a device code, show the user where to enter
it, poll the token endpoint at the interval the issuer asks for (five seconds more at each
``slow_down``) until the user approves, refuses, or the code expires. Refreshing a stored
token uses its refresh token (RFC 6749, section 6).

The clock and the sleep are parameters, so that the polling is tested without waiting."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DEFAULT_INTERVAL = 5  # RFC 8628, 3.2: when the issuer names none


class LoginError(Exception):
    """The login did not end with a token; the text says why."""


@dataclass(frozen=True)
class DeviceCode:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


def discover(issuer: str, http: httpx.Client) -> dict[str, Any]:
    """The issuer's OpenID Connect discovery document; it must offer the device grant."""
    url = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
    doc = _json(http.get(url), url)
    if not doc.get("device_authorization_endpoint"):
        raise LoginError(f"{issuer} offers no device authorization (RFC 8628) endpoint")
    if not doc.get("token_endpoint"):
        raise LoginError(f"{issuer}'s discovery document names no token endpoint")
    return doc


def start(
    discovery: Mapping[str, Any], client_id: str, scope: str | None, http: httpx.Client
) -> DeviceCode:
    form = {"client_id": client_id, **({"scope": scope} if scope else {})}
    url = str(discovery["device_authorization_endpoint"])
    doc = _json(http.post(url, data=form), url)
    try:
        return DeviceCode(
            device_code=str(doc["device_code"]),
            user_code=str(doc["user_code"]),
            verification_uri=str(doc.get("verification_uri") or doc["verification_url"]),
            verification_uri_complete=doc.get("verification_uri_complete"),
            expires_in=float(doc.get("expires_in") or 600),
            interval=float(doc.get("interval") or DEFAULT_INTERVAL),
        )
    except KeyError as e:
        raise LoginError(f"{url}: the device authorization answer lacks {e.args[0]!r}") from None


def poll(
    discovery: Mapping[str, Any],
    client_id: str,
    device: DeviceCode,
    http: httpx.Client,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """The token response once the user approved, or a :class:`LoginError`."""
    url = str(discovery["token_endpoint"])
    form = {"grant_type": DEVICE_GRANT, "device_code": device.device_code, "client_id": client_id}
    interval = device.interval
    deadline = clock() + device.expires_in
    while True:
        sleep(interval)
        response = http.post(url, data=form)
        doc = _json(response, url, errors_ok=True)
        if response.status_code == 200 and doc.get("access_token"):
            return doc
        error = doc.get("error")
        if error == "authorization_pending":
            pass
        elif error == "slow_down":
            interval += 5  # RFC 8628, 3.5
        elif error == "access_denied":
            raise LoginError("the login was refused at the issuer")
        elif error == "expired_token":
            raise LoginError("the code expired before it was entered; run login again")
        else:
            described = doc.get("error_description") or error or f"HTTP {response.status_code}"
            raise LoginError(f"the issuer refused the login: {described}")
        if clock() + interval > deadline:
            raise LoginError("the code expired before it was entered; run login again")


def refresh(
    discovery: Mapping[str, Any], client_id: str, refresh_token: str, http: httpx.Client
) -> dict[str, Any]:
    url = str(discovery["token_endpoint"])
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
    response = http.post(url, data=form)
    doc = _json(response, url, errors_ok=True)
    if response.status_code != 200 or not doc.get("access_token"):
        raise LoginError(
            f"the token could not be refreshed ({doc.get('error', response.status_code)})"
        )
    return doc


def stored(tokens: Mapping[str, Any], issuer: str, client_id: str, now: float) -> dict[str, Any]:
    """What ``login`` keeps of a token response: the tokens, when the access token expires,
    and where it came from (for refreshing)."""
    keep = {k: tokens[k] for k in ("access_token", "refresh_token", "id_token") if tokens.get(k)}
    if tokens.get("expires_in"):
        keep["expires_at"] = now + float(tokens["expires_in"])
    return {**keep, "issuer": issuer, "client_id": client_id}


def _json(response: httpx.Response, url: str, errors_ok: bool = False) -> dict[str, Any]:
    if response.status_code >= 400 and not errors_ok:
        raise LoginError(f"{url} answered {response.status_code}")
    try:
        doc = response.json()
    except ValueError:
        raise LoginError(f"{url} answered {response.status_code}, not JSON") from None
    if not isinstance(doc, dict):
        raise LoginError(f"{url} answered something other than a JSON object")
    return doc
