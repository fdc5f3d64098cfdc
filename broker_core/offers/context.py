"""What one request's search, claim and store share, so that it travels as one value."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..broker import Broker
from ..kinds.base import Message
from ..kinds.request import ExecutionRequest
from ..pricing import Budget
from .demand import Demand
from .fairness import Claimant
from .policy import Verdict


@dataclass(frozen=True)
class Plan:
    """One platform's search for a request."""

    platform: Any
    preparation: int


@dataclass(frozen=True)
class SearchContext:
    """One request as its search and store see it, at one instant ``now``.

    A step that searches again, later (after taking the pool locks) or narrower (the next day
    first, the least a cost limit allows), does so on a copy (``dataclasses.replace``) with
    another ``now`` or ``demand``. ``verdict`` and ``fair`` are shared, not copied: the claim
    updates what the replaced holds count for (``verdict.discount``) for every later step.
    """

    broker: Broker
    request: ExecutionRequest
    document: Any  # the request as it came, for the offer set's ``request.meta``
    demand: Demand  # the demand to search: the policies' narrowing of the request's
    plans: list[Plan]
    verdict: Verdict
    budget: Budget  # the request's cost limits and metric needs
    now: int
    owner: str | None = None
    notes: list[Message] = field(default_factory=list)  # said with every answer
    direct: bool = False  # the single earliest slot starting now, booked and accepted at once
    probe: bool = False  # offers that hold nothing
    fair: Claimant | None = None  # the caller's hold limits; None when nothing is held
    # per data resource, its measured staging time in seconds (mapped data), else None
    data_staging: tuple[int | None, ...] = ()

    @property
    def preparation(self) -> int:
        """The shortest preparation of the platforms searched."""
        return min(p.preparation for p in self.plans)

    @property
    def max_offers(self) -> int:
        """How many offers the answer may have."""
        return 1 if self.direct else self.broker.config.offers.max_offers
