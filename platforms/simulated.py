"""The ``simulated`` platform: real bookings, nothing executed.

It is the embedded default, so a node runs anywhere with no other service. Its pools come from
the config, or are sized from the host when none are configured. Accepted sessions walk through
the whole lifecycle on timers (the "work" runs for ``run_time``, by default the booked
duration, and ends with ``exit_code``), and every step says in the session's messages that
nothing was executed.
"""

from __future__ import annotations

import time
from datetime import timedelta

from pydantic import Field

from broker_core.config import Duration, PoolConfig
from broker_core.kinds.base import Component
from broker_core.kinds.builtin import KINDS

from .contract import Execution, Platform, PreparationOptions, WorkState, WorkStatus
from .host import host_pool


class SimulatedOptions(PreparationOptions):
    image_pull: Duration = Field(default=timedelta(seconds=30))
    storage_path: str = "."
    run_time: Duration | None = Field(
        default=None, description="how long the simulated work runs; default: to the booked end"
    )
    exit_code: int = Field(default=0, description="what the simulated work exits with")
    stage_data: bool = Field(
        default=False,
        description="stage data resources into the session's directory as a real platform "
        "does (within the node's staging rules and mappings), to try them with nothing run; "
        "default: nothing is staged",
    )
    kinds: list[str] | None = Field(
        default=None,
        description="accept only these kinds (names such as docker-container, or URIs); "
        "default: every built-in kind",
    )


class SimulatedPlatform(Platform):
    options_model = SimulatedOptions
    options: SimulatedOptions

    def pools(self) -> list[PoolConfig]:
        return self.config.pools or [host_pool(self.options.storage_path)]

    def accepted_kinds(self) -> frozenset[str]:
        wanted = self.options.kinds
        return frozenset(
            k.kind_uri()
            for k in KINDS
            if wanted is None or k.NAME in wanted or k.kind_uri() in wanted
        )

    def prepare_storage(self, execution: Execution, storage: Component) -> None:
        execution.notes.append(f"simulated: storage {_name(storage)} not created")

    def stage_data(self, execution: Execution, data: Component) -> None:
        if self.options.stage_data:
            super().stage_data(execution, data)
        else:
            execution.notes.append(f"simulated: data {_name(data)} not staged")

    def stages_data(self) -> bool:
        return self.options.stage_data

    def prepare_executable(self, execution: Execution) -> None:
        execution.notes.append("simulated: no image pulled")

    def start(self, execution: Execution) -> None:
        if "started_at" not in execution.state:
            execution.state["started_at"] = time.time()
            execution.notes.append("simulated: nothing is executed")

    def poll(self, execution: Execution) -> WorkStatus:
        started = execution.state.get("started_at")
        if started is None:
            return WorkStatus(WorkState.MISSING, message="simulated work was never started")
        if "stopped" in execution.state:
            return WorkStatus(WorkState.FAILED, message=execution.state["stopped"])
        finish = (
            started + self.options.run_time.total_seconds()
            if self.options.run_time is not None
            else execution.end_at  # the work fills its booked window
        )
        if time.time() < finish:
            return WorkStatus(WorkState.RUNNING)
        code = self.options.exit_code
        state = WorkState.SUCCEEDED if code == 0 else WorkState.FAILED
        return WorkStatus(state, exit_code=code, message=f"simulated work exited with {code}")

    def stop(self, execution: Execution, reason: str) -> None:
        execution.state.setdefault("stopped", f"simulated work stopped: {reason}")

    def release(self, execution: Execution) -> None:
        return None


def _name(component: Component) -> str:
    meta = component.meta
    return str((meta.name or meta.uuid) if meta else None)
