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

from .api import OfferSet, Session, message_text

PHASE_STYLES = {
    "OFFERED": "cyan", "ACCEPTED": "blue", "WAITING": "blue", "PREPARING": "yellow",
    "AVAILABLE": "green", "RUNNING": "bold green", "RELEASING": "yellow", "COMPLETED": "green",
    "FAILED": "bold red", "CANCELLED": "magenta", "REJECTED": "dim", "EXPIRED": "dim",
}  # fmt: skip
TIMES = {"start", "end", "expires", "created"}
HEADERS = {"duration": "for", "memory": "GiB"}
WIDTHS = {"phase": 9, "result": 6, "state": 6, "duration": 3, "expires": 8}
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
