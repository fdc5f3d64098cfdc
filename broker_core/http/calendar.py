"""``/calendar``: the calendar of bookings, a page of static files in the package (HTML, one
script, one style sheet: no CDN, no build step), served by a node in front of its API.

The page itself holds no data: it reads ``GET /node`` for the pools, ``GET
/pools/{platform}/{pool}/usage`` for what is booked and free, and posts requests to ``POST
/requests``, with the bearer token the user types in (kept in the tab's sessionStorage), so it
sees exactly what the API shows that caller. Its URLs are relative (``calendar/calendar.js``,
``pools/...``), so it works behind a proxy's path prefix too.

The files are answered with a Content-Security-Policy that allows only this origin's scripts,
styles and API (no inline script, no framing), since the page handles a token.
"""

from __future__ import annotations

from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

STATIC = Path(__file__).resolve().parent / "static" / "calendar"
PAGE = "/calendar"
# path -> (file, media type)
FILES = {
    PAGE: ("index.html", "text/html; charset=utf-8"),
    f"{PAGE}/calendar.js": ("calendar.js", "text/javascript; charset=utf-8"),
    f"{PAGE}/calendar.css": ("calendar.css", "text/css; charset=utf-8"),
}
HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]  # fmt: skip


class CalendarFiles:
    """Serves the calendar's files (GET and HEAD) in front of ``app``; ``/calendar/`` is
    redirected to ``/calendar`` (relatively: it holds behind a path prefix)."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.files = {
            path: (media_type.encode(), (STATIC / name).read_bytes())
            for path, (name, media_type) in FILES.items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        if path == f"{PAGE}/":
            headers = [(b"location", b"../calendar"), (b"content-length", b"0")]
            await send({"type": "http.response.start", "status": 308, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        found = self.files.get(path)
        if found is None:
            await self.app(scope, receive, send)
            return
        media_type, body = found
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", media_type),
                        (b"content-length", str(len(body)).encode()), *HEADERS],
        })  # fmt: skip
        if scope["method"] == "HEAD":
            body = b""
        await send({"type": "http.response.body", "body": body})
