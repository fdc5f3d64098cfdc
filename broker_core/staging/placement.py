"""Where each data resource of a request is staged from, and how long that takes.

A ``simple-data-resource`` is staged from its own ``location``. An identified one (ivoa, rucio,
skao) is staged from where the site's mappings put it (:mod:`.mappings`): from a mapped file the
staging rules are narrowed to the mapping's root (which needs no ``file_roots`` entry: the site
named it), from a mapped URL they also reach the mapping's host (the site's own server). One
the node maps nothing of is staged from a location the request carries itself (a SKAO replica's
``dataurl``, a DataLink row's ``access_url``), within the ordinary rules; without one it cannot
be staged here, and the request is answered NO saying what the node does map.

At request time (:func:`place`) the mapped data is looked at, within bounded time: a file's
size from its ``stat`` (it must exist, and stay under its root once links are resolved), a
URL's from the size the request declares or a ``HEAD``; size over the mapping's bandwidth is the
staging time booked in front of the session. When the session is prepared the copy or download
applies the same rules again (:func:`source_of`, then :mod:`.files`, :mod:`.fetch`).
"""

from __future__ import annotations

import ipaddress
import math
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from ..kinds.base import Component, Message, Problem, message
from ..kinds.builtin import IvoaDataLink, IvoaDataResource, RucioDataResource, SkaoDataResource
from .addresses import parse_address
from .datasets import TYPES, list_files
from .fetch import content_length
from .files import too_large
from .mappings import DataMappings, Mapped, Unmappable, map_ivoid, map_rucio, rucio_mapping
from .rules import StagingFailed, StagingRefused, StagingRules, location_refusals

MAPPINGS = "mappings"  # the rule's name, as messages give it
REQUEST_HEAD_SECONDS = 2.0  # at request time, HEADs take at most this long in all
MAX_HEADS = 16  # HEADs one request makes, at most (the rest: the platform's usual time)
MAX_WALK = 10_000  # entries a directory's size is summed over, at most
IDENTIFIED = (IvoaDataResource, RucioDataResource, SkaoDataResource)
MISSING = (
    "{identifier} is under {via}, which this node maps, but this node has no such data; check "
    "the identifier, or ask a node that holds it"
)
Lookup = Callable[[], Mapped | None]  # an identifier's mapping, looked up
Heard = tuple[int, int | None]  # what a HEAD answered: its status and announced length
_heads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ebroker-staging-head")


def is_identified(data: Component) -> bool:
    """Whether the resource names its data by an identifier rather than a location."""
    return isinstance(data, IDENTIFIED)


@dataclass(frozen=True)
class Source:
    """Where one data resource is staged from, the rules staging it keeps to, and the mapping
    that put it there (None: a location of the request's own)."""

    location: str
    rules: StagingRules
    mapped: Mapped | None = None
    at: str = "/location"  # the field of the resource the location came from
    instead: Unplaced | None = None  # a location of its own: why its identifier did not map
    dataset: Dataset | None = None  # a Rucio DATASET or CONTAINER: its files, each mapped


@dataclass(frozen=True)
class Dataset:
    """A Rucio DATASET or CONTAINER as listed: where each of its files stages from, and the
    size the listing gives it."""

    identifier: str  # scope:name
    kind: str  # DATASET or CONTAINER
    via: str  # the scope mapping that listed it
    files: tuple[tuple[Source, int | None], ...]


@dataclass(frozen=True)
class Unplaced:
    """An identified resource this node cannot stage: the field to point at and why."""

    at: str
    template: str
    values: dict[str, str]


def source_of(data: Component, rules: StagingRules) -> Source:
    """Where ``data`` is staged from now, by the node's rules and mappings; an identified
    resource that cannot be staged here is a ``StagingRefused`` (rule ``mappings``). A
    dataset's source lists its files (``Source.dataset``), each with a source of its own."""
    if not is_identified(data):
        return Source(str(getattr(data, "location", None) or ""), rules)
    found = locate(data, rules, rules.timeout)
    if isinstance(found, Unplaced):
        raise StagingRefused(MAPPINGS, found.template, **found.values)
    return found


def sources_of(data: Component, rules: StagingRules) -> list[Source]:
    """Every location ``data`` stages from: its own, or each file of a dataset."""
    source = source_of(data, rules)
    if source.dataset is None:
        return [source]
    return [file for file, _ in source.dataset.files]


