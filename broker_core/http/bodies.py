"""Safe decoding of untrusted JSON, YAML and XML request bodies (XML: see ``xml.py``).

Everything here runs before any other code sees a request body, so it must refuse
hostile input cheaply: oversized bodies, deep nesting (which makes recursive
parsers blow the stack), YAML alias bombs ("billion laughs") and malformed text.
The only exception that leaves :func:`parse_body` is :class:`BodyError`, which
carries what an ``application/problem+json`` response needs.

YAML is vetted on the parser's flat *event* stream, never on a composed node graph:
composing recurses once per nesting level (libyaml's composer overflows the C
stack and kills the process on ~100k nested ``[``), and a composed graph hides
alias expansion.  One linear pass over the events measures depth, node count, the
items of each sequence and mapping, and the document's size as JSON, with aliases
counted as their expansion (each anchor's expanded size is remembered when it
closes), so an alias bomb is refused after reading at most ``max_nodes`` nodes' worth
of events, and before anything is built: a small anchor aliased a few thousand times
passes a node count but expands to gigabytes as soon as anything serialises it.  Only
a document that passed is composed and constructed.

Every decoded document, whatever its format, then passes one walk (:func:`refuse_wide`)
that bounds its nodes and the length of each array and object, so that what follows
(schema validation, normalising, storing, echoing in offers) costs at most a bounded
multiple of the limits.
"""

from __future__ import annotations

import gc
import json
import math
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from functools import cache
from itertools import accumulate
from typing import Any

import yaml

_SafeLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SafeDumper: type = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

JSON_TYPES = ("application/json", "application/problem+json", "text/json")
YAML_TYPES = (
    "application/yaml",
    "application/x-yaml",
    "application/yml",
    "text/yaml",
    "text/x-yaml",
    "text/yml",
)

_BAD_REQUEST = "Bad Request"
_BOM = "\ufeff"
_INT_TAG = "tag:yaml.org,2002:int"
# Python refuses to turn longer decimal strings into ints (CVE-2020-10735); YAML's
# base-60 ints (``1:2:3``) are built by repeated multiplication, which is quadratic,
# so long int scalars of any notation are refused before construction.
_MAX_INT_CHARS = 4300

# Everything in a JSON text except the bracket characters that open/close
# containers: whole string literals (escapes included; an unterminated one runs to
# the end) and runs of other characters.  Possessive quantifiers keep it linear.
_JSON_NOT_BRACKETS = re.compile(r'"[^"\\]*+(?:\\[\s\S][^"\\]*+)*+"?|[^"\[\]{}]++')
_BRACKET_DELTA = {"[": 1, "{": 1, "]": -1, "}": -1}
# The same for a YAML text, roughly: quoted scalars (a quote opens one only where a token can
# start) and comments are dropped. Used only to explain why a parser gave up (see _flow_depth).
_YAML_NOT_BRACKETS = re.compile(
    r"""(?:(?<=^)|(?<=[\s\[{,:?-]))(?:"[^"\\]*+(?:\\[\s\S][^"\\]*+)*+"?|'[^']*+(?:''[^']*+)*+'?)"""
    r"|(?:(?<=^)|(?<=\s))#[^\n]*+"
    r"""|[^"'#\[\]{}]++|["'#]"""
)


@dataclass(frozen=True)
class BodyLimits:
    """Resource limits for one request body (frozen so the shared default is safe)."""

    max_bytes: int = 1_048_576
    max_depth: int = 64  # nesting of arrays/objects
    max_nodes: int = 100_000  # scalars+containers (keys too) after YAML alias expansion
    max_expanded_bytes: int = 2_097_152  # the document's size as JSON, YAML aliases expanded
    max_items: int = 1024  # items of any one array
    max_properties: int = 1024  # members of any one object


class BodyError(Exception):
    """A refused request body, ready to be rendered as ``application/problem+json``.

    ``pointer`` is a JSON Pointer (RFC 6901) into the document when the problem is
    a specific value rather than the body as a whole.
    """

    def __init__(self, status: int, title: str, detail: str, pointer: str | None = None):
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.pointer = pointer

    def problem(self) -> dict[str, Any]:
        """RFC 9457 problem details for this error."""
        doc: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.pointer is not None:
            doc["pointer"] = self.pointer
        return doc


