"""Data resources that the session's own machine fetches (a pod's init container, a server's
cloud-init), within the node's staging rules.

The node cannot stand between that machine and the network, so it judges each location when
the session is prepared and hands the machine a download it cannot widen:

- only ``http(s)://`` locations of the kinds that have one (a local ``file://`` path is the
  node's, which the machine cannot read);
- the host is resolved by the node and must have an address the rules allow; the download is
  pinned to that address (``curl --resolve``), so a name that resolves differently later (DNS
  rebinding) still reaches only the address that was judged. Hosts of ``staging.allow_hosts``
  are trusted by name and not pinned;
- ``curl`` is bounded by the rules' limits: ``max_bytes`` per location, the connect
  ``timeout``, ``max_time``, ``max_redirects``, and redirects to http(s) only.

What the machine cannot be held to is the address of a redirect's target (its own resolver
follows it): sites that must forbid that set ``max_redirects: 0``.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from broker_core.kinds.base import Component, Message, message
from broker_core.kinds.request import ExecutionRequest
from broker_core.staging.fetch import file_name
from broker_core.staging.placement import Placement, is_identified, sources_of
from broker_core.staging.rules import StagingFailed, StagingRefused, StagingRules, remote_fetch

from .contract import Execution, PlatformError, uuid_of

STATE_KEY = "remote_fetches"  # execution.state: data uuid -> the fetch as judged


@dataclass(frozen=True)
class Fetch:
    """One data resource as the session's machine downloads it."""

    uuid: str
    label: str  # the resource's name (else its uuid), for messages
    location: str
    file: str  # the file name it is saved as, inside a directory of its own
    host: str
    port: int
    address: str | None  # the judged address the download is pinned to (None: not pinned)

    @property
    def resolve(self) -> str | None:
        """``curl --resolve``'s ``host:port:address`` (an IPv6 address in brackets)."""
        if self.address is None:
            return None
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.host}:{self.port}:{address}"


def location_of(data: Component) -> str | None:
    location = getattr(data, "location", None)
    return location.strip() if isinstance(location, str) and location.strip() else None


def request_messages(platform: str, request: ExecutionRequest) -> list[Message]:
    """Why a request's data cannot be fetched by the session's machine (none: it can, as far
    as the scheme tells; the addresses are judged again at preparation). Identified data
    (ivoa, rucio, skao) is judged where the node's mappings put it: ``placement_messages``."""
    found = []
    for data in request.data:
        if is_identified(data):
            continue
        location = location_of(data)
        scheme = location.partition(":")[0].lower() if location else ""
        if scheme not in ("http", "https"):
            found.append(
                message(
                    "platform {platform}: the session's machine fetches data itself, from "
                    "http(s):// URLs only; {what} cannot be fetched",
                    level="WARN",
                    platform=platform,
                    what=location[:200] if location else f"a {data.kind} without a location",
                )
            )
    return found


UNREACHABLE = (
    "platform {platform}: {identifier} is mapped to {location}, a file of this node, which the "
    "session's machine cannot read (it fetches data itself, over http(s) only); a platform "
    "that stages on this node (local, slurm) can take it, or the site can map {via} to an "
    "http(s):// URL that serves it"
)


def placement_messages(platform: str, placements: Sequence[Placement | None]) -> list[Message]:
    """Why identified data, where the node's mappings put it, cannot be fetched by the
    session's machine: a mapping to the node's own files (a dataset's, any of its files)."""
    found = []
    for placement in placements:
        source = placement.source if placement is not None else None
        if source is None or placement is None or placement.problems:
            continue
        for one in [f for f, _ in source.dataset.files] if source.dataset else [source]:
            if _scheme(one.location) in ("http", "https"):
                continue
            mapped = one.mapped
            if mapped is None:  # a location of the request's own (a replica's, a DataLink's)
                found.append(message(
                    "platform {platform}: the session's machine fetches data itself, from "
                    "http(s):// URLs only; {what} ({pointer}) cannot be fetched", level="WARN",
                    platform=platform, what=one.location[:200], pointer=placement.at + one.at,
                ))  # fmt: skip
            else:
                found.append(message(
                    UNREACHABLE, level="WARN", platform=platform, identifier=mapped.identifier,
                    location=one.location[:300], via=mapped.via,
                ))  # fmt: skip
            break
    return found


def _scheme(location: str) -> str:
    return location.partition(":")[0].lower()


def plan_data(data: Component, rules: StagingRules) -> list[Fetch]:
    """Judge one data resource now: its own location, or for identified data (ivoa, rucio,
    skao) where the node's mappings put it (each file of a dataset), under the mapping's rules
    (its host is reached whatever its address); a ``PlatformError`` naming the rule."""
    if not is_identified(data):
        return [plan(data, rules)]
    label = f"data {data.name or uuid_of(data)}"
    try:
        sources = sources_of(data, rules)
    except StagingRefused as refused:
        raise PlatformError(f"{label}: {refused.text}") from None
    fetches = []
    for source in sources:
        mapped = source.mapped  # a location of the request's own: the rules judge its scheme
        if mapped is not None and _scheme(source.location) not in ("http", "https"):
            raise PlatformError(f"{label}: " + UNREACHABLE.format(
                platform="of this session", location=source.location[:300],
                identifier=mapped.identifier, via=mapped.via,
            ))  # fmt: skip
        fetches.append(_judged(uuid_of(data), label, source.location, source.rules))
    return fetches


def _judged(uuid: str, label: str, location: str, rules: StagingRules) -> Fetch:
    try:
        remote = remote_fetch(location, rules)
    except StagingRefused as refused:
        raise PlatformError(f"{label}: {refused.text}") from None
    except StagingFailed as failed:
        raise PlatformError(f"{label}: {failed}") from None
    address = str(remote.address) if remote.address is not None else None
    return Fetch(uuid, label, location, file_name(location), remote.host, remote.port, address)


