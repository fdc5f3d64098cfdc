"""The 2024 model: the IVOA ExecutionBroker drafts of 2023-2024 (ivoa-std/ExecutionBroker).

Components were discriminated by ``type`` and carried ``name``/``uuid``/``href`` at their top
level, with a ``properties`` map of free-form annotations (usually an empty key); kind URIs were
``urn:<name>-0.1``, ``uri:<name>-1.0`` or under ``.../EB/schema/types/``; amounts were
``{requested: {min, max}, offered: ...}``; the schedule was a list of ``{start, duration:
{min, max}}`` blocks, or an ``executing`` block, and components could carry schedules of their
own (``requested``/``offered``/``observed``); updates were wrapped as ``{update: {...}}``, had
``urn:`` kinds and set the session's ``state`` (or, in the prototypes, the ``offer``'s
``status``).
"""

from __future__ import annotations

import re
from typing import Any

from ...schedule import parse_duration
from ..registry import KindRegistry
from .base import META_KEYS, Doc, is_kind, move_into_meta
from .kind_uris import canonical_kind

# --- the request -----------------------------------------------------------------------------


def request_type_is_kind(doc: Doc, registry: KindRegistry) -> Doc:
    """``type`` was the discriminator: ``{type: X}`` -> ``{kind: X}`` (``kind`` wins)."""
    if "kind" not in doc and isinstance(doc.get("type"), str):
        doc["kind"] = doc.pop("type")
    return doc


def request_meta_at_top_level(doc: Doc, registry: KindRegistry) -> Doc:
    """``{name: n, uuid: u, href: h}`` -> ``{meta: {name: n, uuid: u, url: h}}``."""
    move_into_meta(doc, {META_KEYS[k]: doc.pop(k) for k in list(doc) if k in META_KEYS})
    return doc


def computer_is_compute(doc: Doc, registry: KindRegistry) -> Doc:
    """``{computer: {...}}`` -> ``{compute: {...}}`` (``compute`` wins)."""
    if "compute" not in doc and "computer" in doc:
        doc["compute"] = doc.pop("computer")
    return doc


def executing_schedule(doc: Doc, registry: KindRegistry) -> Doc:
    """The requested start and duration were those of the ``executing`` phase::

        schedule: {requested: {executing: {start: S, duration: PT1H}}}
        ->  schedule: {requested: {start: S, duration: PT1H}}

    (a start or duration given beside the block wins).
    """
    schedule = doc.get("schedule")
    requested = schedule.get("requested") if isinstance(schedule, dict) else None
    executing = requested.get("executing") if isinstance(requested, dict) else None
    if isinstance(executing, dict) and set(executing) <= {"start", "duration"}:
        del requested["executing"]  # type: ignore[union-attr]
        for key, value in executing.items():
            requested.setdefault(key, value)  # type: ignore[union-attr]
    return doc


def schedule_blocks(doc: Doc, registry: KindRegistry) -> Doc:
    """A list of schedule blocks, each with a start and a min/max duration::

        schedule: [{start: S1, duration: {min: PT1H, max: PT2H}}, {start: S2}]
        schedule: {requested: [{start: S1, duration: PT2H}, ...]}
        ->
        schedule: {requested: {start: [S1, S2], duration: PT2H}}

    The starts become the list of start intervals. The present model has one duration per
    request, not a range: it is the longest ``max`` of the blocks (a block without a ``max``
    gives its ``min``), because booking the most the client said the work may need means the
    work is not stopped at the end of a window it outgrows. A block without a start means "as
    soon as possible", so any such block drops the start list (as soon as possible is the
    earliest start of all). A ``{min, max}`` duration in the present form
    (``schedule.requested.duration``) is reduced the same way.
    """
    schedule = doc.get("schedule")
    if isinstance(schedule, dict) and isinstance(schedule.get("requested"), list):
        blocks = schedule["requested"]
    elif isinstance(schedule, list):
        blocks = schedule
    else:
        if isinstance(schedule, dict) and isinstance(schedule.get("requested"), dict):
            requested = schedule["requested"]
            if _is_min_max(requested.get("duration")):
                requested["duration"] = _one_duration([requested["duration"]])
        return doc
    if not blocks or not all(_is_block(b) for b in blocks):
        return doc  # not of this form: validation says what is wrong
    starts: list[Any] = []
    asap = False
    for block in blocks:
        start = block.get("start")
        if start is None:
            asap = True
        else:
            starts.extend(start if isinstance(start, list) else [start])
    requested: Doc = {}
    if starts and not asap:
        requested["start"] = starts if len(starts) > 1 else starts[0]
    duration = _one_duration([b.get("duration") for b in blocks])
    if duration is not None:
        requested["duration"] = duration
    doc["schedule"] = {"requested": requested}
    return doc


