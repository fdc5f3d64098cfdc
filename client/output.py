"""What the commands print: rich tables for people (``--output table``, the default), or the
broker's own documents as JSON or YAML for scripts (``--output json|yaml``), on standard output;
messages and errors on standard error, so that ``-o json`` output always parses.

Times are the broker's UTC instants shown in the user's zone; durations are shown short
(``PT1H30M`` as ``1h30m``)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, tzinfo
from enum import StrEnum
from typing import Any

import yaml
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .api import (
    AuditEvent,
    BookedSession,
    InventoryConflict,
    InventoryResult,
    MaintenanceWindow,
    OfferSet,
    PoolState,
    Session,
    message_text,
)

PHASE_STYLES = {
    "OFFERED": "cyan", "ACCEPTED": "blue", "WAITING": "blue", "PREPARING": "yellow",
    "AVAILABLE": "green", "RUNNING": "bold green", "RELEASING": "yellow", "COMPLETED": "green",
    "FAILED": "bold red", "CANCELLED": "magenta", "REJECTED": "dim", "EXPIRED": "dim",
}  # fmt: skip
TIMES = {"start", "end", "expires", "created"}
HEADERS = {"duration": "for", "memory": "GiB"}
WIDTHS = {"phase": 9, "result": 6, "state": 6, "duration": 3, "expires": 8}
CLASS_ORDER = ("cores", "memory", "storage", "gpus")
CLASS_HEADERS = {"memory": "memory GiB", "storage": "storage GiB"}
INVENTORY_COLUMNS = (("total", "total"), ("reserved", "reserved"), ("allocation_ratio", "ratio"),
                     ("capacity", "capacity"), ("min_unit", "min"), ("max_unit", "max"),
                     ("step_size", "step"))  # fmt: skip
LEVEL_STYLES = {"ERROR": "red", "WARN": "yellow", "INFO": "", "DEBUG": "dim"}
_ISO = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


class Format(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


def when(stamp: str | None, zone: tzinfo | None = None, zoned: bool = True) -> str:
    """A broker instant (``2026-12-02T08:00:00Z``) in the user's zone, to the second; the
    zone's name after it unless ``zoned`` is false (a table names it in its header)."""
    if not stamp:
        return ""
    try:
        moment = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return str(stamp)
    local = moment.astimezone(zone)
    text = local.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text} {local.tzname()}" if zoned and local.tzname() else text


def short(duration: str | None) -> str:
    """``PT1H30M`` → ``1h30m``; anything else as it is."""
    match = _ISO.match(str(duration or ""))
    if not duration or not match:
        return str(duration or "")
    parts = zip(match.groups(), ("d", "h", "m", "s"), strict=True)
    text = "".join(f"{float(n):g}{u}" for n, u in parts if n and float(n))
    return text or "0s"


def amounts_text(amounts: Mapping[str, int], whole: str = "all of the pool") -> str:
    """``{"cores": 8, "memory": 32}`` → ``cores 8, memory 32``; nothing: ``whole``."""
    if not amounts:
        return whole
    return ", ".join(f"{k} {v}" for k, v in sorted(amounts.items(), key=_by_class))


def override_text(inventories: Mapping[str, Mapping[str, Any]]) -> str:
    """The fields an override sets: ``cores.total=12, memory.reserved=2``."""
    return ", ".join(f"{klass}.{name}={value}"
                     for klass, fields in sorted(inventories.items(), key=_by_class)
                     for name, value in fields.items())  # fmt: skip


def number(value: Any) -> str:
    """An inventory field in a cell: ``1.5``, ``16``; nothing for none."""
    if value is None:
        return ""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _by_class(item: tuple[str, Any]) -> tuple[int, str]:
    name = item[0]
    return (CLASS_ORDER.index(name) if name in CLASS_ORDER else len(CLASS_ORDER), name)


