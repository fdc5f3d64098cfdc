"""The aggregator's ASGI app: the node's own spec, served by the aggregator's handlers."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

from broker_core.http.app import SPEC_DOCUMENT, handlers_in, serve_spec
from broker_core.kinds.registry import load_registry
from broker_core.observability.http import Observed

from ..budget import AnswerTiming
from ..config import AggregatorConfig
from ..service import Aggregator
from ..store import Store
from ..upstreams import Upstreams
from .context import current_aggregator

# the aggregator's handler of each operation of the spec (the node's own)
HANDLERS = handlers_in("aggregator.http.handlers")


def create_aggregator_app(config: AggregatorConfig, store: Store | None = None) -> Any:
    store = store or Store(config.database.url, migrate_on_start=config.database.migrate_on_start)
    upstreams = Upstreams(config)
    service = Aggregator(config, store, upstreams)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        # what start-up made lives as long as the process: keep it out of the collector's
        # full passes, which otherwise pause fan-outs by 100 ms now and then
        gc.freeze()
        service.combined.start()  # finish or undo the combined bookings left half done
        try:
            yield
        finally:
            await service.combined.close()
            await service.rejections.close()
            await upstreams.close()

    app = serve_spec(
        lifespan,
        registry=load_registry(),
        server=config.server,
        bind=lambda: current_aggregator.set(service),
        handlers=HANDLERS,
    )
    # outermost: an answer's deadline counts from its arrival to its last byte sent; inside
    # it, each request's id and metrics
    return AnswerTiming(Observed(app, SPEC_DOCUMENT["paths"]), service.after_fanout)
