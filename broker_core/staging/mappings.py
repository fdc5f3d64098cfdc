"""Where identified data lands: a site's map from ``ivo://`` identifiers and Rucio scopes to its
own files or URLs (``staging.mappings``), and the resolution of a data resource through it.

An ``ivoa-data-resource`` names its data by an IVOA identifier, a ``rucio-data-resource`` by a
Rucio scope and name, a ``skao-data-resource`` by either (its namespace is the data lake's Rucio
scope). None of them says where the bytes are: the site does. An ``ivo://`` mapping matches by
prefix (the longest wins) and puts the rest of the identifier into its target, the one
placeholder ``{rest}``; a Rucio mapping maps a scope (or ``*``, any other) to a root, under
which the name lands by one of Rucio's deterministic ``lfn2pfn`` algorithms (``identity``:
``scope/name``; ``hash``: ``scope/md5[0:2]/md5[2:4]/name`` with md5 of ``scope:name``, and
``user.*`` / ``group.*`` scopes split at their dots, as Rucio does).

The targets are the site's (trusted config), the identifiers the user's: the part taken from
an identifier is held to a small alphabet with no empty, ``.`` or ``..`` segment, and the result
must stay under the mapping's root (a path) or on its host (a URL) after normalising. Links are
checked when the data is read (:mod:`.placement`, :mod:`.files`). Everything here is pure.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from yarl import URL

REST = "{rest}"
MAX_REST = 1024
MAX_SEGMENT = 255
# what of a user's identifier may become part of a path or URL
REST_SEGMENT = re.compile(r"^[A-Za-z0-9._~+=,@-]+$")
# Rucio's own limits (its generic schema): a scope of 1..25, a name of 1..250 characters
RUCIO_SCOPE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,24}$")
RUCIO_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,249}$")
ANY_SCOPE = "*"
SEPARATORS = ("/", "?")

_UNITS = {
    "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "bit": 1 / 8, "kbit": 10**3 / 8, "mbit": 10**6 / 8, "gbit": 10**9 / 8, "tbit": 10**12 / 8,
}  # fmt: skip
_BANDWIDTH = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)\s*/\s*s\s*$")


def parse_bandwidth(value: Any) -> int:
    """Bytes per second, from a number of them or text such as ``100 MB/s``, ``1 Gbit/s``,
    ``500 MiB/s``."""
    if isinstance(value, bool):
        raise ValueError("give a bandwidth such as '100 MB/s'")
    if isinstance(value, int | float):
        rate = float(value)
    elif isinstance(value, str) and (found := _BANDWIDTH.match(value)):
        unit = _UNITS.get(found.group(2).lower())
        if unit is None:
            raise ValueError(
                f"unknown unit {found.group(2)!r}; use B, kB, MB, GB, TB, KiB, MiB, GiB, TiB or "
                "bit, kbit, Mbit, Gbit, Tbit, per second ('100 MB/s')"
            )
        rate = float(found.group(1)) * unit
    else:
        raise ValueError(f"{value!r} is not a bandwidth; give one such as '100 MB/s'")
    if rate < 1:
        raise ValueError("a bandwidth must be at least 1 byte per second")
    return int(rate)


@dataclass(frozen=True)
class Target:
    """A mapping's target, read: its scheme, host (URLs), the part before and after the
    placeholder, and the root everything must stay under (a path, or a URL's path)."""

    scheme: str  # file, http or https
    host: str | None
    port: int | None
    before: str  # the path before {rest} (or the whole root, for Rucio)
    after: str  # the path after {rest}
    root: str  # normalised, without a trailing slash (but "/" for the file system's root)

    def location(self, path: str) -> str:
        if self.scheme == "file":
            return str(URL.build(scheme="file", path=path))
        return str(URL.build(scheme=self.scheme, host=self.host or "", port=self.port, path=path))

    @property
    def shown(self) -> str:
        """The root as a URL, for messages and the site's own listing."""
        return self.location(self.root)


def read_target(text: str, placeholder: bool) -> Target:
    """A target URL, checked: ``file:///absolute/path`` or ``http(s)://host/path``, with the
    placeholder ``{rest}`` exactly once in its path (``placeholder``), or none (a root)."""
    if "{" in text.replace(REST, "") or "}" in text.replace(REST, ""):
        raise ValueError(f"{text!r}: the only placeholder is {REST}")
    if placeholder and text.count(REST) != 1:
        raise ValueError(f"{text!r} must hold {REST} once, where the identifier's rest goes")
    if not placeholder and REST in text:
        raise ValueError(f"{text!r}: a Rucio root takes no {REST}; the name goes under it")
    try:
        url = URL(text.replace(REST, "REST-PLACEHOLDER"))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a URL: {exc}") from None
    scheme = url.scheme.lower()
    if scheme not in ("file", "http", "https"):
        raise ValueError(f"{text!r}: a target is a file://, http:// or https:// URL")
    if url.query_string or url.fragment:
        raise ValueError(f"{text!r}: a target has no query or fragment")
    path = url.path
    if scheme == "file":
        if url.host not in (None, "", "localhost") or not path.startswith("/"):
            raise ValueError(f"{text!r}: write file:///absolute/path")
        host, port = None, None
    else:
        if not url.host:
            raise ValueError(f"{text!r} names no host")
        host, port = url.host.rstrip(".").lower(), url.explicit_port
        path = path or "/"
    before, _, after = path.partition("REST-PLACEHOLDER")
    if "REST-PLACEHOLDER" in after or "/" in after:
        raise ValueError(f"{text!r}: after {REST} only a file name suffix may follow ('.fits')")
    if ".." in before.split("/") or "." in before.split("/"):
        raise ValueError(f"{text!r}: the path has '.' or '..' segments; write it resolved")
    root = posixpath.normpath(before.rsplit("/", 1)[0] or "/") if placeholder else before
    root = posixpath.normpath(root)
    return Target(scheme, host, port, before, after, root)


class _Mapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str = Field(max_length=2048)
    bandwidth: int | None = Field(
        default=None,
        description="how fast data of this mapping stages, for the offer's staging time (e.g. "
        "'1 GB/s'); default: the mappings' bandwidth",
    )

    @field_validator("bandwidth", mode="before")
    @classmethod
    def _bandwidth(cls, value: Any) -> int | None:
        return None if value is None else parse_bandwidth(value)


class IvoaMapping(_Mapping):
    """``ivo://`` identifiers starting with ``prefix`` are found at ``target``, where
    ``{rest}`` is the rest of the identifier (``ivo://example.org/survey/`` ->
    ``file:///data/survey/{rest}``)."""

    prefix: str = Field(max_length=512)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        normal = normal_ivoid(prefix)
        if normal is None or len(normal) <= len("ivo://") or normal.endswith("//"):
            raise ValueError(f"{prefix!r} is not the start of an ivo:// identifier "
                             "(ivo://authority/...)")  # fmt: skip
        return normal

    @model_validator(mode="after")
    def _target(self) -> IvoaMapping:
        read_target(self.target, placeholder=True)
        return self


class RucioMapping(_Mapping):
    """Files of the Rucio ``scope`` (``*``: of any scope no other mapping names) are under the
    root ``target``, at the path Rucio's ``lfn2pfn`` algorithm gives them."""

    scope: str = Field(max_length=64)
    lfn2pfn: Literal["identity", "hash"] = Field(
        default="hash",
        description="Rucio's deterministic path algorithm of the storage: hash (Rucio's "
        "default: scope/md5[0:2]/md5[2:4]/name) or identity (scope/name)",
    )

    list_files: str | None = Field(
        default=None,
        max_length=2048,
        description="where the files of this scope's DATASETs and CONTAINERs are listed: a "
        "Rucio server (https://rucio.example.org, its GET /dids/{scope}/{name}/files) or a "
        "directory of saved listings (file:///srv/rucio/lists, one at <scope>/<name>); without "
        "it a DATASET or CONTAINER is a NO",
    )
    token_file: str | None = Field(
        default=None,
        max_length=4096,
        description="a file holding the X-Rucio-Auth-Token sent to the list_files server, read "
        "at each listing (so a renewer can replace it)",
    )

    @field_validator("scope")
    @classmethod
    def _scope(cls, scope: str) -> str:
        if scope != ANY_SCOPE and not RUCIO_SCOPE.match(scope):
            raise ValueError(f"{scope!r} is not a Rucio scope (1..25 of A-Z a-z 0-9 _ . -) or *")
        return scope

    @model_validator(mode="after")
    def _target(self) -> RucioMapping:
        read_target(self.target, placeholder=False)
        if self.list_files is not None:
            read_target(self.list_files, placeholder=False)
        if self.token_file is not None and self.list_files is None:
            raise ValueError("token_file is the list_files server's: give list_files too")
        return self


class DataMappings(BaseModel):
    """The site's map of identified data (``staging.mappings``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ivoa: tuple[IvoaMapping, ...] = Field(default=(), max_length=1000)
    rucio: tuple[RucioMapping, ...] = Field(default=(), max_length=1000)
    bandwidth: int = Field(
        default=100 * 10**6,
        description="how fast mapped data stages when its mapping says nothing, for the "
        "offer's staging time (e.g. '100 MB/s', '1 Gbit/s'); default 100 MB/s",
    )

    @field_validator("bandwidth", mode="before")
    @classmethod
    def _bandwidth(cls, value: Any) -> int:
        return parse_bandwidth(value)

    @model_validator(mode="after")
    def _unique(self) -> DataMappings:
        for what, keys in (("ivoa prefix", [m.prefix for m in self.ivoa]),
                           ("rucio scope", [m.scope for m in self.rucio])):  # fmt: skip
            repeated = sorted({k for k in keys if keys.count(k) > 1})
            if repeated:
                raise ValueError(f"each {what} is mapped once; repeated: {', '.join(repeated)}")
        return self

    def ivoa_prefixes(self) -> str:
        return ", ".join(m.prefix for m in self.ivoa) or "none"

    def rucio_scopes(self) -> str:
        return ", ".join(m.scope for m in self.rucio) or "none"


# --- resolution -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mapped:
    """Where an identified data resource lands: the location to stage from, the root it must
    stay under, and how fast it stages."""

    identifier: str  # as the user gave it (ivo://..., or scope:name)
    location: str
    target: Target
    via: str  # the mapping, as messages name it (its prefix or scope)
    bandwidth: int

    @property
    def is_file(self) -> bool:
        return self.target.scheme == "file"

    @property
    def path(self) -> str:
        """The local path (file:// mappings)."""
        return URL(self.location).path


class Unmappable(Exception):
    """An identifier that a mapping matched but cannot be put into it (its rest or name breaks
    the rules), or that breaks Rucio's own rules: a template saying why."""

    def __init__(self, template: str, **values: str):
        super().__init__(template.format(**values))
        self.template, self.values = template, values


def normal_ivoid(ivoid: str) -> str | None:
    """An ``ivo://`` identifier with its scheme and authority in lower case (they are
    case-insensitive), or None when it is not one."""
    if not isinstance(ivoid, str) or ivoid[:6].lower() != "ivo://":
        return None
    rest = ivoid[6:]
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0),
              default=len(rest))  # fmt: skip
    return "ivo://" + rest[:cut].lower() + rest[cut:]


