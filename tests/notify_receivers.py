"""Real receivers of notifications for tests: a webhook receiver (an aiohttp server in a
thread) and an SMTP server (aiosmtpd; plain, STARTTLS or SMTP over TLS), each keeping what it
was sent; and the Standard Webhooks verification, written from the specification, to check the
node's signatures with."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.nodes import free_port
from tests.tls_certs import ServerCertificate

TOLERANCE = 5 * 60  # the specification's replay window


class SignatureInvalid(Exception):
    pass


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> None:
    """The Standard Webhooks reference check: the key is the base64 after ``whsec_``; the
    signed content ``{id}.{timestamp}.{body}``; the header a space-separated list of
    ``v1,<base64>``; the timestamp within five minutes of now."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, stamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs((now or time.time()) - int(stamp)) > TOLERANCE:
        raise SignatureInvalid("timestamp out of tolerance")
    expected = base64.b64encode(
        hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    ).decode()
    for candidate in headers["webhook-signature"].split(" "):
        version, _, value = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return
    raise SignatureInvalid("no matching signature")


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    """Answers ``fail_first`` POSTs 500, then 204; keeps every POST it got."""

    host: str = "127.0.0.1"
    port: int = 0
    fail_first: int = 0
    got: list[Delivery] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            status = 500 if len(self.got) < self.fail_first else 204
            self.got.append(Delivery({k.lower(): v for k, v in request.headers.items()}, body,
                                     status))  # fmt: skip
        return web.Response(status=status)

    def __enter__(self) -> WebhookReceiver:
        threading.Thread(target=self._serve, daemon=True).start()
        assert self._ready.wait(10)
        return self

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, self.host, self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def __exit__(self, *exc: object) -> None:
        loop, runner = self._loop, self._runner
        if loop is not None and runner is not None:
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)

    def delivered(self) -> list[Delivery]:
        with self._lock:
            return [d for d in self.got if d.status < 300]

    def wait_for(self, count: int, timeout: float = 60) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.delivered()
            if len(found) >= count:
                return found
            time.sleep(0.1)
        raise AssertionError(f"{len(self.delivered())} deliveries, not {count}: {self.got}")


class _Keep:
    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.encrypted: list[bool] = []  # each message's: did it come over TLS
        self.commands: list[str] = []  # MAIL FROM and RCPT TO as they came

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          options: list[str]) -> str:  # fmt: skip
        self.commands.append(f"MAIL {address}")
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = message_from_bytes(envelope.content, policy=policy.default)
        self.messages.append((list(envelope.rcpt_tos), parsed))  # type: ignore[arg-type]
        self.encrypted.append(server.transport.get_extra_info("ssl_object") is not None)
        return "250 OK"


class MailServer:
    """A real SMTP server on loopback, keeping every message it accepts: plain SMTP, or with
    ``certificate`` STARTTLS (required before any mail) or SMTP over TLS (``implicit``); with
    ``users`` it asks for a login (only over TLS, aiosmtpd's default) and keeps who logged in."""

    def __init__(
        self,
        certificate: ServerCertificate | None = None,
        implicit: bool = False,
        users: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.handler = _Keep()
        self.logins: list[str] = []
        self.users = users or {}
        options: dict[str, Any] = {}
        if certificate is not None and implicit:
            options["ssl_context"] = certificate.server_context()
        elif certificate is not None:
            options |= {"tls_context": certificate.server_context(), "require_starttls": True}
        if users:  # aiosmtpd counts only STARTTLS as TLS: over SMTPS it must be told
            options |= {"authenticator": self._authenticate, "auth_required": True,
                        "auth_require_tls": not implicit}  # fmt: skip
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **options)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:  # fmt: skip
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = data.login.decode(), data.password.decode()
        if self.users.get(user) != password:
            return AuthResult(success=False, handled=False)
        self.logins.append(user)
        return AuthResult(success=True)

    def __enter__(self) -> MailServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    def wait_for(self, count: int, timeout: float = 60) -> list[tuple[list[str], EmailMessage]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.handler.messages) >= count:
                return list(self.handler.messages)
            time.sleep(0.1)
        raise AssertionError(f"{len(self.handler.messages)} e-mails, not {count}")
