"""The Calycopis spec of 2024-11 to 2025-06 (the other implementation's schema before v1.0).

Resources came in a ``resources: {compute: [...], storage: [...], data: [...], volumes: [...]}``
wrapper (the compute resource as a list of one), volume mounts could be listed at the top level
and named from ``compute.volumes``, a volume mount listed the ``resources`` it mounts (with a
``cardinality``) and a storage resource the data ``resources`` staged into it, command arguments
could be numbers, an executable's description sat at its top level, and ``compute: {}`` asked
for the default compute resource.
"""

from __future__ import annotations

from typing import Any

from ..registry import KindRegistry
from .base import Doc, move_into_meta

# --- the request -----------------------------------------------------------------------------


def resources_wrapper(doc: Doc, registry: KindRegistry) -> Doc:
    """The resources in one block, the compute resource as a list of one::

        resources: {compute: [C], storage: [S1, S2], data: [D1], volumes: [V1]}
        ->  compute: C, storage: [S1, S2], data: [D1], volumes: [V1]

    Lists at the top level too are kept first; the volume mounts are then read as top-level
    ones (``top_level_volumes``). More than one compute resource is left as a list, which
    validation refuses (``/compute``): a session runs on one.
    """
    resources = doc.get("resources")
    if not isinstance(resources, dict) or not set(resources) <= WRAPPED:
        return doc
    del doc["resources"]
    compute = resources.get("compute")
    if isinstance(compute, list) and len(compute) <= 1:
        compute = compute[0] if compute else None
    if compute is not None and "compute" not in doc:
        doc["compute"] = compute
    for category in ("storage", "data", "volumes"):
        items = resources.get(category)
        if items is None:
            continue
        items = items if isinstance(items, list) else [items]
        present = doc.get(category)
        present = [] if present is None else present if isinstance(present, list) else [present]
        doc[category] = present + items
    return doc


WRAPPED = {"compute", "storage", "data", "volumes"}


def top_level_volumes(doc: Doc, registry: KindRegistry) -> Doc:
    """Volume mounts listed beside the resources, the compute resource naming them::

        volumes: [{name: v1, path: /in, resource: d1}, {name: v2, ...}]
        compute: {kind: K, volumes: [v1]}
        ->  compute: {kind: K, volumes: [{name: v1, path: /in, resource: d1}]}

    When the compute resource names none (or there is none: then the default one), it mounts
    them all. A name that matches no listed volume is left for validation to refuse.
    """
    volumes = doc.get("volumes")
    if not isinstance(volumes, list):
        return doc
    del doc["volumes"]
    compute = doc.setdefault("compute", {})
    if not isinstance(compute, dict):
        return doc
    by_name = {_name(v): v for v in volumes if isinstance(v, dict) and _name(v)}
    mounts = compute.get("volumes")
    if isinstance(mounts, list) and mounts:
        compute["volumes"] = [by_name.get(m, m) if isinstance(m, str) else m for m in mounts]
    else:
        compute["volumes"] = list(volumes)
    return doc


def _name(component: Doc) -> str | None:
    """A component's name, at its top level (this era's form) or in its ``meta``; None when it
    gives no string (validation then refuses what is there instead)."""
    meta = component.get("meta")
    name = component.get("name") or (meta.get("name") if isinstance(meta, dict) else None)
    return name if isinstance(name, str) else None


def storage_resource_lists(doc: Doc, registry: KindRegistry) -> Doc:
    """A storage resource listed the data resources staged into it; each data resource now
    names its storage::

        storage: [{name: s1, resources: [d1, d2]}], data: [{name: d1}, {name: d2}]
        ->  storage: [{name: s1}], data: [{name: d1, storage: s1}, {name: d2, storage: s1}]

    A list naming anything but data resources of the request, or a data resource that already
    names another storage, is left for validation to refuse (``/storage/N/resources``).
    """
    data = {_name(d): d for d in _items(doc, "data") if _name(d)}
    for storage in _items(doc, "storage"):
        named = storage.get("resources")
        if not _is_names(named) or not _name(storage):
            continue
        targets = [data.get(n) for n in named]
        if any(t is None or t.get("storage") not in (None, _name(storage)) for t in targets):
            continue
        for target in targets:
            target["storage"] = _name(storage)  # type: ignore[index]
        del storage["resources"]
    return doc


