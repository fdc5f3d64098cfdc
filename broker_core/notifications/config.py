"""The ``notifications`` section of a node's configuration.

Its own module (the node's ``config`` imports it, so it imports nothing of the node): which
events fire when, how hard and how long deliveries are retried, what a webhook may reach, and
the SMTP server e-mail goes through.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    field_validator,
    model_validator,
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be a positive duration")
    return value


Positive = Annotated[timedelta, AfterValidator(_positive)]


class WebhookConfig(_Section):
    """What a request's webhook may reach: only globally routable addresses, unless the site
    allows networks or host names here (the staging lists are not used: what data may come
    from and where the node may post to are different questions)."""

    allow_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="networks a webhook may reach although loopback, private, link-local, ...",
    )
    allow_hosts: list[str] = Field(
        default_factory=list, description="host names reached whatever they resolve to"
    )
    https_only: bool = Field(default=False, description="refuse http:// webhook URLs")
    timeout: Positive = Field(
        default=timedelta(seconds=10), description="connect and answer time of one delivery"
    )
    max_response_bytes: int = Field(
        default=64 * 1024, ge=1, description="read of a receiver's answer, at most"
    )


    @field_validator("allow_hosts")
    @classmethod
    def _lower(cls, hosts: list[str]) -> list[str]:
        return [h.rstrip(".").lower() for h in hosts]


class SmtpConfig(_Section):
    """The site's mail server."""

    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535, description="default 25, ssl: 465")
    security: Literal["none", "starttls", "ssl"] = "starttls"
    user: str | None = None
    password: str | None = Field(default=None, description="a {secret_file: ...} in production")
    ca_file: Path | None = Field(
        default=None, description="the CAs the server's certificate is verified against "
        "(PEM); none: the system's"
    )  # fmt: skip
    from_address: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    timeout: Positive = Field(default=timedelta(seconds=20))


    @property
    def port_number(self) -> int:
        return self.port or (465 if self.security == "ssl" else 25)

    @model_validator(mode="after")
    def _password_needs_user(self) -> SmtpConfig:
        if self.password is not None and not self.user:
            raise ValueError("a password needs a user")
        if self.user and self.security == "none":
            raise ValueError("a login is sent only over TLS: set security to starttls or ssl")
        if self.ca_file is not None and self.security == "none":
            raise ValueError("ca_file verifies TLS: set security to starttls or ssl")
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ValueError(f"ca_file {self.ca_file}: no such file")
        return self


class EmailConfig(_Section):
    recipients: Literal["identity", "any"] = Field(
        default="identity",
        description="identity: only the caller's own address (its token's verified email "
        "claim); any: whatever the request names",
    )
    max_recipients: int = Field(default=5, ge=1, le=50)
    templates: Path | None = Field(
        default=None,
        description="a directory of <event>.txt templates replacing the built-in ones",
    )


class NotificationsConfig(_Section):
    enabled: bool = Field(default=True, description="run the delivery worker in this process")
    ending_soon: Positive = Field(
        default=timedelta(minutes=10), description="how long before the booked end"
    )
    poll_interval: Positive = Field(default=timedelta(seconds=1))
    lease: Positive = Field(
        default=timedelta(seconds=60), description="a process's hold on a row it delivers"
    )
    batch: int = Field(default=16, ge=1, le=256, description="rows one process takes at once")
    max_attempts: int = Field(default=10, ge=1, le=100)
    max_age: Positive = Field(
        default=timedelta(days=1), description="a row not delivered by then is given up"
    )
    retry_base: Positive = Field(default=timedelta(seconds=2))
    retry_max: Positive = Field(default=timedelta(minutes=10))
    max_per_session: int = Field(default=64, ge=1, le=1024, description="outbox rows")
    webhook: WebhookConfig = WebhookConfig()
    email: EmailConfig = EmailConfig()
    smtp: SmtpConfig | None = None

    @model_validator(mode="after")
    def _lease_outlasts_an_attempt(self) -> NotificationsConfig:
        longest = max([self.webhook.timeout] + ([self.smtp.timeout] if self.smtp else []))
        if self.lease <= longest:
            raise ValueError(f"lease ({self.lease}) must be longer than one delivery attempt "
                             f"may take ({longest}): another process would send it again")
        return self
