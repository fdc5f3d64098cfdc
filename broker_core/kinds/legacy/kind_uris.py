"""Kind URIs of every earlier era, mapped to the canonical kind URIs.

The spellings (``<name>`` is a kind's name, e.g. ``docker-container``; a ``-1.0`` version
suffix and a ``.yaml`` extension are optional throughout)::

    urn:<name>-0.1                                                           (2023-2024)
    uri:<name>-1.0                                                           (2024)
    https://www.purl.org/ivoa.net/EB/schema/types/<category>/<name>-1.0      (2024)
    https://www.purl.org/ivoa.net/EB/schema/v1.0/types/<category>/<name>-1.0
    https://www.purl.org/ivoa.net/EB/schema/types/executables/<name>-1.0     (plural categories)
    https://www.purl.org/ivoa.net/EB/schema/types/resources/compute/<name>-1.0   (nested:
        .../types/resources/{compute,storage,data,volumes}/...)
    https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/computer/<name>.yaml

where ``<category>`` is a category (``executable``, ``compute``, ``storage``, ``data``,
``volume``), its plural or ``computer``, and the 2024 names ``simple-compute``,
``simple-storage``, ``singular-container`` (and ``single-container``) and
``Amazon-S3-data-resource`` are the kinds' present names. A URI naming a category other
than the one it is found in stays as it is, and so does any URI of a kind the registry does
not know: the request is then answered with ``result: NO`` listing the kinds the node accepts.
"""

from __future__ import annotations

import re

from ..registry import KindRegistry

LEGACY_KIND = re.compile(
    r"^(?:https?://www\.purl\.org/ivoa\.net/(?:EB|Calycopis-openapi)/schema/(?:v1\.0/)?"
    r"(?:types|kinds)/(?:resources/)?(?P<category>[A-Za-z]+)/|(?:urn|uri):)"
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9-]*?)(?:-\d+\.\d+)?(?:\.yaml)?$"
)

# the category names of earlier eras (plurals, ``computer``) -> the category
CATEGORY_ALIASES = {
    "executables": "executable",
    "computer": "compute",
    "computers": "compute",
    "volumes": "volume",
    "resources": "",  # never a category by itself
}

# kind names of the 2024 model -> the present names
NAME_ALIASES = {
    "simple-compute": "simple-compute-resource",
    "simple-storage": "simple-storage-resource",
    "singular-container": "singularity-container",
    "single-container": "singularity-container",  # the 2024 prototypes' SingularContainer01
    "amazon-s3-data-resource": "S3-data-resource",
}


def canonical_kind(kind: str, category: str, registry: KindRegistry) -> str:
    """The canonical URI for a legacy kind URI, or the input unchanged when it is not one."""
    if registry.model(category, kind):
        return kind
    match = LEGACY_KIND.match(kind)
    if not match:
        return kind
    named = (match["category"] or category).lower()
    named = CATEGORY_ALIASES.get(named, named)
    if named != category:
        return kind
    name = match["name"]
    return (
        registry.find_by_name(name, category)
        or registry.find_by_name(NAME_ALIASES.get(name.lower(), name), category)
        or kind
    )
