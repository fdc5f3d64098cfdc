"""The files of a Rucio DATASET or CONTAINER, as the site lists them (a Rucio mapping's
``list_files``), so that a ``rucio-data-resource`` naming many files stages them all.

The listing is Rucio's own: ``GET {server}/dids/{scope}/{name}/files`` (the client's
``list_files``, which resolves a container's datasets down to their files) answers one JSON
object a line (``application/x-json-stream``), each with the file's ``scope``, ``name`` and
``bytes``; the same text saved as ``<directory>/<scope>/<name>`` serves a site without a
server it may ask. The server is the site's (its config), so it is reached whatever its
address, within bounded time and size, without redirects (the token stays with it); a file of
the listing is then mapped by its own scope's mapping like any other Rucio file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from .mappings import RUCIO_NAME, RUCIO_SCOPE, RucioMapping, Unmappable, read_target
from .rules import StagingFailed, StagingRefused, StagingRules

LINE_BYTES = 2048  # a listing's line, at most (scope, name, sizes and checksums)
TYPES = ("DATASET", "CONTAINER")


@dataclass(frozen=True)
class RucioFile:
    """One file of a dataset, as listed."""

    scope: str
    name: str
    bytes: int | None


def listing_location(mapping: RucioMapping, scope: str, name: str) -> str:
    """Where the files of ``scope:name`` are listed: the server's REST path, or the saved
    listing's path (``scope`` and ``name`` are Rucio's, checked: no ``/`` or leading dot)."""
    assert mapping.list_files is not None
    target = read_target(mapping.list_files, placeholder=False)
    base = target.root.rstrip("/")
    if target.scheme == "file":
        return f"{base}/{scope}/{name}"
    return target.location(f"{base}/dids/{scope}/{name}/files")  # Rucio's alphabet: no quoting


def list_files(
    scope: str, name: str, kind: str, mapping: RucioMapping, rules: StagingRules, seconds: float
) -> list[RucioFile]:
    """The files of the dataset or container ``scope:name``, by ``mapping``'s ``list_files``,
    in at most ``seconds``; ``Unmappable`` saying why when they cannot be listed."""
    identifier = f"{scope}:{name}"[:300]
    if not RUCIO_SCOPE.match(scope) or not RUCIO_NAME.match(name):
        raise Unmappable(
            "{identifier} is not a Rucio data identifier this node lists: a scope is 1..25 and "
            "a name 1..250 of A-Z a-z 0-9 _ . - (starting with a letter, digit or _)",
            identifier=identifier,
        )
    if mapping.list_files is None:
        raise Unmappable(
            "{identifier} is a {kind}, which is many files, and this node cannot list them: "
            "its mapping of scope {via} has no list_files (a Rucio server, or a directory of "
            "saved listings); give each FILE as a data resource, or ask the site to add "
            "list_files to that mapping",
            identifier=identifier, kind=kind, via=mapping.scope,
        )  # fmt: skip
    limit = rules.max_files * LINE_BYTES
    location = listing_location(mapping, scope, name)
    values = {"identifier": identifier, "kind": kind, "via": mapping.scope}
    if location.startswith("/"):
        text = _saved(location, limit, values)
    else:
        text = _asked(location, mapping, rules, seconds, limit, values)
    return parse_listing(text, rules.max_files, values)


def _saved(path: str, limit: int, values: dict[str, str]) -> bytes:
    try:
        with open(path, "rb") as listing:
            text = listing.read(limit + 1)
    except FileNotFoundError:
        raise Unmappable(
            "{identifier} is under scope {via}, which this node maps, but this node has no "
            "listing of that {kind}; check the identifier, or ask a node that holds it",
            **values,
        ) from None
    except OSError as exc:
        raise Unmappable(
            "this node cannot read its listing of the {kind} {identifier}: {why}",
            why=exc.strerror or str(exc), **values,
        ) from None  # fmt: skip
    if len(text) > limit:
        raise Unmappable("the listing of the {kind} {identifier} is too long", **values)
    return text


def _asked(
    location: str,
    mapping: RucioMapping,
    rules: StagingRules,
    seconds: float,
    limit: int,
    values: dict[str, str],
) -> bytes:
    from .fetch import get_text  # aiohttp, only where a server is asked
    from .placement import rules_for_host

    target = read_target(mapping.list_files or "", placeholder=False)
    server_rules = rules_for_host(target.host or "", rules).model_copy(update={"max_redirects": 0})
    headers = {"Accept": "application/x-json-stream"}
    if mapping.token_file:
        try:
            with open(os.path.expanduser(mapping.token_file), encoding="utf-8") as held:
                headers["X-Rucio-Auth-Token"] = held.read(8192).strip()
        except OSError as exc:
            raise Unmappable(
                "this node cannot list the {kind} {identifier}: it cannot read its Rucio "
                "token ({why})",
                why=exc.strerror or str(exc), **values,
            ) from None  # fmt: skip
    try:
        status, text = get_text(location, server_rules, seconds, limit, headers)
    except (StagingRefused, StagingFailed) as exc:
        why = exc.text if isinstance(exc, StagingRefused) else str(exc)
        raise Unmappable(
            "this node cannot list the {kind} {identifier} now: its Rucio server {server} did "
            "not answer ({why}); try again later",
            server=mapping.list_files or "", why=why[:300], **values,
        ) from None  # fmt: skip
    if status == 404:
        raise Unmappable(
            "{identifier} is under scope {via}, which this node maps, but its Rucio server "
            "{server} has no such {kind} (404); check the identifier",
            server=mapping.list_files or "", **values,
        )  # fmt: skip
    if status != 200:
        raise Unmappable(
            "this node cannot list the {kind} {identifier}: its Rucio server {server} answered "
            "{status}{hint}",
            server=mapping.list_files or "", status=str(status), **values,
            hint=" (the node's Rucio token is missing or expired)" if status == 401 else "",
        )  # fmt: skip
    return text


def parse_listing(text: bytes, max_files: int, values: dict[str, str]) -> list[RucioFile]:
    """Rucio's listing (one JSON object a line) read: each file's scope, name and bytes, at
    most ``max_files`` of them, each name once (they land side by side)."""
    files: list[RucioFile] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        scope = entry.get("scope") if isinstance(entry, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        size = entry.get("bytes") if isinstance(entry, dict) else None
        if not (isinstance(scope, str) and RUCIO_SCOPE.match(scope)
                and isinstance(name, str) and RUCIO_NAME.match(name)):  # fmt: skip
            raise Unmappable(
                "the listing of the {kind} {identifier} is not Rucio's (line {line}: a JSON "
                "object with the file's scope and name)",
                line=str(number), **values,
            )  # fmt: skip
        if name in seen:
            raise Unmappable(
                "the {kind} {identifier} holds two files named {name}, which would land in "
                "one place; give its files as data resources of their own",
                name=name, **values,
            )  # fmt: skip
        seen.add(name)
        if len(files) >= max_files:
            raise Unmappable(
                "the {kind} {identifier} has more than {limit} files, more than this node "
                "stages for one data resource (staging.max_files); give smaller datasets",
                limit=str(max_files), **values,
            )  # fmt: skip
        valid = isinstance(size, int) and not isinstance(size, bool) and size >= 0
        files.append(RucioFile(scope, name, size if valid else None))
    if not files:
        raise Unmappable("the {kind} {identifier} has no files to stage", **values)
    return files
