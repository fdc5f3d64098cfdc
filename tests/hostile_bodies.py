"""Request bodies a hostile caller sends to make one request cost the node far more than its size
(issue 13): shared by tests/test_body_costs.py and bench/hostile_bodies.py.

Each is ``(name, content type, body)``: small on the wire, and before the limits each one made
the node expand, validate or store far more than it was sent.
"""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import request_doc

JSON = "application/json"
YAML = "application/yaml"
XML = "application/xml"


def alias_bomb(aliases: int = 5_000, anchor_chars: int = 86_800) -> bytes:
    """YAML: one big string anchored once and aliased ``aliases`` times (117 KB with the
    defaults). It passes a node count, but it expands to ``aliases * anchor_chars`` characters
    (434 MB) the moment anything serialises it."""
    items = ", ".join(["*big"] * aliases)
    return (
        "executable:\n"
        "  kind: https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/executable/"
        "docker-container.yaml\n"
        "  image: {locations: [localhost/busybox:latest]}\n"
        f"  meta: {{description: &big {'x' * anchor_chars}}}\n"
        f"  command: [{items}]\n"
    ).encode()


def alias_bomb_in_maps(aliases: int = 5_000, anchor_chars: int = 97_000) -> bytes:
    """The alias bomb as environment values: a map, not a list."""
    values = ", ".join(f"V{i}: *big" for i in range(aliases))
    return (
        "executable:\n"
        "  kind: https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/executable/"
        "docker-container.yaml\n"
        "  image: {locations: [localhost/busybox:latest]}\n"
        f"  meta: {{description: &big {'x' * anchor_chars}}}\n"
        f"  environment: {{{values}}}\n"
    ).encode()


def _docker(**executable: Any) -> dict[str, Any]:
    doc = request_doc()
    doc["executable"].update(executable)
    return doc


def many_command_args(count: int = 100_000) -> bytes:
    """JSON: a command of ``count`` arguments."""
    return json.dumps(_docker(command=["x"] * count)).encode()


def many_environment(count: int = 50_000) -> bytes:
    """JSON: ``count`` environment variables (accepted and echoed in every offer, before)."""
    return json.dumps(_docker(environment={f"V{i}": "x" for i in range(count)})).encode()


def many_keys(count: int = 70_000) -> bytes:
    """JSON: ``count`` unknown top-level keys (each one named, with a did-you-mean, before)."""
    doc = request_doc()
    doc.update({f"k{i}": 1 for i in range(count)})
    return json.dumps(doc).encode()


def many_free_form_keys(count: int = 70_000) -> bytes:
    """JSON: ``count`` keys in a free-form map (an IVOA data resource's ``obscore``)."""
    doc = request_doc()
    doc["data"] = [
        {
            "kind": "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/data/"
            "ivoa-data-resource.yaml",
            "ivoid": "ivo://example.org/data",
            "obscore": {f"k{i}": 1 for i in range(count)},
        }
    ]
    return json.dumps(doc).encode()


def many_xml_command_args(count: int = 50_000) -> bytes:
    """XML: a command of ``count`` arguments."""
    args = "".join("<command>x</command>" for _ in range(count))
    return (
        '<?xml version="1.0"?><ExecutionRequest>'
        '<executable kind="https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/'
        'executable/docker-container.yaml"><image><locations>localhost/busybox:latest'
        f"</locations></image><command>{args}</command></executable></ExecutionRequest>"
    ).encode()


def many_yaml_command_args(count: int = 90_000) -> bytes:
    """YAML: a command of ``count`` arguments, in flow style (two bytes an argument)."""
    return (
        "executable:\n"
        "  kind: https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/executable/"
        "docker-container.yaml\n"
        "  image: {locations: [localhost/busybox:latest]}\n"
        f"  command: [{','.join(['x'] * count)}]\n"
    ).encode()


def hostile_bodies() -> list[tuple[str, str, bytes]]:
    """Every hostile body, by name (the ones of the issue first)."""
    return [
        ("YAML alias bomb, 117 KB", YAML, alias_bomb()),
        ("YAML alias bomb, 132 KB", YAML, alias_bomb(anchor_chars=101_800)),
        ("YAML alias bomb in a map", YAML, alias_bomb_in_maps(anchor_chars=50_000)),
        ("100,000 command arguments", JSON, many_command_args()),
        ("70,000 unknown keys", JSON, many_keys()),
        ("50,000 environment variables", JSON, many_environment()),
        ("70,000 keys in obscore", JSON, many_free_form_keys()),
        ("50,000 XML command arguments", XML, many_xml_command_args()),
        ("90,000 YAML command arguments", YAML, many_yaml_command_args()),
    ]
