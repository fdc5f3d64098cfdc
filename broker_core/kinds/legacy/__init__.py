"""Normalise documents of earlier versions of the data model into the canonical form.

This runs before validation (``broker_core.http.negotiation``), so the spec and the models only
ever see the canonical form. It is a table of small rewrites, one module per era of the model,
applied in the order of ``ERAS`` (oldest first), each a list of named functions whose
docstrings show the form before and after:

=================== ==========================================================================
``eb_2024``         the 2024 model: ``type`` for ``kind``; top-level ``name``/``uuid``/``href``;
                    ``computer``; older kind URIs (``kind_uris``); ``properties`` annotations
                    (dropped); ``{requested, offered}`` amounts and ``units``; schedule block
                    lists and ``executing`` blocks; components' own schedules (dropped);
                    string ports; ``{update: ...}`` wrappers, ``urn:`` update kinds,
                    ``path: state``, the prototypes' ``{offer: {status}}``
``calycopis_2025``  Calycopis 2024-11..2025-06: the ``resources`` wrapper (volumes too);
                    top-level ``volumes``; storage and volume ``resources`` lists and
                    ``cardinality``; numeric command arguments; a top-level ``description``;
                    ``compute: {}`` (and volume mounts without a kind)
``calycopis_v1``    the standard's v1.0 forms this node keeps otherwise: the nested ``ivoa``,
                    ``skao`` and ``rucio`` blocks of data resources (flattened); components'
                    lifecycle ``phase`` and ``schedule`` (the node's, dropped); update paths
                    as JSON pointers (``/phase``, ``/schedule/duration``)
``ebroker_1``       this node's earlier forms: bare port numbers (now ``{port: N}``); one
                    storage or data resource where a list is expected
=================== ==========================================================================

A request goes through every era's ``REQUEST`` rewrites (its structure), then each of its
components (executable, compute, the compute's volume mounts, storage, data) through every
era's ``COMPONENT`` rewrites; an update through every ``UPDATE`` rewrite. Inputs are never
modified: the document is copied first.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from ..registry import KindRegistry
from . import calycopis_2025, calycopis_v1, eb_2024, ebroker_1
from .base import ComponentRewrite, Doc, RequestRewrite, UpdateRewrite
from .kind_uris import canonical_kind

ERAS = (eb_2024, calycopis_2025, calycopis_v1, ebroker_1)

REQUEST_REWRITES: list[RequestRewrite] = [r for era in ERAS for r in era.REQUEST]
COMPONENT_REWRITES: list[ComponentRewrite] = [r for era in ERAS for r in era.COMPONENT]
UPDATE_REWRITES: list[UpdateRewrite] = [r for era in ERAS for r in era.UPDATE]

__all__ = [
    "COMPONENT_REWRITES",
    "ERAS",
    "REQUEST_REWRITES",
    "UPDATE_REWRITES",
    "canonical_kind",
    "normalise_component",
    "normalise_request",
    "normalise_update",
]


def normalise_request(doc: Any, registry: KindRegistry) -> Any:
    """A request document in the canonical form (a new object; non-objects pass through)."""
    if not isinstance(doc, dict):
        return doc
    doc = copy.deepcopy(doc)
    for rewrite in REQUEST_REWRITES:
        doc = rewrite(doc, registry)
    for category, component in _components(doc, registry):
        _rewrite_component(component, category, registry)
    # a combined request (aggregators): each part's request is a request like any other
    for part in doc.get("parts") if isinstance(doc.get("parts"), list) else ():
        if isinstance(part, dict) and isinstance(part.get("request"), dict):
            part["request"] = normalise_request(part["request"], registry)
    return doc


def normalise_component(doc: Any, category: str, registry: KindRegistry) -> Any:
    """One component (with a compute resource's volume mounts) in the canonical form."""
    if not isinstance(doc, dict):
        return doc
    doc = copy.deepcopy(doc)
    _rewrite_component(doc, category, registry)
    if category == "compute":
        for volume in _volumes(doc):
            _rewrite_component(volume, "volume", registry)
    return doc


def normalise_update(doc: Any) -> Any:
    """An update document in the canonical form (a new object; non-objects pass through)."""
    if not isinstance(doc, dict):
        return doc
    doc = copy.deepcopy(doc)
    for rewrite in UPDATE_REWRITES:
        if not isinstance(doc, dict):
            break
        doc = rewrite(doc)
    return doc


def _rewrite_component(doc: Doc, category: str, registry: KindRegistry) -> None:
    for rewrite in COMPONENT_REWRITES:
        rewrite(doc, category, registry)


def _components(doc: Doc, registry: KindRegistry) -> Iterator[tuple[str, Doc]]:
    """The request's components, each once; a compute resource before its volume mounts (so
    they are read after the compute resource's own rewrites)."""
    if isinstance(doc.get("executable"), dict):
        yield "executable", doc["executable"]
    if isinstance(doc.get("compute"), dict):
        yield "compute", doc["compute"]
        for volume in _volumes(doc["compute"]):
            yield "volume", volume
    for category in ("storage", "data"):
        if isinstance(doc.get(category), list):
            for item in doc[category]:
                if isinstance(item, dict):
                    yield category, item


def _volumes(compute: Doc) -> list[Doc]:
    volumes = compute.get("volumes")
    return [v for v in volumes if isinstance(v, dict)] if isinstance(volumes, list) else []