def map_ivoid(ivoid: str, mappings: DataMappings) -> Mapped | None:
    """The location of ``ivoid`` by the longest prefix that matches, or None (no mapping
    matches); an identifier whose rest cannot go into the target is ``Unmappable``."""
    normal = normal_ivoid(ivoid.strip())
    if normal is None:
        return None
    matching = [m for m in mappings.ivoa if _under(normal, m.prefix)]
    if not matching:
        return None
    mapping = max(matching, key=lambda m: len(m.prefix))
    rest = normal[len(mapping.prefix) :]
    if not mapping.prefix.endswith(SEPARATORS):
        rest = rest[1:]  # the separator after a prefix that ends in a name
    check_rest(rest, ivoid, mapping.prefix)
    target = read_target(mapping.target, placeholder=True)
    path = target.before + rest + target.after
    return _confined(ivoid, path, target, mapping.prefix,
                     mapping.bandwidth or mappings.bandwidth)  # fmt: skip


def _under(ivoid: str, prefix: str) -> bool:
    """Whether ``ivoid`` is ``prefix`` and more: a prefix that ends in a name (``.../survey``)
    matches at a separator only (``.../survey/x``, ``.../survey?x``, not ``.../survey2``)."""
    if not ivoid.startswith(prefix) or len(ivoid) == len(prefix):
        return False
    return prefix.endswith(SEPARATORS) or ivoid[len(prefix)] in "/?"


