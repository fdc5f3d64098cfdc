"""The aggregator's one configuration file, validated like a node's (``ConfigError`` names the
offending key): its own site, server and database, and the upstreams it federates."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import AnyHttpUrl, Field, field_validator

from broker_core.config import (
    NAME_PATTERN,
    DatabaseConfig,
    Model,
    NonNegativeDuration,
    PositiveDuration,
    ServerConfig,
    SiteConfig,
    load_with_secrets,
    require_unique,
)


class UpstreamConfig(Model):
    """A node or another aggregator this aggregator asks."""

    name: str = Field(pattern=NAME_PATTERN)
    url: AnyHttpUrl
    timeout: PositiveDuration = Field(
        default=timedelta(seconds=5), description="deadline of each call to this upstream"
    )
    weight: float = Field(default=1.0, ge=0, description="ranks its offers among equals")
    token: str | None = Field(default=None, description="a bearer token of the aggregator's own")
    forward_token: bool = Field(
        default=False, description="pass the caller's bearer token on, so site policies see them"
    )
    service_token: str | None = Field(
        default=None,
        description="with forward_token: the aggregator's credential in the node's "
        "auth.service_groups (read and release any session), used only by the recovery of "
        "combined bookings, which has no caller's token; never for a caller's request",
    )

    @property
    def base(self) -> str:
        return str(self.url).rstrip("/")


class FanoutConfig(Model):
    deadline: PositiveDuration = Field(
        default=timedelta(seconds=8),
        description="the most an answer to POST /requests or /direct takes, from the request's "
        "arrival to its last byte sent",
    )
    reserve: NonNegativeDuration = Field(
        default=timedelta(milliseconds=200),
        description="the least time kept back from the deadline for the merge, store and answer "
        "after the fan-out (more when recent answers needed more, at most half the deadline)",
    )
    max_answer_bytes: int = Field(
        default=8 * 2**20,
        ge=1024,
        le=2**30,
        description="the largest upstream answer read; a larger one is the upstream's fault",
    )
    max_offers: int = Field(default=16, ge=1, le=256, description="offers in a merged answer")
    order: Literal["earliest", "cost"] = "earliest"
    max_connections: int = Field(default=100, ge=1, le=10_000)
    description_ttl: NonNegativeDuration = Field(
        default=timedelta(seconds=60), description="how long an upstream's /node is trusted"
    )


class BreakerConfig(Model):
    """Back off from an upstream after repeated failures (a circuit breaker)."""

    failures: int = Field(default=3, ge=1, le=100, description="consecutive failures to open")
    # 0 never backs off (a benchmark measuring every call, say)
    backoff: NonNegativeDuration = Field(default=timedelta(seconds=10))
    max_backoff: NonNegativeDuration = Field(default=timedelta(minutes=5))


class AggregatorConfig(Model):
    site: SiteConfig = SiteConfig(name="ebroker-aggregator")
    server: ServerConfig = ServerConfig(port=8090)
    database: DatabaseConfig = DatabaseConfig(url="sqlite:///ebroker-aggregator.db")
    fanout: FanoutConfig = FanoutConfig()
    breaker: BreakerConfig = BreakerConfig()
    upstreams: list[UpstreamConfig] = Field(min_length=1)

    @field_validator("upstreams")
    @classmethod
    def _unique(cls, upstreams: list[UpstreamConfig]) -> list[UpstreamConfig]:
        require_unique([u.name for u in upstreams], "upstream")
        return upstreams

    @property
    def base_url(self) -> str:
        return self.server.base_url


def load_aggregator_config(
    path: str | Path, environ: Mapping[str, str] | None = None
) -> AggregatorConfig:
    return load_with_secrets(AggregatorConfig, path, environ)[0]
