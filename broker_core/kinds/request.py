"""The ExecutionRequest (OfferSetRequest) envelope: components dispatched by kind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, ValidationError

from ..errors import DocumentInvalid, FieldError
from ..notifications.request import Notify
from .base import Component, CostItem, Meta, MetricItem, Strict
from .registry import KindRegistry, UnknownKind, validation_errors


class RecurrenceRequest(Strict):
    """``schedule.requested.recurrence``: an RFC 5545 RRULE repeating the requested session
    (checked and expanded by ``broker_core.recurrence``)."""

    rule: str = Field(max_length=512)
    timezone: str | None = Field(default=None, max_length=64)
    partial: bool = False


class RequestedSchedule(Strict):
    start: str | list[str] | None = None
    duration: str | None = Field(default=None, max_length=64)
    recurrence: RecurrenceRequest | None = None


class ScheduleBlock(Strict):
    requested: RequestedSchedule | None = None


class Envelope(Strict):
    """The request with its components still raw: they are validated per kind afterwards."""

    kind: str | None = None
    meta: Meta | None = None
    executable: dict[str, Any]
    compute: dict[str, Any] | None = None
    storage: list[dict[str, Any]] = Field(default_factory=list, max_length=64)
    data: list[dict[str, Any]] = Field(default_factory=list, max_length=256)
    schedule: ScheduleBlock | None = None
    costs: list[CostItem] = Field(default_factory=list, max_length=64)
    metrics: list[MetricItem] = Field(default_factory=list, max_length=64)
    notify: Notify | None = None


@dataclass
class ExecutionRequest:
    executable: Component
    compute: Component | None
    storage: list[Component]
    data: list[Component]
    schedule: RequestedSchedule
    meta: Meta | None = None
    costs: list[CostItem] = field(default_factory=list)
    metrics: list[MetricItem] = field(default_factory=list)
    notify: Notify | None = None

    def components(self) -> list[Component]:
        parts = [self.executable, *([self.compute] if self.compute else [])]
        return parts + self.storage + self.data

    def kinds(self) -> set[str]:
        return {c.kind for c in self.components()}

    def all_costs(self) -> list[CostItem]:
        """The request's costs and its components': an offer is priced as a whole."""
        parts = [p for component in self.components() for p in component.parts()]
        return self.costs + [c for part in parts for c in part.costs or []]

    def all_metrics(self) -> list[MetricItem]:
        """The request's metrics and its components': each is met by the offer as a whole."""
        parts = [p for component in self.components() for p in component.parts()]
        return self.metrics + [m for part in parts for m in part.metrics or []]


@dataclass
class ParsedRequest:
    """A request that is well-formed; ``unknown`` lists kinds this node has no model for. A
    well-formed request may still break a rule of the data model (a port out of range, a volume
    naming no resource): ``broker_core.offers.checks`` finds those, to answer NO."""

    request: ExecutionRequest | None
    unknown: list[UnknownKind]


# a node books its own site only: a combined request (see aggregator/combined) is an aggregator's
ONLY_AGGREGATORS = (
    "a request of parts (one booking across several sites, all or nothing) is booked by an "
    "aggregator only: send it to an aggregator federating those sites, or each part's request "
    "to its own node"
)


def parse_request(document: Any, registry: KindRegistry) -> ParsedRequest:
    if isinstance(document, dict) and "parts" in document:
        raise DocumentInvalid([FieldError("/parts", ONLY_AGGREGATORS)])
    try:
        envelope = Envelope.model_validate(document)
    except ValidationError as exc:
        raise DocumentInvalid(validation_errors(exc, model=Envelope)) from None

    errors: list[FieldError] = []
    unknown: list[UnknownKind] = []

    def parse(category: str, doc: dict[str, Any], *where: object) -> Component | None:
        try:
            return registry.parse(category, doc, where)
        except UnknownKind as exc:
            unknown.append(exc)
        except DocumentInvalid as exc:
            errors.extend(exc.errors)
        return None

    executable = parse("executable", envelope.executable, "executable")
    compute = parse("compute", envelope.compute, "compute") if envelope.compute else None
    storage = [parse("storage", d, "storage", i) for i, d in enumerate(envelope.storage)]
    data = [parse("data", d, "data", i) for i, d in enumerate(envelope.data)]
    if errors:
        raise DocumentInvalid(errors)
    if unknown:
        return ParsedRequest(None, unknown)
    assert executable is not None
    return ParsedRequest(
        ExecutionRequest(
            executable=executable,
            compute=compute,
            storage=storage,  # type: ignore[arg-type]
            data=data,  # type: ignore[arg-type]
            schedule=(envelope.schedule and envelope.schedule.requested) or RequestedSchedule(),
            meta=envelope.meta,
            costs=envelope.costs,
            metrics=envelope.metrics,
            notify=envelope.notify,
        ),
        [],
    )
