"""The staging rules of a node, and the request-time check that turns a refused location into a
``result: NO`` naming the rule.

``file://`` locations are refused unless the site names data directories (``staging.file_roots``),
and are then confined to them once ``..`` and symbolic links are resolved; the node's own files
(its SQLite database, the session workdirs) are never staged. ``http(s)://`` locations reach
only globally routable addresses unless the site allows networks or host names. Anything else is
refused. The copy and the download check the same rules again when they run (``files``,
``fetch``): a request-time answer is advice, the staging step is the boundary.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, IPvAnyNetwork
from yarl import URL

from ..kinds.base import Problem
from .addresses import IPAddress, parse_address, refused_category
from .mappings import DataMappings

if TYPE_CHECKING:
    from ..config import NodeConfig

SCHEMES = ("file", "http", "https")
# at request time, host names are resolved for at most this long in all (staging checks again)
REQUEST_DNS_SECONDS = 2.0
LOOPBACK = ipaddress.ip_address("127.0.0.1")
_dns = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ebroker-staging-dns")

# rule names, as messages give them
SCHEME = "scheme"
FILE_ROOTS = "file-roots"
NODE_FILES = "node-files"
ADDRESS = "address"
URL_FORM = "url"
MAX_BYTES = "max-bytes"
MAX_FILES = "max-files"
MAX_REDIRECTS = "max-redirects"
FILE_TYPE = "file-type"
NO_LINKS = "no-links"


class StagingFailed(Exception):
    """Staging could not be done (no answer, an HTTP error, a missing file): the message says
    what happened."""


class StagingRefused(Exception):
    """A location, or what it leads to, that the staging rules refuse: the rule's name and a
    template saying why and what would work."""

    def __init__(self, rule: str, template: str, **values: Any):
        self.rule = rule
        self.template = template
        self.values = {key: str(value) for key, value in values.items()}
        super().__init__(self.text)

    @property
    def text(self) -> str:
        return ("staging rule {rule}: " + self.template).format(rule=self.rule, **self.values)

    def problem(self, pointer: str) -> Problem:
        return Problem(pointer, "staging rule {rule}: " + self.template,
                       {"rule": self.rule, **self.values})  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "template": self.template, "values": self.values}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StagingRefused:
        return cls(str(data["rule"]), str(data["template"]), **dict(data.get("values") or {}))


class StagingRules(BaseModel):
    """The rules as staging applies them: paths resolved, limits in bytes and seconds. The
    defaults are the strictest: no local files, only public addresses."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file_roots: tuple[str, ...] = ()  # resolved, absolute
    denied: tuple[str, ...] = ()  # resolved: the node's own files and directories
    allow_networks: tuple[IPvAnyNetwork, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    max_bytes: int = 10 * 2**30
    max_files: int = 10_000
    timeout: float = 30.0
    max_time: float = 3600.0
    max_redirects: int = 5
    user: str | None = None
    mappings: DataMappings = DataMappings()  # where identified data lands (``placement``)

    def root_of(self, real: str) -> str | None:
        """The data root a resolved path lies in, if any."""
        return next((root for root in self.file_roots if _within(real, root)), None)

    def is_denied(self, real: str) -> bool:
        return any(_within(real, denied) for denied in self.denied)

    def address_refusal(
        self, host: str, address: IPAddress, literal: bool
    ) -> StagingRefused | None:
        """The refusal of one address of ``host``, unless it is public or allowed."""
        found = refused_category(address, self.allow_networks)  # type: ignore[arg-type]
        if found is None:
            return None
        template = (
            "{host} is a {category} address, which staging does not reach; give a URL of a "
            "publicly routable host"
            if literal
            else "{host} resolves to {address}, a {category} address, which staging does not "
            "reach; give a URL of a publicly routable host"
        )
        return StagingRefused(ADDRESS, template, host=host, address=address, category=found)

    def file_refusal(self, path: str) -> StagingRefused | None:
        """Why the local ``path`` may not be staged (resolved as it is now), or None."""
        if not self.file_roots:
            return StagingRefused(
                FILE_ROOTS,
                "this node stages no local files (it has no data directories); give an "
                "http(s):// URL of a publicly routable host",
            )
        real = os.path.realpath(path)
        if self.is_denied(real):
            return StagingRefused(
                NODE_FILES,
                "{path} is one of this node's own files (its database or session "
                "directories), which are never staged; give another location",
                path=path,
            )
        if self.root_of(real) is None:
            return StagingRefused(
                FILE_ROOTS,
                "{path} is not inside a directory this node stages files from ({roots}) once "
                "'..' and symbolic links are resolved; give a file under one of them, or an "
                "http(s):// URL",
                path=path,
                roots=", ".join(self.file_roots),
            )
        return None

    def scheme_refusal(self, scheme: str) -> StagingRefused:
        files = (
            f" or a file:// path under one of this node's data directories "
            f"({', '.join(self.file_roots)})"
            if self.file_roots
            else ""
        )
        return StagingRefused(
            SCHEME,
            "{scheme} locations are not staged; give an http(s):// URL{files}",
            scheme=f"{scheme}:" if scheme else "relative",
            files=files,
        )


def rules_for(config: NodeConfig) -> StagingRules:
    """The node's staging rules, from its ``staging`` section and the files it must keep."""
    staging = config.staging
    return StagingRules(
        file_roots=tuple(os.path.realpath(root) for root in staging.file_roots),
        denied=tuple(node_files(config)),
        allow_networks=tuple(staging.allow_networks),
        allow_hosts=tuple(staging.allow_hosts),
        max_bytes=staging.max_bytes,
        max_files=staging.max_files,
        timeout=staging.timeout.total_seconds(),
        max_time=staging.max_time.total_seconds(),
        max_redirects=staging.max_redirects,
        user=staging.user,
        mappings=staging.mappings,
    )


def node_files(config: NodeConfig) -> list[str]:
    """What staging never reads: the SQLite database (with its journal files) and the session
    workdirs, resolved."""
    from sqlalchemy.engine import make_url

    found = [os.path.realpath(config.lifecycle.workdir)]
    url = make_url(config.database.url)
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database and database != ":memory:":
        real = os.path.realpath(database.removeprefix("file:").split("?")[0])
        found += [real + suffix for suffix in ("", "-wal", "-shm", "-journal")]
    return found


# --- the request-time check -------------------------------------------------------------------


def parse_location(location: str) -> URL:
    try:
        return URL(location)
    except (ValueError, TypeError) as exc:
        raise StagingRefused(
            URL_FORM, "{location} is not a URL ({error}); give http(s)://host/path",
            location=location, error=exc,
        ) from None  # fmt: skip


def file_path(url: URL, location: str) -> str:
    """The local path of a file:// URL; it must be absolute and name no other host."""
    if url.host not in (None, "", "localhost") or not url.path.startswith("/") or "\0" in url.path:
        raise StagingRefused(
            URL_FORM,
            "{location} does not name an absolute local path; write file:///absolute/path",
            location=location,
        )
    return url.path


def http_host(url: URL, location: str) -> str:
    """The host of an http(s):// URL, which must have one and a valid port."""
    try:
        host, port = url.raw_host, url.port
    except ValueError as exc:
        host, port = None, exc
    if not host or not isinstance(port, int) or not 0 < port < 65536:
        raise StagingRefused(
            URL_FORM, "{location} names no host and port to fetch from; give http(s)://host/path",
            location=location,
        )  # fmt: skip
    return host.rstrip(".").lower()


def location_refusals(locations: list[str], rules: StagingRules) -> list[StagingRefused | None]:
    """The refusal of each location (None: it may be staged, as far as can be told now).
    Host names are resolved together, for at most ``REQUEST_DNS_SECONDS``; a name that does not
    resolve in time is not refused here (the download checks its addresses again)."""
    judged = [_judge(location, rules) for location in locations]
    names = {j for j in judged if isinstance(j, _Lookup)}
    lookups = {name: _dns.submit(_resolve, name.host, name.port) for name in names}
    if lookups:
        wait(lookups.values(), timeout=REQUEST_DNS_SECONDS)
    refusals: list[StagingRefused | None] = []
    for verdict in judged:
        if isinstance(verdict, _Lookup):
            future = lookups[verdict]
            addresses = future.result() if future.done() else None
            verdict = _resolved_refusal(verdict.host, addresses, rules) if addresses else None
        refusals.append(verdict)
    return refusals


@dataclass(frozen=True)
class _Lookup:
    """A host name to resolve before its location can be judged."""

    host: str
    port: int


def _judge(location: str, rules: StagingRules) -> StagingRefused | _Lookup | None:
    try:
        url = parse_location(location)
        scheme = url.scheme.lower()
        if scheme not in SCHEMES:
            return rules.scheme_refusal(scheme)
        if scheme == "file":
            return rules.file_refusal(file_path(url, location))
        host = http_host(url, location)
    except StagingRefused as refused:
        return refused
    if host in rules.allow_hosts:
        return None
    address = parse_address(host)
    if address is not None:
        return rules.address_refusal(host, address, literal=True)
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: always loopback
        return rules.address_refusal(host, LOOPBACK, literal=False)
    return _Lookup(host, url.port or 80)


def _resolve(host: str, port: int) -> list[IPAddress] | None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    found = [parse_address(str(info[4][0]).split("%")[0]) for info in infos]
    return [address for address in found if address is not None]


def _resolved_refusal(
    host: str, addresses: list[IPAddress], rules: StagingRules
) -> StagingRefused | None:
    """A host is refused when none of its addresses may be reached (a download would connect
    only to those that may)."""
    refusals = [rules.address_refusal(host, address, literal=False) for address in addresses]
    if all(refusals):
        return refusals[0]
    return None


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


# --- a fetch made elsewhere -------------------------------------------------------------------


@dataclass(frozen=True)
class Remote:
    """An ``http(s)://`` location judged now for a download that another machine makes (e.g.
    a server the node boots): the host, its port, and the address the rules allow that the
    download is pinned to (None for an ``allow_hosts`` name, which is not pinned)."""

    location: str
    host: str
    port: int
    address: IPAddress | None


def remote_fetch(location: str, rules: StagingRules) -> Remote:
    """Judge ``location`` by the rules, resolving its host now; raises ``StagingRefused``
    (a rule forbids it) or ``StagingFailed`` (its host does not resolve). Local files are not
    fetched elsewhere: the other machine cannot read the node's data directories."""
    url = parse_location(location)
    scheme = url.scheme.lower()
    if scheme not in ("http", "https"):
        raise StagingRefused(
            SCHEME,
            "{scheme} locations are not fetched by the session's server; give an http(s):// URL",
            scheme=f"{scheme}:" if scheme else "relative",
        )
    host = http_host(url, location)
    port = url.port or (443 if scheme == "https" else 80)
    if host in rules.allow_hosts:
        return Remote(location, host, port, None)
    literal = parse_address(host)
    if literal is not None:
        refusal = rules.address_refusal(host, literal, literal=True)
        if refusal is not None:
            raise refusal
        return Remote(location, host, port, literal)
    if host == "localhost" or host.endswith(".localhost"):
        raise rules.address_refusal(host, LOOPBACK, literal=False)  # type: ignore[misc]
    addresses = _resolve(host, port)
    if not addresses:
        raise StagingFailed(f"{host} does not resolve: give a URL whose host name resolves")
    refusals = [rules.address_refusal(host, address, literal=False) for address in addresses]
    for address, refusal in zip(addresses, refusals, strict=True):
        if refusal is None:
            return Remote(location, host, port, address)
    raise refusals[0]  # type: ignore[misc]