def check_rest(rest: str, identifier: str, prefix: str) -> None:
    """The part of a user's identifier that becomes a path: segments of a small alphabet,
    none empty, ``.`` or ``..``, within the length limits."""
    segments = rest.split("/")
    if (
        not rest
        or len(rest) > MAX_REST
        or any(s in ("", ".", "..") or len(s) > MAX_SEGMENT for s in segments)
        or not all(REST_SEGMENT.match(s) for s in segments)
    ):
        raise Unmappable(
            "{identifier} is under {prefix}, which this node maps, but what follows the prefix "
            "({rest}) is not a path it serves: give 1..1024 characters of A-Z a-z 0-9 . _ ~ + "
            "= , @ - in '/'-separated parts, none empty, '.' or '..'",
            identifier=identifier[:300], prefix=prefix, rest=rest[:300] or "nothing",
        )  # fmt: skip


def rucio_path(scope: str, name: str, algorithm: str) -> str:
    """The path Rucio's deterministic ``lfn2pfn`` algorithm gives ``scope:name``: ``identity``
    is ``scope/name``, ``hash`` ``scope/md5[0:2]/md5[2:4]/name`` (md5 of ``scope:name``); a
    ``user`` or ``group`` scope's dots become directories in both."""
    digest = hashlib.md5(f"{scope}:{name}".encode(), usedforsecurity=False).hexdigest()
    directory = scope.replace(".", "/") if scope.startswith(("user", "group")) else scope
    if algorithm == "identity":
        return f"{directory}/{name}"
    return f"{directory}/{digest[0:2]}/{digest[2:4]}/{name}"


