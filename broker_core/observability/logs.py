"""Log lines with a timestamp, a level and the request's id: plain for a terminal, one JSON
object per line for a log collector (``server.log_format``)."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal

from . import request_ids

LogFormat = Literal["plain", "json"]
PLAIN = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
NO_REQUEST = "-"


class _RequestIdFilter(logging.Filter):
    """Every record gets the id of the request it was logged in (``-`` outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_ids.current.get() or NO_REQUEST
        return True


class UTCFormatter(logging.Formatter):
    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


class JsonFormatter(UTCFormatter):
    """One JSON object per record: time, level, logger, message, request_id (and the
    exception's text)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", NO_REQUEST),
        }
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler on whatever ``sys.stderr`` is when a record is written (as logging's own
    last-resort handler), not on the stream of the moment it was made."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


_ours: logging.Handler | None = None


def configure(level: str | int = "INFO", log_format: LogFormat = "plain") -> None:
    """The process's log handler, on standard error (uvicorn's loggers included: they
    propagate to it). Configuring again replaces this handler alone, never another's."""
    global _ours
    handler = _Stderr()
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else UTCFormatter(PLAIN))
    root = logging.getLogger()
    if _ours is not None:
        root.removeHandler(_ours)
    else:  # the first time: a default handler (basicConfig's, lastResort's) gives way
        for old in list(root.handlers):
            if type(old) is logging.StreamHandler:
                root.removeHandler(old)
    root.addHandler(handler)
    _ours = handler
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
