"""The node's one configuration file, validated into pydantic models at start-up.

A bad key or value stops start-up with a message naming it (``ConfigError``); with no file at all
the node runs on its embedded default: SQLite and the ``simulated`` platform sized from the host.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)

from .notifications.config import NotificationsConfig
from .pricing import Pricing, check_platform
from .secrets import Secrets
from .staging.mappings import DataMappings
from .suggest import iso_duration_hint, unknown_field_at

RESOURCE_CLASSES = ("cores", "memory", "storage", "gpus", "fpgas")
ResourceClass = Literal["cores", "memory", "storage", "gpus", "fpgas"]
# how amounts of each class read in messages ("8 GiB of memory")
UNITS = {"cores": "cores", "memory": "GiB of memory", "storage": "GiB of storage", "gpus": "GPUs",
         "fpgas": "FPGAs"}  # fmt: skip
# a pool's traits, named as OpenStack placement names them (GPU_A100, CUSTOM_FPGA_U250)
TRAIT_PATTERN = r"^[A-Z0-9_]{1,255}$"
Trait = Annotated[str, Field(pattern=TRAIT_PATTERN)]
NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$"


def _positive(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError("must be a positive duration")
    return value


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("must not be a negative duration")
    return value


def _iso_duration(value: Any, handler: ValidatorFunctionWrapHandler) -> timedelta:
    """A duration as pydantic reads it; text it cannot read gets an ISO-8601 suggestion
    computed from what was written (``5 minutes`` -> ``PT5M``)."""
    try:
        return handler(value)
    except ValidationError:
        if isinstance(value, str):
            raise ValueError(iso_duration_hint(value)) from None
        raise


# ISO-8601 durations ("PT5M") or seconds, checked where they are read
Duration = Annotated[timedelta, WrapValidator(_iso_duration)]
PositiveDuration = Annotated[timedelta, WrapValidator(_iso_duration), AfterValidator(_positive)]
NonNegativeDuration = Annotated[
    timedelta, WrapValidator(_iso_duration), AfterValidator(_not_negative)
]


class ConfigError(Exception):
    """The configuration is unusable; the message names the offending key."""


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def require_unique(names: list[str], what: str) -> None:
    """Things are referred to by name (in messages, pools, rules): two with one name is an error."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{what} names must be unique; repeated: {', '.join(repeated)}")


class InventoryConfig(Model):
    """One resource class of a pool, as OpenStack placement models it."""

    total: int = Field(ge=0)
    reserved: int = Field(default=0, ge=0)
    allocation_ratio: float = Field(default=1.0, gt=0, le=100)
    min_unit: int = Field(default=1, ge=1)
    max_unit: int | None = Field(default=None, ge=1)
    step_size: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> InventoryConfig:
        if self.reserved > self.total:
            raise ValueError(f"reserved ({self.reserved}) exceeds total ({self.total})")
        if self.max_unit is not None and self.max_unit < self.min_unit:
            raise ValueError(f"max_unit ({self.max_unit}) is below min_unit ({self.min_unit})")
        return self

    @property
    def capacity(self) -> int:
        return int((self.total - self.reserved) * self.allocation_ratio)


class PoolConfig(Model):
    name: str = Field(pattern=NAME_PATTERN)
    inventories: dict[ResourceClass, InventoryConfig]
    pricing: Pricing | None = Field(
        default=None, description="sections that replace the platform's pricing for this pool"
    )
    traits: list[Trait] = Field(
        default_factory=list,
        max_length=64,
        description="what its accelerators are, placement-style (GPU_A100, GPU_MEM_80G, "
        "FPGA_XILINX_U250): a request's accelerator model and memory are matched against them",
    )

    @field_validator("traits")
    @classmethod
    def _unique_traits(cls, traits: list[str]) -> list[str]:
        return sorted(set(traits))

    @field_validator("inventories")
    @classmethod
    def _needs_cores(cls, inventories: dict[str, InventoryConfig]) -> dict[str, InventoryConfig]:
        if "cores" not in inventories:
            raise ValueError("a pool needs at least a 'cores' inventory")
        return inventories


