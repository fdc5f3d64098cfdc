"""The aggregator's ASGI app: the node's own spec, served by the aggregator's handlers."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

from connexion.resolver import Resolver
from connexion.utils import get_function_from_name

from broker_core.http.app import serve_spec
from broker_core.kinds.registry import load_registry

from ..config import AggregatorConfig
from ..service import Aggregator
from ..store import Store
from ..upstreams import Upstreams
from .context import current_aggregator

NODE_HANDLERS = "broker_core.http.handlers."
HANDLERS = "aggregator.http.handlers."


def _handler(operation_id: str) -> Any:
    """The aggregator's handler of a spec operation (the spec names the node's)."""
    return get_function_from_name(operation_id.replace(NODE_HANDLERS, HANDLERS, 1))


def create_aggregator_app(config: AggregatorConfig, store: Store | None = None) -> Any:
    store = store or Store(config.database.url, migrate_on_start=config.database.migrate_on_start)
    upstreams = Upstreams(config)
    service = Aggregator(config, store, upstreams)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        # what start-up made lives as long as the process: keep it out of the collector's
        # full passes, which otherwise pause fan-outs by 100 ms now and then
        gc.freeze()
        try:
            yield
        finally:
            await upstreams.close()

    return serve_spec(
        lifespan,
        registry=load_registry(),
        server=config.server,
        bind=lambda: current_aggregator.set(service),
        resolver=Resolver(function_resolver=_handler),
    )
