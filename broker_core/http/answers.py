"""Answers serialised as JSON in the handler's worker thread, not on the event loop.

connexion serialises what a handler returns on the event loop. An offer set echoes its request in
every offer, so a large answer (4 MB for a 1 MiB request) would stall every other client of the
node for as long as encoding it takes (100 ms). A synchronous handler runs in a worker thread, so
:func:`serialised_in_thread` makes it serialise its own answer there, and :class:`AnswerJsonifier`
passes that text on as it is.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from typing import Any

from connexion.jsonifier import JSONEncoder, Jsonifier


class JsonText(str):
    """A document already serialised as JSON."""


class AnswerJsonifier(Jsonifier):
    """connexion's jsonifier, passing :class:`JsonText` on unchanged."""

    def dumps(self, data: Any, **kwargs: Any) -> str:
        if isinstance(data, JsonText):
            return f"{data}\n"
        return super().dumps(data, **kwargs)


def serialised_in_thread(handler: Callable[..., Any]) -> Callable[..., Any]:
    """A synchronous handler whose JSON document (alone, or first of a tuple) is returned as
    :class:`JsonText`; a coroutine function runs on the loop anyway, and is returned as it is."""
    if inspect.iscoroutinefunction(handler):
        return handler

    @functools.wraps(handler)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        answer = handler(*args, **kwargs)
        if isinstance(answer, tuple) and answer and isinstance(answer[0], dict | list):
            return (JsonText(json.dumps(answer[0], cls=JSONEncoder)), *answer[1:])
        if isinstance(answer, dict | list):
            return JsonText(json.dumps(answer, cls=JSONEncoder))
        return answer

    return wrapped