class PlatformConfig(Model):
    name: str = Field(pattern=NAME_PATTERN)
    type: str = "simulated"
    pools: list[PoolConfig] = Field(default_factory=list)
    combine_pools: bool = Field(
        default=False,
        description="the pools are shares of the same machines: one session may draw on several",
    )
    options: dict[str, Any] = Field(default_factory=dict)
    pricing: Pricing | None = Field(
        default=None, description="money, energy and carbon per resource-hour; metrics"
    )

    @model_validator(mode="after")
    def _pricing_consistent(self) -> PlatformConfig:
        check_platform(self)
        return self


class RangeDefault(Model):
    """A default min/max as the configuration writes it: both bounds given and at least 0,
    checked at start-up naming the key. Not the wire's :class:`~broker_core.kinds.base.MinMax`
    (a client may leave a bound open, and a bad one is answered NO, not refused at start-up);
    ``offers.demand`` resolves both into a :class:`~broker_core.kinds.base.Range`."""

    min: int = Field(ge=0)
    max: int = Field(ge=0)


class ResourceDefaults(Model):
    cores: RangeDefault = RangeDefault(min=1, max=1)
    memory: RangeDefault = RangeDefault(min=1, max=1)
    storage: RangeDefault = RangeDefault(min=1, max=1)


class RecurrenceConfig(Model):
    """Recurring sessions (``schedule.requested.recurrence``): how many occurrences one
    series may have. Every occurrence must also start within ``offers.lookahead``."""

    max_occurrences: int = Field(default=100, ge=1, le=1000)


class OfferConfig(Model):
    max_offers: int = Field(default=4, ge=1, le=32)
    hold: PositiveDuration = Field(
        default=timedelta(minutes=5), description="how long an offer stays open"
    )
    lookahead: PositiveDuration = Field(default=timedelta(days=7))
    default_duration: PositiveDuration = Field(default=timedelta(hours=1))
    max_duration: PositiveDuration = Field(default=timedelta(days=7))
    granularity: PositiveDuration = Field(default=timedelta(seconds=60))
    defaults: ResourceDefaults = ResourceDefaults()
    recurrence: RecurrenceConfig = RecurrenceConfig()


class HoldLimits(Model):
    """What one caller (or one project, or all anonymous callers together) may hold at once in
    open offers: a hold is a claim on capacity, so it is bounded like one. None: no limit."""

    offer_sets: int | None = Field(
        default=None, ge=0, description="open offer sets at once; 0: none (probes only)"
    )
    resource_hours: dict[ResourceClass, float] = Field(
        default_factory=dict, description="resource-hours held at once, per class"
    )
    lookahead_share: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="resource-hours held at once, as a share of what the node's pools have "
        "over the look-ahead (capacity x offers.lookahead), per class",
    )
    pool_share: float | None = Field(
        default=None, gt=0, le=1, description="share of any one pool held at any instant"
    )
    probes_per_minute: int | None = Field(
        default=None, ge=0, description="probe answers (they hold nothing) per minute"
    )

    @field_validator("resource_hours")
    @classmethod
    def _hours_not_negative(cls, hours: dict[str, float]) -> dict[str, float]:
        for resource_class, value in hours.items():
            if value < 0:
                raise ValueError(f"resource_hours of {resource_class} must not be negative")
        return hours

    def limits_holds(self) -> bool:
        return (
            self.offer_sets is not None
            or bool(self.resource_hours)
            or self.lookahead_share is not None
            or self.pool_share is not None
        )


class CallerHolds(HoldLimits):
    """Hold limits of some callers instead of ``holds.caller`` (an aggregator's own identity,
    a group that books big): the first entry that names the caller applies."""

    name: str = Field(min_length=1, max_length=64)
    groups: list[str] = Field(default_factory=list)
    subjects: list[str] = Field(default_factory=list, description="owners, '<issuer>:<sub>'")

    @model_validator(mode="after")
    def _names_someone(self) -> CallerHolds:
        if not (self.groups or self.subjects):
            raise ValueError(f"holds.callers entry {self.name!r} names no groups or subjects")
        return self


