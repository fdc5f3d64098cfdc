"""Session phases and the updates a client may make in each."""

from __future__ import annotations

OFFERED, ACCEPTED, REJECTED, EXPIRED = "OFFERED", "ACCEPTED", "REJECTED", "EXPIRED"
WAITING, PREPARING, AVAILABLE, RUNNING = "WAITING", "PREPARING", "AVAILABLE", "RUNNING"
RELEASING, COMPLETED, FAILED, CANCELLED = "RELEASING", "COMPLETED", "FAILED", "CANCELLED"

PHASES = (
    OFFERED, ACCEPTED, REJECTED, EXPIRED, WAITING, PREPARING,
    AVAILABLE, RUNNING, RELEASING, COMPLETED, FAILED, CANCELLED,
)  # fmt: skip
# where an accepted session goes on to (the lifecycle engine moves it): accepting it again is
# a harmless repeat, not a conflict
AFTER_ACCEPTANCE = frozenset({ACCEPTED, WAITING, PREPARING, AVAILABLE, RUNNING, RELEASING,
                              COMPLETED, FAILED})  # fmt: skip
FINAL = frozenset({REJECTED, EXPIRED, COMPLETED, FAILED, CANCELLED})

# phase -> phases a client may ask for. CANCELLED on an OFFERED session withdraws that offer, as
# REJECTED does (the standard's other implementation accepts both); its siblings stay OFFERED
CLIENT_TRANSITIONS: dict[str, tuple[str, ...]] = {
    OFFERED: (ACCEPTED, REJECTED, CANCELLED),
    ACCEPTED: (CANCELLED,),
    WAITING: (CANCELLED,),
    PREPARING: (CANCELLED,),
    AVAILABLE: (CANCELLED,),
    RUNNING: (CANCELLED,),
}


# phases in which the booked window may still be extended (an integer delta of its duration)
EXTENDABLE = frozenset({ACCEPTED, WAITING, PREPARING, AVAILABLE, RUNNING})
DURATION_PATH = "schedule.duration"


def phase_options(phase: str) -> list[dict[str, object]]:
    """``meta.options``: the updates this session allows now."""
    values = CLIENT_TRANSITIONS.get(phase)
    if not values:
        return []
    options: list[dict[str, object]] = [
        {"kind": "uri:enum-value-option", "path": "phase", "values": list(values)}
    ]
    if phase in EXTENDABLE:
        options.append(
            {
                "kind": "uri:integer-delta-option",
                "path": DURATION_PATH,
                "units": "seconds",
                "min": 1,
            }
        )
    return options
