"""The rules of the data model that a well-formed request may still break.

A document that parses and has the standard's types is well-formed, even when a value breaks a
rule: a port of 70000, protocol FTP, a data resource without a location, min > max, a duration of
zero, a volume naming no resource. The standard answers such a request ``result: NO`` whose
messages point at the field and say what would work; so does this node. Only documents that do
not parse, or do not have the standard's types, are refused with a 400.

Each kind states its own rules (:meth:`Component.problems`); the rules between components (names
that must resolve), of the schedule, and the node's staging rules for data locations (which
local directories and network addresses staging may read, :mod:`broker_core.staging.rules`)
are here. Every problem is reported at once.
"""

from __future__ import annotations

from datetime import timedelta

from ..kinds.base import Component, Message, Problem
from ..kinds.request import ExecutionRequest, RequestedSchedule
from ..schedule import ScheduleError, parse_duration, parse_interval
from ..staging.rules import StagingRules, location_refusals

DURATION = "/schedule/requested/duration"
START = "/schedule/requested/start"
LIMIT = 50  # messages in one answer; the rest are summed up in one more


def problems(request: ExecutionRequest, staging: StagingRules | None = None) -> list[Problem]:
    """Every rule the request breaks, pointing at the field, in document order. Data locations
    are judged by the node's ``staging`` rules (by default the strictest)."""
    found: list[Problem] = []
    found += request.executable.problems("/executable")
    if request.compute is not None:
        found += request.compute.problems("/compute")
    for i, storage in enumerate(request.storage):
        found += storage.problems(f"/storage/{i}")
    for i, data in enumerate(request.data):
        found += data.problems(f"/data/{i}")
    fetched = [("/executable", request.executable)]
    fetched += [(f"/data/{i}", d) for i, d in enumerate(request.data)]
    found += location_problems(fetched, staging or StagingRules())
    found += references(request.compute, request.storage, request.data)
    return found + schedule_problems(request.schedule)


def messages(found: list[Problem]) -> list[Message]:
    """The problems as ERROR messages of a NO answer (at most ``LIMIT`` and a count)."""
    shown = [p.message() for p in found[:LIMIT]]
    if len(found) > LIMIT:
        rest = Problem("", "and {count} more problems", {"count": str(len(found) - LIMIT)})
        shown.append(Message(level="ERROR", template=rest.template, values=rest.values))
    return shown


def location_problems(
    components: list[tuple[str, Component]], rules: StagingRules
) -> list[Problem]:
    """Locations that staging would refuse, of components (at their pointers) whose
    ``location`` the node fetches (data resources, a notebook): each names the rule and what
    would work."""
    located = [
        (at, c.location.strip())
        for at, c in components
        if isinstance(getattr(c, "location", None), str) and c.location.strip()
    ]
    refusals = location_refusals([location for _, location in located], rules)
    return [
        refusal.problem(f"{at}/location")
        for (at, _), refusal in zip(located, refusals, strict=True)
        if refusal is not None
    ]


def references(
    compute: Component | None, storage: list[Component], data: list[Component]
) -> list[Problem]:
    """Names that components use to point at each other must resolve."""
    found = []
    storage_names = {s.name for s in storage if s.name}
    data_names = {d.name for d in data if d.name}
    for i, d in enumerate(data):
        target = getattr(d, "storage", None)
        if target and target not in storage_names:
            found.append(
                Problem(
                    f"/data/{i}/storage",
                    "no storage resource is named '{name}'; name one of {known}, or leave "
                    "storage out to have one made",
                    {"name": target, "known": _names(storage_names)},
                )
            )
    for i, volume in enumerate(getattr(compute, "volumes", None) or []):
        resource = volume.resource
        if resource and resource.strip() and resource not in data_names | storage_names:
            found.append(
                Problem(
                    f"/compute/volumes/{i}/resource",
                    "no data or storage resource is named '{name}'; name one of {known}",
                    {"name": resource, "known": _names(data_names | storage_names)},
                )
            )
    return found


def _names(names: set[str]) -> str:
    if not names:
        return "the request's data or storage resources (by meta.name), which has none"
    return ", ".join(f"'{n}'" for n in sorted(names))


def schedule_problems(schedule: RequestedSchedule) -> list[Problem]:
    """The requested duration must be a positive ISO-8601 duration, each start an interval."""
    found = []
    if schedule.duration is not None:
        try:
            duration = parse_duration(schedule.duration)
        except ScheduleError as exc:
            found.append(_schedule(DURATION, str(exc), "an ISO-8601 duration such as PT1H"))
        else:
            if duration <= timedelta(0):
                found.append(
                    Problem(
                        DURATION,
                        "duration {value} is not positive; give a duration longer than zero, "
                        "such as PT1H",
                        {"value": schedule.duration},
                    )
                )
    start = schedule.start
    wanted = "an ISO-8601 interval such as 2026-12-02T09:00:00Z/PT2H"
    if isinstance(start, list):
        if not start:
            found.append(
                Problem(START, "the list of start intervals is empty; give at least one, "
                        "such as 2026-12-02T09:00:00Z/PT2H, or leave start out to start as soon "
                        "as possible")
            )  # fmt: skip
        for i, item in enumerate(start):
            found += _interval(f"{START}/{i}", item, wanted)
    elif start is not None:
        found += _interval(START, start, wanted)
    return found


def _interval(at: str, text: str, wanted: str) -> list[Problem]:
    try:
        parse_interval(text)
    except ScheduleError as exc:
        return [_schedule(at, str(exc), wanted)]
    return []


def _schedule(at: str, error: str, wanted: str) -> Problem:
    return Problem(at, "{error}; give {wanted}", {"error": error, "wanted": wanted})
