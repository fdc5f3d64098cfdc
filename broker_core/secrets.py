"""The configuration's secrets, kept out of every log line and error message.

A value is secret when it came from a secret file (``secret_file``, ``*_FILE``), when its key
says so (``password``, ``token``, ``secret``, ...: plugin options included, whatever their
plugin), or when it is the password of a URL (``database.url``). Once the node has loaded its
configuration, every log record is masked before any handler sees it, and configuration errors
are masked before they are shown.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

MASK = "***"
MIN_SECRET_CHARS = 4  # shorter values would mask ordinary words
SECRET_KEY = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|credential|private[_-]?key|api[_-]?key|"
    r"application_credential)",
    re.IGNORECASE,
)
# keys that name a secret's place rather than hold one
NOT_SECRET_KEY = re.compile(r"(_file|_path|_env|_name|_claim|_header|forward_token|secrets)$",
                            re.IGNORECASE)  # fmt: skip


class Secrets:
    """The secret strings of one configuration."""

    def __init__(self, values: Iterable[str] = ()):
        self._values: set[str] = set()
        for value in values:
            self.add(value)

    def add(self, value: str) -> None:
        if isinstance(value, str) and len(value) >= MIN_SECRET_CHARS:
            self._values.add(value)
            decoded = unquote(value)
            if decoded != value and len(decoded) >= MIN_SECRET_CHARS:
                self._values.add(decoded)

    def collect(self, document: Any, key: str = "") -> None:
        """Every secret in a configuration document: by key, and URLs' passwords."""
        if isinstance(document, dict):
            for k, v in document.items():
                self.collect(v, str(k))
        elif isinstance(document, list):
            for v in document:
                self.collect(v, key)
        elif isinstance(document, str):
            if SECRET_KEY.search(key) and not NOT_SECRET_KEY.search(key):
                self.add(document)
            self.add_url_password(document)

    def add_url_password(self, text: str) -> None:
        if "://" not in text or "@" not in text:
            return
        try:
            password = urlsplit(text).password
        except ValueError:
            return
        if password:
            self.add(password)

    def values(self) -> frozenset[str]:
        return frozenset(self._values)

    def __bool__(self) -> bool:
        return bool(self._values)

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and any(v in text for v in self._values)

    def mask(self, text: str) -> str:
        """``text`` with every secret in it replaced by ``***`` (the longest first, so that a
        secret containing another is masked whole)."""
        for value in sorted(self._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, MASK)
        return text

    def union(self, other: Secrets) -> Secrets:
        return Secrets(self._values | other._values)


_installed: Secrets | None = None
_factory: Callable[..., logging.LogRecord] | None = None


def mask_logs(secrets: Secrets) -> None:
    """Mask these secrets (and those installed before, in this process) in every log record
    made from now on: its message and its exception text, before any handler formats it."""
    global _installed, _factory
    _installed = secrets if _installed is None else _installed.union(secrets)
    if _factory is not None:
        return
    _factory = logging.getLogRecordFactory()
    base = _factory

    def masked_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        if _installed:
            _mask_record(record, _installed)
        return record

    logging.setLogRecordFactory(masked_record)


def _mask_record(record: logging.LogRecord, secrets: Secrets) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: the handler reports it as ever
        return
    if message in secrets:
        record.msg, record.args = secrets.mask(message), None
    if record.exc_info and record.exc_info[1] is not None:
        text = logging.Formatter().formatException(record.exc_info)
        if text in secrets:
            record.exc_text = secrets.mask(text)