def _is_block(block: Any) -> bool:
    """``{start?, duration?}`` with a duration that is text or ``{min?, max?}``."""
    return (
        isinstance(block, dict)
        and bool(block)
        and set(block) <= {"start", "duration"}
        and (not isinstance(block.get("duration"), dict) or _is_min_max(block["duration"]))
    )


def _is_min_max(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and set(value) <= {"min", "max"}


def _one_duration(durations: list[Any]) -> Any:
    """The longest of the blocks' durations (``max``, else ``min``, of each; or a plain one)."""
    chosen: Any = None
    longest = -1.0
    for duration in durations:
        if isinstance(duration, dict):
            duration = duration.get("max") or duration.get("min")
        if duration is None:
            continue
        try:
            seconds = parse_duration(duration).total_seconds()
        except Exception:  # validation reports a malformed duration
            return duration
        if seconds > longest:
            chosen, longest = duration, seconds
    return chosen


REQUEST = [
    request_type_is_kind,
    request_meta_at_top_level,
    computer_is_compute,
    executing_schedule,
    schedule_blocks,
]


# --- components ------------------------------------------------------------------------------


def type_is_kind(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """``{type: X}`` -> ``{kind: X}`` (``kind`` wins when both are there)."""
    if "kind" not in doc and isinstance(doc.get("type"), str):
        doc["kind"] = doc.pop("type")
    return doc


def meta_at_top_level(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """``{name: n, uuid: u, href: h}`` -> ``{meta: {name: n, uuid: u, url: h}}`` (what
    ``meta`` already has wins)."""
    move_into_meta(doc, {META_KEYS[k]: doc.pop(k) for k in list(doc) if k in META_KEYS})
    return doc


def older_kind_uri(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """``kind: urn:docker-container-0.1`` (or any spelling in ``kind_uris``) -> the canonical
    ``kind: https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/executable/
    docker-container.yaml``."""
    if isinstance(doc.get("kind"), str):
        doc["kind"] = canonical_kind(doc["kind"], category, registry)
    return doc


def properties_are_annotations(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """Every component had ``properties``, a map of free-form names and values (the model's
    NameValueMap) that said nothing about what to run or book; in the documents of that era it
    is almost always an empty key. The present model has no place for annotations, so they are
    dropped::

        {type: urn:jupyter-notebook-0.1, properties: null, notebook: U}  ->  {..., notebook: U}
        {kind: K, properties: {owner: albert}}                           ->  {kind: K}

    (also a list of ``{name, value}`` pairs). A ``properties`` of any other form is left for
    validation to report as an unknown field.
    """
    if "properties" in doc and _is_annotations(doc["properties"]):
        del doc["properties"]
    return doc


def _is_annotations(value: Any) -> bool:
    scalar = (str, int, float, bool, type(None))
    if value is None:
        return True
    if isinstance(value, dict):
        return all(isinstance(k, str) and isinstance(v, scalar) for k, v in value.items())
    return isinstance(value, list) and all(
        isinstance(p, dict)
        and set(p) <= {"name", "key", "value"}
        and "value" in p
        and isinstance(p["value"], scalar)
        for p in value
    )


def component_schedule_blocks(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """A component carried its own schedule: what the client asked for (``requested``, e.g. a
    preparation time), what was offered and what was observed. When a component is prepared
    and for how long is the node's to work out (and to report), so the block is dropped::

        {kind: K, schedule: {requested: {preparing: {duration: PT5M}}}}  ->  {kind: K}
    """
    schedule = doc.get("schedule")
    if isinstance(schedule, dict) and schedule and set(schedule) <= COMPONENT_SCHEDULE:
        del doc["schedule"]
    return doc


COMPONENT_SCHEDULE = {"requested", "offered", "observed"}


def notebook_is_location(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """A Jupyter notebook's URL was ``notebook``: ``{notebook: U}`` -> ``{location: U}``."""
    if (
        is_kind(doc, "jupyter-notebook", "executable", registry)
        and "location" not in doc
        and isinstance(doc.get("notebook"), str)
    ):
        doc["location"] = doc.pop("notebook")
    return doc


def image_as_a_string(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """A container image was one string: ``{image: R}`` -> ``{image: {locations: [R]}}``
    (containers only: another kind's ``image``, a VM's, is a name of its own)."""
    containers = ("docker-container", "singularity-container")
    if (
        category == "executable"
        and isinstance(doc.get("image"), str)
        and any(is_kind(doc, name, "executable", registry) for name in containers)
    ):
        doc["image"] = {"locations": [doc["image"]]}
    return doc


def requested_and_offered_amounts(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """Amounts had a requested and an offered range; a request's is the requested one::

        cores: {requested: {min: 1, max: 2}, offered: {...}}  ->  cores: {min: 1, max: 2}

    (also ``memory``; ``size`` of storage; a ``minimal`` flag is dropped: the node offers
    the most that fits up to the max, never below the min; ``units: GiB`` is what amounts
    are counted in, other units are left for validation to refuse).
    """
    for field in ("cores", "memory", "size"):
        amount = doc.get(field)
        if (
            isinstance(amount, dict)
            and isinstance(amount.get("requested"), dict)
            and set(amount) <= {"requested", "offered"}
        ):
            requested = dict(amount["requested"])
            requested.pop("minimal", None)
            if requested.get("units") == "GiB":  # the unit amounts are counted in
                del requested["units"]
            doc[field] = requested
    return doc


def amount_units(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """Amounts named their unit; ``GiB`` is the one amounts are counted in, and ``none`` said
    there was none to give (the model's own)::

        size: {min: 200, max: 500, units: none}  ->  size: {min: 200, max: 500}

    (also ``cores`` and ``memory``); any other unit is left for validation to refuse.
    """
    for field in ("cores", "memory", "size"):
        amount = doc.get(field)
        if isinstance(amount, dict) and str(amount.get("units", "")).lower() in MODEL_UNITS:
            del amount["units"]
    return doc


MODEL_UNITS = ("gib", "none")


def port_numbers_as_strings(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """Ports were strings, with the external interface's ``address`` beside them::

    {internal: "8080", external: "30080", address: "192.0.2.1"}
    ->  {internal: 8080, external: {port: 30080, addresses: ["192.0.2.1"]}}
    """
    network = doc.get("network") if category == "executable" else None
    for port in (network.get("ports") if isinstance(network, dict) else None) or []:
        if not isinstance(port, dict):
            continue
        for side in ("internal", "external"):
            if isinstance(port.get(side), str) and port[side].strip().isdigit():
                port[side] = int(port[side])
        if isinstance(port.get("address"), str):
            external = port.get("external")
            external = external if isinstance(external, dict) else {"port": external}
            if external.get("port") is None:
                external.pop("port")
            external.setdefault("addresses", [port.pop("address")])
            port["external"] = external
    return doc


def rucio_domain_and_object(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """A Rucio resource had ``domain`` and ``object``: -> ``scope`` and ``objectname``."""
    if is_kind(doc, "rucio-data-resource", "data", registry):
        for old, new in (("domain", "scope"), ("object", "objectname")):
            if old in doc and new not in doc:
                doc[new] = doc.pop(old)
    return doc


COMPONENT = [
    type_is_kind,
    meta_at_top_level,
    older_kind_uri,
    properties_are_annotations,
    component_schedule_blocks,
    notebook_is_location,
    image_as_a_string,
    requested_and_offered_amounts,
    amount_units,
    port_numbers_as_strings,
    rucio_domain_and_object,
]


# --- updates ---------------------------------------------------------------------------------


def update_wrapper(doc: Doc) -> Any:
    """``{update: {kind: K, path: P, value: V}}`` -> ``{kind: K, path: P, value: V}`` (only
    when ``update`` is all there is)."""
    if set(doc) == {"update"} and isinstance(doc["update"], dict):
        return dict(doc["update"])
    return doc


def update_type_is_kind(doc: Doc) -> Doc:
    """``{type: uri:enum-value-update, ...}`` -> ``{kind: uri:enum-value-update, ...}``."""
    if "kind" not in doc and isinstance(doc.get("type"), str):
        doc["kind"] = doc.pop("type")
    return doc


_OLDER_UPDATE_KIND = re.compile(r"^(?:urn|uri):(?P<name>[a-z-]+?-update)(?:-\d+\.\d+)?$")


def older_update_kind(doc: Doc) -> Doc:
    """``urn:enum-value-update-0.1``, ``urn:enum-value-update``, ``uri:enum-value-update-1.0``
    -> ``uri:enum-value-update`` (and so for every ``*-update``)."""
    kind = doc.get("kind")
    if isinstance(kind, str) and (match := _OLDER_UPDATE_KIND.match(kind)):
        doc["kind"] = f"uri:{match['name']}"
    return doc


def state_is_phase(doc: Doc) -> Doc:
    """A session's phase was its ``state``: ``{path: state}`` -> ``{path: phase}``."""
    if doc.get("path") in ("state", "/state"):
        doc["path"] = "phase"
    return doc


def offer_status(doc: Doc) -> Any:
    """The 2024 prototypes accepted an offer by setting its status::

        {offer: {status: ACCEPTED}}  ->  {kind: uri:enum-value-update, path: phase, value: ACCEPTED}

    (only when ``offer`` with a ``status`` is all there is).
    """
    offer = doc.get("offer")
    if set(doc) == {"offer"} and isinstance(offer, dict) and set(offer) == {"status"}:
        return {"kind": "uri:enum-value-update", "path": "phase", "value": offer["status"]}
    return doc


UPDATE = [update_wrapper, offer_status, update_type_is_kind, older_update_kind, state_is_phase]
