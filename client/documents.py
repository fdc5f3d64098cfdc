"""What the client sends, made from what the user typed: the standard's ExecutionRequest from
flags (``--cores 2..4 --memory 4..8 --image … --window "tomorrow 09:00..12:00" --duration
2h``) or from a file the flags amend, and the update documents (accept, reject, cancel,
extend). Pure functions of their arguments, the clock and the zone included, so that tests
pin them; a bad value is a :class:`DocumentError` saying what would do.

Times the user types are in their own zone (the client knows it; the node does not) and are
sent in UTC with a ``Z``. A window is when the session may *start*, as the standard's
``schedule.requested.start`` interval has it: ``--window "tomorrow 09:00..12:00" --duration
2h`` asks for two hours starting between 09:00 and 12:00 tomorrow."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import isodate
import yaml
from dateutil import parser as dateparser

KINDS = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds"
EXECUTABLES = {
    "docker": f"{KINDS}/executable/docker-container.yaml",
    "singularity": f"{KINDS}/executable/singularity-container.yaml",
    "notebook": f"{KINDS}/executable/jupyter-notebook.yaml",
}
COMPUTE = f"{KINDS}/compute/simple-compute-resource.yaml"

# the phases a client sets, and the ones a session ends in
FINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED", "EXPIRED", "REJECTED"})
PHASES = (
    "OFFERED", "ACCEPTED", "REJECTED", "EXPIRED", "WAITING", "PREPARING", "AVAILABLE",
    "RUNNING", "RELEASING", "COMPLETED", "FAILED", "CANCELLED",
)  # fmt: skip

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_SHORT_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([dhms])")
_TIME_ONLY = re.compile(r"^\d{1,2}(:\d{2}){0,2}$")


class DocumentError(ValueError):
    """A value the user typed that makes no document; the text says what would."""


@dataclass(frozen=True)
class Range:
    """An integer range, as the standard's MinMax: a missing bound is the node's default."""

    min: int | None
    max: int | None

    def document(self) -> dict[str, int]:
        return {k: v for k, v in (("min", self.min), ("max", self.max)) if v is not None}


def parse_range(text: str, what: str = "value") -> Range:
    """``4`` (exactly 4), ``2..4``, ``2..`` (at least 2) or ``..4`` (at most 4)."""
    low, dots, high = text.strip().partition("..")
    try:
        lo = int(low) if low.strip() else None
        hi = int(high) if high.strip() else None
    except ValueError:
        raise DocumentError(
            f"{what} {text!r} is no range: write N, MIN..MAX, MIN.. or ..MAX (whole numbers)"
        ) from None
    if not dots:
        hi = lo
    if lo is None and hi is None:
        raise DocumentError(f"{what} {text!r} has neither a min nor a max")
    if any(v is not None and v < 0 for v in (lo, hi)):
        raise DocumentError(f"{what} {text!r}: the bounds cannot be negative")
    if lo is not None and hi is not None and lo > hi:
        raise DocumentError(f"{what} {text!r}: the min ({lo}) is above the max ({hi})")
    return Range(lo, hi)


def parse_duration(text: str) -> timedelta:
    """``2h``, ``30m``, ``90s``, ``1d``, ``1h30m`` or an ISO-8601 duration (``PT2H``)."""
    value = text.strip()
    if value[:1].upper() == "P":
        try:
            parsed = isodate.parse_duration(value.upper())
        except (isodate.ISO8601Error, ValueError):
            raise DocumentError(f"duration {text!r} is not an ISO-8601 duration") from None
        if not isinstance(parsed, timedelta):  # months or years: no fixed length
            raise DocumentError(f"duration {text!r}: months and years have no fixed length")
        seconds = parsed.total_seconds()
    else:
        compact = value.lower().replace(" ", "")
        parts = _SHORT_DURATION.findall(compact)
        if not parts or "".join(n + u for n, u in parts) != compact:
            raise DocumentError(
                f"duration {text!r} is not a duration: write e.g. 2h, 30m, 90s, 1h30m or PT2H"
            )
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise DocumentError(f"duration {text!r} is not positive")
    return timedelta(seconds=round(seconds))


def iso_duration(span: timedelta) -> str:
    """A positive whole-second span as ISO-8601, in hours, minutes and seconds: ``PT1H30M``."""
    seconds = int(span.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    return f"PT{text or '0S'}"


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_moment(text: str, now: datetime, zone: tzinfo) -> datetime:
    """An instant the user typed, in ``zone`` unless it names its own: ``now``, ``+2h`` (from
    now), ``-2h`` or ``2h ago`` (before now), ``today 09:00``, ``tomorrow 9am``, ``friday
    14:00`` (the next one; today's if later), or anything dateutil reads (``2026-12-02
    09:00``, ``2026-12-02T09:00Z``)."""
    value = text.strip()
    local_now = now.astimezone(zone)
    if not value:
        raise DocumentError("an empty time")
    if value.lower() == "now":
        return now
    if value.startswith("+") or value.lower().startswith("in "):
        return now + parse_duration(value.lstrip("+").removeprefix("in ").strip())
    if value.startswith("-") or value.lower().endswith(" ago"):
        return now - parse_duration(value.lstrip("-").removesuffix(" ago").strip())
    first, _, rest = value.partition(" ")
    day = _named_day(first.lower(), local_now)
    if day is not None:
        value = rest.strip()
        base = datetime(day.year, day.month, day.day, tzinfo=zone)
        if not value:
            return base
    else:
        base = local_now.replace(hour=0, minute=0, second=0, microsecond=0)
    try:
        moment = dateparser.parse(value, default=base.replace(tzinfo=None))
    except (ValueError, OverflowError):
        raise DocumentError(
            f"time {text!r} is not a time: write e.g. 'tomorrow 09:00', '2026-12-02 14:30', "
            "'+2h' or 'now'"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)


def _named_day(word: str, local_now: datetime) -> datetime | None:
    if word == "today":
        return local_now
    if word == "tomorrow":
        return local_now + timedelta(days=1)
    if word in WEEKDAYS:
        ahead = (WEEKDAYS.index(word) - local_now.weekday()) % 7
        return local_now + timedelta(days=ahead)
    return None


def parse_window(text: str, now: datetime, zone: tzinfo) -> str:
    """When the session may start, as the ISO-8601 interval the standard takes: ``FROM..TO``
    (``tomorrow 09:00..12:00``: the end on the start's day, or the next when earlier;
    ``now..+3h``: ``+D`` is D after the start; ``2026-12-02 09:00..2026-12-03 18:00``), or an
    ISO interval as it is (``2026-12-02T09:00Z/PT3H``)."""
    value = text.strip()
    if "/" in value and ".." not in value:
        head, _, tail = value.partition("/")
        if not head or not tail:
            raise DocumentError(
                f"window {text!r}: an ISO-8601 interval is START/END or START/DURATION"
            )
        return value
    first, dots, second = value.partition("..")
    if not dots or not first.strip() or not second.strip():
        raise DocumentError(
            f"window {text!r} is not a window: write FROM..TO, e.g. 'tomorrow 09:00..12:00', "
            "'now..+3h', or an ISO-8601 interval"
        )
    start = parse_moment(first, now, zone)
    end = end_after(start, second, now, zone)
    if end <= start:
        raise DocumentError(
            f"window {text!r} ends ({utc_text(end)}) before it starts ({utc_text(start)})"
        )
    return f"{utc_text(start)}/{utc_text(end)}"


def end_after(start: datetime, text: str, now: datetime, zone: tzinfo) -> datetime:
    """The end of a span starting at ``start``, as a window's end is written: ``+D`` (D after
    the start), a time of day alone (``12:00``, ``5pm``: on the start's day, or the next when
    earlier), or any instant :func:`parse_moment` reads."""
    end_text = text.strip()
    if end_text.startswith("+"):
        return start + parse_duration(end_text[1:])
    if _TIME_ONLY.match(end_text) or re.fullmatch(r"\d{1,2}(:\d{2})?\s*[ap]m", end_text, re.I):
        local = start.astimezone(zone)
        end = parse_moment(end_text, now, zone).replace(
            year=local.year, month=local.month, day=local.day
        )
        return end + timedelta(days=1) if end <= start else end
    return parse_moment(end_text, now, zone)


def load_document(text: str, source: str = "the document") -> dict[str, Any]:
    """A request document read from YAML or JSON (JSON is YAML)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise DocumentError(f"{source} is neither YAML nor JSON: {e}") from None
    if not isinstance(doc, dict):
        raise DocumentError(f"{source} is not a document (a mapping of fields)")
    return doc


