"""An HTTP fake of the two Rucio REST calls that list a collection, as Rucio documents them
(``lib/rucio/client/didclient.py``, ``lib/rucio/web/rest/flaskapi/v1/dids.py``):

- ``GET /dids/{scope}/{name}/files``: the client's ``list_files``, every file under a dataset
  or container (a container's datasets resolved), one JSON object a line
  (``application/x-json-stream``) with ``scope``, ``name``, ``bytes``, ``adler32``, ``md5``
  and ``events``;
- ``GET /dids/{scope}/{name}/dids``: ``list_content``, the direct children with their
  ``type`` (FILE, DATASET, CONTAINER).

The token is checked as Rucio does (header ``X-Rucio-Auth-Token``, else 401 with the
``ExceptionClass: CannotAuthenticate`` header); an unknown identifier is a 404 with
``ExceptionClass: DataIdentifierNotFound``. ``/files/<path>`` serves bytes, for mappings of
Rucio files to this server's URLs. Every request is recorded (method, path, token).
"""

from __future__ import annotations

import hashlib
import json
import threading
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass
class Did:
    type: str  # FILE, DATASET or CONTAINER
    content: bytes = b""  # a file's bytes
    children: list[tuple[str, str]] = field(default_factory=list)


class RucioFake:
    def __init__(self, token: str | None = "rucio-token-1") -> None:
        self.dids: dict[tuple[str, str], Did] = {}
        self.served: dict[str, bytes] = {}  # /files/<path> -> bytes
        self.token = token
        self.requests: list[tuple[str, str, str | None]] = []
        self._server: ThreadingHTTPServer | None = None

    # --- the catalogue ---

    def add_file(self, scope: str, name: str, content: bytes) -> None:
        self.dids[(scope, name)] = Did("FILE", content)

    def add_collection(self, kind: str, scope: str, name: str, *children: tuple[str, str]) -> None:
        self.dids[(scope, name)] = Did(kind, children=list(children))

    def files_of(self, scope: str, name: str) -> list[tuple[str, str, Did]]:
        did = self.dids[(scope, name)]
        if did.type == "FILE":
            return [(scope, name, did)]
        return [f for child in did.children for f in self.files_of(*child)]

    # --- the server ---

    def start(self) -> RucioFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake._answer(self)

            def do_HEAD(self) -> None:  # the served files' sizes
                path = urlsplit(self.path).path.removeprefix("/files/")
                body = fake.served.get(path)
                fake.requests.append(("HEAD", self.path, None))
                self.send_response(404 if body is None else 200)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        token = handler.headers.get("X-Rucio-Auth-Token")
        self.requests.append(("GET", path, token))
        if path.startswith("/files/"):
            body = self.served.get(path.removeprefix("/files/"))
            if body is None:
                return _send(handler, 404, b"not found\n", "text/plain")
            return _send(handler, 200, body, "application/octet-stream")
        if self.token is not None and token != self.token:
            return _error(handler, 401, "CannotAuthenticate", "Cannot authenticate with token")
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "dids" or parts[3] not in ("files", "dids"):
            return _error(handler, 404, "MethodNotAllowed", "no such call")
        scope, name = unquote(parts[1]), unquote(parts[2])
        if (scope, name) not in self.dids:
            return _error(handler, 404, "DataIdentifierNotFound",
                          f"Data identifier '{scope}:{name}' not found")  # fmt: skip
        if parts[3] == "files":
            rows = [_file_row(s, n, d) for s, n, d in self.files_of(scope, name)]
        else:
            rows = [{"scope": s, "name": n, "type": self.dids[(s, n)].type,
                     "bytes": len(self.dids[(s, n)].content) or None}
                    for s, n in self.dids[(scope, name)].children]  # fmt: skip
        text = "".join(json.dumps(r) + "\n" for r in rows).encode()
        _send(handler, 200, text, "application/x-json-stream")


def _file_row(scope: str, name: str, did: Did) -> dict[str, Any]:
    return {
        "scope": scope,
        "name": name,
        "bytes": len(did.content),
        "adler32": f"{zlib.adler32(did.content):08x}",
        "md5": hashlib.md5(did.content, usedforsecurity=False).hexdigest(),
        "events": None,
    }


def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, kind: str) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", kind)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _error(handler: BaseHTTPRequestHandler, status: int, exception: str, message: str) -> None:
    handler.send_response(status)
    handler.send_header("ExceptionClass", exception)
    handler.send_header("ExceptionMessage", message)
    body = json.dumps({"ExceptionClass": exception, "ExceptionMessage": message}).encode()
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
