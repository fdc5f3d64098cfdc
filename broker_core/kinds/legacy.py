"""Normalise documents from earlier versions of the data model into the canonical form.

Older clients send ``type`` instead of ``kind``, top-level ``name``/``uuid``/``href`` instead of a
``meta`` block, ``computer`` instead of ``compute``, updates wrapped as ``{update: {...}}`` and
several older kind URI spellings. This runs before validation, so the spec and the models only
ever see the canonical form.
"""

from __future__ import annotations

import re
from typing import Any

from .registry import KindRegistry

_LEGACY_KIND = re.compile(
    r"^(?:https?://www\.purl\.org/ivoa\.net/(?:EB|Calycopis-openapi)/schema/(?:v1\.0/)?"
    r"(?:types|kinds)/(?P<category>[A-Za-z]+)/|(?:urn|uri):)"
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9-]*?)(?:-\d+\.\d+)?(?:\.yaml)?$"
)
_META_KEYS = {"name": "name", "uuid": "uuid", "href": "url", "url": "url"}
_COMPONENT_LISTS = ("storage", "data")


def canonical_kind(kind: str, category: str, registry: KindRegistry) -> str:
    """The canonical URI for a legacy kind URI, or the input unchanged when it is not one."""
    if registry.model(category, kind):
        return kind
    match = _LEGACY_KIND.match(kind)
    if not match:
        return kind
    named_category = (match["category"] or category).lower()
    if named_category == "computer":
        named_category = "compute"
    if named_category != category:
        return kind
    return registry.find_by_name(match["name"], category) or kind


def normalise_component(doc: Any, category: str, registry: KindRegistry) -> Any:
    if not isinstance(doc, dict):
        return doc
    doc = dict(doc)
    if "kind" not in doc and isinstance(doc.get("type"), str):
        doc["kind"] = doc.pop("type")
    _move_meta(doc)
    if isinstance(doc.get("kind"), str):
        doc["kind"] = canonical_kind(doc["kind"], category, registry)
    if category == "compute" and isinstance(doc.get("volumes"), list):
        doc["volumes"] = [normalise_component(v, "volume", registry) for v in doc["volumes"]]
    return doc


def normalise_request(doc: Any, registry: KindRegistry) -> Any:
    if not isinstance(doc, dict):
        return doc
    doc = dict(doc)
    if "kind" not in doc and isinstance(doc.get("type"), str):
        doc["kind"] = doc.pop("type")
    if "compute" not in doc and "computer" in doc:
        doc["compute"] = doc.pop("computer")
    _move_meta(doc)
    if "executable" in doc:
        doc["executable"] = normalise_component(doc["executable"], "executable", registry)
    if "compute" in doc:
        doc["compute"] = normalise_component(doc["compute"], "compute", registry)
    for category in _COMPONENT_LISTS:
        if isinstance(doc.get(category), dict):  # a single component where a list is expected
            doc[category] = [doc[category]]
        if isinstance(doc.get(category), list):
            doc[category] = [normalise_component(c, category, registry) for c in doc[category]]
    return doc


_LEGACY_UPDATE = re.compile(r"^(?:urn|uri):(?P<name>[a-z-]+?-update)(?:-\d+\.\d+)?$")


def normalise_update(doc: Any) -> Any:
    if isinstance(doc, dict) and set(doc) == {"update"} and isinstance(doc["update"], dict):
        doc = doc["update"]
    if not isinstance(doc, dict):
        return doc
    doc = dict(doc)
    if "kind" not in doc and isinstance(doc.get("type"), str):
        doc["kind"] = doc.pop("type")
    kind = doc.get("kind")
    if isinstance(kind, str) and (match := _LEGACY_UPDATE.match(kind)):
        doc["kind"] = f"uri:{match['name']}"
    return doc


def _move_meta(doc: dict[str, Any]) -> None:
    """Top-level name/uuid/href move into ``meta`` unless the document already has them there."""
    moved = {_META_KEYS[k]: doc.pop(k) for k in list(doc) if k in _META_KEYS}
    if not moved:
        return
    meta = doc.get("meta")
    if meta is None:
        doc["meta"] = moved
    elif isinstance(meta, dict):
        doc["meta"] = {**moved, **meta}
