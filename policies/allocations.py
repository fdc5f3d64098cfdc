"""Allocations and usage, the Karaage way: projects get resource-hours per period.

Projects form a hierarchy (an institute over its projects); what a project uses counts against
its own allocations and those of every project above it. A request is charged to one project
(the one it names, else the caller's first); it is offered at most what the remaining hours
allow for its duration, and nothing (a NO with what remains) when even its minimum does not
fit. Remaining = allocated - used (recorded when sessions end, ``UsageRecord``) - committed
(accepted sessions not yet ended, for their available period). Concurrency caps limit what a
project's sessions hold at any one instant: its accepted sessions and its open offers, since a
hold is a claim on capacity (an offer set counts with the largest of its alternatives).

Offers do not count against the hours, so two requests may each be offered the last hours; the
accept is where it is decided (``admit``): under the pool locks that serialise accepts, an
accept that would overdraw an allocation or exceed a cap with the accepted sessions is refused
and rolled back.

A recurring series is judged whole: offered only when the remaining hours cover every
occurrence (``PolicyRequest.occurrences``), and accepted only when they still do, all of its
occurrences booked (``Accepted.windows``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from broker_core.config import NAME_PATTERN, ResourceClass, require_unique
from broker_core.kinds.base import Message, message
from broker_core.schedule import instant

from .contract import (
    Accepted,
    Claim,
    CommittedUse,
    Decision,
    Identity,
    Limit,
    PolicyBase,
    PolicyHost,
    PolicyRequest,
    Usage,
    UsageQuery,
)

HOUR_UNITS = {"cores": "core-hours", "memory": "GiB-hours of memory",
              "storage": "GiB-hours of storage", "gpus": "GPU-hours",
              "fpgas": "FPGA-hours"}  # fmt: skip


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AllocationConfig(_Model):
    resource: ResourceClass = "cores"
    hours: float = Field(gt=0, description="resource-hours for the period")
    start: date | datetime
    end: date | datetime

    @model_validator(mode="after")
    def _ordered(self) -> AllocationConfig:
        if self.start_at >= self.end_at:
            raise ValueError("an allocation's end must be after its start")
        return self

    @property
    def start_at(self) -> int:
        return _epoch(self.start)

    @property
    def end_at(self) -> int:
        return _epoch(self.end)

    def covers(self, instant: int) -> bool:
        return self.start_at <= instant < self.end_at


class Members(_Model):
    groups: list[str] = Field(default_factory=list)
    subjects: list[str] = Field(default_factory=list, description="owners, '<issuer>:<sub>'")

    def include(self, identity: Identity) -> bool:
        return identity.in_any(self.groups) or identity.owner in self.subjects


class ProjectConfig(_Model):
    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    parent: str | None = None
    members: Members = Members()
    allocations: list[AllocationConfig] = Field(default_factory=list)
    concurrency: dict[ResourceClass, int] = Field(
        default_factory=dict, description="most the project's sessions hold at once"
    )


class AllocationsOptions(_Model):
    require_project: bool = Field(
        default=False, description="refuse callers who are in no project (else: not charged)"
    )
    projects: list[ProjectConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _a_tree(self) -> AllocationsOptions:
        require_unique([p.name for p in self.projects], "project")
        parents = {p.name: p.parent for p in self.projects}
        for project in self.projects:
            if project.parent is not None and project.parent not in parents:
                raise ValueError(f"project {project.name!r}: no parent project {project.parent!r}")
            seen, node = {project.name}, project.parent
            while node is not None:
                if node in seen:
                    raise ValueError(f"project {project.name!r}: its parents form a cycle")
                seen.add(node)
                node = parents[node]
        return self


class Allocations(PolicyBase):
    """The ``allocations`` policy plugin; also answers the accounting endpoints."""

    options_model = AllocationsOptions  # names the known keys in config errors

    def __init__(self, name: str, options: dict[str, Any], host: PolicyHost | None):
        super().__init__(name, options, host)
        self.options = AllocationsOptions.model_validate(options)
        self.projects = {p.name: p for p in self.options.projects}
        self.children: dict[str, list[str]] = {p.name: [] for p in self.options.projects}
        for p in self.options.projects:
            if p.parent is not None:
                self.children[p.parent].append(p.name)

    # --- the hierarchy -------------------------------------------------------------------------

    def chain(self, project: str) -> list[ProjectConfig]:
        """The project and every project above it."""
        out, node = [], self.projects.get(project)
        while node is not None:
            out.append(node)
            node = self.projects.get(node.parent) if node.parent else None
        return out

    def subtree(self, project: str) -> list[str]:
        """The project and every project below it: whose use rolls up into it."""
        out, todo = [], [project]
        while todo:
            name = todo.pop()
            out.append(name)
            todo.extend(self.children.get(name, []))
        return sorted(out)

    def member_of(self, identity: Identity) -> list[str]:
        return [p.name for p in self.options.projects if p.members.include(identity)]

    def has_project(self, project: str) -> bool:
        return project in self.projects

    def may_see(self, identity: Identity, project: str) -> bool:
        """Members of a project or of any project above it (an institute's managers)."""
        return any(p.members.include(identity) for p in self.chain(project))

    # --- the policy ----------------------------------------------------------------------------

    def evaluate(self, request: PolicyRequest) -> Decision:
        mine = self.member_of(request.identity)
        project = request.project
        if project is not None:
            if project not in self.projects:
                return Decision.deny("{policy}: there is no project {project}",
                                     policy=self.name, project=project)  # fmt: skip
            if project not in mine:
                return Decision.deny("{policy}: {owner} is not a member of project {project}",
                                     policy=self.name, owner=request.identity.owner,
                                     project=project)  # fmt: skip
        elif mine:
            project = mine[0]
        elif self.options.require_project:
            return Decision.deny(
                "{policy}: {owner} is in no project, and sessions must be charged to one",
                policy=self.name, owner=request.identity.owner,
            )  # fmt: skip
        else:
            return Decision()
        # charged to the period of the earliest start asked for
        start = min((w[0] for w in request.windows or ()), default=request.now)
        with self._host().usage() as usage:
            return self._judge(usage, request, project, max(start, request.now))

    def _judge(
        self, usage: UsageQuery, request: PolicyRequest, project: str, start: int
    ) -> Decision:
        decision = Decision(project=project)
        chain = self.chain(project)
        committed = Committed(usage.committed(self.subtree(chain[-1].name)))
        for node in chain:
            subtree = self.subtree(node.name)
            classes = {a.resource for a in node.allocations}
            for resource in sorted(classes):
                wanted = request.amounts.get(resource)
                if wanted is None:
                    continue
                current = next(
                    (a for a in node.allocations if a.resource == resource and a.covers(start)),
                    None,
                )
                if current is None:
                    return Decision.deny(
                        "{policy}: project {project} has no {unit} allocated for {when}",
                        policy=self.name, project=node.name, unit=HOUR_UNITS[resource],
                        when=instant(start),
                    )  # fmt: skip
                remaining = remaining_seconds(usage, subtree, current, committed)
                seconds = request.duration * request.occurrences  # a series counts whole
                cap = int(remaining // seconds) if remaining > 0 else 0
                if cap < wanted.min and request.occurrences > 1:
                    return Decision.deny(
                        "{policy}: project {project} has {remaining} {unit} left of the {hours} "
                        "allocated for {start} to {end}; this series of {count} occurrences "
                        "needs at least {needed} in total ({each} each)",
                        policy=self.name, project=node.name, remaining=_hours(remaining),
                        unit=HOUR_UNITS[resource], hours=_hours(current.hours * 3600),
                        start=instant(current.start_at), end=instant(current.end_at),
                        count=request.occurrences, needed=_hours(wanted.min * seconds),
                        each=_hours(wanted.min * request.duration),
                    )  # fmt: skip
                if cap < wanted.min:
                    return Decision.deny(
                        "{policy}: project {project} has {remaining} {unit} left of the {hours} "
                        "allocated for {start} to {end}; this request needs at least {needed}",
                        policy=self.name, project=node.name, remaining=_hours(remaining),
                        unit=HOUR_UNITS[resource], hours=_hours(current.hours * 3600),
                        start=instant(current.start_at), end=instant(current.end_at),
                        needed=_hours(wanted.min * request.duration),
                    )  # fmt: skip
                decision.limits.append(
                    Limit(resource, cap, rule=f"the allocation of project {node.name}")
                )
            for resource, cap in sorted(node.concurrency.items()):
                wanted = request.amounts.get(resource)
                if wanted is None:
                    continue
                if cap < wanted.min:
                    return Decision.deny(
                        "{policy}: project {project} may hold at most {cap} {unit} at once; "
                        "{needed} needed",
                        policy=self.name, project=node.name, cap=cap, unit=resource,
                        needed=wanted.min,
                    )  # fmt: skip
                claims = committed.claims(subtree, resource)
                claims += usage.held(subtree, resource, request.now, request.replaces)
                held = Usage(claims)
                decision.limits.append(
                    Limit(
                        resource,
                        cap,
                        rule=f"the concurrency cap of project {node.name}",
                        usage=held,
                    )
                )
        return decision

    def admit(self, accepted: Accepted, usage: UsageQuery, now: int) -> list[Message]:
        """Accepting (its booking now CONFIRMED) must leave no allocation overdrawn and no
        concurrency cap exceeded: two offers each within the remaining hours cannot both be
        accepted when together they are not."""
        if accepted.project not in self.projects:
            return []
        amounts = accepted.amounts
        problems = []
        chain = self.chain(accepted.project)
        committed = Committed(usage.committed(self.subtree(chain[-1].name)))
        windows = accepted.windows
        for node in chain:
            subtree = self.subtree(node.name)
            for a in node.allocations:
                if a.resource in amounts and any(
                    a.start_at < end and prepare < a.end_at for prepare, _, end in windows
                ):
                    left = remaining_seconds(usage, subtree, a, committed)
                    if left < 0 and accepted.occurrences:
                        total = amounts[a.resource] * sum(
                            max(min(end, a.end_at) - max(start, a.start_at), 0)
                            for _, start, end in windows
                        )
                        problems.append(message(
                            "{policy}: project {project} has too few {unit} left for this "
                            "series in the allocation for {start} to {end}: its {count} "
                            "occurrences need {total} in total; {left} left",
                            level="WARN", policy=self.name, project=node.name,
                            unit=HOUR_UNITS[a.resource], start=instant(a.start_at),
                            end=instant(a.end_at), count=len(windows), total=_hours(total),
                            left=_hours(max(left + total, 0)),
                        ))  # fmt: skip
                    elif left < 0:
                        problems.append(message(
                            "{policy}: project {project} has too few {unit} left in the "
                            "allocation for {start} to {end} ({over} over)",
                            level="WARN", policy=self.name, project=node.name,
                            unit=HOUR_UNITS[a.resource], start=instant(a.start_at),
                            end=instant(a.end_at), over=_hours(-left),
                        ))  # fmt: skip
            for resource, cap in sorted(node.concurrency.items()):
                held = Usage(committed.claims(subtree, resource))
                peak = max(held.peak(prepare, end) for prepare, _, end in windows)
                if resource in amounts and peak > cap:
                    problems.append(message(
                        "{policy}: project {project} would hold {peak} {unit} at once; "
                        "its cap is {cap}",
                        level="WARN", policy=self.name, project=node.name, peak=peak,
                        unit=resource, cap=cap,
                    ))  # fmt: skip
        return problems

    def _host(self) -> PolicyHost:
        if self.host is None:
            raise RuntimeError("the allocations policy needs the node's booking table")
        return self.host

    # --- the accounting view -------------------------------------------------------------------

    def report(self, usage: UsageQuery, project: str, now: int) -> dict[str, Any]:
        """A project's allocations with what was used and committed, rolled up from below."""
        node = self.projects[project]
        subtree = self.subtree(project)
        held = Committed(usage.committed(subtree))
        allocations = []
        for a in node.allocations:
            used = usage.used_seconds(subtree, a.resource, a.start_at, a.end_at)
            booked = held.seconds(subtree, a.resource, a.start_at, a.end_at)
            allocations.append({
                "resource_class": a.resource,
                "start": instant(a.start_at),
                "end": instant(a.end_at),
                "hours": a.hours,
                "used_hours": round(used / 3600, 3),
                "committed_hours": round(booked / 3600, 3),
                "remaining_hours": round(a.hours - (used + booked) / 3600, 3),
                "current": a.covers(now),
            })  # fmt: skip
        in_use = {
            c: Usage(held.claims(subtree, c)).peak(now, now + 1)
            for c in sorted(set(node.concurrency) | {a.resource for a in node.allocations})
        }
        return {
            "name": node.name,
            "description": node.description,
            "parent": node.parent,
            "children": sorted(self.children[node.name]),
            "allocations": allocations,
            "concurrency": dict(node.concurrency),
            "in_use": in_use,
        }


# --- what the booking table says ---------------------------------------------------------------


@dataclass
class Committed:
    """The accepted, not yet ended sessions of some projects (``UsageQuery.committed``), read
    once per decision."""

    rows: list[CommittedUse]

    def seconds(self, projects: list[str], resource: str, lo: int, hi: int) -> int:
        """Resource-seconds of their available periods within [lo, hi): what is charged."""
        return sum(
            r.amount * max(min(r.end, hi) - max(r.start, lo), 0)
            for r in self.rows
            if r.resource_class == resource and r.project in projects
        )

    def claims(self, projects: list[str], resource: str) -> list[Claim]:
        """Their whole bookings: what a concurrency cap counts."""
        return [
            Claim(r.booked_start, r.booked_end, r.amount)
            for r in self.rows
            if r.resource_class == resource and r.project in projects
        ]


def remaining_seconds(
    usage: UsageQuery, projects: list[str], allocation: AllocationConfig, committed: Committed
) -> float:
    lo, hi = allocation.start_at, allocation.end_at
    used = usage.used_seconds(projects, allocation.resource, lo, hi)
    return allocation.hours * 3600 - used - committed.seconds(projects, allocation.resource, lo, hi)


def _epoch(value: date | datetime) -> int:
    if isinstance(value, datetime):
        return int((value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp())
    return int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp())


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.6g}"
