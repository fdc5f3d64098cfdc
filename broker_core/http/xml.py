"""XML request bodies and answers, mapped to and from the JSON documents of the data model.

The mapping follows the IVOA ExecutionBroker schema's ``xml`` hints and what a Jackson XML mapper
makes of them:

- the document is the root element; its name is ignored when reading (``offers-request``,
  ``ExecutionRequest``, anything), and answers name it for what they are (``offers-response``,
  ``execution``, ``problem``...);
- every property is a child element, and ``kind`` is an attribute (the schema marks it so);
  reading, any property may be an attribute or an element;
- a list is written wrapped, one element per item inside an element named for the list
  (``<offers><execution>…</execution></offers>``, ``<command><command>sh</command></command>``);
  reading, both the wrapped form and unwrapped repeated elements (``<storage …/><storage …/>``,
  or the standard's item names such as ``<message>`` for ``messages``) are accepted;
- scalars are text; which text becomes a number, a boolean or a list is decided by the spec's
  schema for the field, never guessed from the text. Where the schema says nothing (free-form
  maps such as a message's ``values``), text stays text unless ``xsi:type`` says otherwise
  (``xs:integer``, ``xs:double``, ``xs:boolean``, ``xs:string``), and lists are ``<item>``
  elements; ``xsi:nil="true"`` is null. Answers carry ``xsi:type`` exactly where a reader
  following these rules would otherwise get a different value back;
- a map key that is no XML name is ``<entry key="the key">``.

Untrusted XML is parsed with defusedxml, refusing any DTD (so no entities, internal or external,
and no entity-expansion bombs), and a parse target that counts elements and nesting and stops as
soon as a limit is passed. Only :class:`~broker_core.http.bodies.BodyError` leaves
:func:`parse_xml`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser, ParseError

from .bodies import BodyError, BodyLimits, refuse_oversized, too_large_to_decode

XML_TYPES = ("application/xml", "text/xml")
PROBLEM_XML = "application/problem+xml"
PROBLEM_NS = "urn:ietf:rfc:7807"  # RFC 9457 appendix B keeps RFC 7807's namespace
XSI = "http://www.w3.org/2001/XMLSchema-instance"
_XSI_TYPE = f"{{{XSI}}}type"
_XSI_NIL = f"{{{XSI}}}nil"
_SCHEMAS = "#/components/schemas/"

# The item element of each wrapped list: the standard's names (offers hold executions, messages
# hold messages...) and the obvious singulars; any other list repeats its own name, as Jackson does.
ITEM_NAMES = {
    "offers": "execution",
    "messages": "message",
    "options": "option",
    "costs": "cost",
    "metrics": "metric",
    "connectors": "connector",
    "volumes": "volume",
    "locations": "location",
    "ports": "port",
    "replicas": "replica",
    "components": "component",
    "errors": "error",
}
_LIST_OF_ITEM = {item: name for name, item in ITEM_NAMES.items()}
_SCHEMALESS_ITEM = "item"
_ENTRY, _KEY = "entry", "key"

_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TRUE, _FALSE = ("true", "1"), ("false", "0")
_XS_TYPES = {"integer", "int", "long", "short", "decimal", "double", "float", "boolean", "string"}
# characters XML 1.0 cannot hold at all, even as character references
_NOT_XML_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_NAME = re.compile(r"[^\W\d][\w.-]*")
_DEFAULT_LIMITS = BodyLimits()


def is_xml(mt: str) -> bool:
    """Whether a bare media type is XML (``+xml`` suffixes too, but not XHTML)."""
    if mt in XML_TYPES:
        return True
    return "/" in mt and mt.endswith("+xml") and mt != "application/xhtml+xml"


# --------------------------------------------------------------------------- schemas


class Schemas:
    """The spec's component schemas, read the way the XML mapping needs them.

    Only what decides the shape of a value is looked at: ``type``, ``properties``,
    ``additionalProperties``, ``items`` and ``nullable``, through ``$ref``, ``allOf`` (nested
    too), ``anyOf``/``oneOf`` (whose object alternatives are chosen by the document's ``kind``)
    and OpenAPI's ``discriminator.mapping``: an abstract type whose mapping names the document's
    ``kind`` has the members of the subtype it maps to, as a generated (Jackson) client reads it.
    """

    def __init__(self, components: Mapping[str, Any]):
        self.components = components
        # answers by (question, id(schema), kind); the schemas are kept alive alongside, so
        # an id is never reused for another schema while its answer is cached
        self._cache: dict[tuple[str, int, Any], tuple[Any, Any]] = {}
        self._named: dict[str, dict[str, Any]] = {}

    def _cached(self, question: str, schema: Any, kind: Any, answer: Any) -> Any:
        key = (question, id(schema), kind)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is schema:
            return hit[1]
        value = answer()
        if len(self._cache) < 4096 and isinstance(kind, str | None):
            self._cache[key] = (schema, value)
        return value

    def resolve(self, schema: Any) -> dict[str, Any]:
        seen = 0
        while isinstance(schema, Mapping) and "$ref" in schema and seen < 64:
            ref = schema["$ref"]
            if not isinstance(ref, str) or not ref.startswith(_SCHEMAS):
                return {}
            schema = self.components.get(ref[len(_SCHEMAS) :], {})
            seen += 1
        return schema if isinstance(schema, Mapping) else {}  # type: ignore[return-value]

    def named(self, name: str) -> dict[str, Any]:
        """A reference to a component schema (the same object each time, so answers about it
        are cached)."""
        return self._named.setdefault(name, {"$ref": _SCHEMAS + name})

    def _alternatives(self, schema: Any) -> list[dict[str, Any]]:
        """The plain schemas a value may match (anyOf/oneOf flattened; allOf kept whole)."""
        s = self.resolve(schema)
        alts = s.get("anyOf") or s.get("oneOf")
        if not alts:
            return [s] if s else []
        out = []
        for alt in alts:
            out.extend(self._alternatives(alt))
        return out

    def types(self, schema: Any) -> set[str]:
        """The JSON types a schema allows; empty when it does not say."""
        return self._cached("types", schema, None, lambda: self._types(schema))

    def _types(self, schema: Any) -> set[str]:
        found: set[str] = set()
        for alt in self._alternatives(schema):
            if isinstance(alt.get("type"), str):
                found.add(alt["type"])
            elif "properties" in alt or "additionalProperties" in alt:
                found.add("object")
            elif "items" in alt:
                found.add("array")
            for part in alt.get("allOf", ()):
                found |= self.types(part)
        return found

    def nullable(self, schema: Any) -> bool:
        return self._cached("nullable", schema, None, lambda: self._nullable(schema))

    def _nullable(self, schema: Any) -> bool:
        return any(alt.get("nullable") for alt in self._alternatives(schema))

    def items(self, schema: Any) -> Any:
        return self._cached("items", schema, None, lambda: self._items(schema))

    def _items(self, schema: Any) -> Any:
        for alt in self._alternatives(schema):
            if alt.get("type") == "array" or "items" in alt:
                return alt.get("items")
        return None

    def members(self, schema: Any, kind: Any) -> tuple[dict[str, Any], Any] | None:
        """(properties, additionalProperties) of the object a schema describes; None when it
        does not describe one. With several object alternatives, the one whose ``kind`` enum
        holds ``kind`` is taken; failing that, the properties of all of them."""
        return self._cached("members", schema, kind, lambda: self._members(schema, kind))

    def _members(self, schema: Any, kind: Any) -> tuple[dict[str, Any], Any] | None:
        objects = []
        for alt in self._alternatives(schema):
            merged = self._merge_all_of(self._subtype(alt, kind))
            if merged is not None:
                objects.append(merged)
        if not objects:
            return None
        for props, additional in objects:
            kind_schema = self.resolve(props.get("kind"))
            if kind is not None and kind in (kind_schema.get("enum") or ()):
                return props, additional
        if len(objects) == 1:
            return objects[0]
        union: dict[str, Any] = {}
        for props, _ in objects:
            for name, sub in props.items():
                union.setdefault(name, sub)
        return union, None

    def _subtype(self, schema: dict[str, Any], kind: Any) -> dict[str, Any]:
        """The schema a discriminator maps ``kind`` to (followed down, never back up: a
        subtype's ``allOf`` names its abstract base, whose mapping names the subtype again)."""
        seen = {id(schema)}
        while isinstance(kind, str):
            mapping = (schema.get("discriminator") or {}).get("mapping") or {}
            target = mapping.get(kind) if isinstance(mapping, Mapping) else None
            if not isinstance(target, str):
                break
            mapped = self.resolve({"$ref": target})
            if not mapped or id(mapped) in seen:
                break
            seen.add(id(mapped))
            schema = mapped
        return schema

    def _merge_all_of(self, schema: dict[str, Any]) -> tuple[dict[str, Any], Any] | None:
        """The properties of a schema and of every schema its ``allOf`` names, however deep
        (its own first); None when none of them describes an object."""
        props: dict[str, Any] = {}
        additional: Any = None
        is_object = False
        pending, seen = [schema], set()
        while pending:
            part = pending.pop(0)
            if id(part) in seen:
                continue
            seen.add(id(part))
            if part.get("type") == "object" or "properties" in part:
                is_object = True
            if "additionalProperties" in part:
                is_object = True
                if isinstance(part["additionalProperties"], Mapping) and additional is None:
                    additional = part["additionalProperties"]
            for name, sub in (part.get("properties") or {}).items():
                props.setdefault(name, sub)
            pending.extend(self.resolve(p) for p in part.get("allOf", ()) if self.resolve(p))
        return (props, additional) if is_object else None


# --------------------------------------------------------------------------- reading


class _Element:
    __slots__ = ("attrs", "children", "name", "text")

    def __init__(self, name: str, attrs: dict[str, str]):
        self.name = name
        self.attrs = attrs
        self.children: list[_Element] = []
        self.text: list[str] = []


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


class _Builder:
    """An ElementTree parse target that builds plain elements and enforces the limits as it
    goes, so a hostile document is refused at the first element past a limit."""

    def __init__(self, limits: BodyLimits):
        # an XML level per JSON container and per wrapped list, plus the scalar leaf
        self.max_depth = 2 * limits.max_depth + 1
        self.json_depth = limits.max_depth
        self.max_nodes = limits.max_nodes
        # an element's children are a list's items or an object's members (or both, unwrapped)
        self.max_children = max(limits.max_items, limits.max_properties)
        self.nodes = 0
        self.stack: list[_Element] = []
        self.root: _Element | None = None

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        if len(self.stack) >= self.max_depth:
            raise _bad(f"nesting deeper than {self.json_depth} levels")
        self.nodes += 1 + len(attrib)
        if self.nodes > self.max_nodes:
            raise _bad(f"document has more than {self.max_nodes} elements and attributes")
        if self.stack and len(self.stack[-1].children) >= self.max_children:
            where = "".join(f"/{_token(e.name)}" for e in self.stack[1:])
            parent = self.stack[-1].name
            raise _bad(
                f"element <{parent}> has more than {self.max_children} child elements",
                where or None,
            )
        attrs = {}
        for key, value in attrib.items():
            if key in (_XSI_TYPE, _XSI_NIL) or not key.startswith("{"):
                attrs[key] = value
        element = _Element(_local(tag), attrs)
        if self.stack:
            self.stack[-1].children.append(element)
        else:
            self.root = element
        self.stack.append(element)

    def end(self, tag: str) -> None:
        self.stack.pop()

    def data(self, text: str) -> None:
        if self.stack:
            self.stack[-1].text.append(text)

    def close(self) -> _Element | None:
        return self.root


def _bad(detail: str, pointer: str | None = None) -> BodyError:
    return BodyError(400, "Bad Request", detail, pointer)


def parse_xml(
    raw: bytes,
    limits: BodyLimits = _DEFAULT_LIMITS,
    schemas: Schemas | None = None,
    schema: Any = None,
) -> Any:
    """Decode an XML document into JSON-compatible data shaped by ``schema`` (a schema of
    ``schemas``, e.g. ``{"$ref": "#/components/schemas/ExecutionRequest"}``).

    Raises only :class:`BodyError`, whatever the input.
    """
    refuse_oversized(raw, limits)
    builder = _Builder(limits)
    try:
        parser = DefusedXMLParser(
            target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
        parser.feed(raw)
        root = parser.close()
    except BodyError:
        raise
    except DefusedXmlException:
        raise _bad(
            "XML request bodies may not contain a DTD (<!DOCTYPE …>) or entity declarations"
        ) from None
    except ParseError as exc:
        line, column = getattr(exc, "position", (0, 0))
        raise _bad(f"invalid XML at line {line}, column {column + 1}") from None
    except RecursionError:
        raise _bad("request body is nested too deeply") from None
    except MemoryError:
        raise too_large_to_decode() from None
    except Exception as exc:  # the contract is "BodyError only", whatever the parser does
        raise _bad("request body could not be decoded as XML") from exc
    if root is None:
        raise _bad("request body is empty")
    reader = _Reader(schemas or Schemas({}), limits.max_depth)
    try:
        return reader.value([root], schema, "", 0)
    except BodyError:
        raise
    except RecursionError:
        raise _bad("request body is nested too deeply") from None


class _Reader:
    def __init__(self, schemas: Schemas, max_depth: int):
        self.schemas = schemas
        self.max_depth = max_depth

    def value(self, elements: list[_Element], schema: Any, pointer: str, depth: int) -> Any:
        """The value of one property, given every element that carries it."""
        types = self.schemas.types(schema) if schema is not None else set()
        if "array" in types:
            items = self.schemas.items(schema)
            if len(elements) > 1 or not self._scalar_choice(elements[0], types):
                out: list[Any] = []
                for element in elements:
                    if self._is_wrapper(element, items):
                        out.extend(element.children)
                    else:
                        out.append(element)
                self._depth(depth + 1, pointer)
                return [
                    self.single(e, items, f"{pointer}/{i}", depth + 1) for i, e in enumerate(out)
                ]
        if len(elements) > 1:  # repeated where the schema wants no list: validation names it
            self._depth(depth + 1, pointer)
            return [
                self.single(e, schema, f"{pointer}/{i}", depth + 1) for i, e in enumerate(elements)
            ]
        return self.single(elements[0], schema, pointer, depth)

    def _scalar_choice(self, element: _Element, types: set[str]) -> bool:
        """For a field that is a scalar or a list (``start``, ``entrypoint``): a lone element of
        text is the scalar."""
        scalar = types & {"string", "integer", "number", "boolean"}
        return bool(scalar) and not element.children and not _attributes(element)

    def _is_wrapper(self, element: _Element, items: Any) -> bool:
        """Whether one element of a list field wraps its items (rather than being one)."""
        if _attributes(element) or not element.children:
            return not _attributes(element) and not element.children and not _text(element)
        names = {child.name for child in element.children}
        if len(names) != 1:
            return False
        (name,) = names
        if items is None:
            return name == _SCHEMALESS_ITEM
        if not self.schemas.types(items) & {"object"}:
            return True  # items are scalars (or lists): an element holding elements wraps them
        members = self.schemas.members(items, _kind_of(element))
        props = members[0] if members else {}
        if name not in props:
            return True
        sub_types = self.schemas.types(props[name])
        structured = any(c.children or _attributes(c) for c in element.children)
        if structured and not sub_types & {"object", "array"}:
            return True
        return len(element.children) > 1 and "array" not in sub_types

    def single(self, element: _Element, schema: Any, pointer: str, depth: int) -> Any:
        nil = element.attrs.get(_XSI_NIL, "").strip()
        if nil in _TRUE:
            return None
        xsi_type = _xs_type(element, pointer)
        types = self.schemas.types(schema) if schema is not None else set()
        if element.children or _attributes(element):
            if _text(element).strip():
                raise _bad(
                    f"element <{element.name}> holds both text and elements", pointer or None
                )
            return self.object(element, schema, pointer, depth)
        text = _text(element)
        if xsi_type is not None:
            return _typed(text, xsi_type, pointer)
        if not text:
            if "array" in types and "string" not in types:
                return []
            if "object" in types and "string" not in types:
                self._depth(depth + 1, pointer)
                return {}
        return self.scalar(text, types, schema)

    def scalar(self, text: str, types: set[str], schema: Any) -> Any:
        if not types or "string" in types:
            return text
        stripped = text.strip()
        if not stripped and self.schemas.nullable(schema):
            return None
        if "integer" in types and _INTEGER.fullmatch(stripped):
            try:
                return int(stripped)
            except ValueError:  # beyond Python's int-from-text limit: validation names it
                return text
        if "number" in types and _NUMBER.fullmatch(stripped):
            value = float(stripped)
            if not math.isfinite(value):
                return text
            return int(stripped) if _INTEGER.fullmatch(stripped) else value
        if "boolean" in types and stripped in (*_TRUE, *_FALSE):
            return stripped in _TRUE
        return text  # not what the schema wants: validation says so, with the pointer

    def object(self, element: _Element, schema: Any, pointer: str, depth: int) -> dict[str, Any]:
        self._depth(depth + 1, pointer)
        members = self.schemas.members(schema, _kind_of(element)) if schema is not None else None
        props, additional = members if members else ({}, None)
        groups: dict[str, list[_Element]] = {}
        for key, value in _attributes(element).items():
            leaf = _Element(key, {})
            leaf.text.append(value)
            groups[key] = [leaf]
        attribute_names = set(groups)
        if (
            members is None
            and element.children
            and all(c.name == _SCHEMALESS_ITEM for c in element.children)
            and not attribute_names
        ):
            self._depth(depth + 1, pointer)
            return [  # type: ignore[return-value]  # a schema-less list
                self.single(c, None, f"{pointer}/{i}", depth + 1)
                for i, c in enumerate(element.children)
            ]
        for child in element.children:
            name = child.name
            if name == _ENTRY and _KEY in child.attrs and _ENTRY not in props:
                name = child.attrs[_KEY]
                entry = _Element(name, {k: v for k, v in child.attrs.items() if k != _KEY})
                entry.children, entry.text = child.children, child.text
                child = entry
            elif name not in props and _LIST_OF_ITEM.get(name) in props:
                name = _LIST_OF_ITEM[name]  # the standard's unwrapped items: <message>, <cost>
            if name in attribute_names:
                raise _bad(
                    f"{name!r} is given both as an attribute and as an element",
                    f"{pointer}/{_token(name)}",
                )
            groups.setdefault(name, []).append(child)
        return {
            name: self.value(
                elements,
                props.get(name, additional),
                f"{pointer}/{_token(name)}",
                depth + 1,
            )
            for name, elements in groups.items()
        }

    def _depth(self, depth: int, pointer: str) -> None:
        if depth > self.max_depth:
            raise _bad(f"nesting deeper than {self.max_depth} levels", pointer or None)


def _attributes(element: _Element) -> dict[str, str]:
    return {k: v for k, v in element.attrs.items() if not k.startswith("{")}


def _text(element: _Element) -> str:
    return "".join(element.text)


def _kind_of(element: _Element) -> str | None:
    if "kind" in element.attrs:
        return element.attrs["kind"]
    for child in element.children:
        if child.name == "kind" and not child.children:
            return _text(child).strip()
    return None


def _token(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _xs_type(element: _Element, pointer: str) -> str | None:
    value = element.attrs.get(_XSI_TYPE)
    if value is None:
        return None
    local = value.strip().rsplit(":", 1)[-1]
    if local not in _XS_TYPES:
        raise _bad(f"unsupported xsi:type {value!r}", pointer or None)
    return local


def _typed(text: str, xs_type: str, pointer: str) -> Any:
    stripped = text.strip()
    if xs_type == "string":
        return text
    if xs_type == "boolean":
        if stripped in (*_TRUE, *_FALSE):
            return stripped in _TRUE
    elif xs_type in ("integer", "int", "long", "short"):
        if _INTEGER.fullmatch(stripped):
            try:
                return int(stripped)
            except ValueError:
                pass
    elif _NUMBER.fullmatch(stripped):
        value = float(stripped)
        if math.isfinite(value):
            return value
    raise _bad(f"{stripped[:40]!r} is not a valid xs:{xs_type}", pointer or None)


# --------------------------------------------------------------------------- writing


def dump_xml(
    document: Any,
    root: str,
    schemas: Schemas | None = None,
    schema: Any = None,
    *,
    namespace: str | None = None,
    item_names: Mapping[str, str] | None = None,
) -> bytes:
    """Serialise a JSON-compatible document as UTF-8 XML under ``root``; :func:`parse_xml` with
    the same schema reads the same document back."""
    writer = _Writer(schemas or Schemas({}), {**ITEM_NAMES, **(item_names or {})})
    ns = f' xmlns="{_escape(namespace, True)}"' if namespace else ""
    parts: list[str] = ['<?xml version="1.0" encoding="UTF-8"?>\n']
    writer.write(parts, root, document, schema, f'{ns} xmlns:xsi="{XSI}"')
    parts.append("\n")
    return "".join(parts).encode("utf-8")


class _Writer:
    def __init__(self, schemas: Schemas, item_names: Mapping[str, str]):
        self.schemas = schemas
        self.item_names = item_names
        self.reader = _Reader(schemas, 1 << 30)

    def write(self, out: list[str], name: str, value: Any, schema: Any, extra: str = "") -> None:
        tag, key_attr = _tag(name)
        open_ = f"<{tag}{key_attr}{extra}"
        if value is None:
            out.append(f'{open_} xsi:nil="true"/>')
        elif isinstance(value, dict):
            self._object(out, tag, open_, value, schema)
        elif isinstance(value, list | tuple):
            self._list(out, tag, open_, name, value, schema)
        else:
            text = _scalar_text(value)
            hint = self._hint(value, text, schema)
            out.append(f"{open_}{hint}>{_escape(text)}</{tag}>" if text else f"{open_}{hint}/>")

    def _hint(self, value: Any, text: str, schema: Any) -> str:
        types = self.schemas.types(schema) if schema is not None else set()
        read_back = self.reader.scalar(text, types, schema)
        if type(read_back) is type(value) and read_back == value:
            return ""
        xs = {bool: "boolean", int: "integer", float: "double"}.get(type(value), "string")
        return f' xsi:type="xs:{xs}" xmlns:xs="http://www.w3.org/2001/XMLSchema"'

    def _object(
        self, out: list[str], tag: str, open_: str, value: dict[str, Any], schema: Any
    ) -> None:
        kind = value.get("kind")
        members = self.schemas.members(schema, kind) if schema is not None else None
        props, additional = members if members else ({}, None)
        attrs = ""
        if isinstance(kind, str):
            attrs = f' kind="{_escape(kind, True)}"'
        if len(value) == (1 if attrs else 0):
            out.append(f"{open_}{attrs}/>")
            return
        out.append(f"{open_}{attrs}>")
        for key, item in value.items():
            if attrs and key == "kind":
                continue
            self.write(out, key, item, props.get(key, additional))
        out.append(f"</{tag}>")

    def _list(
        self, out: list[str], tag: str, open_: str, name: str, value: Any, schema: Any
    ) -> None:
        items = self.schemas.items(schema) if schema is not None else None
        if not value:
            out.append(f"{open_}/>")
            return
        if schema is None or not self.schemas.types(schema):
            item_name = _SCHEMALESS_ITEM
        else:
            item_name = self.item_names.get(name, name)
        out.append(f"{open_}>")
        for item in value:
            self.write(out, item_name, item, items)
        out.append(f"</{tag}>")


def _tag(name: str) -> tuple[str, str]:
    """An element name for a key, and the ``key`` attribute when the key is no XML name."""
    if _NAME.fullmatch(name) and not name.lower().startswith("xml") and name != _ENTRY:
        return name, ""
    return _ENTRY, f' {_KEY}="{_escape(name, True)}"'


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "NaN"
    return str(value)


_TEXT_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"}
_ATTR_ESCAPES = {**_TEXT_ESCAPES, '"': "&quot;", "\n": "&#10;", "\t": "&#9;"}
_TEXT_SPECIAL = re.compile("[&<>\r]")
_ATTR_SPECIAL = re.compile('[&<>\r"\n\t]')


def _escape(text: str, attribute: bool = False) -> str:
    """Text (or an attribute value) as XML: markup escaped, characters XML cannot hold at all
    (controls, lone surrogates) replaced by U+FFFD."""
    text = _NOT_XML_CHAR.sub("\ufffd", text)
    if attribute:
        return _ATTR_SPECIAL.sub(lambda m: _ATTR_ESCAPES[m[0]], text)
    return _TEXT_SPECIAL.sub(lambda m: _TEXT_ESCAPES[m[0]], text)
