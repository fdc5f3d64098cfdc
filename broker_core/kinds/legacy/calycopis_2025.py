"""The Calycopis spec of 2024-11 to 2025-06 (the other implementation's schema before v1.0).

Resources came in a ``resources: {compute: [...], storage: [...], data: [...]}`` wrapper (the
compute resource as a list of one), volume mounts could be listed at the top level and named
from ``compute.volumes``, command arguments could be numbers, an executable's description sat
at its top level, and ``compute: {}`` asked for the default compute resource.
"""

from __future__ import annotations

from typing import Any

from ..registry import KindRegistry
from .base import Doc, move_into_meta

# --- the request -----------------------------------------------------------------------------


def resources_wrapper(doc: Doc, registry: KindRegistry) -> Doc:
    """The resources in one block, the compute resource as a list of one::

        resources: {compute: [C], storage: [S1, S2], data: [D1]}
        ->  compute: C, storage: [S1, S2], data: [D1]

    Lists at the top level too are kept first. More than one compute resource is left as a
    list, which validation refuses (``/compute``): a session runs on one.
    """
    resources = doc.get("resources")
    if not isinstance(resources, dict) or not set(resources) <= {"compute", "storage", "data"}:
        return doc
    del doc["resources"]
    compute = resources.get("compute")
    if isinstance(compute, list) and len(compute) <= 1:
        compute = compute[0] if compute else None
    if compute is not None and "compute" not in doc:
        doc["compute"] = compute
    for category in ("storage", "data"):
        items = resources.get(category)
        if items is None:
            continue
        items = items if isinstance(items, list) else [items]
        present = doc.get(category)
        present = [] if present is None else present if isinstance(present, list) else [present]
        doc[category] = present + items
    return doc


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


def _name(volume: Doc) -> Any:
    meta = volume.get("meta")
    return volume.get("name") or (meta.get("name") if isinstance(meta, dict) else None)


REQUEST = [resources_wrapper, top_level_volumes]


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
