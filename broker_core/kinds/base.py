"""Shared pieces of the IVOA ExecutionBroker data model: metadata, messages, min/max ranges.

Every component on the wire is an object with a ``kind`` (a URI naming its type) and a ``meta``
block. Kind-specific models derive from :class:`Component` and are registered by URI in
:mod:`broker_core.kinds.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

KIND_PREFIX = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/"

CATEGORIES = ("executable", "compute", "storage", "data", "volume")


def kind_uri(category: str, name: str) -> str:
    """The canonical kind URI for a component name in a category."""
    return f"{KIND_PREFIX}{category}/{name}.yaml"


class Strict(BaseModel):
    """Wire models reject unknown fields so that a typo is reported, not silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


Level = Literal["DEBUG", "INFO", "WARN", "ERROR"]


class Message(Strict):
    """A message with its template and values kept apart, so clients can localise or filter."""

    level: Level = "INFO"
    template: str
    values: dict[str, Any] = Field(default_factory=dict)
    message: str = ""
    time: str | None = None

    @model_validator(mode="after")
    def _render(self) -> Message:
        if not self.message:
            try:
                self.message = self.template.format(**self.values)
            except (KeyError, IndexError, ValueError):
                self.message = self.template
        if self.time is None:
            self.time = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return self


def message(template: str, level: Level = "INFO", **values: Any) -> Message:
    return Message(level=level, template=template, values=values)


class Meta(Strict):
    uuid: str | None = None
    name: str | None = Field(default=None, max_length=256)
    url: str | None = None
    description: str | None = Field(default=None, max_length=4096)
    created: str | None = None
    modified: str | None = None
    messages: list[Message] = Field(default_factory=list, max_length=256)
    options: list[dict[str, Any]] = Field(default_factory=list, max_length=64)


@dataclass(frozen=True)
class Problem:
    """A semantic problem with a well-formed request: the field it is in (an RFC 6901 pointer
    into the document) and a message template saying what is wrong and what would work. The
    answer is ``result: NO`` carrying it as an ERROR message, not a 400."""

    pointer: str
    template: str
    values: dict[str, str] = field(default_factory=dict)

    def message(self) -> Message:
        values = {"pointer": self.pointer, **self.values}
        return Message(level="ERROR", template="{pointer}: " + self.template, values=values)


RANGE_LIMIT = 10**9


class MinMax(Strict):
    """An integer range; either bound may be left to the node's defaults. Negative bounds and
    min > max are well-formed, and answered NO (see :meth:`problems`)."""

    min: int | None = None
    max: int | None = None

    def problems(self, at: str) -> list[Problem]:
        found = [
            Problem(
                f"{at}/{name}",
                "{value} is out of range; {name} must be 0..{limit}",
                {"value": str(value), "name": name, "limit": str(RANGE_LIMIT)},
            )
            for name, value in (("min", self.min), ("max", self.max))
            if value is not None and not 0 <= value <= RANGE_LIMIT
        ]
        if not found and self.min is not None and self.max is not None and self.min > self.max:
            found.append(
                Problem(
                    at,
                    "min ({min}) is greater than max ({max}); min must be at most max",
                    {"min": str(self.min), "max": str(self.max)},
                )
            )
        return found


@dataclass(frozen=True)
class Range:
    """A resolved integer range: what a :class:`MinMax` becomes once the node's defaults have
    filled its open bounds (``offers.demand``), and what is searched, capped by policies and
    granted. A plain frozen dataclass, not a model: the sweep builds these per candidate."""

    min: int
    max: int


class MinMaxItem(Strict):
    """The standard's simple min/max float cost and metric items (``type``: a URI for what is
    counted or measured)."""

    kind: str | None = None
    type: str | None = Field(default=None, max_length=2048)
    description: str | None = Field(default=None, max_length=4096)
    min: float | None = None
    max: float | None = None
    units: str | None = Field(default=None, max_length=64)


class CostItem(MinMaxItem):
    """A cost: with a ``max``, the most the client will pay (money, energy, carbon)."""


class MetricItem(MinMaxItem):
    """A performance metric: with a ``min`` (or ``max``), what the client needs."""


class Component(Strict):
    """Base of every kind. ``CATEGORY``/``NAME`` give the kind URI it is registered under."""

    CATEGORY: ClassVar[str]
    NAME: ClassVar[str]
    # an executable a person works in (a notebook, a VM) rather than work that ends by itself:
    # its session is over, not failed, when the booked window ends
    INTERACTIVE: ClassVar[bool] = False

    kind: str
    meta: Meta | None = None
    # the standard's AbstractComponent may carry them; limits on the offer as a whole
    costs: list[CostItem] | None = Field(default=None, max_length=64)
    metrics: list[MetricItem] | None = Field(default=None, max_length=64)

    @classmethod
    def kind_uri(cls) -> str:
        return kind_uri(cls.CATEGORY, cls.NAME)

    @property
    def name(self) -> str | None:
        return self.meta.name if self.meta else None

    def parts(self) -> list[Component]:
        """This component and those it holds (a compute resource's volume mounts)."""
        return [self]

    def problems(self, at: str) -> list[Problem]:
        """What makes this well-formed component unservable, pointed at from ``at`` (its own
        pointer in the request); kinds with rules of their own override this."""
        return []
