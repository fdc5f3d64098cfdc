"""Messages that say what would work: did-you-mean for unknown names, and ISO-8601 durations
suggested from what was written.

One helper serves request documents (spec validation and the pydantic kinds) and configuration
files alike: :func:`unknown_field` words the message, :func:`fields_at` finds the names a model
knows at a location of a pydantic error.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from .schedule import format_duration

CUTOFF = 0.6  # difflib's default: 'excutable' ~ 'executable', 'hodl' ~ 'hold', 'corse' ~ 'cores'


def close_matches(word: str, candidates: Iterable[str], n: int = 1) -> list[str]:
    """The known names closest to ``word`` (compared case-insensitively), best first."""
    by_folded: dict[str, str] = {}
    for candidate in candidates:
        by_folded.setdefault(candidate.casefold(), candidate)
    found = difflib.get_close_matches(word.casefold(), list(by_folded), n=n, cutoff=CUTOFF)
    return [by_folded[f] for f in found]


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when a candidate is close to ``word``, else ``""``."""
    found = close_matches(word, candidates)
    return f"; did you mean {found[0]!r}?" if found else ""


def unknown_field(name: object, known: Iterable[str], elsewhere: Iterable[str] = ()) -> str:
    """``unknown field 'excutable'; did you mean 'executable'?``.

    ``elsewhere`` are dotted paths of fields further down (config keys): a name that is no
    sibling's but ends one of them is suggested as that path (``hold`` -> ``offers.hold``).
    """
    text = str(name)[:100]
    by_leaf: dict[str, list[str]] = {}
    for path in elsewhere:
        by_leaf.setdefault(path.rsplit(".", 1)[-1], []).append(path)
    if len(by_leaf.get(text, [])) == 1:  # a known name in the wrong place, before a near sibling
        return f"unknown field {text!r}; did you mean {by_leaf[text][0]!r}?"
    hint = did_you_mean(text, known)
    if not hint:
        leaves = close_matches(text, by_leaf)
        if leaves and len(by_leaf[leaves[0]]) == 1:
            hint = f"; did you mean {by_leaf[leaves[0]][0]!r}?"
    return f"unknown field {text!r}{hint}"


# --- the fields a pydantic model knows at a location -------------------------------------------


def _names(model: type[BaseModel]) -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        names.append(info.alias or name)
        if info.alias and model.model_config.get("populate_by_name"):
            names.append(name)
        if isinstance(info.validation_alias, str):
            names.append(info.validation_alias)
    return list(dict.fromkeys(names))


def _field(model: type[BaseModel], part: object) -> Any:
    for name, info in model.model_fields.items():
        if part in (name, info.alias, info.validation_alias):
            return info.annotation
    return None


def _members(annotation: Any) -> list[Any]:
    """The types an annotation may hold, Optional/Union/Annotated unwrapped."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _step(annotation: Any, part: object) -> list[Any]:
    """What is found one location part further into a value of this type."""
    found = []
    for member in _members(annotation):
        origin = typing.get_origin(member)
        args = typing.get_args(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            inner = _field(member, part)
            if inner is not None:
                found.append(inner)
        elif origin in (list, tuple, set, frozenset, Sequence) and isinstance(part, int) and args:
            found.append(args[0])
        elif origin is dict and len(args) == 2:
            found.append(args[1])
    return found


def fields_at(model: type[BaseModel], loc: Sequence[object]) -> list[str] | None:
    """The field names of the model found at ``loc`` (a pydantic error's location without its
    last part), or None when no model is there."""
    current: list[Any] = [model]
    for part in loc:
        if isinstance(part, str) and ("[" in part or part in {"str", "int", "list", "dict"}):
            continue  # a union member's tag that pydantic puts into locations
        current = [t for annotation in current for t in _step(annotation, part)]
        if not current:
            return None
    for annotation in current:
        for member in _members(annotation):
            if isinstance(member, type) and issubclass(member, BaseModel):
                return _names(member)
    return None


def field_paths(model: type[BaseModel], prefix: str = "", depth: int = 3) -> list[str]:
    """Dotted paths of the fields under a model's sub-models (not through lists or dicts)."""
    paths = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{info.alias or name}"
        paths.append(path)
        if depth > 1:
            for member in _members(info.annotation):
                if isinstance(member, type) and issubclass(member, BaseModel):
                    paths.extend(field_paths(member, f"{path}.", depth - 1))
    return paths


def unknown_field_at(model: type[BaseModel] | None, loc: Sequence[object]) -> str | None:
    """The message for a pydantic ``extra_forbidden`` error at ``loc``, or None without a model
    that knows the place."""
    if model is None or not loc:
        return None
    known = fields_at(model, loc[:-1])
    if known is None:
        return None
    elsewhere = [p for p in field_paths(model) if "." in p] if len(loc) == 1 else []
    return unknown_field(loc[-1], known, elsewhere)


# --- durations --------------------------------------------------------------------------------

_UNITS = {
    "w": 7 * 86400, "wk": 7 * 86400, "wks": 7 * 86400, "week": 7 * 86400, "weeks": 7 * 86400,
    "d": 86400, "day": 86400, "days": 86400,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
}  # fmt: skip
_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*,?\s*(?:and\s+)?", re.IGNORECASE)
GENERIC_DURATION = "PT5M, PT1H or P7D"


def duration_from_words(text: str) -> timedelta | None:
    """What ``5 minutes``, ``300s``, ``1h30m`` or ``90`` (seconds) means, or None."""
    text = text.strip()
    if not text or len(text) > 100:
        return None
    seconds = 0.0
    position = 0
    while position < len(text):
        match = _PART.match(text, position)
        if match is None or match.end() == position:
            return None
        unit = match[2].lower()
        if unit not in _UNITS and not (unit == "" and match.end() == len(text)):
            return None
        seconds += float(match[1]) * _UNITS.get(unit, 1)
        position = match.end()
    if seconds <= 0:
        return None
    return timedelta(seconds=round(seconds))


def iso_duration_hint(text: str) -> str:
    """``write ISO-8601, e.g. PT5M``, the example computed from ``text`` where it can be."""
    value = duration_from_words(text)
    example = format_duration(value) if value is not None else GENERIC_DURATION
    return f"{text[:60]!r} is not an ISO-8601 duration; write ISO-8601, e.g. {example}"