def locate(
    data: Component, rules: StagingRules, seconds: float = REQUEST_HEAD_SECONDS
) -> Source | Unplaced:
    """An identified resource's source: its mapping's, else a location it carries itself (a
    dataset's files are listed in at most ``seconds``)."""
    mappings = rules.mappings
    unplaced: Unplaced | None = None
    if isinstance(data, RucioDataResource) and (data.objecttype or "FILE").upper() in TYPES:
        return _dataset(data, rules, seconds)
    for at, identifier, mapper in _identifiers(data, mappings):
        try:
            mapped = mapper()
        except Unmappable as exc:
            unplaced = unplaced or Unplaced(at, exc.template, exc.values)
            continue
        if mapped is not None:
            return Source(mapped.location, _rules_for(mapped, rules), mapped, at)
        unplaced = unplaced or _unmapped(data, at, identifier, mappings)
    direct = direct_location(data)
    if direct is not None:
        return Source(direct[1], rules, None, direct[0], instead=unplaced)
    if unplaced is None:  # named by nothing this node reads (its problems say what is missing)
        unplaced = Unplaced("", "the data resource names no data this node can find", {})
    return unplaced


def _identifiers(data: Component, mappings: DataMappings) -> list[tuple[str, str, Lookup]]:
    """The identifiers a resource names its data by, in the order they are tried: the field
    they are in, as shown, and the lookup."""
    found: list[tuple[str, str, Lookup]] = []
    if isinstance(data, RucioDataResource | SkaoDataResource):
        scope = data.scope if isinstance(data, RucioDataResource) else data.namespace
        name = (data.objectname or "").strip()
        field_name = "/scope" if isinstance(data, RucioDataResource) else "/namespace"
        if scope and name:
            scope = scope.strip()
            found.append((field_name, f"{scope}:{name}",
                          lambda: _rucio_file(data, scope, name, mappings)))  # fmt: skip
    if isinstance(data, IvoaDataResource | SkaoDataResource) and (data.ivoid or "").strip():
        ivoid = (data.ivoid or "").strip()
        found.append(("/ivoid", ivoid, lambda: map_ivoid(ivoid, mappings)))
    return found


def _rucio_file(data: Component, scope: str, name: str, mappings: DataMappings) -> Mapped | None:
    return map_rucio(scope, name, mappings)


def _dataset(data: RucioDataResource, rules: StagingRules, seconds: float) -> Source | Unplaced:
    """A Rucio DATASET or CONTAINER: listed by its scope's mapping, each file mapped by its
    own scope's (so that a NO says which file, or what the node lacks to list them)."""
    mappings = rules.mappings
    scope, name = (data.scope or "").strip(), (data.objectname or "").strip()
    kind = (data.objecttype or "").upper()
    mapping = rucio_mapping(scope, mappings)
    if mapping is None:
        return _unmapped(data, "/scope", f"{scope}:{name}", mappings)
    try:
        listed = list_files(scope, name, kind, mapping, rules, seconds)
        files = []
        for file in listed:
            mapped = map_rucio(file.scope, file.name, mappings)
            if mapped is None:
                raise Unmappable(
                    "the {kind} {identifier} holds {file}, of a scope this node maps nothing "
                    "of (it maps Rucio scopes: {scopes}); ask a node that holds it all",
                    kind=kind, identifier=f"{scope}:{name}"[:300],
                    file=f"{file.scope}:{file.name}", scopes=mappings.rucio_scopes(),
                )  # fmt: skip
            files.append((Source(mapped.location, _rules_for(mapped, rules), mapped,
                                 "/objectname"), file.bytes))  # fmt: skip
    except Unmappable as exc:  # no list_files: the type is what this node cannot take
        at = "/objectname" if mapping.list_files else "/objecttype"
        return Unplaced(at, exc.template, exc.values)
    dataset = Dataset(f"{scope}:{name}", kind, mapping.scope, tuple(files))
    return Source(f"rucio:{scope}:{name}", rules, None, "/objectname", dataset=dataset)


def _unmapped(data: Component, at: str, identifier: str, mappings: DataMappings) -> Unplaced:
    alternative = (
        "a replica's dataurl"
        if isinstance(data, SkaoDataResource)
        else "a datalink row's access_url"
        if isinstance(data, IvoaDataResource)
        else "a simple-data-resource with its URL"
    )
    return Unplaced(
        at,
        "{identifier} is not data this node can stage: this node maps none of it (it maps "
        "ivo:// identifiers under: {prefixes}; Rucio scopes: {scopes}); ask a node that holds "
        "this data, or give {alternative} to stage it from",
        {"identifier": identifier[:300], "prefixes": mappings.ivoa_prefixes(),
         "scopes": mappings.rucio_scopes(), "alternative": alternative},
    )  # fmt: skip


