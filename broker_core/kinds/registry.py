"""The kind registry: kind URI -> pydantic model, per category, extended by plugins.

Plugins add kinds through the ``ebroker.kinds`` entry point group; each entry point names a list
of :class:`~broker_core.kinds.base.Component` subclasses (or a callable returning one).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import DocumentInvalid, FieldError, pointer
from ..suggest import unknown_field_at
from .base import CATEGORIES, Component

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ebroker.kinds"


class UnknownKind(Exception):
    def __init__(self, category: str, kind: str, where: str):
        super().__init__(f"{where}: unknown {category} kind {kind!r}")
        self.category, self.kind, self.where = category, kind, where


def validation_errors(
    exc: ValidationError, prefix: tuple[object, ...] = (), model: type[BaseModel] | None = None
) -> list[FieldError]:
    """pydantic errors as JSON-pointer field errors relative to the whole document; with the
    ``model`` validated, an unknown field gets the known one it is closest to."""
    errors = []
    for err in exc.errors(include_url=False):
        loc = [part for part in err["loc"] if not _is_union_tag(part)]
        detail = err["msg"]
        if err["type"] == "extra_forbidden":
            detail = unknown_field_at(model, err["loc"]) or detail
        errors.append(FieldError(pointer(*prefix, *loc), detail))
    return errors


def _is_union_tag(part: object) -> bool:
    # pydantic inserts union member names such as 'list[str]' or 'function-after[...]' into locs
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "list", "dict"})


class KindRegistry:
    def __init__(self, kinds: Iterable[type[Component]] = ()):
        self._models: dict[str, dict[str, type[Component]]] = {c: {} for c in CATEGORIES}
        for model in kinds:
            self.register(model)

    def register(self, model: type[Component]) -> None:
        category = model.CATEGORY
        self._models.setdefault(category, {})[model.kind_uri()] = model

    def model(self, category: str, kind: str) -> type[Component] | None:
        return self._models.get(category, {}).get(kind)

    def kinds(self, category: str | None = None) -> list[str]:
        if category is not None:
            return sorted(self._models.get(category, {}))
        return sorted(k for models in self._models.values() for k in models)

    def find_by_name(self, name: str, category: str | None = None) -> str | None:
        """Canonical kind URI for a bare kind name (used when normalising legacy URIs)."""
        wanted = name.lower()
        for cat, models in self._models.items():
            if category not in (None, cat):
                continue
            for uri, model in models.items():
                if model.NAME.lower() == wanted:
                    return uri
        return None

    def parse(self, category: str, document: Any, where: tuple[object, ...]) -> Component:
        """Validate one component by its kind; UnknownKind for kinds no model is registered for."""
        if not isinstance(document, dict):
            raise DocumentInvalid([FieldError(pointer(*where), f"{category} must be an object")])
        kind = document.get("kind")
        if not isinstance(kind, str) or not kind:
            raise DocumentInvalid([FieldError(pointer(*where, "kind"), "kind is required")])
        model = self.model(category, kind)
        if model is None:
            raise UnknownKind(category, kind, pointer(*where))
        try:
            return model.model_validate(document)
        except ValidationError as exc:
            raise DocumentInvalid(validation_errors(exc, where, model)) from None


def load_registry() -> KindRegistry:
    """The built-in kinds plus those of every installed plugin."""
    from .builtin import KINDS

    registry = KindRegistry(KINDS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.value == "broker_core.kinds.builtin:KINDS":
            continue
        try:
            loaded = ep.load()
            for model in loaded() if callable(loaded) and not isinstance(loaded, type) else loaded:
                registry.register(model)
        except Exception:  # a broken plugin must not take the node down; it is logged loudly
            log.exception("could not load kinds from entry point %s", ep.name)
    return registry
