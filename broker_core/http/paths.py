"""One URL per resource, and no redirect built from what the client says its host is.

A spec path written with a trailing slash (``/node/``, ``/sessions/{uuid}/``) is answered as the
path itself rather than redirected: the routing layer's 307 took its ``Location`` from the
client's ``Host`` header (an open redirect through any cache or proxy that keys on the path),
and a 307 makes a client send a POST body twice. Answers only ever name the canonical form (their
``meta.url``s come from the configured public URL), so nothing teaches a client the other one.

Any other redirect keeps its target when it is a configured URL (a session's ``meta.url`` under
the node's base URL, as a 303 from ``/direct`` names it), but an absolute ``Location`` on the
request's own ``Host`` (the UI's ``/ui`` to ``/ui/``, say) is rewritten onto the configured
``public_url``, or made a relative reference (RFC 9110 section 10.2.2) when there is none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def exact_pattern(template: str) -> re.Pattern[str]:
    """The paths a spec path template (``/sessions/{uuid}``) names, without a trailing slash."""
    return re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$")


class CanonicalPaths:
    def __init__(
        self,
        app: ASGIApp,
        *,
        templates: Iterable[str],
        public_url: str | None,
        base_url: str | None = None,
    ):
        self.app = app
        self.patterns = [exact_pattern(t) for t in templates if t != "/"]
        self.public_url = public_url.rstrip("/") if public_url else None
        self.base_url = (base_url or self.public_url or "").rstrip("/")

    def canonical(self, path: str) -> str | None:
        """The spec path that ``path`` is with one trailing slash taken off; None if none."""
        if len(path) < 2 or not path.endswith("/"):
            return None
        bare = path[:-1]
        return bare if any(p.match(bare) for p in self.patterns) else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        bare = self.canonical(scope["path"])
        if bare is not None:
            raw = scope.get("raw_path")
            scope = {**scope, "path": bare}
            if isinstance(raw, bytes) and raw.endswith(b"/"):
                scope["raw_path"] = raw[:-1]
        host = next((v for k, v in scope["headers"] if k == b"host"), None)
        await self.app(scope, receive, self._own_redirects(send, host))

    def _own_redirects(self, send: Send, host: bytes | None) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start" and 300 <= message["status"] < 400:
                message = {
                    **message,
                    "headers": [
                        (k, self._location(v, host) if k.lower() == b"location" else v)
                        for k, v in message.get("headers", [])
                    ],
                }
            await send(message)

        return wrapped

    def _location(self, value: bytes, host: bytes | None) -> bytes:
        try:
            target = urlsplit(value.decode("latin-1"))
        except ValueError:  # not a URL at all: nothing of the client's in it to keep
            return b"/"
        if not target.netloc or host is None:
            return value
        text = value.decode("latin-1")
        if self.base_url and (text == self.base_url or text.startswith(self.base_url + "/")):
            return value  # a URL of the configured base (a session's meta.url): the node's own
        if target.netloc.lower() != host.decode("latin-1").lower():
            return value  # a configured URL (a session's meta.url, say): kept
        path = target.path or "/"
        if target.query:
            path += f"?{target.query}"
        base = self.public_url or ""
        return f"{base}{path}".encode("latin-1")