def refuse_oversized(raw: bytes, limits: BodyLimits) -> None:
    """A 413 for a body over the limit, before any parser sees it."""
    if len(raw) > limits.max_bytes:
        raise BodyError(
            413,
            "Payload Too Large",
            f"request body is {len(raw)} bytes; the limit is {limits.max_bytes} bytes",
        )


def too_large_to_decode() -> BodyError:
    """The 413 for a body whose parser ran out of memory."""
    return BodyError(413, "Payload Too Large", "request body is too large to decode")


def _bad(detail: str, pointer: str | None = None) -> BodyError:
    return BodyError(400, _BAD_REQUEST, detail, pointer)


def _too_many_items(
    limits: BodyLimits, pointer: str, mark: Any = None, count: int = 0
) -> BodyError:
    had = count or f"more than {limits.max_items}"
    return _bad(
        f"{had} items in one array{_at(mark)}; the node takes at most {limits.max_items}", pointer
    )


def _too_many_members(
    limits: BodyLimits, pointer: str, mark: Any = None, count: int = 0
) -> BodyError:
    had = count or f"more than {limits.max_properties}"
    return _bad(
        f"{had} members in one object{_at(mark)}; the node takes at most {limits.max_properties}",
        pointer,
    )


def refuse_wide(document: Any, limits: BodyLimits) -> None:
    """Refuse a decoded document nested deeper than ``max_depth``, with more than ``max_nodes``
    nodes (keys count), or with an array or object longer than ``max_items`` or
    ``max_properties``; the pointer names the first container found at fault.

    One walk, without recursion and without building a pointer for anything but a container,
    so it costs little next to validating the document against the spec.
    """
    if not isinstance(document, dict | list):
        return
    nodes = 1
    pending: list[tuple[Any, str, int]] = [(document, "", 1)]
    while pending:
        value, pointer, depth = pending.pop()
        if depth > limits.max_depth:
            raise _bad(f"nesting deeper than {limits.max_depth} levels", pointer)
        if isinstance(value, dict):
            if len(value) > limits.max_properties:
                raise _too_many_members(limits, pointer, count=len(value))
            nodes += 2 * len(value)
            children: Any = value.items()
        else:
            if len(value) > limits.max_items:
                raise _too_many_items(limits, pointer, count=len(value))
            nodes += len(value)
            children = enumerate(value)
        if nodes > limits.max_nodes:
            raise _bad(f"document has more than {limits.max_nodes} nodes")
        for key, item in children:
            if isinstance(item, dict | list):
                pending.append((item, f"{pointer}/{_pointer_token(str(key))}", depth + 1))


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a Content-Type header ("" when absent)."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def media_ranges(accept: str) -> list[tuple[str, float]]:
    """An Accept header's media ranges, lower-cased, each with its q (1 when not given, 0 when
    unreadable), in the header's order."""
    ranges = []
    for part in accept.split(","):
        fields = [f.strip() for f in part.split(";")]
        q = 1.0
        for param in fields[1:]:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        ranges.append((fields[0].lower(), q))
    return ranges


def is_json(mt: str) -> bool:
    """Whether a bare media type is JSON (including any ``+json`` structured suffix)."""
    return mt in JSON_TYPES or ("/" in mt and mt.endswith("+json"))


def is_yaml(mt: str) -> bool:
    """Whether a bare media type is YAML (including the RFC 9512 ``+yaml`` suffix)."""
    return mt in YAML_TYPES or ("/" in mt and mt.endswith("+yaml"))


