"""The platform plugin contract.

Booking side: a platform tells the node which pools of capacity it offers, which kinds it can
run, whether a particular request is acceptable (with messages saying why not) and how long
preparation takes before the booked start (image pulls, data staging).

Execution side: the lifecycle engine (``broker_core.lifecycle``) drives every accepted session
through the methods below, in this order: ``reserve`` (at acceptance), ``prepare_storage`` for
each storage resource, ``stage_data`` for each data resource, ``prepare_executable``, then at the
booked start ``start``, ``poll`` until the work ends, and ``stop`` / ``release`` at the end, on
cancellation or at the end of the booked window. Every method is blocking (the engine runs it in
a thread), must be idempotent (after a crash the engine repeats the step it was in) and keeps
what it needs to find its work again in ``Execution.state``, which the engine persists after
every call. A problem is a ``PlatformError`` with a message for the session, never a crash.
Everything a platform creates is named ``Execution.name`` (``ebroker-<session uuid>``) or
labelled with it, so reconciliation can list it with ``list_work`` and remove strays.
"""

from __future__ import annotations

import enum
import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from broker_core.config import Duration, InventoryConfig, PlatformConfig, PoolConfig
from broker_core.kinds.base import Component, Message, kind_uri, message
from broker_core.kinds.builtin import Network, Port, SimpleVolumeMount
from broker_core.kinds.registry import KindRegistry
from broker_core.kinds.request import ExecutionRequest
from broker_core.staging.placement import Placement, source_of
from broker_core.staging.rules import StagingRefused, StagingRules

from .errors import PlatformError
from .staging import stage, stage_files

WORK_PREFIX = "ebroker-"
# data resources named by an identifier, which the default ``stage_data`` stages from where the
# node's mappings (``staging.mappings``) put them
IDENTIFIED_DATA = frozenset(
    kind_uri("data", name)
    for name in ("ivoa-data-resource", "rucio-data-resource", "skao-data-resource")
)


def work_name(session_uuid: str) -> str:
    """The name (or label) of everything a platform creates for one session."""
    return f"{WORK_PREFIX}{session_uuid}"


class WorkState(enum.StrEnum):
    PENDING = "PENDING"  # submitted, not running yet (e.g. a queued batch job)
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    MISSING = "MISSING"  # the platform has no trace of the work


@dataclass
class WorkStatus:
    state: WorkState
    exit_code: int | None = None
    message: str | None = None


@dataclass
class Execution:
    """One accepted session as its platform sees it.

    Components are the kinds' models as offered (amounts resolved to what was granted), each
    with ``meta.uuid``; what the platform is to provide is ``granted``. Documents given instead
    are validated into the built-in kinds' models. ``workdir`` is a directory on the node for
    this session alone: storage resources live in ``workdir / "storage" / <uuid>``, staged data
    in ``workdir / "data" / <uuid>``, logs in ``workdir / "logs"``.
    """

    session: str
    executable: Component | None
    compute: Component | None
    storage: list[Component]
    data: list[Component]
    granted: dict[str, int]  # cores, memory (GiB), storage (GiB)
    prepare_at: int
    start_at: int
    end_at: int
    workdir: Path
    state: dict[str, Any] = field(default_factory=dict)
    pools: list[str] = field(default_factory=list)  # the pools the booking draws on, by name
    # notes for the session's messages ("pulled image ...", "simulated: nothing runs"); the
    # engine moves them into the session after every call
    notes: list[str] = field(default_factory=list)
    # what data staging may read (the node's ``staging`` section); the default refuses local
    # files and non-public addresses
    staging: StagingRules = field(default_factory=StagingRules)

    def __post_init__(self) -> None:
        self.executable = _typed("executable", self.executable)
        self.compute = _typed("compute", self.compute)
        self.storage = [c for c in (_typed("storage", d) for d in self.storage) if c]
        self.data = [c for c in (_typed("data", d) for d in self.data) if c]

    @property
    def name(self) -> str:
        return work_name(self.session)

    @property
    def volumes(self) -> list[SimpleVolumeMount]:
        """The volume mounts of the compute resource."""
        return list(getattr(self.compute, "volumes", None) or [])

    def storage_path(self, storage: Component) -> Path:
        return self.workdir / "storage" / uuid_of(storage)

    def data_path(self, data: Component) -> Path:
        return self.workdir / "data" / uuid_of(data)

    def mount_source(self, resource_uuid: str) -> Path | None:
        """Where a volume mount's ``resource`` (a storage or data uuid or name) is on the node."""
        for storage in self.storage:
            if resource_uuid in (uuid_of(storage), storage.name):
                return self.storage_path(storage)
        for data in self.data:
            if resource_uuid in (uuid_of(data), data.name):
                return self.data_path(data)
        return None