def classes_of(inventories: Iterable[Mapping[str, Any]]) -> list[str]:
    """The resource classes of some inventories, in the usual order (then by name)."""
    names = {str(k) for inv in inventories for k in inv}
    return [n for n, _ in sorted(((n, None) for n in names), key=_by_class)]


def phase(name: str) -> Text:
    return Text(name, style=PHASE_STYLES.get(name, ""))


class Printer:
    """Where a command's output goes, and in which format."""

    def __init__(
        self,
        format: Format = Format.table,
        out: Console | None = None,
        err: Console | None = None,
        zone: tzinfo | None = None,
    ) -> None:
        self.format = format
        self.out = out or Console(soft_wrap=False, highlight=False)
        self.err = err or Console(stderr=True, highlight=False)
        self.zone = zone

    @property
    def zone_name(self) -> str:
        return datetime.now(self.zone).astimezone(self.zone).tzname() or "local"

    def cell(self, stamp: str | None, form: str = "%d %b %H:%M:%S") -> str:
        """An instant in a table, short (its header names the zone)."""
        if not stamp:
            return ""
        try:
            moment = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        except ValueError:
            return str(stamp)
        return moment.astimezone(self.zone).strftime(form)

    def header(self, name: str) -> str:
        return HEADERS.get(name, name)

    @property
    def human(self) -> bool:
        return self.format is Format.table

    def document(self, doc: Any) -> None:
        """The broker's document as it came, in JSON or YAML."""
        if self.format is Format.yaml:
            text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
        else:
            text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
        file = self.out.file if self.out.file is not None else sys.stdout
        file.write(text)
        file.flush()

    def note(self, text: str, style: str = "") -> None:
        """A line for people, on standard error (never in the way of ``-o json``)."""
        self.err.print(text, style=style or None, highlight=False, markup=False)

    def error(self, text: str) -> None:
        self.err.print(Text("error: ", style="bold red") + Text(text))

    def messages(self, messages: Iterable[Mapping[str, Any]], minimum: str = "INFO") -> None:
        order = ["DEBUG", "INFO", "WARN", "ERROR"]
        floor = order.index(minimum)
        for m in messages:
            level = str(m.get("level") or "INFO")
            if level in order and order.index(level) < floor:
                continue
            line = Text(f"{level.lower():5} ", style=LEVEL_STYLES.get(level, "") or "dim")
            self.err.print(line + Text(message_text(m)))

    # --- tables

    def offers(self, offer_set: OfferSet) -> None:
        places = {_where(o) for o in offer_set.offers}
        title = f"offer set {offer_set.uuid}: {offer_set.result}, times in {self.zone_name}"
        names = ["offer", "start", "duration", "cores", "memory", "expires"]
        if len(places) == 1:
            title += f", on {places.pop()}"
        else:
            names.insert(5, "where")
        table = _table(title)
        for name in names:
            table.add_column(self.header(name), **_column(name))
        for offer in offer_set.offers:
            row = [
                offer.uuid, self.cell(offer.start), short(offer.duration),
                offer.amount("cores"), offer.amount("memory"), self.cell(offer.expires, "%H:%M:%S"),
            ]  # fmt: skip
            if "where" in names:
                row.insert(5, _where(offer))
            table.add_row(*row)
        self.out.print(table)

    def sessions(self, items: Sequence[Mapping[str, Any]]) -> None:
        table = _table(f"times in {self.zone_name}")
        upstream = any(i.get("upstream") for i in items)
        owners = len({i.get("owner") for i in items}) > 1
        names = ["session", "phase", "start", "end", "pools", "name"]
        names += ["owner"] if owners else []
        names += ["upstream"] if upstream else []
        for name in names:
            table.add_column(self.header(name), **_column(name))
        for item in items:
            row = [
                str(item.get("uuid", "")), phase(str(item.get("phase", ""))),
                self.cell(item.get("start")), self.cell(item.get("end")),
                ", ".join(item.get("pools") or []), str(item.get("name") or ""),
            ]  # fmt: skip
            row += [str(item.get("owner", ""))] if owners else []
            row += [str(item.get("upstream", ""))] if upstream else []
            table.add_row(*row)
        self.out.print(table if items else Text("no sessions", style="dim"))

    def offer_sets(self, items: Sequence[Mapping[str, Any]]) -> None:
        table = _table(f"times in {self.zone_name}")
        for name in ("offer set", "result", "state", "created", "expires", "offers"):
            table.add_column(self.header(name), **_column(name))
        for item in items:
            counts = item.get("offers") or {}
            table.add_row(
                str(item.get("uuid", "")), str(item.get("result", "")),
                str(item.get("state", "")), self.cell(item.get("created")),
                self.cell(item.get("expires")),
                ", ".join(f"{n} {p}" for p, n in sorted(counts.items()) if n),
            )  # fmt: skip
        self.out.print(table if items else Text("no offer sets", style="dim"))

    def session(self, session: Session) -> None:
        """One session: what it is, when it is booked, its components, connectors and
        messages."""
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        raw = session.raw
        prep_start, prep_duration = session.schedule("preparing")
        rel_start, rel_duration = session.schedule("releasing")
        rows = [
            ("session", session.uuid),
            ("name", session.name),
            ("phase", phase(session.phase)),
            ("where", _where(session)),
            ("cores", session.amount("cores")),
            ("memory", session.amount("memory")),
            ("preparing", f"{when(prep_start, self.zone)}  {short(prep_duration)}".strip()),
            ("start", when(session.start, self.zone)),
            ("duration", short(session.duration)),
            ("releasing", f"{when(rel_start, self.zone)}  {short(rel_duration)}".strip()),
            ("expires", when(session.expires, self.zone) if session.phase == "OFFERED" else ""),
            ("offer set", str((raw.get("offerset") or {}).get("uuid", ""))),
        ]
        for key, value in rows:
            if value:
                table.add_row(key, value)
        actual = (raw.get("schedule") or {}).get("actual") or {}
        if actual:
            steps = sorted(actual.items(), key=lambda kv: str(kv[1]))
            table.add_row("history", "\n".join(f"{when(t, self.zone)}  {p}" for p, t in steps))
        self.out.print(table)
        components = [c for c in raw.get("components") or [] if isinstance(c, dict)]
        if components:
            parts = Table("component", "name", "phase", title_justify="left")
            for c in components:
                parts.add_row(str(c.get("category", "")), str(c.get("name") or ""),
                              phase(str(c.get("phase", ""))))  # fmt: skip
            self.out.print(parts)
        self.connectors(session.connectors)
        if session.messages:
            self.out.print(Text("messages", style="bold"))
            for m in session.messages:
                level = str(m.get("level") or "INFO")
                stamp = when(m.get("time"), self.zone)
                self.out.print(Text(f"  {stamp}  {level:5} ", style=LEVEL_STYLES.get(level, ""))
                               + Text(message_text(m)))  # fmt: skip

    def connectors(
        self, connectors: Sequence[Mapping[str, Any]], console: Console | None = None
    ) -> None:
        if not connectors:
            return
        table = Table("connector", "address", title="connectors", title_justify="left")
        for c in connectors:
            address = c.get("url") or ":".join(str(c[k]) for k in ("host", "port") if c.get(k))
            kind = str(c.get("kind") or c.get("protocol") or "")
            table.add_row(kind.rsplit("/", 1)[-1], str(address))
        (console or self.out).print(table)

    def span(self, start: str | None, end: str | None) -> str:
        """``[start, end)`` in a table: the end's day only when it is not the start's."""
        first = self.cell(start)
        if not end:
            return first
        same_day = self.cell(start, "%Y-%m-%d") == self.cell(end, "%Y-%m-%d")
        return f"{first} → {self.cell(end, '%H:%M:%S' if same_day else '%d %b %H:%M:%S')}"

    # --- the admin controls' tables

    def pools(self, pools: Sequence[PoolState]) -> None:
        """Each pool: open or drained (since when, by whom, why), its capacity per class, an
        admin's override and its maintenance windows."""
        if not pools:
            self.out.print(Text("no pools (an aggregator has none: ask a node)", style="dim"))
            return
        drained = any(p.drain for p in pools)
        classes = classes_of(p.inventories for p in pools)
        table = _table(f"pools, times in {self.zone_name}")
        names = ["pool", "state"] + (["since", "by", "reason"] if drained else [])
        for name in names:
            table.add_column(name, **_column(name))
        for klass in classes:
            table.add_column(CLASS_HEADERS.get(klass, klass), justify="right", no_wrap=True)
        table.add_column("override")
        table.add_column("maintenance")
        for pool in pools:
            state = Text(pool.state, style="bold red" if pool.state == "drained" else "green")
            row: list[Any] = [pool.name, state]
            if drained:
                drain = pool.drain
                row += [self.cell(drain.since), drain.by, drain.reason] if drain else ["", "", ""]
            for klass in classes:
                capacity = pool.capacity(klass)
                row.append("" if capacity is None else str(capacity))
            over = pool.override
            row.append(f"{override_text(over.inventories)}\nby {over.by}, {self.cell(over.at)}"
                       if over else "")  # fmt: skip
            row.append("\n".join(f"{self.span(w.start, w.end)} {w.reason} "
                                 f"({amounts_text(w.amounts, 'all')})"
                                 for w in pool.maintenance))  # fmt: skip
            table.add_row(*row)
        self.out.print(table)

    def pool(self, pool: PoolState) -> None:
        """One pool's state after a drain or an undrain."""
        line = Text(f"{pool.name}  ") + Text(
            pool.state, style="bold red" if pool.state == "drained" else "green"
        )
        if pool.drain:
            line += Text(f"  since {when(pool.drain.since, self.zone)} by {pool.drain.by}"
                         + (f": {pool.drain.reason}" if pool.drain.reason else ""))  # fmt: skip
        self.out.print(line)

    def windows(self, windows: Sequence[MaintenanceWindow], pool: str) -> None:
        """A pool's maintenance windows, then the sessions each overlaps."""
        if not windows:
            self.out.print(Text(f"no maintenance windows on {pool}", style="dim"))
            return
        table = _table(f"maintenance on {pool}, times in {self.zone_name}")
        for name in ("window", "start", "end", "reason", "takes", "by", "overlaps"):
            table.add_column(name, **_column("session" if name == "window" else name))
        for w in windows:
            takes = amounts_text(w.amounts, "all")
            if w.complete is False:
                takes += f" (short of {', '.join(w.short) or 'some'})"
            table.add_row(w.uuid, self.cell(w.start), self.cell(w.end), w.reason, takes,
                          w.created_by, str(len(w.overlapping)))  # fmt: skip
        self.out.print(table)
        for w in windows:
            if w.overlapping:
                self.booked(w.overlapping, f"sessions in window {w.uuid}")

    def window(self, window: MaintenanceWindow, verb: str = "booked") -> None:
        """A window just booked (or deleted), and the sessions booked in it: they are not
        moved nor cancelled."""
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        takes = amounts_text(window.amounts)
        if window.complete is False:
            takes += f"; short of {', '.join(window.short) or 'some'}: booked sessions hold it"
        rows = [
            (verb, window.uuid), ("pool", window.pool),
            ("from", when(window.start, self.zone)), ("to", when(window.end, self.zone)),
            ("reason", window.reason), ("takes", takes),
            ("by", window.created_by), ("deleted", when(window.deleted, self.zone)),
        ]  # fmt: skip
        for key, value in rows:
            if value:
                grid.add_row(key, value)
        self.out.print(grid)
        if window.overlapping:
            self.booked(window.overlapping, "sessions booked in the window (not moved nor "
                                            "cancelled)")  # fmt: skip
        elif verb == "booked":
            self.out.print(Text("no sessions booked in the window", style="dim"))

    def booked(self, sessions: Sequence[BookedSession], title: str) -> None:
        table = _table(f"{title}, times in {self.zone_name}")
        for name in ("session", "phase", "owner", "start", "end", "takes"):
            table.add_column(name, **_column(name))
        for s in sessions:
            table.add_row(s.session, phase(s.phase), s.owner, self.cell(s.start),
                          self.cell(s.end), amounts_text(s.amounts, ""))  # fmt: skip
        self.out.print(table)

    def inventory(self, result: InventoryResult) -> None:
        """The inventories as they are (or would be, for a dry run), the fields overridden in
        bold, then what no longer fits."""
        set_fields = result.override.inventories if result.override else {}
        verb = "changed" if result.applied else "dry run: nothing changed; it would be"
        table = _table(f"{result.pool} {verb}")
        table.add_column("class")
        for _, header in INVENTORY_COLUMNS:
            table.add_column(header, justify="right", no_wrap=True)
        for klass in classes_of([result.inventories]):
            fields = result.inventories[klass]
            row: list[Any] = [klass]
            for name, _ in INVENTORY_COLUMNS:
                bold = "bold" if name in set_fields.get(klass, {}) else ""
                row.append(Text(number(fields.get(name)), style=bold))
            table.add_row(*row)
        self.out.print(table)
        if result.conflicts:
            self.conflicts(result.conflicts)
        else:
            self.out.print(Text("every booking fits", style="green"))

    def conflicts(self, conflicts: Sequence[InventoryConflict]) -> None:
        """Each session that would no longer fit: its booking, and the stretch of time where
        what is booked needs more than the new capacity."""
        table = _table(f"what no longer fits, times in {self.zone_name}")
        for name in ("session", "phase", "owner", "booked", "takes", "no longer fits"):
            table.add_column(name, **_column(name))
        for c in conflicts:
            short_of = (f"{c.resource_class}: {c.needed} booked, capacity {c.capacity}, "
                        f"{self.span(c.start, c.end)}")  # fmt: skip
            for s in c.sessions:
                takes = (f"{c.resource_class} {s.amount}" if s.amount is not None
                         else amounts_text(s.amounts, ""))  # fmt: skip
                table.add_row(s.session, phase(s.phase), s.owner, self.span(s.start, s.end),
                              takes, short_of)  # fmt: skip
        self.out.print(table)

    def audit(self, events: Sequence[AuditEvent]) -> None:
        if not events:
            self.out.print(Text("no events", style="dim"))
            return
        table = _table(f"audit log, times in {self.zone_name}")
        for name in ("at", "actor", "action", "subject", "detail"):
            table.add_column(name, **_column("start" if name == "at" else name))
        for e in events:
            table.add_row(self.cell(e.at, "%Y-%m-%d %H:%M:%S"), e.actor, e.action, e.subject,
                          e.detail)  # fmt: skip
        self.out.print(table)


def _table(title: str | None = None) -> Table:
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        padding=(0, 1),
        collapse_padding=True,
        pad_edge=False,
    )


def _where(session: Session) -> str:
    pools = ", ".join(session.pools)
    site = session.site
    return f"{site}: {pools}" if site and pools else site or pools


def _column(name: str) -> dict[str, Any]:
    if name in ("offer", "session", "offer set"):  # uuids: whole, always
        return {"no_wrap": True, "min_width": 36}
    if name in TIMES or name in WIDTHS:
        return {"no_wrap": True, "min_width": WIDTHS.get(name, 15)}
    if name in ("#", "cores", "memory"):
        return {"justify": "right", "no_wrap": True}
    return {}