def parse_environment(items: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise DocumentError(f"environment {item!r}: write NAME=VALUE")
        env[name] = value
    return env


def request_document(
    base: Mapping[str, Any] | None = None,
    *,
    image: str | None = None,
    executable: str = "docker",
    notebook: str | None = None,
    command: Sequence[str] = (),
    environment: Mapping[str, str] | None = None,
    cores: Range | None = None,
    memory: Range | None = None,
    duration: timedelta | None = None,
    windows: Sequence[str] = (),
    name: str | None = None,
) -> dict[str, Any]:
    """The ExecutionRequest: ``base`` (a file's document, or nothing) with the flags given set
    on it. Without a base, an image (or a notebook) is required."""
    doc: dict[str, Any] = copy.deepcopy(dict(base)) if base else {}
    if notebook is not None:
        doc["executable"] = {"kind": EXECUTABLES["notebook"], "location": notebook}
    elif image is not None:
        exe = doc.get("executable") if isinstance(doc.get("executable"), dict) else None
        if exe is None or exe.get("kind") != EXECUTABLES[executable]:
            exe = {"kind": EXECUTABLES[executable]}
        exe["image"] = {"locations": [image]}
        doc["executable"] = exe
    if base is None and "executable" not in doc:
        raise DocumentError("nothing to execute: give a request FILE, --image or --notebook")
    exe = doc.get("executable")  # a file's document is the node's to judge
    if command:
        if not isinstance(exe, dict) or "notebook" in str(exe.get("kind", "")):
            raise DocumentError("--command needs a container executable (--image)")
        exe["command"] = list(command)
    if environment:
        if not isinstance(exe, dict) or "notebook" in str(exe.get("kind", "")):
            raise DocumentError("--env needs a container executable (--image)")
        exe["environment"] = {**(exe.get("environment") or {}), **environment}
    if cores is not None or memory is not None:
        compute = doc.get("compute") if isinstance(doc.get("compute"), dict) else {}
        compute.setdefault("kind", COMPUTE)
        if cores is not None:
            compute["cores"] = cores.document()
        if memory is not None:
            compute["memory"] = memory.document()
        doc["compute"] = compute
    if duration is not None or windows:
        schedule = doc.get("schedule") if isinstance(doc.get("schedule"), dict) else {}
        requested = schedule.get("requested") if isinstance(schedule.get("requested"), dict) else {}
        if duration is not None:
            requested["duration"] = iso_duration(duration)
        if windows:
            requested["start"] = list(windows)
        schedule["requested"] = requested
        doc["schedule"] = schedule
    if name is not None:
        doc["meta"] = {**(doc.get("meta") or {}), "name": name}
    return doc


def phase_update(phase: str) -> dict[str, str]:
    """The update that sets a session's phase: ACCEPTED, REJECTED or CANCELLED (and, POSTed
    to an offer set, REJECTED withdraws it)."""
    return {"kind": "uri:enum-value-update", "path": "phase", "value": phase}


def extend_update(span: timedelta) -> dict[str, Any]:
    """The update that moves a session's booked end ``span`` later."""
    return {
        "kind": "uri:integer-delta-update",
        "path": "schedule.duration",
        "delta": int(span.total_seconds()),
        "units": "seconds",
    }


def parse_phases(values: Sequence[str]) -> list[str]:
    """``--phase`` values, each one phase or a comma list, in any case."""
    phases = [p.strip().upper() for v in values for p in v.split(",") if p.strip()]
    unknown = [p for p in phases if p not in PHASES]
    if unknown:
        raise DocumentError(f"unknown phase {unknown[0]!r}: the phases are {', '.join(PHASES)}")
    return phases


# --- the admin controls' documents ------------------------------------------------------------

RESOURCE_CLASSES = ("cores", "memory", "storage", "gpus", "fpgas")
INVENTORY_FIELDS = ("total", "reserved", "allocation_ratio", "min_unit", "max_unit", "step_size")
AUDIT_ACTIONS = (
    "accept", "reject", "cancel", "extend", "direct", "withdraw", "drain", "undrain",
    "book-maintenance", "delete-maintenance", "change-inventory",
)  # fmt: skip
_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$")  # openapi: platform, poolName


@dataclass(frozen=True)
class PoolName:
    """A pool as sessions name it, ``platform/pool`` (``sim/main``): its API path is
    ``/pools/sim/main``."""

    platform: str
    pool: str

    def __str__(self) -> str:
        return f"{self.platform}/{self.pool}"


def parse_pool(text: str) -> PoolName:
    """``sim/main``: a platform and a pool of it, each as the node's config names them."""
    platform, slash, pool = text.strip().partition("/")
    if not slash or not _NAME.match(platform) or not _NAME.match(pool):
        raise DocumentError(
            f"pool {text!r}: write PLATFORM/POOL as sessions name it, e.g. sim/main "
            "(lower-case letters, digits, '.', '_' and '-')"
        )
    return PoolName(platform, pool)


def parse_amount(text: str | int, what: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise DocumentError(f"{what} {text!r} is not a whole number") from None
    if value < 0:
        raise DocumentError(f"{what} {text!r} cannot be negative")
    return value


def maintenance_document(
    start: str, end: str, reason: str, amounts: Mapping[str, int | None], now: datetime,
    zone: tzinfo,
) -> dict[str, Any]:  # fmt: skip
    """The MaintenanceRequest: ``start`` and ``end`` as the user typed them (in ``zone``;
    ``end`` may be ``+4h`` after the start or a time of day on the start's day), sent in UTC;
    ``amounts`` per class (none given: the window takes all of the pool's capacity)."""
    if not reason.strip():
        raise DocumentError("--reason: say why (everyone sees it in GET /node)")
    try:
        begin = parse_moment(start, now, zone)
    except DocumentError as e:
        raise DocumentError(f"--from: {e}") from None
    try:
        finish = end_after(begin, end, now, zone)
    except DocumentError as e:
        raise DocumentError(f"--to: {e}") from None
    if finish <= begin:
        raise DocumentError(
            f"--to {end!r} ({utc_text(finish)}) is not after --from {start!r} ({utc_text(begin)})"
        )
    doc: dict[str, Any] = {"start": utc_text(begin), "end": utc_text(finish), "reason": reason}
    taken = {c: parse_amount(n, f"--{c}") for c, n in amounts.items() if n is not None}
    if taken:
        doc["amounts"] = taken
    return doc


def _field_value(name: str, text: str, where: str) -> int | float | None:
    if name == "allocation_ratio":
        try:
            ratio = float(text)
        except ValueError:
            raise DocumentError(f"{where}: the allocation ratio {text!r} is not a number") from None
        if not 0 < ratio <= 100:
            raise DocumentError(f"{where}: the allocation ratio is above 0 and at most 100")
        return ratio
    if name == "max_unit" and text.lower() in ("none", "null", ""):
        return None
    value = parse_amount(text, where)
    if name in ("min_unit", "max_unit", "step_size") and value < 1:
        raise DocumentError(f"{where}: {name} is at least 1")
    return value


def inventory_document(
    sets: Sequence[str], resets: Sequence[str], dry_run: bool = False, force: bool = False,
    reason: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The InventoryChange: each ``--set CLASS=N`` sets the class's total, ``--set
    CLASS.FIELD=VALUE`` one field (total, reserved, allocation_ratio, min_unit, max_unit,
    step_size); each ``--reset CLASS`` sends the class back to the platform's values (null)."""
    inventories: dict[str, dict[str, Any] | None] = {}
    for item in sets:
        key, equals, value = item.partition("=")
        klass, dot, name = key.strip().partition(".")
        name = name if dot else "total"
        if not equals or not klass or not value.strip():
            raise DocumentError(f"--set {item!r}: write CLASS=TOTAL or CLASS.FIELD=VALUE, "
                                "e.g. cores=12 or memory.reserved=4")  # fmt: skip
        if name not in INVENTORY_FIELDS:
            raise DocumentError(f"--set {item!r}: unknown field {name!r}: the fields are "
                                f"{', '.join(INVENTORY_FIELDS)}")  # fmt: skip
        fields = inventories.setdefault(klass, {})
        assert fields is not None
        fields[name] = _field_value(name, value.strip(), f"--set {item!r}")
    for klass in (k.strip() for k in resets):
        if not klass:
            raise DocumentError("--reset: name a resource class, e.g. --reset cores")
        if klass in inventories:
            raise DocumentError(f"--reset {klass}: the class is also --set; do one or the other")
        inventories[klass] = None
    if not inventories:
        raise DocumentError("nothing to change: give --set CLASS=N or --reset CLASS")
    doc: dict[str, Any] = {"inventories": inventories}
    if dry_run:
        doc["dry_run"] = True
    if force:
        doc["force"] = True
    if reason:
        doc["reason"] = reason
    return doc


def parse_actions(values: Sequence[str]) -> list[str]:
    """``--action`` values, each one audit action or a comma list."""
    actions = [a.strip().lower() for v in values for a in v.split(",") if a.strip()]
    unknown = [a for a in actions if a not in AUDIT_ACTIONS]
    if unknown:
        raise DocumentError(
            f"unknown action {unknown[0]!r}: the actions are {', '.join(AUDIT_ACTIONS)}"
        )
    return list(dict.fromkeys(actions))


def parse_subject(text: str) -> str:
    """What an audit event changed: ``session:<uuid>``, ``offerset:<uuid>``, ``pool:sim/main``,
    or a pool alone (``sim/main``)."""
    value = text.strip()
    kind, colon, rest = value.partition(":")
    if colon and kind in ("session", "offerset", "pool") and rest:
        return value
    if not colon and "/" in value:
        return f"pool:{parse_pool(value)}"
    raise DocumentError(
        f"--subject {text!r}: write session:UUID, offerset:UUID, pool:PLATFORM/POOL or "
        "PLATFORM/POOL"
    )
