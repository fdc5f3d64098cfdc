"""This node's own earlier forms, still accepted from the clients written for them.

Ports were bare numbers; a single storage or data resource could be given where a list is
expected.
"""

from __future__ import annotations

from typing import Any

from ..registry import KindRegistry
from .base import Doc


def single_component_for_a_list(doc: Doc, registry: KindRegistry) -> Doc:
    """``storage: {...}`` -> ``storage: [{...}]`` (and so for ``data``)."""
    for category in ("storage", "data"):
        if isinstance(doc.get(category), dict):
            doc[category] = [doc[category]]
    return doc


REQUEST = [single_component_for_a_list]


def port_numbers(doc: Doc, category: str, registry: KindRegistry) -> Doc:
    """Bare port numbers are the schema's port objects::

    network: {ports: [{internal: 8080, external: 30080}]}
    ->  network: {ports: [{internal: {port: 8080}, external: {port: 30080}}]}
    """
    network = doc.get("network") if category == "executable" else None
    for port in (network.get("ports") if isinstance(network, dict) else None) or []:
        if not isinstance(port, dict):
            continue
        for side in ("internal", "external"):
            value = port.get(side)
            if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536:
                port[side] = {"port": value}
    return doc


COMPONENT = [port_numbers]

UPDATE: list[Any] = []
