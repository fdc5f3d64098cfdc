"""The front door: the landing page at ``/``, and the spec served as written in ``openapi/``.

The spec is served with its ``$ref``s (connexion would serve its own, fully dereferenced copy,
some forty times larger, from which client generators make a model per inlined schema), and
with ``servers`` naming the configured public URL so that clients and the UI's "Try it out"
call the right place.
"""

from __future__ import annotations

import copy
import html
import importlib.metadata
import json
from collections.abc import Callable
from typing import Any, Literal

import yaml
from starlette.types import ASGIApp, Receive, Scope, Send

from .bodies import is_yaml, media_ranges

Service = Literal["node", "aggregator"]
JSON = "application/json"
HTML = "text/html"
YAML = "application/yaml"
SPEC_JSON = "/openapi.json"
SPEC_YAML = "/openapi.yaml"

# relative to the service's root (no leading slash: they hold behind a proxy's path prefix)
LINKS = {
    "ui": "ui/",
    "node": "node",
    "openapi": SPEC_JSON.lstrip("/"),
    "openapi_yaml": SPEC_YAML.lstrip("/"),
    "ready": "health/ready",
    "live": "health/live",
}
# a node's only: its calendar of bookings (``calendar.py``); an aggregator has no pools
NODE_LINKS = {"calendar": "calendar", "feed": "sessions.ics"}
_TITLES = {
    "calendar": "The calendar of bookings, per pool",
    "feed": "Your sessions as an iCalendar feed",
    "ui": "Browse and try the API",
    "node": "What this service accepts",
    "openapi": "The OpenAPI spec (JSON)",
    "openapi_yaml": "The OpenAPI spec (YAML)",
    "ready": "Readiness",
    "live": "Liveness",
}


def package_version() -> str:
    """The installed ebroker's version, or ``unknown`` when run from a tree not installed."""
    try:
        return importlib.metadata.version("ebroker")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _quality(accept: str, matches: Callable[[str], bool]) -> float:
    """The highest q the Accept header gives a media type ``matches`` accepts (-1: none)."""
    best = -1.0
    for kind, q in media_ranges(accept):
        if kind and matches(kind):
            best = max(best, q - (0.001 if "*" in kind else 0))
    return best


def prefers_html(accept: str) -> bool:
    """True when the Accept header ranks HTML above JSON (a browser); no header means JSON."""
    html_q = _quality(accept, lambda k: k == HTML)
    json_q = _quality(
        accept, lambda k: k in (JSON, "application/*", "*/*") or k.endswith("+json") or is_yaml(k)
    )
    return html_q > 0 and html_q > json_q


def links_of(service: Service) -> dict[str, str]:
    """The links of a service's landing page, relative to its root."""
    return {**LINKS, **NODE_LINKS} if service == "node" else dict(LINKS)


def landing_document(name: str, service: Service, base_url: str) -> dict[str, Any]:
    base = base_url.rstrip("/")
    return {
        "name": name,
        "service": service,
        "version": package_version(),
        "links": {key: f"{base}/{path}" for key, path in links_of(service).items()},
    }


def landing_html(name: str, service: Service) -> str:
    title = html.escape(name)
    items = "\n".join(
        f'      <li><a href="{html.escape(path)}">{html.escape(_TITLES[key])}</a>'
        f" <code>/{html.escape(path)}</code></li>"
        for key, path in links_of(service).items()
    )
    return f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>{title} (ebroker {service})</title>
    <style>body {{ font-family: sans-serif; max-width: 40em; margin: 2em auto; }}</style>
  </head>
  <body>
    <h1>{title}</h1>
    <p>An ebroker execution broker <strong>{service}</strong>, version
      {html.escape(package_version())}: it answers "when, and where, can I execute this?"</p>
    <ul>
{items}
    </ul>
  </body>
</html>
"""


def landing_page(
    name: str, service: Service, base_url: str, accept: str
) -> tuple[Any, int, dict[str, str]]:
    """A handler's answer for ``GET /``: HTML for a browser, the JSON document otherwise."""
    if prefers_html(accept):
        # the bare type, as the spec lists it (connexion compares them verbatim); the page
        # names its encoding in its first bytes
        return landing_html(name, service), 200, {"Content-Type": HTML, "Vary": "Accept"}
    return landing_document(name, service, base_url), 200, {"Content-Type": JSON, "Vary": "Accept"}


def served_spec(document: dict[str, Any], public_url: str | None) -> dict[str, Any]:
    """The spec as written, its ``servers`` naming the public URL when one is configured."""
    served = copy.deepcopy(document)
    if public_url:
        served["servers"] = [{"url": public_url.rstrip("/") or "/"}]
    return served


class SpecFiles:
    """Serves ``/openapi.json`` and ``/openapi.yaml`` (the spec with its ``$ref``s) in front
    of ``app``; connexion still validates against its own, dereferenced copy."""

    def __init__(self, app: ASGIApp, *, document: dict[str, Any], public_url: str | None):
        self.app = app
        self.spec = served_spec(document, public_url)
        self.files: dict[str, tuple[str, bytes]] = {}

    def _file(self, path: str) -> tuple[str, bytes] | None:
        """The file's body, made on its first request: most apps never serve the YAML, and
        dumping the spec costs more than making the whole rest of the app."""
        if path not in (SPEC_JSON, SPEC_YAML):
            return None
        if path not in self.files:
            if path == SPEC_JSON:
                body = json.dumps(self.spec, ensure_ascii=False, default=str).encode("utf-8")
                self.files[path] = (JSON, body)
            else:
                dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
                text = yaml.dump(self.spec, Dumper=dumper, sort_keys=False, allow_unicode=True,
                                 width=100)  # fmt: skip
                self.files[path] = (YAML, text.encode())
        return self.files[path]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._file(scope["path"]) if scope["type"] == "http" else None
        if found is None or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        content_type, body = found
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", content_type.encode()),
                        (b"content-length", str(len(body)).encode())],
        })  # fmt: skip
        if scope["method"] == "HEAD":
            body = b""
        await send({"type": "http.response.body", "body": body})
