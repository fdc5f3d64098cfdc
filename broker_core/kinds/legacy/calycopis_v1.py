"""The Calycopis-openapi schema v1.0 (the standard's present form, which Calycopis-broker and
its generated clients speak), where it differs from this node's canonical model.

The IVOA, SKAO and Rucio data resources keep their details in nested blocks; this node's
models keep them flat (as it always has, and as its answers echo them). A component may carry
its lifecycle ``phase`` and ``schedule`` (the schema's LifecycleComponent), which are the node's
to report. Update paths may be written as JSON pointers.
"""

from __future__ import annotations

from typing import Any

from ..registry import KindRegistry
from .base import Doc, is_kind

# the fields of each nested block -> the flat field they are in this node's model
IVOA_BLOCK = {"ivoid": "ivoid", "obscore": "obscore", "datalink": "datalink"}
SKAO_BLOCK = {
    "namespace": "namespace",
    "objectname": "objectname",
    "objecttype": "objecttype",
    "datasize": "datasize",
    "checksum": "checksum",
    "replicas": "replicas",
}
RUCIO_BLOCK = {
    "endpoint": "endpoint",
    "scope": "scope",
    "object": "objectname",
    "objectname": "objectname",
    "type": "objecttype",
}


def _flatten(doc: Doc, block: str, fields: dict[str, str]) -> None:
    """Move the known fields of ``doc[block]`` to the top level (a field given at the top level
    too keeps that value); a block with other fields, or no object, is left for validation."""
    nested = doc.get(block)
    if not isinstance(nested, dict) or not set(nested) <= set(fields):
        return
    del doc[block]
    for key, value in nested.items():
        doc.setdefault(fields[key], value)


def ivoa_block(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """An IVOA data resource::

    {kind: ivoa-data-resource, ivoa: {ivoid: I, obscore: {...}, datalink: {...}}}
    ->  {kind: ivoa-data-resource, ivoid: I, obscore: {...}, datalink: {...}}
    """
    if category == "data" and is_kind(doc, "ivoa-data-resource", "data", registry):
        _flatten(doc, "ivoa", IVOA_BLOCK)
    return doc


def skao_blocks(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """An SKAO data resource has both blocks::

    {kind: skao-data-resource, ivoa: {ivoid: I, ...},
     skao: {namespace: N, objectname: O, objecttype: FILE, datasize: 1, checksum: {...},
            replicas: [{rsename: R, dataurl: U}]}}
    ->  {kind: skao-data-resource, ivoid: I, ..., namespace: N, objectname: O, ...}
    """
    if category == "data" and is_kind(doc, "skao-data-resource", "data", registry):
        _flatten(doc, "ivoa", IVOA_BLOCK)
        _flatten(doc, "skao", SKAO_BLOCK)
    return doc


def rucio_block(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """A Rucio data resource (the block's ``object`` is ``objectname`` here, its ``type``
    ``objecttype``, as the SKAO block has them)::

        {kind: rucio-data-resource, rucio: {endpoint: E, scope: S, object: O, type: FILE}}
        ->  {kind: rucio-data-resource, endpoint: E, scope: S, objectname: O, objecttype: FILE}
    """
    if category == "data" and is_kind(doc, "rucio-data-resource", "data", registry):
        _flatten(doc, "rucio", RUCIO_BLOCK)
    return doc


def lifecycle_is_the_nodes(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """A component's lifecycle phase and schedule (the schema's LifecycleComponent, as an
    answer shows them, and as a client sends them back when it copies a component from an
    offer) are the node's to set; on input they are dropped::

        {kind: K, phase: INITIALIZING, schedule: {preparing: {...}, available: {...}}}
        ->  {kind: K}

    A phase that is not one of the schema's, or a schedule with other blocks, is left for
    validation to report.
    """
    if doc.get("phase") in LIFECYCLE_PHASES:
        del doc["phase"]
    schedule = doc.get("schedule")
    if isinstance(schedule, dict) and set(schedule) <= LIFECYCLE_SCHEDULE:
        del doc["schedule"]
    return doc


# the schema's LifecyclePhase values and LifecycleSchedule blocks
LIFECYCLE_PHASES = (
    "INITIALIZING",
    "WAITING",
    "PREPARING",
    "AVAILABLE",
    "RUNNING",
    "RELEASING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
)
LIFECYCLE_SCHEDULE = {"preparing", "available", "releasing"}


REQUEST: list[Any] = []
COMPONENT = [ivoa_block, skao_blocks, rucio_block, lifecycle_is_the_nodes]


# --- updates ---------------------------------------------------------------------------------

UPDATE_PATHS = {
    "/phase": "phase",
    "/schedule/duration": "schedule.duration",
    "schedule/duration": "schedule.duration",
    "/schedule.duration": "schedule.duration",
}


def pointer_paths(doc: Doc) -> Doc:
    """Paths written as JSON pointers: ``/phase`` -> ``phase``, ``/schedule/duration`` (or
    ``schedule/duration``) -> ``schedule.duration``."""
    path = doc.get("path")
    if isinstance(path, str) and path in UPDATE_PATHS:
        doc["path"] = UPDATE_PATHS[path]
    return doc


UPDATE = [pointer_paths]