def direct_location(data: Component) -> tuple[str, str] | None:
    """A location the resource carries itself (the field it is in, and the URL): a SKAO
    replica's ``dataurl``, or the ``access_url`` of a DataLink row for the data itself."""
    for i, replica in enumerate(getattr(data, "replicas", None) or []):
        if (replica.dataurl or "").strip():
            return f"/replicas/{i}/dataurl", replica.dataurl.strip()
    link = getattr(data, "datalink", None)
    if (
        isinstance(link, IvoaDataLink)
        and (link.access_url or "").strip()
        and link.semantics in (None, "", "#this")
    ):
        return "/datalink/access_url", (link.access_url or "").strip()
    return None


def _rules_for(mapped: Mapped, rules: StagingRules) -> StagingRules:
    """The rules for staging from a mapping: only its root (a file), or its host too (a URL)."""
    if mapped.is_file:
        return rules.model_copy(update={"file_roots": (os.path.realpath(mapped.target.root),)})
    return rules_for_host(mapped.target.host or "", rules)


def rules_for_host(host: str, rules: StagingRules) -> StagingRules:
    """The rules, reaching one more host of the site's (a mapped URL's, a Rucio server)."""
    literal = parse_address(host.strip("[]"))
    if literal is not None:  # an address is reached by its network, a name by its name
        network = ipaddress.ip_network(literal)
        return rules.model_copy(update={"allow_networks": (*rules.allow_networks, network)})
    return rules.model_copy(update={"allow_hosts": (*rules.allow_hosts, host)})


# --- at request time ---------------------------------------------------------------------------


@dataclass
class Placement:
    """One data resource as a request's offers see it: where it stages from, its size and
    staging time when known, and the problems that refuse it (at their pointers)."""

    at: str  # the resource's pointer, /data/<i>
    source: Source | None = None
    bytes: int | None = None
    seconds: int | None = None  # its staging time, when its size is known
    problems: list[Problem] = field(default_factory=list)

    def note(self) -> Message | None:
        """What an offer says of a mapped resource's staging."""
        dataset = self.source.dataset if self.source else None
        if dataset is not None and self.seconds is not None and self.bytes is not None:
            return message(
                "{pointer}: the {kind} {identifier} is staged from this node's data ({via}): "
                "{files} files, {bytes} bytes in about {seconds} s, before the start",
                pointer=self.at, kind=dataset.kind, identifier=dataset.identifier,
                via=dataset.via, files=str(len(dataset.files)), bytes=str(self.bytes),
                seconds=str(self.seconds),
            )  # fmt: skip
        mapped = self.source.mapped if self.source else None
        if mapped is None or self.seconds is None or self.bytes is None:
            return None
        return message(
            "{pointer}: {identifier} is staged from this node's data ({via}): {bytes} bytes in "
            "about {seconds} s at {bandwidth} bytes/s, before the start",
            pointer=self.at, identifier=mapped.identifier, via=mapped.via,
            bytes=str(self.bytes), seconds=str(self.seconds), bandwidth=str(mapped.bandwidth),
        )  # fmt: skip


def place(data: list[Component], rules: StagingRules) -> list[Placement | None]:
    """Each identified resource's placement (None for the others, which are judged by their
    location), looked at within bounded time."""
    placements: list[Placement | None] = []
    heads = {}
    for i, d in enumerate(data):
        if not is_identified(d):
            placements.append(None)
            continue
        placement = Placement(f"/data/{i}")
        placements.append(placement)
        found = locate(d, rules)
        if isinstance(found, Unplaced):
            placement.problems.append(_problem(placement.at, found))
            continue
        placement.source = found
        if found.dataset is not None:
            _look_at_dataset(placement, found.dataset, rules)
            continue
        if found.mapped is None:  # the request's own location: the ordinary rules judge it
            (refused,) = location_refusals([found.location], rules)
            if refused is not None:
                if found.instead is not None:  # neither the identifier nor the location
                    placement.problems.append(_problem(placement.at, found.instead))
                placement.problems.append(refused.problem(placement.at + found.at))
                continue
        if found.mapped is not None and found.mapped.is_file:
            _look_at_file(placement, found.mapped, found.rules)
        elif (declared := declared_size(d)) is not None:
            placement.bytes = declared
        elif len(heads) < MAX_HEADS:
            heads[i] = _heads.submit(_safe_head, found.location, found.rules,
                                     REQUEST_HEAD_SECONDS)  # fmt: skip
    if heads:
        wait(heads.values(), timeout=REQUEST_HEAD_SECONDS + 0.5)
    for i, future in heads.items():
        future.cancel()  # one still queued is not asked at all
        placement = placements[i]
        assert placement is not None and placement.source is not None
        _heard(placement, placement.source, future.result() if future.done() else None)
    for p in placements:
        if p is not None:
            _time(p, rules)
    return placements