def volume_resource_lists(doc: Doc, registry: KindRegistry) -> Doc:
    """A volume mount listed the resources it mounts, and whether each container or each
    instance gets its own copy (``cardinality``); a mount now names one resource::

        volumes: [{path: /in, resources: [d1], cardinality: CONTAINER}]
        ->  volumes: [{path: /in, resource: d1}]

    A mount of several data resources mounts the storage they are staged into, together::

        volumes: [{name: v1, resources: [d1, d2]}], data: [{name: d1}, {name: d2}]
        ->  volumes: [{name: v1, resource: v1}],
            storage: [{kind: .../storage/simple-storage-resource.yaml, meta: {name: v1}}],
            data: [{name: d1, storage: v1}, {name: d2, storage: v1}]

    (the storage they already share, if they name one; else one made for the mount, named
    after it). ``cardinality`` is dropped: a session runs one container on one compute
    resource, so a copy per container and a copy per instance are the same copy. Several
    resources that cannot share one storage (a storage among them, or data resources naming
    different storage) are left for validation to refuse (``/compute/volumes/N/resources``).
    """
    compute = doc.get("compute")
    mounts = compute.get("volumes") if isinstance(compute, dict) else None
    for mount in mounts if isinstance(mounts, list) else []:
        if not isinstance(mount, dict):
            continue
        if mount.get("cardinality") in CARDINALITIES:
            del mount["cardinality"]
        named = mount.get("resources")
        if not _is_names(named) or "resource" in mount:
            continue
        shared = named[0] if len(named) == 1 else _shared_storage(doc, mount, named, registry)
        if shared is not None:
            del mount["resources"]
            mount["resource"] = shared
    return doc


CARDINALITIES = ("CONTAINER", "INSTANCE")


def _shared_storage(doc: Doc, mount: Doc, named: list[str], registry: KindRegistry) -> Any:
    """The storage that the data resources ``named`` are (or are now) all staged into; None
    when they cannot share one."""
    data = {_name(d): d for d in _items(doc, "data") if _name(d)}
    targets = [data.get(n) for n in named]
    if any(t is None for t in targets):
        return None
    chosen = {t.get("storage") for t in targets if t is not None and t.get("storage")}
    if len(chosen) > 1:
        return None
    if chosen:
        storage = chosen.pop()
    else:
        kind = registry.find_by_name("simple-storage-resource", "storage")
        taken = {_name(c) for category in ("storage", "data") for c in _items(doc, category)}
        storage = _name(mount) or f"storage-for-{named[0]}"
        if not kind or storage in taken:
            return None
        doc["storage"] = [*_items(doc, "storage"), {"kind": kind, "meta": {"name": storage}}]
    for target in targets:
        target["storage"] = storage  # type: ignore[index]
    return storage


def _items(doc: Doc, category: str) -> list[Doc]:
    items = doc.get(category)
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def _is_names(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(n, str) for n in value)


REQUEST = [resources_wrapper, top_level_volumes, storage_resource_lists, volume_resource_lists]


# --- components ------------------------------------------------------------------------------


def description_at_top_level(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """``{description: T}`` -> ``{meta: {description: T}}`` (what ``meta`` has wins)."""
    if isinstance(doc.get("description"), str):
        move_into_meta(doc, {"description": doc.pop("description")})
    return doc


def numeric_command_items(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """Command arguments that are numbers are their text: ``[sleep, 10]`` -> ``[sleep, "10"]``
    (and ``2.5`` -> ``"2.5"``); other non-strings are left for validation to refuse."""
    command = doc.get("command") if category == "executable" else None
    if isinstance(command, list):
        doc["command"] = [
            str(a) if isinstance(a, int | float) and not isinstance(a, bool) else a for a in command
        ]
    return doc


def default_compute(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """A compute resource without a kind is the default one: ``compute: {}`` -> ``compute:
    {kind: .../compute/simple-compute-resource.yaml}`` (with whatever else it gives)."""
    if category == "compute" and "kind" not in doc:
        kind = registry.find_by_name("simple-compute-resource", "compute")
        if kind:
            doc["kind"] = kind
    return doc


def default_volume_kind(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """A volume mount without a kind is a simple one: ``{path, resource}`` -> ``{kind:
    .../volume/simple-volume-mount.yaml, path, resource}``."""
    if category == "volume" and "kind" not in doc:
        kind = registry.find_by_name("simple-volume-mount", "volume")
        if kind:
            doc["kind"] = kind
    return doc


COMPONENT = [description_at_top_level, numeric_command_items, default_compute, default_volume_kind]

UPDATE: list[Any] = []