class HoldsConfig(Model):
    """Fair holds: limits on what open offers hold, per caller and per project.

    Anonymous callers share one set of limits (``anonymous``): a client address is no identity
    (proxies and NAT put many users behind one, and an attacker has many), so every anonymous
    caller together can never hold more than it, and never starve an authenticated user."""

    caller: HoldLimits = HoldLimits(offer_sets=8, lookahead_share=0.25, probes_per_minute=60)
    # no pool_share by default: on a small node (the embedded default sizes its pool from the
    # host, 2 cores on a laptop VM) a quarter of a pool is less than one core; the share of the
    # look-ahead already keeps the whole pool for a week out of anonymous reach
    anonymous: HoldLimits = HoldLimits(offer_sets=8, lookahead_share=0.25, probes_per_minute=30)
    project: HoldLimits = HoldLimits(lookahead_share=0.5)
    callers: list[CallerHolds] = Field(default_factory=list)
    replace: bool = Field(
        default=True,
        description="a caller's new request for the same thing replaces its open offer set",
    )

    @field_validator("callers")
    @classmethod
    def _unique_callers(cls, callers: list[CallerHolds]) -> list[CallerHolds]:
        require_unique([c.name for c in callers], "holds.callers")
        return callers


class ServerConfig(Model):
    host: str = "127.0.0.1"
    log_format: Literal["plain", "json"] = Field(
        default="plain",
        description="plain lines for a terminal, or one JSON object per line for a collector",
    )
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = None
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_depth: int = Field(default=64, ge=8, le=1000)
    max_nodes: int = Field(
        default=100_000,
        ge=1000,
        description="values in a request body (keys too), YAML aliases expanded",
    )
    max_expanded_bytes: int = Field(
        default=2_097_152,
        ge=1024,
        description="a request body's size as JSON, YAML aliases counted as what they repeat",
    )
    max_items: int = Field(default=1024, ge=64, description="items of any one array of a body")
    max_properties: int = Field(
        default=1024, ge=64, description="members of any one object of a body"
    )
    body_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="request bodies decoded and validated (and answers encoded) at once; the "
        "work is CPU-bound Python, so more than one per worker process only adds waits",
    )
    body_queue: int = Field(
        default=64, ge=0, description="requests waiting for a body worker before the next is a 503"
    )
    validate_responses: bool = False
    workers: int = Field(default=1, ge=1, le=64, description="HTTP worker processes")
    threads: int = Field(default=4, ge=1, le=256, description="handler threads per worker")
    # connections (see broker_core/http/server.py): what a slow or idle client may hold
    header_timeout: PositiveDuration = Field(
        default=timedelta(seconds=10),
        description="a request's line and headers must arrive within this, from its first byte "
        "(a new connection's first request: from the accept)",
    )
    body_timeout: PositiveDuration = Field(
        default=timedelta(seconds=30),
        description="a request's body must arrive within this, from the end of its headers",
    )
    keep_alive_timeout: PositiveDuration = Field(
        default=timedelta(seconds=5), description="an idle connection is closed after this"
    )
    max_header_bytes: int = Field(
        default=32_768,
        ge=4096,
        le=1_048_576,
        description="a request's line and headers together; beyond it a 431",
    )
    max_connections: int | None = Field(
        default=None,
        ge=16,
        le=1_000_000,
        description="open connections per worker process; default: 1000, or what the open-file "
        "limit leaves (see the README); past it the connection waiting longest is closed",
    )

    @property
    def base_url(self) -> str:
        """The base of every URL in answers: ``public_url``, else where the server listens."""
        if self.public_url:
            return self.public_url.rstrip("/")
        return f"http://{self.host}:{self.port}"


class DatabaseConfig(Model):
    url: str = "sqlite:///ebroker.db"
    migrate_on_start: bool = True
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL"] = "FULL"
    durable_offers: bool = Field(
        default=False,
        description="offers, refusals and expiries wait for the disk too (confirmations always do)",
    )
    pool_size: int = Field(default=10, ge=1, le=200)


class LifecycleConfig(Model):
    """The engine that prepares, runs and releases accepted sessions."""

    enabled: bool = True
    workdir: Path = Field(
        default=Path("ebroker-sessions"),
        description="a directory per session: storage, staged data, logs",
    )
    poll_interval: PositiveDuration = Field(default=timedelta(seconds=2))
    lease: PositiveDuration = Field(
        default=timedelta(seconds=20),
        description="how long a node process holds a session it works on without renewing",
    )
    reconcile_interval: PositiveDuration = Field(default=timedelta(seconds=60))
    parallel: int = Field(default=4, ge=1, le=64, description="sessions worked on at once")
    release_attempts: int = Field(default=5, ge=1, le=100)


UNIX_USER = r"^[A-Za-z_][A-Za-z0-9_.-]*\$?$"