def uuid_of(component: Component) -> str:
    """A component's uuid (every component of a session has one)."""
    uuid = component.meta.uuid if component.meta else None
    if not uuid:
        raise PlatformError(f"a {component.kind} component of the session has no meta.uuid")
    return uuid


@functools.cache
def _builtin_kinds() -> KindRegistry:
    from broker_core.kinds.builtin import KINDS

    return KindRegistry(KINDS)


def _typed(category: str, component: Component | dict[str, Any] | None) -> Component | None:
    """A component as its kind's model; a document (``{}`` is none) is validated into one of
    the built-in kinds."""
    if component is None or isinstance(component, Component):
        return component
    if not component:
        return None
    return _builtin_kinds().parse(category, component, (category,))


@dataclass(frozen=True)
class ExternalClaim:
    """Capacity of a pool taken outside the broker over [start, end): a platform reservation
    the broker did not make, or a maintenance window (then the whole pool)."""

    pool: str  # the pool's name, as in ``pools()``
    resource_class: str
    amount: int
    start: int
    end: int
    reason: str


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PreparationOptions(BaseModel):
    """What a platform books in front of a session's start (image pull, data staging); the
    options models of the built-in platforms derive from it."""

    model_config = ConfigDict(extra="forbid")

    base_preparation: Duration = Field(default=timedelta(seconds=10))
    image_pull: Duration = Field(
        default=timedelta(seconds=60), description="added for container executables"
    )
    data_staging: Duration = Field(default=timedelta(seconds=60), description="per data resource")

    def estimate(self, request: ExecutionRequest) -> timedelta:
        estimate = self.base_preparation
        if hasattr(request.executable, "image"):
            estimate += self.image_pull
        return estimate + self.data_staging * len(request.data)


F = TypeVar("F", bound=Callable[..., Any])