_collector = threading.Lock()
_parsing = 0  # bodies being parsed now, by any thread
_collector_was_on = True


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic collector off while bodies are parsed. A body of 100,000 elements makes
    as many young objects that all survive, so the collector walks the whole heap again and
    again: two thirds of the refusal's CPU in a large process (1.3 s of 1.8 s). What a parse
    can allocate is bounded by the body limits, and nothing it makes needs the collector."""
    global _parsing, _collector_was_on
    with _collector:
        if _parsing == 0:
            _collector_was_on = gc.isenabled()
            gc.disable()
        _parsing += 1
    try:
        yield
    finally:
        with _collector:
            _parsing -= 1
            if _parsing == 0 and _collector_was_on:
                gc.enable()


def parse_body(
    raw: bytes,
    content_type: str | None,
    limits: BodyLimits = BodyLimits(),
    xml_schema: tuple[Any, Any] | None = None,
) -> Any:
    """Decode a JSON, YAML or XML request body into JSON-compatible Python data.

    ``xml_schema`` is ``(Schemas, schema)`` (see ``xml.py``): XML text is turned into numbers,
    booleans and lists where that schema says so. Raises only :class:`BodyError` (400, 413 or
    415), whatever the input.
    """
    refuse_oversized(raw, limits)
    with collector_paused():
        return _parse_body(raw, content_type, limits, xml_schema)


def _parse_body(
    raw: bytes, content_type: str | None, limits: BodyLimits, xml_schema: tuple[Any, Any] | None
) -> Any:
    from . import xml  # xml.py builds on this module

    mt = media_type(content_type)
    if mt and not (is_json(mt) or is_yaml(mt) or xml.is_xml(mt)):
        accepted = ", ".join(
            (*JSON_TYPES, "*/*+json", *YAML_TYPES, "*/*+yaml", *xml.XML_TYPES, "*/*+xml")
        )
        raise BodyError(
            415, "Unsupported Media Type", f"unsupported media type {mt!r}; accepted: {accepted}"
        )
    if not raw.strip():
        raise _bad("request body is empty")
    # no Content-Type: JSON if it looks like a JSON object/array, XML if it opens with "<",
    # else YAML
    first = raw.lstrip().removeprefix(b"\xef\xbb\xbf")[:1]
    if (mt and xml.is_xml(mt)) or (not mt and first == b"<"):
        schemas, schema = xml_schema if xml_schema is not None else (None, None)
        document = xml.parse_xml(raw, limits, schemas, schema)
        refuse_wide(document, limits)
        return document
    as_json = is_json(mt) if mt else first in (b"{", b"[")
    try:
        text = raw.decode("utf-8").removeprefix(_BOM)
        document = _parse_json(text, limits) if as_json else _parse_yaml(text, limits)
        refuse_wide(document, limits)
        return document
    except BodyError:
        raise
    except UnicodeDecodeError as exc:
        raise _bad(f"request body is not valid UTF-8 (byte offset {exc.start})") from None
    except RecursionError:
        raise _bad("request body is nested too deeply") from None
    except MemoryError:
        raise too_large_to_decode() from None
    except Exception as exc:  # the contract is "BodyError only", whatever a parser does
        raise _bad("request body could not be decoded") from exc


def dump_yaml(document: Any) -> bytes:
    """Serialise JSON-compatible data as UTF-8 YAML for responses, keeping key order."""
    return yaml.dump(
        document, Dumper=_SafeDumper, sort_keys=False, allow_unicode=True, encoding="utf-8"
    )


# --------------------------------------------------------------------------- JSON


def _json_depth(text: str) -> int:
    """Maximum bracket nesting of a JSON text, ignoring brackets inside strings.

    Linear and non-recursive, so it is safe to run on input json.loads gave up on. It is one
    long call into the regex engine, holding the GIL (40 ms a MiB), so it runs only then, to say
    whether depth is the reason to give.
    """
    brackets = _JSON_NOT_BRACKETS.sub("", text)
    return max(accumulate(map(_BRACKET_DELTA.__getitem__, brackets)), default=0)


def _reject_constant(name: str) -> Any:
    raise _bad(f"{name} is not a valid JSON number")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # e.g. 1e999 would silently become inf
        raise _bad(f"number {literal[:40]} is out of range")
    return value


def _parse_json(text: str, limits: BodyLimits) -> Any:
    """JSON text as data; its depth is checked by :func:`refuse_wide` afterwards (the C parser
    stops at the interpreter's recursion limit, with a RecursionError, on deeper input)."""
    try:
        return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (RecursionError, json.JSONDecodeError) as exc:
        if _json_depth(text) > limits.max_depth:
            raise _bad(f"nesting deeper than {limits.max_depth} levels") from None
        if isinstance(exc, RecursionError):
            raise
        raise _bad(f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        raise _bad(f"invalid JSON: {exc}") from None


# --------------------------------------------------------------------------- YAML


def _at(mark: Any) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _flow_depth(text: str) -> int:
    """Roughly the deepest flow nesting (``[`` and ``{``) in a YAML text.

    A parser may give up on deep nesting before it has handed over the events that the vetting
    counts (libyaml looks ahead and stops at its own limit, in its own words), so when a parser
    fails, this says whether depth is the reason the node should give.
    """
    brackets = _YAML_NOT_BRACKETS.sub("", text)
    return max(accumulate(map(_BRACKET_DELTA.__getitem__, brackets)), default=0)


class _Open:
    """A sequence or mapping whose events are being read."""

    __slots__ = ("anchor", "children", "height", "key", "mapping", "nodes_before", "size_before",
                 "token")  # fmt: skip

    def __init__(self, anchor: str | None, mapping: bool, token: str, nodes: int, size: int):
        self.anchor = anchor
        self.mapping = mapping
        self.token = token  # its own token in its parent's pointer
        self.nodes_before = nodes
        self.size_before = size
        self.height = 0  # of its highest child
        self.children = 0  # nodes read in it so far (a mapping's keys and values both count)
        self.key = "?"  # a mapping's latest key (a complex key has no token)


def _stack_pointer(stack: list[_Open]) -> str:
    return "".join(f"/{_pointer_token(entry.token)}" for entry in stack[1:])


def _vet_yaml_events(text: str, limits: BodyLimits) -> bool:
    """Check depth, node count, items per sequence and mapping and the size as JSON, aliases
    expanded, on the event stream; False if no document.

    When a container closes its expanded node count, height and size are recorded under its
    anchor, so an alias costs O(1) however large its expansion.
    """
    max_depth, max_nodes, max_size = limits.max_depth, limits.max_nodes, limits.max_expanded_bytes
    loader = _SafeLoader(text)
    try:
        documents = 0
        nodes = 0
        size = 0  # of the document as JSON: each scalar's text plus quotes and a separator
        stack: list[_Open] = []
        # by anchor: (nodes, height, size) of its expansion; None while it is still open
        anchors: dict[str, tuple[int, int, int] | None] = {}

        def add(count: int, height: int, chars: int, mark: Any, token: str | None = None) -> None:
            """Count a node read (``token``: its token in the open container, if not open)."""
            nonlocal nodes, size
            nodes += count
            size += chars
            if nodes > max_nodes:
                raise _bad(f"document expands to more than {max_nodes} nodes (YAML alias bomb?)")
            if size > max_size:
                where = _stack_pointer(stack)
                if stack and token is not None:
                    where += f"/{_pointer_token(token)}"
                raise BodyError(
                    413,
                    "Payload Too Large",
                    f"document expands to more than {max_size} bytes as JSON{_at(mark)} (YAML "
                    "aliases count as what they repeat)",
                    where,
                )
            if len(stack) + height > max_depth:
                raise _bad(f"nesting deeper than {max_depth} levels{_at(mark)}")
            if stack and height > stack[-1].height:
                stack[-1].height = height

        def enter(key: str, mark: Any) -> str:
            """Count a node in the open container; its token there (a key's is ``key``)."""
            if not stack:
                return ""
            top = stack[-1]
            top.children += 1
            if top.mapping:
                if top.children > 2 * limits.max_properties:
                    raise _too_many_members(limits, _stack_pointer(stack), mark)
                if top.children % 2:
                    top.key = key
                return top.key
            if top.children > limits.max_items:
                raise _too_many_items(limits, _stack_pointer(stack), mark)
            return str(top.children - 1)

        def define(anchor: str | None, mark: Any) -> None:
            if anchor is not None and anchor in anchors:
                raise _bad(f"duplicate YAML anchor &{anchor}{_at(mark)}")
            if anchor is not None:
                anchors[anchor] = None

        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.ScalarEvent):
                define(event.anchor, event.start_mark)
                _vet_scalar(loader, event)
                token = enter(event.value, event.start_mark)
                chars = len(event.value) + 3
                add(1, 0, chars, event.start_mark, token)
                if event.anchor is not None:
                    anchors[event.anchor] = (1, 0, chars)
            elif isinstance(event, yaml.AliasEvent):
                if event.anchor not in anchors:
                    raise _bad(f"undefined YAML alias *{event.anchor}{_at(event.start_mark)}")
                expansion = anchors[event.anchor]
                if expansion is None:
                    raise _bad(
                        f"recursive YAML alias *{event.anchor} "
                        f"(a node containing itself){_at(event.start_mark)}"
                    )
                token = enter("?", event.start_mark)
                add(*expansion, event.start_mark, token)
            elif isinstance(event, yaml.CollectionStartEvent):
                define(event.anchor, event.start_mark)
                if len(stack) >= max_depth:
                    raise _bad(f"nesting deeper than {max_depth} levels{_at(event.start_mark)}")
                token = enter("?", event.start_mark)
                mapping = isinstance(event, yaml.MappingStartEvent)
                stack.append(_Open(event.anchor, mapping, token, nodes, size))
                add(1, 0, 2, event.start_mark)
            elif isinstance(event, yaml.CollectionEndEvent):
                closed = stack.pop()
                height = closed.height + 1
                if closed.anchor is not None:
                    anchors[closed.anchor] = (
                        nodes - closed.nodes_before,
                        height,
                        size - closed.size_before,
                    )
                if stack and height > stack[-1].height:
                    stack[-1].height = height
            elif isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise _bad(
                        "multiple YAML documents in one request body are not "
                        f"supported{_at(event.start_mark)}"
                    )
        return documents > 0
    finally:
        loader.dispose()


def _vet_scalar(loader: Any, event: yaml.ScalarEvent) -> None:
    """Refuse scalars whose construction would be slow (very long integers)."""
    if len(event.value) <= _MAX_INT_CHARS:
        return
    tag = event.tag
    if tag is None or tag == "!":
        tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
    if tag == _INT_TAG:
        raise _bad(f"integer longer than {_MAX_INT_CHARS} characters{_at(event.start_mark)}")


def _parse_yaml(text: str, limits: BodyLimits) -> Any:
    try:
        if not _vet_yaml_events(text, limits):
            raise _bad("request body is empty")
        document = yaml.load(text, Loader=_str_key_loader(_SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        scanned = text if mark is None else text[: mark.index + 1]
        if _flow_depth(scanned) > limits.max_depth:  # the parser's own limit tripped first
            raise _bad(f"nesting deeper than {limits.max_depth} levels{_at(mark)}") from None
        problem = exc.problem or exc.context or "syntax error"
        raise _bad(f"invalid YAML{_at(mark)}: {problem}") from None
    except yaml.YAMLError as exc:
        raise _bad(f"invalid YAML: {exc}") from None
    except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as exc:
        # PyYAML's constructors crash this way on e.g. "!!int" with no digits, an empty
        # "!!timestamp" or a base-60 float beyond float range
        raise _bad("invalid YAML: a value does not fit its (explicit or implied) type") from exc
    return _jsonable(document, "")


class _StrKeyConstructor:
    """Constructs mapping keys as JSON member names while building each mapping.

    Converting afterwards is too late: ``{1: x, true: y}`` already collides in a
    Python dict because ``1 == True``.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[str, Any]:
        self.flatten_mapping(node)  # type: ignore[attr-defined]  # resolves << merge keys
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[attr-defined]
            name = _key(key, key_node.start_mark)
            mapping[name] = self.construct_object(value_node, deep=deep)  # type: ignore[attr-defined]
        return mapping


@cache
def _str_key_loader(base: type) -> type:
    return type(f"StrKey{base.__name__}", (_StrKeyConstructor, base), {})


def _pointer_token(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _key(key: Any, mark: Any = None) -> str:
    """Mapping keys as JSON object member names (``1`` -> "1", ``true`` -> "true")."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool | int | float):
        return json.dumps(key)
    if isinstance(key, date):
        return key.isoformat()
    raise _bad(f"mapping key of type {type(key).__name__} cannot be a JSON member name{_at(mark)}")


def _jsonable(value: Any, pointer: str) -> Any:
    """Turn constructed YAML into JSON-compatible data (depth was bounded by the vetting).

    Dates and timestamps become ISO-8601 strings; values JSON cannot represent
    (NaN/infinity, ``!!binary``, ``!!set``) are refused rather than passed on.
    """
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(f"{value} is not a valid JSON number", pointer or None)
        return value
    if isinstance(value, date):  # datetime is a subclass of date
        return value.isoformat()
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = _key(key)
            out[name] = _jsonable(item, f"{pointer}/{_pointer_token(name)}")
        return out
    if isinstance(value, list | tuple):  # tuples come from !!omap / !!pairs
        return [_jsonable(item, f"{pointer}/{index}") for index, item in enumerate(value)]
    raise _bad(
        f"YAML value of type {type(value).__name__} cannot be represented in JSON", pointer or None
    )
