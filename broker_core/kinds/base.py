"""Shared pieces of the IVOA ExecutionBroker data model: metadata, messages, min/max ranges.

Every component on the wire is an object with a ``kind`` (a URI naming its type) and a ``meta``
block. Kind-specific models derive from :class:`Component` and are registered by URI in
:mod:`broker_core.kinds.registry`.
"""

from __future__ import annotations

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


class MinMax(Strict):
    """An integer range; either bound may be left to the node's defaults."""

    min: int | None = Field(default=None, ge=0, le=10**9)
    max: int | None = Field(default=None, ge=0, le=10**9)

    @model_validator(mode="after")
    def _ordered(self) -> MinMax:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class Component(Strict):
    """Base of every kind. ``CATEGORY``/``NAME`` give the kind URI it is registered under."""

    CATEGORY: ClassVar[str]
    NAME: ClassVar[str]

    kind: str
    meta: Meta | None = None

    @classmethod
    def kind_uri(cls) -> str:
        return kind_uri(cls.CATEGORY, cls.NAME)

    @property
    def name(self) -> str | None:
        return self.meta.name if self.meta else None