def platform_step(method: F) -> F:
    """Whatever goes wrong in a platform step leaves it as a PlatformError naming the step."""

    @functools.wraps(method)
    def wrapper(self: Platform, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except PlatformError:
            raise
        except Exception as exc:
            raise PlatformError(
                f"{self.config.type} platform: {method.__name__} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    return wrapper  # type: ignore[return-value]


class Platform(ABC):
    """Base class of platform plugins, registered under the ``ebroker.platforms`` entry points."""

    options_model: ClassVar[type[BaseModel]] = NoOptions

    def __init__(self, config: PlatformConfig):
        self.name = config.name
        self.config = config
        self.options = self.options_model.model_validate(config.options)

    @abstractmethod
    def pools(self) -> list[PoolConfig]:
        """The pools of capacity this platform offers for booking."""

    @abstractmethod
    def accepted_kinds(self) -> frozenset[str]:
        """Kind URIs of the components this platform can provide."""

    def validate(self, request: ExecutionRequest) -> list[Message]:
        """Reasons this platform cannot serve the request; empty when it can."""
        accepted = self.accepted_kinds()
        refused = sorted({c.kind for c in request.components()} - accepted)
        return [
            message(
                "platform {platform} does not accept {kind}",
                level="WARN",
                platform=self.name,
                kind=kind,
            )
            for kind in refused
        ]

    def data_refusals(self, placements: Sequence[Placement | None]) -> list[Message]:
        """Reasons this platform cannot stage identified data from where the node's mappings
        put it (``placements``, one per data resource, None for the others); none by
        default: ``stage_data`` stages on the node, which reads what the mappings name."""
        return []

    def refuse_privileged(self, request: ExecutionRequest) -> list[Message]:
        """The refusal of a privileged container, for platforms that do not run them."""
        if not getattr(request.executable, "privileged", False):
            return []
        return [
            message(
                "platform {platform} does not run privileged containers",
                level="WARN",
                platform=self.name,
            )
        ]

    def refuse_accelerators(self, request: ExecutionRequest) -> list[Message]:
        """The refusal of GPUs or FPGAs, for platforms that cannot hand devices to the work
        (a pool's gpus inventory alone would book devices the session never gets)."""
        items = getattr(request.compute, "accelerators", None) or []
        wanted = sorted({str(a.type) for a in items if not a.count or a.count.max != 0})
        if not wanted:
            return []
        return [
            message(
                "platform {platform} cannot give its sessions accelerators ({types}); "
                "ask a node whose platform can (simulated, slurm or kubernetes)",
                level="WARN",
                platform=self.name,
                types=", ".join(wanted),
            )
        ]

    def preparation_estimate(self, request: ExecutionRequest) -> timedelta:
        """How long before the available start preparation must begin (by default from
        ``PreparationOptions``; none for platforms without them)."""
        if isinstance(self.options, PreparationOptions):
            return self.options.estimate(request)
        return timedelta(0)

    def data_staging_estimate(self) -> timedelta:
        """What ``preparation_estimate`` books per data resource (``data_staging``). For a
        resource whose staging time the node measured (mapped data: its size over the
        mapping's bandwidth) the node books that instead."""
        if isinstance(self.options, PreparationOptions):
            return self.options.data_staging
        return timedelta(0)

    def stages_data(self) -> bool:
        """Whether ``stage_data`` brings data resources to the session: then one the node
        cannot place (an identifier it maps nothing of, with no location of its own) refuses
        the request here."""
        return True

    def external_claims(self, start: int, end: int) -> list[ExternalClaim]:
        """Capacity taken outside the broker between ``start`` and ``end`` (epoch seconds);
        offers avoid it. Called for every request: platforms cache what they read."""
        return []

    # --- execution side -------------------------------------------------------------------

    def reserve(self, execution: Execution) -> None:
        """At acceptance: reserve the slot on the platform where it has reservations."""
        return None

    def prepare_storage(self, execution: Execution, storage: Component) -> None:
        """Create one storage resource (by default a directory of the session's workdir)."""
        execution.storage_path(storage).mkdir(parents=True, exist_ok=True)

    def stage_data(self, execution: Execution, data: Component) -> None:
        """Bring one data resource to the session (by default file:// and http(s)://
        locations are copied into ``execution.data_path(data)``, within
        ``execution.staging``, as ``staging_user``; an identified resource, ivoa, rucio or
        skao, from where the node's mappings put it)."""
        dest = execution.data_path(data)
        user = self.staging_user(execution)
        try:
            source = source_of(data, execution.staging)
        except StagingRefused as refused:
            raise PlatformError(f"cannot stage {data.kind}: {refused.text}") from None
        document = {**data.model_dump(mode="json", exclude_none=True), "location": source.location}
        if source.dataset is not None:
            parts = [({**document, "location": file.location}, file.rules)
                     for file, _ in source.dataset.files]  # fmt: skip
            execution.notes += stage_files(parts, dest, execution.staging.max_bytes, user=user)
            execution.notes.append(f"staged the {source.dataset.kind} {source.dataset.identifier} "
                                   f"({len(parts)} files) from this node's data "
                                   f"({source.dataset.via})")  # fmt: skip
            return
        execution.notes += stage(document, dest, source.rules, user=user)
        if source.mapped is not None:
            execution.notes.append(f"staged {source.mapped.identifier} from this node's data "
                                   f"({source.mapped.via})")  # fmt: skip

    def staging_user(self, execution: Execution) -> str | None:
        """The Unix user data staging runs as: the session's user on platforms that have one;
        by default the node's ``staging.user`` (None: the node's own user)."""
        return execution.staging.user

    @abstractmethod
    def prepare_executable(self, execution: Execution) -> None:
        """Make the executable ready to start (pull or verify the image)."""

    @abstractmethod
    def start(self, execution: Execution) -> None:
        """Start the work (at the booked start). Starting work that already runs is a no-op."""

    @abstractmethod
    def poll(self, execution: Execution) -> WorkStatus:
        """Where the work is now."""

    def connectors(self, execution: Execution) -> list[dict[str, Any]]:
        """How to reach the running session (published ports, notebook URLs)."""
        return []

    @abstractmethod
    def stop(self, execution: Execution, reason: str) -> None:
        """Stop the work now (cancelled, or the booked window ended). Idempotent."""

    @abstractmethod
    def release(self, execution: Execution) -> None:
        """Remove what the session left on the platform (container, job, reservation);
        the workdir with its logs stays. Idempotent."""

    def extend(self, execution: Execution, end_at: int) -> None:
        """The booked window now ends at ``end_at`` (later than ``execution.end_at``): move
        what the platform holds for it (a reservation's end, a job's time limit)."""
        return None

    def logs(self, execution: Execution) -> str | None:
        """The work's output, when the platform keeps it."""
        path = execution.workdir / "logs" / "output.log"
        return path.read_text(errors="replace") if path.exists() else None

    def list_work(self) -> set[str] | None:
        """Names (``work_name``) of everything on the platform made for any session, for
        reconciliation; None when the platform cannot list its work."""
        return None

    def remove_work(self, name: str) -> None:
        """Stop and remove a stray piece of work found by reconciliation."""
        return None


def published_ports(request: ExecutionRequest) -> list[Port]:
    """The executable's ports that are to be reachable from outside."""
    network = getattr(request.executable, "network", None)
    return [p for p in (network.ports if network else []) if p.access]


def executable_ports(executable: Component | dict[str, Any] | None) -> list[Port]:
    """The ports of an executable as offered (``Execution.executable``, or its document), as
    typed ports: the port numbers are ``port.internal_port`` and ``port.external_port``.
    Documents stored before ports were the schema's objects (bare numbers) read the same."""
    if isinstance(executable, dict):
        return Network.model_validate(executable.get("network") or {}).ports
    network = getattr(executable, "network", None)
    return network.ports if isinstance(network, Network) else []


def inventory(total: int, **kwargs: object) -> InventoryConfig:
    return InventoryConfig(total=total, **kwargs)  # type: ignore[arg-type]