class StagingConfig(Model):
    """What staging a data resource may read and how much: it runs on the node's host with the
    node's reach, so by default it reads no local file and no internal address."""

    file_roots: list[Path] = Field(
        default_factory=list,
        description="directories that file:// locations may be staged from, checked after "
        "resolving '..' and symbolic links; the node's database and session workdirs are never "
        "staged, even inside a root; default: none, so every file:// location is refused",
    )
    allow_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="networks that http(s):// locations may reach although their addresses are "
        "loopback, link-local, private, multicast, reserved or unspecified (e.g. 10.20.0.0/16, "
        "127.0.0.1/32); default: none, only globally routable addresses are reached",
    )
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="host names (exact, case-insensitive) that http(s):// locations may reach "
        "whatever addresses they resolve to; default: none",
    )
    max_bytes: int = Field(
        default=10 * 2**30,
        ge=1,
        description="the most bytes one data resource stages: a download, or the files of a "
        "directory copy together; default 10 GiB",
    )
    max_files: int = Field(
        default=10_000,
        ge=1,
        description="the most files and directories one directory copy makes; default 10000",
    )
    timeout: PositiveDuration = Field(
        default=timedelta(seconds=30),
        description="a download's connect timeout and its longest wait for the next bytes; "
        "default PT30S",
    )
    max_time: PositiveDuration = Field(
        default=timedelta(hours=1),
        description="the longest one data resource may take to stage; default PT1H",
    )
    max_redirects: int = Field(
        default=5,
        ge=0,
        le=20,
        description="redirects a download follows, each target checked as the first; default 5",
    )
    user: str | None = Field(
        default=None,
        pattern=UNIX_USER,
        description="the Unix user staging runs as on platforms without a session user (local) "
        "when the node runs as root; slurm stages as the job's user (its reservation_user); "
        "default: the node's own user",
    )
    mappings: DataMappings = Field(
        default_factory=DataMappings,
        description="where identified data lands: ivo:// prefixes and Rucio scopes mapped to "
        "this site's files or URLs, from which ivoa, rucio and skao data resources are staged "
        "(their roots need no file_roots entry); default: none, so such resources are staged "
        "only from a location they carry themselves",
    )

    @field_validator("file_roots")
    @classmethod
    def _absolute_roots(cls, roots: list[Path]) -> list[Path]:
        for root in roots:
            if not root.is_absolute():
                raise ValueError(f"{str(root)!r} is not an absolute path")
            if PurePosixPath(root) == PurePosixPath("/"):
                raise ValueError("'/' would stage every file of the host; name data directories")
        return roots

    @field_validator("allow_hosts")
    @classmethod
    def _host_names(cls, hosts: list[str]) -> list[str]:
        import re

        names = []
        for host in hosts:
            name = host.strip().rstrip(".").lower()
            if not re.fullmatch(r"[a-z0-9_]([a-z0-9_.-]{0,251}[a-z0-9_])?", name):
                raise ValueError(f"{host!r} is not a host name")
            if re.fullmatch(r"[0-9.]+", name):
                raise ValueError(f"{host!r} is an address; allow it in allow_networks")
            names.append(name)
        return names


class IssuerConfig(Model):
    """An OIDC issuer whose bearer tokens this node accepts."""

    name: str = Field(pattern=NAME_PATTERN, description="short name; owners are '<name>:<sub>'")
    issuer: str = Field(min_length=1, description="the exact 'iss' claim of its tokens")
    audience: list[str] = Field(min_length=1, description="accepted 'aud' values")
    jwks_uri: str | None = Field(
        default=None, description="where its signing keys are; default: OIDC discovery"
    )
    groups_claim: str = Field(
        default="groups", description="claim holding the groups; dots reach into objects"
    )
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    jwks_cache: PositiveDuration = Field(
        default=timedelta(minutes=10), description="how long fetched keys are trusted"
    )
    leeway: NonNegativeDuration = Field(
        default=timedelta(seconds=30), description="allowed clock skew"
    )
    timeout: PositiveDuration = Field(
        default=timedelta(seconds=5), description="JWKS fetch timeout"
    )

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, algorithms: list[str]) -> list[str]:
        for name in algorithms:
            if not name.startswith(("RS", "ES", "PS", "Ed")):
                raise ValueError(f"{name!r} is not an asymmetric JWS algorithm")
        return algorithms


