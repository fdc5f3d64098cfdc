"""The e-mail of each event: a subject and a text body, from templates the site may replace.

A template is a file ``<name>.txt`` (``accepted``, ``preparing``, ``ready``, ``ending_soon``,
``ended``, ``failed``, ``maintenance``): its first line is ``Subject: ...``, then a blank
line, then the body. The built-in ones are beside this module; a site's directory
(``notifications.email.templates``) replaces those it has. They run in jinja2's sandbox, with
undefined names an error, on a :class:`MailContext`; every template is compiled and tried on
a sample at start-up, so a broken one stops the node there, not at its first e-mail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from ..schedule import instant
from .events import EVENT_TYPES, Event, MaintenanceNotice

BUILT_IN = Path(__file__).parent / "templates"
MAX_TEMPLATE_BYTES = 64 * 1024
MAX_SUBJECT = 200


class TemplateProblem(ValueError):
    """A template that cannot be used; the message names its file."""


def template_name(event: str) -> str:
    return event.removeprefix("session.")


@dataclass(frozen=True)
class MailContext:
    """What a template may use: ``event``, ``session`` (``uuid``, ``url``, ``name``,
    ``phase``), ``site``, ``preparing``, ``start``, ``end`` (ISO-8601 instants),
    ``connectors`` (ready), ``maintenance`` (``start``, ``end``, ``reason``), ``reason``."""

    event: str
    session: dict[str, Any]
    site: str
    preparing: str
    start: str
    end: str
    connectors: list[dict[str, Any]] = field(default_factory=list)
    maintenance: dict[str, Any] | None = None
    reason: str | None = None

    @classmethod
    def of(cls, event: Event, base_url: str) -> MailContext:
        m = event.maintenance
        return cls(
            event=event.type,
            session={"uuid": event.session, "url": f"{base_url}/sessions/{event.session}",
                     "name": event.name, "phase": event.phase},
            site=event.site,
            preparing=instant(event.prepare_at), start=instant(event.start_at),
            end=instant(event.end_at), connectors=list(event.connectors),
            maintenance=None if m is None else {"window": m.window, "start": instant(m.start),
                                                "end": instant(m.end), "reason": m.reason},
            reason=event.reason,
        )  # fmt: skip


@dataclass(frozen=True)
class Mail:
    subject: str
    body: str


class Templates:
    """The compiled template of every event."""

    def __init__(self, directory: Path | None = None):
        self.environment = SandboxedEnvironment(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
        )
        self._compiled = {}
        sources = {template_name(e): BUILT_IN / f"{template_name(e)}.txt" for e in EVENT_TYPES}
        if directory is not None:
            sources.update(_site_templates(directory, set(sources)))
        for name, path in sources.items():
            self._compiled[name] = self._compile(path)
        for event in EVENT_TYPES:  # each tried on a sample: a bad name fails now
            self.render(sample(event))

    def _compile(self, path: Path) -> tuple[Path, Any, Any]:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise TemplateProblem(f"{path}: cannot read it ({exc.strerror})") from None
        if len(raw) > MAX_TEMPLATE_BYTES:
            raise TemplateProblem(f"{path}: larger than {MAX_TEMPLATE_BYTES} bytes")
        text = raw.decode("utf-8", errors="replace")
        head, blank, body = text.partition("\n\n")
        if not head.startswith("Subject:") or "\n" in head or not blank:
            raise TemplateProblem(f"{path}: must start with one 'Subject: ...' line, then a "
                                  "blank line, then the body")  # fmt: skip
        try:
            subject = self.environment.from_string(head.removeprefix("Subject:").strip())
            compiled = self.environment.from_string(body)
        except TemplateError as exc:
            line = getattr(exc, "lineno", None)
            raise TemplateProblem(f"{path}" + (f", line {line}" if line else "")
                                  + f": {exc}") from None  # fmt: skip
        return path, subject, compiled

    def render(self, context: MailContext) -> Mail:
        path, subject, body = self._compiled[template_name(context.event)]
        values = {k: getattr(context, k) for k in context.__dataclass_fields__}
        try:
            title = " ".join(subject.render(values).split())[:MAX_SUBJECT]
            text = body.render(values)
        except TemplateError as exc:
            raise TemplateProblem(f"{path}: {type(exc).__name__}: {exc}") from None
        return Mail(title, text)


def _site_templates(directory: Path, names: set[str]) -> dict[str, Path]:
    if not directory.is_dir():
        raise TemplateProblem(f"{directory}: not a directory")
    found = {}
    for path in sorted(directory.iterdir()):
        if path.suffix != ".txt":
            continue
        if path.stem not in names:
            raise TemplateProblem(f"{path}: no event is called {path.stem!r}; the templates "
                                  f"are {', '.join(sorted(names))} (.txt)")  # fmt: skip
        found[path.stem] = path
    return found


def sample(event: str) -> MailContext:
    """A context with every field filled in, to try a template on."""
    return MailContext.of(
        Event(
            type=event, at=1_800_000_000, session="00000000-0000-4000-8000-000000000000",  # type: ignore[arg-type]
            phase="RUNNING", name="sample", site="site", prepare_at=1_800_000_000,
            start_at=1_800_000_060, end_at=1_800_003_660,
            connectors=[{"kind": "urn:ebroker:connector:http", "url": "https://example.org/"}],
            maintenance=MaintenanceNotice(window="w", start=1_800_000_000, end=1_800_003_600,
                                          reason="sample"),
            reason="sample",
        ),
        "https://broker.example.org",
    )  # fmt: skip
