"""The HTTP app: connexion serving and validating against the spec in ``openapi/``."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import importlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio.to_thread
import yaml
from connexion import AsyncApp
from connexion.datastructures import MediaTypeDict
from connexion.exceptions import ResolverError
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver

from ..broker import Broker
from ..config import ServerConfig
from ..kinds.registry import KindRegistry
from ..lifecycle.runner import LifecycleRunner
from ..notifications.worker import NotificationWorker
from ..observability.http import Observed
from ..sessions.updates import expire_due, next_expiry
from . import problems
from .answers import AnswerJsonifier, serialised_in_thread
from .calendar import CalendarFiles
from .context import current_broker
from .identity import Authentication
from .landing import SpecFiles
from .negotiation import ContentNegotiation
from .paths import CanonicalPaths

log = logging.getLogger(__name__)
# connexion warns on every request whose operation accepts JSON and YAML; the content layer has
# already turned YAML into JSON by then, so the warning says nothing
logging.getLogger("connexion.operations.openapi3").setLevel(logging.ERROR)
# the spec declares bearer tokens for clients; they are checked by our own layer in front of
# connexion (``identity.Authentication``), so connexion's "no x-bearerInfoFunc" is expected
logging.getLogger("connexion.security").setLevel(logging.ERROR)


def _spec_path() -> Path:
    """The spec beside the source tree (a clone, an editable install), else where a wheel
    installs it (``[tool.setuptools.data-files]``: ``<prefix>/share/ebroker/openapi``)."""
    beside = Path(__file__).resolve().parents[2] / "openapi" / "ebroker.yaml"
    if beside.is_file():
        return beside
    return Path(sys.prefix) / "share" / "ebroker" / "openapi" / "ebroker.yaml"


SPEC = _spec_path()
# read once per process, with libyaml where PyYAML has it (0.04 s against 0.4 s for the spec);
# each app hands connexion a copy, so that it neither re-reads the file nor changes this one
SPEC_DOCUMENT = yaml.load(SPEC.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
REAPER_MAX_SLEEP = 1.0
_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
OPERATION_IDS = frozenset(
    operation["operationId"]
    for operations in SPEC_DOCUMENT["paths"].values()
    for method, operation in operations.items()
    if method in _HTTP_METHODS
)

# each operation of the spec, by operationId: the handler module and function that serve it. A
# node and an aggregator have handler packages of the same shape, each serving every operation
OPERATIONS: dict[str, tuple[str, str]] = {
    "getLandingPage": ("landing", "get"),
    "requestOffers": ("requests", "post"),
    "requestOffersLegacy": ("requests", "post"),
    "getOfferSet": ("offersets", "get"),
    "updateOfferSet": ("offersets", "post"),
    "listOfferSets": ("offersets", "index"),
    "getSession": ("sessions", "get"),
    "listSessions": ("sessions", "index"),
    "updateSession": ("sessions", "post"),
    "getSessionLogs": ("sessions", "logs"),
    "executeDirect": ("direct", "post"),
    "executeDirectLegacy": ("direct", "post"),
    "getLiveness": ("health", "live"),
    "getReadiness": ("health", "ready"),
    "getMetrics": ("metrics", "get"),
    "getNode": ("node", "get"),
    "getUsage": ("accounting", "usage"),
    "getProject": ("accounting", "project"),
    "getPoolUsage": ("pool_usage", "get"),
    "getSessionFeed": ("feeds", "sessions"),
    "createFeedToken": ("feeds", "token"),
    "drainPool": ("pools", "drain"),
    "undrainPool": ("pools", "undrain"),
    "listMaintenance": ("pools", "maintenance"),
    "bookMaintenance": ("pools", "book"),
    "deleteMaintenance": ("pools", "unbook"),
    "changeInventory": ("pools", "inventory"),
    "listAuditEvents": ("audit", "index"),
}


def handlers_in(package: str) -> dict[str, Callable[..., Any]]:
    """The table from operationId to handler for a package of handler modules (a synchronous
    one serialises its answer in its worker thread)."""
    return {
        operation: serialised_in_thread(
            getattr(importlib.import_module(f"{package}.{module}"), function)
        )
        for operation, (module, function) in OPERATIONS.items()
    }


# the node's handler of each operation
HANDLERS = handlers_in("broker_core.http.handlers")


def operation_resolver(handlers: Mapping[str, Callable[..., Any]]) -> Resolver:
    """connexion's resolver for a table from operationId to handler; the table must name
    every operation of the spec and nothing else, or the app is not made."""
    missing, unknown = OPERATION_IDS - handlers.keys(), handlers.keys() - OPERATION_IDS
    if missing or unknown:
        raise ValueError(
            f"handler table and spec disagree: no handler for {sorted(missing)}, "
            f"no operation {sorted(unknown)}"
        )

    def resolve(operation_id: str) -> Callable[..., Any]:
        try:
            return handlers[operation_id]
        except KeyError:
            raise ResolverError(f"no handler for operationId {operation_id!r}") from None

    return Resolver(function_resolver=resolve)


async def reap_expired_offers(broker: Broker) -> None:
    """Expire offers at their expiry time, without anyone polling the API."""
    while True:
        try:
            await asyncio.to_thread(expire_due, broker)
            upcoming = await asyncio.to_thread(next_expiry, broker)
        except Exception:  # the reaper must outlive a database hiccup
            log.exception("expiring offers failed; retrying")
            upcoming = None
        delay = REAPER_MAX_SLEEP
        if upcoming is not None:
            delay = min(max(upcoming - time.time(), 0.05), REAPER_MAX_SLEEP)
        await asyncio.sleep(delay)


def create_app(broker: Broker, *, reaper: bool = True, lifecycle: bool | None = None) -> Any:
    """The ASGI app of a broker node; ``lifecycle`` (default: the config's) runs the engine
    that prepares, runs and releases accepted sessions in this process."""
    if lifecycle is None:
        lifecycle = broker.config.lifecycle.enabled

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        # Handlers run in worker threads. The work is CPU-bound Python, so a few threads do more
        # than many: past that they only contend for the GIL and the database write lock.
        anyio.to_thread.current_default_thread_limiter().total_tokens = broker.config.server.threads
        tasks = []
        if reaper:
            tasks.append(asyncio.create_task(reap_expired_offers(broker)))
        if lifecycle:
            tasks.append(asyncio.create_task(LifecycleRunner(broker).run()))
        if lifecycle and broker.config.notifications.enabled:
            tasks.append(asyncio.create_task(NotificationWorker(broker).run()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = serve_spec(
        lifespan,
        registry=broker.registry,
        server=broker.config.server,
        bind=lambda: current_broker.set(broker),
        handlers=HANDLERS,
    )
    # the calendar's files are a node's (an aggregator has no pools): public, as the spec is
    app = CalendarFiles(app)
    return Observed(Authentication(app, broker=broker, spec=SPEC_DOCUMENT), SPEC_DOCUMENT["paths"])


def serve_spec(
    lifespan: Any,
    *,
    registry: KindRegistry,
    server: ServerConfig,
    bind: Callable[[], None],
    handlers: Mapping[str, Callable[..., Any]],
) -> Any:
    """The spec served by connexion (validating requests, problems for errors, the UI at /ui)
    behind the content layer, each operation answered by ``handlers[operationId]`` (a node's,
    or an aggregator's). ``/openapi.json`` and ``/openapi.yaml`` are the spec as written, with
    its ``$ref``s and the public URL as its server; the UI shows that one."""
    app = AsyncApp(
        __name__,
        lifespan=lifespan,
        jsonifier=AnswerJsonifier(),
        validator_map={
            "body": MediaTypeDict({"*/*json": problems.PointerBodyValidator}),
            "parameter": problems.SpecParameterValidator,
        },
    )
    app.add_api(
        copy.deepcopy(SPEC_DOCUMENT),
        resolver=operation_resolver(handlers),
        strict_validation=True,
        validate_responses=server.validate_responses,
        # connexion's own copy of the spec is dereferenced: SpecFiles serves ours instead
        swagger_ui_options=SwaggerUIOptions(swagger_ui_path="/ui", serve_spec=False),
    )
    problems.register(app)
    negotiated = ContentNegotiation(
        SpecFiles(app, document=SPEC_DOCUMENT, public_url=server.public_url),
        registry=registry,
        server=server,
        paths=SPEC_DOCUMENT["paths"],
        bind=bind,
    )
    return CanonicalPaths(
        negotiated,
        templates=SPEC_DOCUMENT["paths"],
        public_url=server.public_url,
        base_url=server.base_url,
    )
