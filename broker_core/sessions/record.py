"""A session's own typed record: what was offered and granted, when each step happened, what
the platform made, and what the session has to say (the ``record`` column of
``execution_session``).

It is the one stored form of a session beside the row's columns (phase, owner, the booked
instants). The wire document is rendered from it on every read, in one place
(:func:`broker_core.sessions.views.render_session`); nothing is ever read back from rendered
text. The components are their kinds' documents as offered (uuids given, amounts resolved to
what was granted); kinds are plugins, so they become their models where a platform needs them
(:func:`broker_core.sessions.execution.execution_of`), and a session whose kind's plugin is gone
still renders.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..kinds.base import Level, Message, message
from ..notifications.request import Notify

MAX_MESSAGES = 200  # a session's messages keep the newest

ComponentCategory = Literal["storage", "data", "executable"]


def own_pool_name(name: str) -> str:
    """A pool's name on its platform: offers name pools "<platform>/<pool>"."""
    return name.partition("/")[2] or name


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Grant(_Record):
    """An amount of one resource class booked on one pool."""

    pool_id: int
    pool: str  # the pool's name on its platform, as in ``Platform.pools()``
    resource_class: str
    amount: int


class Components(_Record):
    """The session's components as offered: each its kind's document, with its own
    ``meta.uuid`` and the amounts granted (``cores``, ``memory``, storage ``size``)."""

    executable: dict[str, Any] | None = None
    compute: dict[str, Any] | None = None
    storage: list[dict[str, Any]] = Field(default_factory=list)
    data: list[dict[str, Any]] = Field(default_factory=list)


class Prepared(_Record):
    """When a component's preparation started, and how long it took."""

    start: int
    seconds: float


class ComponentStatus(_Record):
    """Where one component is in its preparation (the standard gives each its own phase)."""

    category: ComponentCategory
    uuid: str | None = None
    kind: str | None = None
    name: str | None = None
    phase: str = "WAITING"
    prepared: Prepared | None = None


class SeriesOccurrence(_Record):
    """One booked occurrence of a series: its own session and booked window."""

    index: int  # its place among the rule's occurrences, from 0
    session: str  # the occurrence's session uuid
    prepare_at: int
    start_at: int
    end_at: int
    pools: list[str] = Field(default_factory=list)  # "<platform>/<pool>"


class MissingOccurrence(_Record):
    """An occurrence of the rule that could not be booked (a partial series), and why."""

    index: int
    start_at: int
    end_at: int
    reason: str


class Series(_Record):
    """A recurring series (its session books nothing itself: each occurrence has its own
    session and booking)."""

    rule: str  # the RRULE as normalised (UNTIL in UTC)
    timezone: str
    partial: bool = False
    count: int  # how many occurrences the rule makes
    occurrences: list[SeriesOccurrence] = Field(default_factory=list)
    missing: list[MissingOccurrence] = Field(default_factory=list)


class OccurrenceOf(_Record):
    """Which series an occurrence's session belongs to."""

    series: str  # the series' session uuid
    index: int
    count: int


class SessionRecord(_Record):
    """What a session was offered and granted, and what happened to it (instants are epoch
    seconds)."""

    name: str | None = None  # the request's own name
    site: str = ""  # the site's name when it was offered
    components: Components = Field(default_factory=Components)
    allocations: list[Grant] = Field(default_factory=list)
    # what the platform provides, per class: cores, memory (GiB), storage (GiB, over the
    # session's storage resources); classes no pool tracks are granted what was asked
    granted: dict[str, int] = Field(default_factory=dict)
    pools: list[str] = Field(default_factory=list)  # the pools drawn on, by their own names
    # the node's quote: its price list times the granted amounts and the available window
    costs: list[dict[str, Any]] = Field(default_factory=list)
    metrics: list[dict[str, Any]] = Field(default_factory=list)
    # a probe's offer holds nothing: accepting it claims ``allocations`` afresh
    probe: bool = False
    # per data resource (in ``components.data`` order), the staging time booked for it in
    # seconds when the node measured one (mapped data: size over bandwidth), else None
    data_staging: list[int | None] = Field(default_factory=list)
    # when each phase was first entered, by its name in lower case ("available", "finished")
    entered: dict[str, int] = Field(default_factory=dict)
    # per component, made when preparation begins (storage, then data, then the executable)
    statuses: list[ComponentStatus] | None = None
    messages: list[Message] = Field(default_factory=list)
    # how to reach the running work, as its platform says (``Platform.connectors``); None
    # until the work was started
    connectors: list[dict[str, Any]] | None = None
    # what the platform keeps to find its work again (``Execution.state``)
    platform_state: dict[str, Any] = Field(default_factory=dict)
    # how the work ended (the phase the session ends in), its exit code, and release retries
    outcome: str | None = None
    exit_code: int | None = None
    release_attempts: int = 0
    # where its events are notified (the request's ``notify``; its secret is never shown)
    notify: Notify | None = None
    # a recurring series (its occurrences), or one occurrence of one; None for other sessions
    series: Series | None = None
    occurrence: OccurrenceOf | None = None

    @classmethod
    def of(cls, stored: dict[str, Any] | None) -> SessionRecord:
        """The record as stored (a session stored without one has an empty one)."""
        return cls.model_validate(stored or {})

    def stored(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=True)

    def enter(self, phase: str, now: int) -> None:
        """Note when ``phase`` was entered, the first time only."""
        self.entered.setdefault(phase.lower(), now)

    def note(self, template: str, level: Level = "INFO", **values: Any) -> None:
        """Add a message for the session's user (the newest ``MAX_MESSAGES`` are kept)."""
        self.messages.append(message(template, level, **values))
        del self.messages[:-MAX_MESSAGES]

    @property
    def available_since(self) -> int | None:
        """When the session became available to its user (None if it never did): what is
        charged starts there, as the offer's duration did (preparation is the node's cost)."""
        return self.entered.get("available", self.entered.get("running"))

    def component_statuses(self) -> list[ComponentStatus]:
        """Each component's status, made once, when preparation begins."""
        if self.statuses is None:
            parts = self.components
            self.statuses = [
                *(_status("storage", doc) for doc in parts.storage),
                *(_status("data", doc) for doc in parts.data),
                _status("executable", parts.executable or {}),
            ]
        return self.statuses


def _status(category: ComponentCategory, doc: dict[str, Any]) -> ComponentStatus:
    meta = doc.get("meta") if isinstance(doc.get("meta"), dict) else {}
    return ComponentStatus(
        category=category, uuid=meta.get("uuid"), kind=doc.get("kind"), name=meta.get("name")
    )