BASIC_ISSUER = "basic"  # Basic users' owners are "basic:<name>"; no issuer may take the name
# what argon2 (argon2-cffi's PHC strings) and bcrypt ($2a$/$2b$/$2y$) hashes look like; anything
# else, a plaintext password above all, is refused at start-up (and never repeated in a message)
_ARGON2_HASH = r"^\$argon2(id|i|d)\$(v=\d+\$)?m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$"
_BCRYPT_HASH = r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$"


class BasicUserConfig(Model):
    """A local user who authenticates with HTTP Basic: a name, a password hash, its groups."""

    name: str = Field(
        pattern=r"^[^:\s\x00-\x1f\x7f]{1,128}$",
        description="the user name; owners are 'basic:<name>'",
    )
    password_hash: str = Field(description="an argon2 (argon2id) or bcrypt hash of the password")
    groups: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _no_plaintext(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise ValueError(
                "'password': plaintext passwords are not accepted; put a hash in "
                "'password_hash' instead (make one with 'ebroker hash-password')"
            )
        return data

    @field_validator("password_hash")
    @classmethod
    def _a_hash(cls, value: str) -> str:
        import re

        if not (re.match(_ARGON2_HASH, value) or re.match(_BCRYPT_HASH, value)):
            raise ValueError(
                "is not an argon2 or bcrypt hash; plaintext passwords are not accepted "
                "(make a hash with 'ebroker hash-password')"
            )
        return value


class BasicAuthConfig(Model):
    """Local users who send ``Authorization: Basic`` (as Calycopis-broker's clients do)."""

    realm: str = Field(default="ebroker", pattern=r'^[^"\\\x00-\x1f\x7f]{1,100}$')
    users: list[BasicUserConfig] = Field(default_factory=list)

    @field_validator("users")
    @classmethod
    def _unique_users(cls, users: list[BasicUserConfig]) -> list[BasicUserConfig]:
        require_unique([u.name for u in users], "Basic user")
        return users


class FeedConfig(Model):
    """The calendar feeds (``GET /sessions.ics``) a calendar app subscribes to with a feed token
    in its URL instead of a bearer header (``POST /feed-tokens`` makes one, see
    ``broker_core.auth.feeds``): tokens that read the caller's feed and nothing else."""

    secret: str | None = Field(
        default=None,
        min_length=32,
        description="the key feed tokens are signed with (a secret_file); none: no feed tokens "
        "(the feed still answers bearer or Basic callers). Changing it revokes every token",
    )
    lifetime: PositiveDuration = Field(
        default=timedelta(days=180), description="how long a feed token reads the feed"
    )

    @field_validator("lifetime")
    @classmethod
    def _bounded(cls, value: timedelta) -> timedelta:
        if value > timedelta(days=400):
            raise ValueError("must be at most 400 days: a feed URL should not live for ever")
        return value


class AuthConfig(Model):
    """Who may call this node: bearer JWTs from these issuers, local Basic users, and anonymous
    callers if on."""

    anonymous: bool = Field(
        default=True, description="allow calls without a token (the embedded demo default)"
    )
    admin_groups: list[str] = Field(
        default_factory=list, description="members may see and change every session"
    )
    service_groups: list[str] = Field(
        default_factory=list,
        description="members (an aggregator's own credential) may read any session and "
        "release it (REJECTED or CANCELLED), nothing else: so that an aggregator passing its "
        "users' tokens on can still undo, after a restart, a booking it was making for one",
    )
    issuers: list[IssuerConfig] = Field(default_factory=list)
    basic: BasicAuthConfig = BasicAuthConfig()
    feeds: FeedConfig = FeedConfig()

    @model_validator(mode="after")
    def _someone_may_call(self) -> AuthConfig:
        if not self.anonymous and not self.issuers and not self.basic.users:
            raise ValueError("anonymous access is off and no issuers or Basic users are configured")
        require_unique([i.name for i in self.issuers], "issuer")
        if self.basic.users and BASIC_ISSUER in (i.name for i in self.issuers):
            raise ValueError(
                f"issuer name {BASIC_ISSUER!r} is taken by the Basic users (their owners are "
                f"'{BASIC_ISSUER}:<name>'); give the issuer another name"
            )
        return self


class PolicyConfig(Model):
    """One policy plugin; its options are validated by the plugin."""

    name: str = Field(pattern=NAME_PATTERN)
    type: str
    options: dict[str, Any] = Field(default_factory=dict)


class SiteConfig(Model):
    name: str = "ebroker-node"
    description: str | None = None


class NodeConfig(Model):
    site: SiteConfig = SiteConfig()
    server: ServerConfig = ServerConfig()
    database: DatabaseConfig = DatabaseConfig()
    offers: OfferConfig = OfferConfig()
    holds: HoldsConfig = HoldsConfig()
    lifecycle: LifecycleConfig = LifecycleConfig()
    staging: StagingConfig = StagingConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    auth: AuthConfig = AuthConfig()
    policies: list[PolicyConfig] = Field(default_factory=list)
    platforms: list[PlatformConfig] = Field(
        default_factory=lambda: [PlatformConfig(name="simulated", type="simulated")]
    )

    @field_validator("platforms")
    @classmethod
    def _unique_names(cls, platforms: list[PlatformConfig]) -> list[PlatformConfig]:
        require_unique([p.name for p in platforms], "platform")
        for p in platforms:
            require_unique([pool.name for pool in p.pools], f"platform {p.name!r}: pool")
        return platforms

    @field_validator("policies")
    @classmethod
    def _unique_policy_names(cls, policies: list[PolicyConfig]) -> list[PolicyConfig]:
        require_unique([p.name for p in policies], "policy")
        return policies

    @property
    def base_url(self) -> str:
        return self.server.base_url


def describe_errors(
    exc: ValidationError,
    source: str,
    prefix: tuple[object, ...] = (),
    model: type[BaseModel] | None = None,
    origins: Mapping[str, str] | None = None,
) -> str:
    """One line per bad key. With the ``model`` validated, an unknown key gets the known one
    it is closest to (``offers.hodl: unknown field 'hodl'; did you mean 'hold'?``); a key an
    environment variable set (``origins``: dotted key -> variable) says which."""
    lines = [f"invalid configuration in {source}:"]
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in (*prefix, *err["loc"])) or "(top level)"
        detail = err["msg"]
        if err["type"] == "extra_forbidden":
            detail = unknown_field_at(model, err["loc"]) or detail
        elif err["type"] == "value_error" and "error" in err.get("ctx", {}):
            detail = str(err["ctx"]["error"])  # our own message, without pydantic's prefix
        variable = _origin(origins or {}, where)
        lines.append(f"  {where}: {detail}" + (f" (set by {variable})" if variable else ""))
    return "\n".join(lines)


