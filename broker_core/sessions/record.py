"""A session's own typed record: what was granted and when it happened, stored beside the
session's document (the ``record`` column of ``execution_session``).

The document is what the client is shown; it is rendered, partly from this record, when the
offer is made. Nothing is read back from the rendered text: what the platform is to provide,
on which pools, and when the session became available (where its charge starts) come from
here, as numbers and instants.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def own_pool_name(name: str) -> str:
    """A pool's name on its platform: offers name pools "<platform>/<pool>"."""
    return name.partition("/")[2] or name


class Grant(BaseModel):
    """An amount of one resource class booked on one pool."""

    model_config = ConfigDict(extra="forbid")

    pool_id: int
    pool: str  # the pool's name on its platform, as in ``Platform.pools()``
    resource_class: str
    amount: int


class SessionRecord(BaseModel):
    """What a session was granted and the instants of its lifecycle (epoch seconds)."""

    model_config = ConfigDict(extra="forbid")

    allocations: list[Grant] = Field(default_factory=list)
    # what the platform provides, per class: cores, memory (GiB), storage (GiB, over the
    # session's storage resources); classes no pool tracks are granted what was asked
    granted: dict[str, int] = Field(default_factory=dict)
    pools: list[str] = Field(default_factory=list)  # the pools drawn on, by their own names
    # when each phase was first entered, by its name in lower case ("available", "finished")
    entered: dict[str, int] = Field(default_factory=dict)
    # a probe's offer holds nothing: accepting it claims ``allocations`` afresh
    probe: bool = False

    @classmethod
    def of(cls, stored: dict[str, Any] | None) -> SessionRecord:
        """The record as stored (a session stored without one, e.g. a direct execution that
        never started, has an empty one)."""
        return cls.model_validate(stored or {})

    def stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def enter(self, phase: str, now: int) -> None:
        """Note when ``phase`` was entered, the first time only."""
        self.entered.setdefault(phase.lower(), now)

    @property
    def available_since(self) -> int | None:
        """When the session became available to its user (None if it never did): what is
        charged starts there, as the offer's duration did (preparation is the node's cost)."""
        return self.entered.get("available", self.entered.get("running"))