def _time(placement: Placement, rules: StagingRules) -> None:
    """The staging time of data of a known size (or its refusal, past ``max_bytes``)."""
    source = placement.source
    if source is None or placement.bytes is None or placement.problems or source.dataset:
        return
    if placement.bytes > rules.max_bytes:
        shown = source.mapped.identifier if source.mapped else source.location
        placement.problems.append(
            too_large(rules.max_bytes, shown).problem(placement.at + source.at)
        )
        return
    bandwidth = source.mapped.bandwidth if source.mapped else rules.mappings.bandwidth
    placement.seconds = max(1, math.ceil(placement.bytes / bandwidth))


def _problem(at: str, unplaced: Unplaced) -> Problem:
    return Problem(at + unplaced.at, unplaced.template, unplaced.values)


def declared_size(data: Component) -> int | None:
    """The size the request says the data has: a SKAO ``datasize``, a DataLink row's
    ``content_length``."""
    size = getattr(data, "datasize", None)
    if isinstance(size, int) and size >= 0:
        return size
    link = getattr(data, "datalink", None)
    if isinstance(link, IvoaDataLink) and isinstance(link.content_length, int):
        return link.content_length if link.content_length >= 0 else None
    return None


def _look_at_file(placement: Placement, mapped: Mapped, rules: StagingRules) -> None:
    """A mapped file must be under its root once links are resolved, and exist: its size."""
    at = placement.at + (placement.source.at if placement.source else "")
    values = {"identifier": mapped.identifier[:300], "via": mapped.via}
    if rules.file_refusal(mapped.path) is not None:
        placement.problems.append(Problem(at, "{identifier} leads outside this node's data for "
                                          "{via} once links are resolved; give another "
                                          "identifier", values))  # fmt: skip
        return
    try:
        info = os.stat(mapped.path)
    except FileNotFoundError:
        placement.problems.append(Problem(at, MISSING, values))
        return
    except OSError:
        return  # not the node's to read: staging (as the session's user) may still
    placement.bytes = _tree_size(mapped.path) if stat.S_ISDIR(info.st_mode) else info.st_size


def _look_at_dataset(placement: Placement, dataset: Dataset, rules: StagingRules) -> None:
    """A dataset's size and staging time: its files' (a mapped file's from its ``stat``, a
    URL's as listed), each at its own mapping's bandwidth; past ``max_bytes`` in all a NO."""
    total, seconds, known = 0, 0.0, True
    for source, listed in dataset.files:
        mapped = source.mapped
        assert mapped is not None
        size = listed
        if mapped.is_file:
            one = Placement(placement.at, source)
            _look_at_file(one, mapped, source.rules)
            if one.problems:
                placement.problems.extend(one.problems)
                return
            size = one.bytes if one.bytes is not None else listed
        if size is None:
            known = False
            continue
        total += size
        seconds += size / mapped.bandwidth
    if total > rules.max_bytes:
        placement.problems.append(
            too_large(rules.max_bytes, f"the {dataset.kind} {dataset.identifier}").problem(
                placement.at + "/objectname"
            )
        )
        return
    if known:
        placement.bytes, placement.seconds = total, max(1, math.ceil(seconds))


def _tree_size(path: str) -> int | None:
    """The bytes of the regular files under a directory (links not followed), or None when it
    has more than ``MAX_WALK`` entries."""
    total, seen = 0, 0
    for directory, dirs, files in os.walk(path, followlinks=False):
        seen += len(dirs) + len(files)
        if seen > MAX_WALK:
            return None
        for name in files:
            try:
                info = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def _heard(placement: Placement, source: Source, answer: Heard | None) -> None:
    """What a HEAD said: a size, a refusal, or that the data is not there (404, 410)."""
    if answer is None:
        return  # no answer in time: the platform's usual staging time is booked
    status, length = answer
    if status in (404, 410) and source.mapped is not None:
        placement.problems.append(Problem(
            placement.at + source.at,
            "{identifier} is under {via}, which this node maps, but its server has no such "
            "data ({status}); check the identifier, or ask a node that holds it",
            {"identifier": source.mapped.identifier[:300], "via": source.mapped.via,
             "status": str(status)},
        ))  # fmt: skip
    elif status == 200 and isinstance(length, int):
        placement.bytes = length


def _safe_head(location: str, rules: StagingRules, seconds: float) -> Heard | None:
    try:
        return content_length(location, rules, seconds)
    except (StagingRefused, StagingFailed):
        return None
