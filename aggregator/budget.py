"""The time one answer may take. ``fanout.deadline`` bounds the whole answer, from the
request's arrival to its last byte sent, so the fan-out stops early enough for the merge, store
and rendering after it: ``reserve`` is that time, the most recent answers needed (with a margin),
never less than the configured floor and never more than half the deadline."""

from __future__ import annotations

import time
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

SAMPLES = 64  # the answers the reserve is judged on
MARGIN = 1.5  # the reserve over the most any of them needed


@dataclass
class AnswerClock:
    """When one request arrived and when its fan-out ended (None until it has)."""

    arrived: float
    fanout_ended: float | None = None


# the clock of the request being answered; absent when the service is called directly
current_clock: ContextVar[AnswerClock | None] = ContextVar("aggregator_clock", default=None)


class AfterFanout:
    """How long the work after recent fan-outs took, so the next one leaves time for it."""

    def __init__(self, floor: float):
        self.floor = floor
        self.samples: deque[float] = deque(maxlen=SAMPLES)

    def record(self, seconds: float) -> None:
        self.samples.append(max(seconds, 0.0))

    def reserve(self, deadline: float) -> float:
        needed = MARGIN * max(self.samples, default=0.0)
        return min(max(self.floor, needed), deadline / 2)


def fanout_deadline(deadline: float, after: AfterFanout) -> float:
    """The monotonic instant a fan-out for the current request stops waiting."""
    clock = current_clock.get()
    arrived = clock.arrived if clock is not None else time.monotonic()
    return arrived + deadline - after.reserve(deadline)


def fanout_ended() -> None:
    clock = current_clock.get()
    if clock is not None:
        clock.fanout_ended = time.monotonic()


class AnswerTiming:
    """ASGI middleware, outermost: starts each request's clock on arrival and, when the last
    part of an answer after a fan-out is sent, records how long the work after it took."""

    def __init__(self, app: ASGIApp, after: AfterFanout):
        self.app = app
        self.after = after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        clock = AnswerClock(time.monotonic())

        async def timed_send(message: Message) -> None:
            # measured up to handing the last part to the server: a client slow to read a large
            # answer must not shorten everyone's fan-outs
            ended = clock.fanout_ended
            last = message["type"] == "http.response.body" and not message.get("more_body")
            if last and ended is not None:
                self.after.record(time.monotonic() - ended)
                clock.fanout_ended = None
            await send(message)

        token = current_clock.set(clock)
        try:
            await self.app(scope, receive, timed_send)
        finally:
            current_clock.reset(token)