def plan(component: Component, rules: StagingRules, what: str = "data") -> Fetch:
    """Judge one component's location now (a ``PlatformError`` naming the rule)."""
    label = f"{what} {component.name or uuid_of(component)}"
    location = location_of(component)
    if location is None:
        raise PlatformError(f"{label}: a {component.kind} has no location to fetch")
    return _judged(uuid_of(component), label, location, rules)


def prepare(execution: Execution, component: Component, what: str = "data") -> Fetch:
    """Judge a data resource (or a notebook: any component with a ``location``) for the
    session and keep the verdict in its state, where the machine's download is later built
    from (a repeated preparation judges again). Identified data may be several downloads
    (a dataset's files): kept as a list, the first returned."""
    if what == "data" and is_identified(component):
        planned = plan_data(component, execution.staging)
    else:
        planned = [plan(component, execution.staging, what)]
    kept = [asdict(f) for f in planned]
    execution.state.setdefault(STATE_KEY, {})[planned[0].uuid] = kept[0] if len(kept) == 1 else kept
    first = planned[0]
    pinned = f", pinned to {first.address}" if first.address else ""
    more = f" and {len(planned) - 1} more files from there" if len(planned) > 1 else ""
    execution.notes.append(f"{first.label} is fetched from {first.location}{pinned}{more}")
    return first


def fetches_of(execution: Execution, component: Component) -> list[Fetch]:
    """A component's downloads as judged at preparation (several for a dataset)."""
    entry = (execution.state.get(STATE_KEY) or {}).get(uuid_of(component))
    if entry is None:
        raise PlatformError(
            f"{component.name or uuid_of(component)} was not judged for staging at preparation"
        )
    return [Fetch(**e) for e in entry] if isinstance(entry, list) else [Fetch(**entry)]


def fetch_of(execution: Execution, component: Component) -> Fetch:
    """A component's (first) download as judged at preparation."""
    return fetches_of(execution, component)[0]


def prepare_missing(execution: Execution) -> None:
    """Judge the data resources not judged yet (a session prepared before they were)."""
    kept: dict[str, Any] = execution.state.get(STATE_KEY) or {}
    for data in execution.data:
        if uuid_of(data) not in kept:
            prepare(execution, data)


def fetches(execution: Execution) -> list[Fetch]:
    """The session's data as judged at preparation, in the request's order."""
    return [fetch for data in execution.data for fetch in fetches_of(execution, data)]


def curl_argv(fetch: Fetch, rules: StagingRules) -> list[str]:
    """The download of one location (to standard output), held to the rules' limits; curl
    checks ``--max-filesize`` only where the size is announced, so ``fetch_function`` checks
    what arrived too."""
    argv = [
        "curl",
        "--fail",
        "--retry",
        "3",
        "--silent",
        "--show-error",
        "--location",
        "--proto",
        "=http,https",
        "--proto-redir",
        "=http,https",
        "--max-redirs",
        str(rules.max_redirects),
        "--max-filesize",
        str(rules.max_bytes),
        "--connect-timeout",
        f"{rules.timeout:g}",
        "--max-time",
        f"{rules.max_time:g}",
    ]
    if fetch.resolve:
        argv += ["--resolve", fetch.resolve]
    return [*argv, fetch.location]


CURL_TOO_LARGE = 63  # curl's own exit code for a file over --max-filesize


def fetch_function(rules: StagingRules) -> str:
    """A shell function ``fetch DIR FILE CURL-ARGV...``: download into ``DIR/FILE`` through a
    hidden partial file, refusing more than ``max_bytes`` (exit 63, as curl does)."""
    return "\n".join(
        [
            "fetch() {",
            "  dir=$1 file=$2; shift 2",
            '  mkdir -p "$dir" || return $?',
            '  "$@" >"$dir/.$file.part" || { code=$?; rm -f "$dir/.$file.part"; return $code; }',
            f'  if [ "$(wc -c <"$dir/.$file.part")" -gt {rules.max_bytes} ]; then',
            f'    rm -f "$dir/.$file.part"; return {CURL_TOO_LARGE}',
            "  fi",
            '  mv "$dir/.$file.part" "$dir/$file"',
            "}",
        ]
    )


def fetch_args(
    fetch: Fetch, rules: StagingRules, directory: str, file: str | None = None
) -> list[str]:
    """The arguments of ``fetch`` for one download, saved in ``directory`` (as ``file``, by
    default the location's own name)."""
    return [directory, file or fetch.file, *curl_argv(fetch, rules)]


def fetch_command(
    fetch: Fetch, rules: StagingRules, directory: str, file: str | None = None
) -> list[str]:
    """One download as a command of its own (e.g. an init container's)."""
    script = fetch_function(rules) + '\nfetch "$@"'
    return ["sh", "-c", script, "fetch", *fetch_args(fetch, rules, directory, file)]


def fetches_command(several: list[Fetch], rules: StagingRules, directory: str) -> list[str]:
    """Several downloads into one directory (a dataset's files) as one command, stopping at
    the first that fails, with its exit code; the directory is its argument, as in
    ``fetch_command`` (which one download is)."""
    if len(several) == 1:
        return fetch_command(several[0], rules, directory)
    lines = [fetch_function(rules), "into=$1"]
    for fetch in several:
        args = " ".join(shlex.quote(a) for a in fetch_args(fetch, rules, directory)[1:])
        lines.append(f'fetch "$into" {args} || exit $?')
    return ["sh", "-c", "\n".join(lines), "fetch", directory]