def _origin(origins: Mapping[str, str], where: str) -> str | None:
    """The environment variable that set the key at ``where`` (or a key around it)."""
    parts = where.split(".")
    for end in range(len(parts), 0, -1):
        found = origins.get(".".join(parts[:end]))
        if found:
            return found
    return None


M = TypeVar("M", bound=BaseModel)


def validate_config(
    model: type[M],
    data: Any,
    source: str = "<config>",
    origins: Mapping[str, str] | None = None,
) -> M:
    """A config document validated into ``model``; a ConfigError naming every bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: the top level must be a mapping")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc, source, model=model, origins=origins)) from None


def read_config_file(path: str | Path) -> Any:
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"configuration {path} is not valid YAML: {exc}") from None


def parse_config(data: Any, source: str = "<config>") -> NodeConfig:
    return validate_config(NodeConfig, data, source)


def load_with_secrets(
    model: type[M], path: str | Path | None, environ: Mapping[str, str] | None = None
) -> tuple[M, Secrets]:
    """The configuration of ``model`` from its file (none: the defaults), the environment
    and secret files (``config_sources``), and its secrets, which no error repeats."""
    from .config_sources import SourceError, gather

    document = read_config_file(path) if path is not None else None
    source = str(path) if path is not None else "the defaults"
    try:
        sources = gather(model, document, environ)
    except SourceError as exc:
        raise ConfigError(str(exc)) from None
    if sources.origins:
        source += " and the environment"
    try:
        config = validate_config(model, sources.document, source, sources.origins)
    except ConfigError as exc:
        raise ConfigError(sources.secrets.mask(str(exc))) from None
    return config, sources.secrets


def load_config(path: str | Path | None, environ: Mapping[str, str] | None = None) -> NodeConfig:
    return load_with_secrets(NodeConfig, path, environ)[0]
