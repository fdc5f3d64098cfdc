"""Where a session's work is, as a pure function of its Job, its pod and the pod's events: the
lifecycle's ``WorkStatus``, with messages a user can act on (the scheduler's reason for a pod
that cannot be placed, an image that cannot be pulled, a container that keeps crashing)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..contract import WorkState, WorkStatus
from .manifests import MAIN

Obj = dict[str, Any]
PULL_FAILURES = ("ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName")
START_FAILURES = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
MESSAGE_CHARS = 500


@dataclass(frozen=True)
class Seen:
    """What the platform read of one session's work."""

    job: Obj | None
    pod: Obj | None
    events: list[Obj]  # of the pod (or of the Job while it has no pod), oldest first
    now: int
    start_at: int
    pending_timeout: int
    stopped: str | None = None


def epoch(text: str | None) -> int | None:
    if not text:
        return None
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


def _trim(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def _condition(obj: Obj | None, kind: str) -> Obj | None:
    for condition in ((obj or {}).get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def latest_event(events: list[Obj], *reasons: str) -> str | None:
    found = [e for e in events if not reasons or e.get("reason") in reasons]
    found.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    return _trim(found[-1].get("message") or "") if found else None


def _statuses(pod: Obj) -> list[tuple[bool, Obj]]:
    status = pod.get("status") or {}
    return [(True, s) for s in status.get("initContainerStatuses") or []] + [
        (False, s) for s in status.get("containerStatuses") or []
    ]


def _ended(seen: Seen, text: str, code: int | None) -> WorkStatus:
    if seen.stopped:
        text += f" (stopped: {seen.stopped})"
    return WorkStatus(WorkState.FAILED, exit_code=code, message=text)


def work_status(seen: Seen) -> WorkStatus:
    pod, job = seen.pod, seen.job
    if pod is None:
        return _without_pod(seen)
    for _init, status in _statuses(pod):
        waiting = (status.get("state") or {}).get("waiting") or {}
        reason, detail = waiting.get("reason"), _trim(waiting.get("message") or "")
        image = status.get("image")
        if reason in PULL_FAILURES:
            return _ended(seen, f"the image {image} cannot be pulled ({reason}): {detail}", None)
        if reason == "CrashLoopBackOff":
            last = ((status.get("lastState") or {}).get("terminated") or {}).get("exitCode")
            return _ended(
                seen,
                f"container {status.get('name')} keeps crashing "
                f"(CrashLoopBackOff, last exit code {last}): {detail}",
                last,
            )
        if reason in START_FAILURES:
            return _ended(
                seen, f"container {status.get('name')} cannot start ({reason}): {detail}", None
            )
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Pending":
        scheduled = _condition(pod, "PodScheduled")
        if scheduled is not None and scheduled.get("status") == "False":
            waited = seen.now - seen.start_at
            why = latest_event(seen.events, "FailedScheduling") or _trim(
                scheduled.get("message") or scheduled.get("reason") or "no reason given"
            )
            if waited > seen.pending_timeout:
                return _ended(
                    seen,
                    f"the pod could not be scheduled within "
                    f"{seen.pending_timeout} s of the booked start: {why}",
                    None,
                )
            return WorkStatus(WorkState.PENDING, message=f"not scheduled yet: {why}")
        return WorkStatus(WorkState.PENDING)
    if phase == "Running":
        return WorkStatus(WorkState.RUNNING)
    if phase == "Succeeded":
        return WorkStatus(WorkState.SUCCEEDED, exit_code=0, message="exited with code 0")
    if phase == "Failed":
        return _failed_pod(seen, pod)
    return _without_pod(seen) if job is not None else WorkStatus(WorkState.PENDING)


def _failed_pod(seen: Seen, pod: Obj) -> WorkStatus:
    status = pod.get("status") or {}
    for init, container in _statuses(pod):
        terminated = (container.get("state") or {}).get("terminated") or {}
        code = terminated.get("exitCode")
        if code in (None, 0):
            continue
        name = container.get("name")
        if init:
            text = f"staging data failed: init container {name} exited with code {code}"
        else:
            text = f"exited with code {code}"
        if terminated.get("reason") == "OOMKilled":
            text += " (killed: out of memory)"
        if terminated.get("message"):
            text += f" ({_trim(terminated['message'])})"
        return _ended(seen, text, int(code))
    if status.get("reason") == "DeadlineExceeded":
        return _ended(seen, "the pod passed its active deadline", None)
    why = status.get("message") or status.get("reason") or "no reason given"
    return _ended(seen, f"the pod failed: {_trim(why)}", None)


def _without_pod(seen: Seen) -> WorkStatus:
    """A Job with no pod: not made yet, finished (and its pod removed), or refused one."""
    job = seen.job
    if job is None:
        return WorkStatus(WorkState.MISSING, message="no Job and no pod")
    if (_condition(job, "Complete") or {}).get("status") == "True":
        return WorkStatus(WorkState.SUCCEEDED, exit_code=0, message="the Job completed")
    failed = _condition(job, "Failed")
    if failed and failed.get("status") == "True":
        if failed.get("reason") == "DeadlineExceeded":
            return _ended(seen, "the Job passed its active deadline (the booked end)", None)
        return _ended(
            seen,
            f"the Job failed ({failed.get('reason')}): {_trim(failed.get('message') or '')}",
            None,
        )
    waited = seen.now - max(
        seen.start_at, epoch((job.get("metadata") or {}).get("creationTimestamp")) or seen.start_at
    )
    why = latest_event(seen.events, "FailedCreate")
    if why and waited > seen.pending_timeout:
        return _ended(seen, f"the Job made no pod within {seen.pending_timeout} s: {why}", None)
    return WorkStatus(WorkState.PENDING, message=why)


def main_container_started(pod: Obj | None) -> bool:
    """Whether the main container has output to read (it runs or ran)."""
    for init, status in _statuses(pod or {}):
        if not init and status.get("name") == MAIN:
            state = status.get("state") or {}
            return bool(state.get("running") or state.get("terminated"))
    return False