def rucio_mapping(scope: str, mappings: DataMappings) -> RucioMapping | None:
    """The mapping of a Rucio scope: its own, else the ``*`` one, else None."""
    return next((m for m in mappings.rucio if m.scope == scope), None) or next(
        (m for m in mappings.rucio if m.scope == ANY_SCOPE), None
    )


def map_rucio(scope: str, name: str, mappings: DataMappings) -> Mapped | None:
    """The location of the Rucio file ``scope:name`` under its scope's root (or the ``*``
    root), or None (no mapping for the scope)."""
    mapping = rucio_mapping(scope, mappings)
    if mapping is None:
        return None
    identifier = f"{scope}:{name}"
    if not RUCIO_SCOPE.match(scope) or not RUCIO_NAME.match(name):
        raise Unmappable(
            "{identifier} is not a Rucio data identifier this node maps: a scope is 1..25 and "
            "a name 1..250 of A-Z a-z 0-9 _ . - (starting with a letter, digit or _)",
            identifier=identifier[:300],
        )
    target = read_target(mapping.target, placeholder=False)
    path = target.root.rstrip("/") + "/" + rucio_path(scope, name, mapping.lfn2pfn)
    return _confined(identifier, path, target, mapping.scope,
                     mapping.bandwidth or mappings.bandwidth)  # fmt: skip


def _confined(identifier: str, path: str, target: Target, via: str, bandwidth: int) -> Mapped:
    """The mapped path, normalised, if it stays under the target's root."""
    normal = posixpath.normpath(path)
    root = target.root
    if not (normal == root or normal.startswith(root.rstrip("/") + "/")):
        raise Unmappable(
            "{identifier} leads outside what this node maps for {via}; give another identifier",
            identifier=identifier[:300], via=via,
        )  # fmt: skip
    return Mapped(identifier, target.location(normal), target, via, bandwidth)
