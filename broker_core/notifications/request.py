"""A request's ``notify`` extension: where its sessions' events go, and whether they may.

``notify: {webhook: {url, secret}, email: [addresses], events: [types]}``. The model bounds
it (the spec does too); :func:`refusals` judges it against the site's rules, for a ``NO`` that
says what would work: a webhook URL must reach an address the node may post to (checked again,
pinned, at every delivery), and e-mail goes only to the caller's own verified address unless
the site allows any. The secret is write-only: it is kept to sign deliveries and never shown.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from ..kinds.base import Problem
from ..staging.rules import StagingRules, location_refusals
from .events import EVENT_TYPES, EventType

if TYPE_CHECKING:
    from ..identity import Identity
    from .config import NotificationsConfig

_ATOM = r"[^@\s<>,;:\"]+"
EmailAddress = Annotated[
    str, StringConstraints(max_length=254, pattern=rf"^{_ATOM}@{_ATOM}\.{_ATOM}$")
]
SECRET_PREFIX = "whsec_"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Webhook(_Wire):
    url: str = Field(max_length=2048)
    secret: str = Field(min_length=16, max_length=256, repr=False)

    @field_validator("secret")
    @classmethod
    def _usable(cls, secret: str) -> str:
        if secret.startswith(SECRET_PREFIX):
            try:
                key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
            except binascii.Error:
                raise ValueError("a whsec_ secret must be base64 after its prefix") from None
            if not 16 <= len(key) <= 64:
                raise ValueError("a whsec_ secret must carry 16 to 64 bytes")
        return secret

    def key(self) -> bytes:
        """The HMAC key: a ``whsec_`` secret's base64 bytes (as the Standard Webhooks
        libraries read it), any other secret's UTF-8 bytes."""
        if self.secret.startswith(SECRET_PREFIX):
            return base64.b64decode(self.secret.removeprefix(SECRET_PREFIX))
        return self.secret.encode()


class Notify(_Wire):
    """Where a session's events go; ``events`` none: all of them."""

    webhook: Webhook | None = None
    email: list[EmailAddress] = Field(default_factory=list, max_length=50)
    events: list[EventType] | None = Field(default=None, max_length=len(EVENT_TYPES))

    def wants(self, event: str) -> bool:
        return self.events is None or event in self.events

    def shown(self) -> dict[str, object]:
        """What a session shows of it: everything but the secret."""
        shown: dict[str, object] = {}
        if self.webhook is not None:
            shown["webhook"] = {"url": self.webhook.url}
        if self.email:
            shown["email"] = list(self.email)
        if self.events is not None:
            shown["events"] = list(self.events)
        return shown


def webhook_rules(config: NotificationsConfig) -> StagingRules:
    """The address rules a webhook's deliveries follow (those of staging's downloads, with the
    notification allow lists): no redirects are followed at all."""
    hook = config.webhook
    timeout = hook.timeout.total_seconds()
    return StagingRules(
        allow_networks=tuple(hook.allow_networks), allow_hosts=tuple(hook.allow_hosts),
        timeout=timeout, max_time=timeout, max_redirects=0, max_bytes=hook.max_response_bytes,
    )  # fmt: skip


def refusals(notify: Notify, identity: Identity, config: NotificationsConfig) -> list[Problem]:
    """Why this node will not send what ``notify`` asks, each at its pointer with what would
    work; none: it will."""
    found: list[Problem] = []
    if notify.webhook is not None:
        found += _webhook_refusals(notify.webhook.url, config)
    if notify.email:
        found += _email_refusals(notify.email, identity, config)
    if not notify.webhook and not notify.email:
        found.append(Problem("/notify", "names no webhook and no e-mail address; give one, or "
                             "leave notify out"))  # fmt: skip
    return found


def _webhook_refusals(url: str, config: NotificationsConfig) -> list[Problem]:
    pointer = "/notify/webhook/url"
    scheme = url.partition(":")[0].lower()
    allowed = ("https",) if config.webhook.https_only else ("http", "https")
    if scheme not in allowed:
        return [Problem(pointer, "{url} is not an {schemes} URL; webhooks are posted to "
                        "{schemes} URLs only", {"url": url[:200],
                        "schemes": " or ".join(f"{s}://" for s in allowed)})]  # fmt: skip
    if "@" in url.partition("://")[2].partition("/")[0]:
        return [Problem(pointer, "the webhook URL carries credentials; give them as the "
                        "webhook's secret, which signs every delivery")]  # fmt: skip
    refused = location_refusals([url], webhook_rules(config))[0]
    if refused is None:
        return []
    return [Problem(pointer, "the webhook is not posted to: {why}; give a URL of a publicly "
                    "routable host (or ask the site to allow yours)",
                    {"why": refused.text.replace("staging does not reach", "the node does "
                     "not post to")})]  # fmt: skip


def _email_refusals(
    addresses: list[str], identity: Identity, config: NotificationsConfig
) -> list[Problem]:
    if config.smtp is None:
        return [Problem("/notify/email", "this node sends no e-mail (it has no mail server); "
                        "use a webhook, or ask another node")]  # fmt: skip
    found = []
    if len(addresses) > config.email.max_recipients:
        found.append(Problem("/notify/email", "{count} addresses; this node sends to at most "
                             "{limit}", {"count": str(len(addresses)),
                             "limit": str(config.email.max_recipients)}))  # fmt: skip
    if config.email.recipients == "any":
        return found
    own = own_address(identity)
    for i, address in enumerate(addresses):
        if own is None or address.lower() != own:
            found.append(Problem(
                f"/notify/email/{i}",
                "{address} is not your address: this node sends e-mail only to the caller's own "
                "verified address (" + ("{own}" if own else "your token carries none") + ")",
                {"address": address, **({"own": own} if own else {})},
            ))  # fmt: skip
    return found


def own_address(identity: Identity) -> str | None:
    """The caller's address, when its token says so: an ``email`` claim not marked unverified
    (``email_verified: false``); lower case."""
    email = identity.claims.get("email")
    if not isinstance(email, str) or identity.claims.get("email_verified") is False:
        return None
    return email.lower()
