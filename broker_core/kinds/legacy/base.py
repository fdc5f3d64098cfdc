"""The pieces every era's rewrites share: their signatures and a few small helpers.

A rewrite takes one document (a whole request, one component, or an update), changes it in
place when it is of the rewrite's form and returns it (an update rewrite may return another
object, e.g. the inner document of a wrapper). A rewrite leaves alone anything that is not of
its form, so the canonical form passes through every rewrite unchanged, and rewrites never
raise: what is still malformed after them is reported by validation, with a pointer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..registry import KindRegistry

Doc = dict[str, Any]
RequestRewrite = Callable[[Doc, KindRegistry], Doc]
ComponentRewrite = Callable[[Doc, str, KindRegistry], Doc]
UpdateRewrite = Callable[[Doc], Any]

META_KEYS = {"name": "name", "uuid": "uuid", "href": "url", "url": "url"}


def move_into_meta(doc: Doc, moved: dict[str, Any]) -> None:
    """Put ``moved`` into ``doc.meta``; what ``meta`` already has wins."""
    if not moved:
        return
    meta = doc.get("meta")
    if meta is None:
        doc["meta"] = moved
    elif isinstance(meta, dict):
        doc["meta"] = {**moved, **meta}


def is_kind(doc: Doc, name: str, category: str, registry: KindRegistry) -> bool:
    """Whether the (already canonicalised) kind of ``doc`` is the built-in kind ``name``."""
    return bool(doc.get("kind")) and doc.get("kind") == registry.find_by_name(name, category)
