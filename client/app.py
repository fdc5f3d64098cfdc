"""The commands: ``eb request``, ``accept``, ``reject``, ``cancel``, ``extend``, ``sessions``,
``offersets``, ``withdraw``, ``show``, ``watch``, ``logs``, ``login`` and ``logout``, over
one node or aggregator, and the admins' ``eb admin`` (pools, drain, maintenance, inventory,
the audit log) over one node (typer, rich).

Each command resolves its target (:mod:`.profiles`), makes its document (:mod:`.documents`),
calls the API (:mod:`.api`) and prints (:mod:`.output`); :func:`failures` turns what went wrong
into a message on standard error and the exit code the help lists."""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import click
import httpx
import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from . import documents, oidc, profiles
from .api import (
    Broker,
    ClientError,
    Conflicts,
    MaintenanceWindow,
    OfferSet,
    PoolState,
    Refused,
    ServerFailed,
    Session,
    Unreachable,
)
from .documents import FINAL, DocumentError
from .output import Format, Printer, phase, short, when

# exit codes
DONE, REFUSED, USAGE, UNREACHABLE, SERVER, INTERRUPTED = 0, 1, 2, 3, 4, 130
USAGE_STATUSES = {400, 413, 415, 422}  # the broker could not read what was sent
EXIT_CODES = """**Exit codes**

- 0: done.
- 1: refused: an offer set with result NO, the broker refusing the act (401, 403, 404, 409,
  429), a watched session that ended other than COMPLETED.
- 2: usage error: bad flags or document, or a 400 from the broker naming what it could not read.
- 3: the broker or the issuer cannot be reached (connection, DNS, TLS, timeout).
- 4: the broker failed (a 5xx, or an answer that is not the API's).
- 130: interrupted (Ctrl-C)."""

app = typer.Typer(
    name="eb",
    help="Book time slots on ebroker nodes and aggregators (the IVOA ExecutionBroker API).",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_show_locals=False,  # a crash's locals would include the token
    context_settings={"help_option_names": ["-h", "--help"]},
)

# --- the shared options -------------------------------------------------------------------------


@dataclass
class State:
    url: str | None
    token: str | None
    token_file: Path | None
    profile: str | None
    format: Format
    timeout: float
    env: Mapping[str, str]
    printer: Printer

    def target(self) -> profiles.Target:
        target = profiles.resolve(self.env, self.url, self.token, self.token_file, self.profile)
        if target.token_source.startswith("expired"):
            return self._refreshed(target)
        return target

    def _refreshed(self, target: profiles.Target) -> profiles.Target:
        stored = profiles.load_login(self.env, target.profile) or {}
        if not stored.get("refresh_token") or not stored.get("issuer"):
            raise Refused(f"the stored login expired: run `{program()} login` again", 401, {})
        with httpx.Client(timeout=self.timeout) as http:
            try:
                discovery = oidc.discover(str(stored["issuer"]), http)
                tokens = oidc.refresh(discovery, str(stored["client_id"]),
                                      str(stored["refresh_token"]), http)  # fmt: skip
            except oidc.LoginError as e:
                raise Refused(f"{e}: run `{program()} login` again", 401, {}) from None
            except httpx.HTTPError as e:
                raise Unreachable(f"cannot reach the issuer {stored['issuer']}: {e}") from None
        kept = {
            **stored,
            **oidc.stored(tokens, str(stored["issuer"]), str(stored["client_id"]), time.time()),
        }
        profiles.save_login(self.env, target.profile, kept)
        return profiles.resolve(self.env, self.url, self.token, self.token_file, self.profile)

    def broker(self) -> Broker:
        target = self.target()
        token = target.token.reveal() if target.token else None
        return Broker(target.url, token, timeout=self.timeout)


def state(ctx: typer.Context, output: Format | None = None) -> State:
    """The shared state, with a command's own ``--output`` (which may follow the command)."""
    s: State = ctx.find_root().obj
    if output is not None:
        s.format = s.printer.format = output
    return s


Output = Annotated[Format | None, typer.Option(
    "--output", "-o", help="table for people; json or yaml: the broker's documents, for "
                           "scripts.", show_default=False)]  # fmt: skip


def program() -> str:
    """The command's name as it was run (``eb``, ``python -m client``), for hints."""
    ctx = click.get_current_context(silent=True)
    return (ctx.find_root().info_name or "eb") if ctx else "eb"


@app.callback()
def common(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(
        "--url", "-u", help="The node or aggregator (else EBROKER_URL, the profile's url, "
                            "http://127.0.0.1:8080).", show_default=False)] = None,
    token: Annotated[str | None, typer.Option(
        "--token", help="A bearer token, never printed (else EBROKER_TOKEN, the token file, "
                        "the profile's, the stored login).", show_default=False)] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", help="A file whose first line is the bearer token (else "
                             "EBROKER_TOKEN_FILE).", show_default=False)] = None,
    profile: Annotated[str | None, typer.Option(
        "--profile", "-p", help="A profile of the profile file (else EBROKER_PROFILE, the "
                                "file's default); the file is EBROKER_CLIENT_CONFIG, else "
                                "~/.config/ebroker/client.yaml.", show_default=False)] = None,
    output: Annotated[Format, typer.Option(
        "--output", "-o", help="table for people; json or yaml: the broker's documents, "
                               "for scripts.")] = Format.table,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 30.0,
) -> None:  # fmt: skip
    """Book time slots on ebroker nodes and aggregators (the IVOA ExecutionBroker API)."""
    ctx.obj = State(url, token, token_file, profile, output, timeout, dict(os.environ),
                    Printer(output))  # fmt: skip


@contextmanager
def failures(printer: Printer) -> Iterator[None]:
    """What went wrong, as a message and the exit code (see EXIT_CODES)."""
    try:
        yield
    except (DocumentError, profiles.ProfileError) as e:
        printer.error(str(e))
        raise typer.Exit(USAGE) from None
    except Refused as e:
        printer.error(str(e))
        raise typer.Exit(USAGE if e.status in USAGE_STATUSES else REFUSED) from None
    except Unreachable as e:
        printer.error(str(e))
        raise typer.Exit(UNREACHABLE) from None
    except ServerFailed as e:
        printer.error(str(e))
        raise typer.Exit(SERVER) from None
    except oidc.LoginError as e:
        printer.error(str(e))
        raise typer.Exit(REFUSED) from None
    except ClientError as e:  # pragma: no cover - every ClientError is one of the above
        printer.error(str(e))
        raise typer.Exit(SERVER) from None


@contextmanager
def calling(ctx: typer.Context, output: Format | None = None) -> Iterator[tuple[Broker, Printer]]:
    s = state(ctx, output)
    with failures(s.printer):
        broker = s.broker()
        try:
            yield broker, s.printer
        finally:
            broker.close()


# --- offers -------------------------------------------------------------------------------------


@app.command()
def request(
    ctx: typer.Context,
    file: Annotated[str | None, typer.Argument(
        help="A request document (YAML or JSON; - for standard input). Flags amend it.",
        show_default=False)] = None,
    image: Annotated[str | None, typer.Option(help="The container image to run.")] = None,
    singularity: Annotated[bool, typer.Option(
        help="The image is a Singularity/Apptainer one (else a Docker/OCI one).")] = False,
    notebook: Annotated[str | None, typer.Option(
        help="A Jupyter notebook's URL to run instead of an image.")] = None,
    command: Annotated[str | None, typer.Option(
        help="The command in the container, split as a shell would: 'sh -c \"echo hi\"'.")] = None,
    env: Annotated[list[str] | None, typer.Option(
        "--env", "-e", help="NAME=VALUE in the container's environment (repeat it).")] = None,
    cores: Annotated[str | None, typer.Option(help="Cores: N, MIN..MAX, MIN.. or ..MAX.")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory in GiB: N or MIN..MAX.")] = None,
    duration: Annotated[str | None, typer.Option(
        help="How long: 2h, 30m, 90s, 1h30m or PT2H (else the node's default).")] = None,
    window: Annotated[list[str] | None, typer.Option(
        help="When it may start, in your zone: 'tomorrow 09:00..12:00', 'now..+3h', "
             "'friday 14:00..18:00', or an ISO-8601 interval; repeat for several "
             "(else as soon as possible).")] = None,
    name: Annotated[str | None, typer.Option(help="A name for the session.")] = None,
    probe: Annotated[bool, typer.Option(
        help="Only ask when it could start: the offers hold nothing.")] = False,
    project: Annotated[str | None, typer.Option(help="The project to charge.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the document it would send, and send nothing.")] = False,
    output: Output = None,
) -> None:  # fmt: skip
    """Ask for offers, and print them.

    From a request FILE, or flags, or both (the flags amend the file). The offers are held
    until they expire: accept one with `accept OFFER`."""
    s = state(ctx, output)
    with failures(s.printer):
        doc = build_request(file, image, singularity, notebook, command, env or [], cores,
                            memory, duration, window or [])  # fmt: skip
        if name is not None:
            doc = documents.request_document(doc, name=name)
        if dry_run:
            target = s.target()
            s.printer.note(f"would POST {target.url}/requests (nothing sent):")
            if s.format is Format.table:
                s.printer.format = Format.yaml
            s.printer.document(doc)
            return
    with calling(ctx, output) as (broker, printer):
        offer_set = broker.request_offers(doc, probe=probe, project=project)
        show_offer_set(printer, offer_set)
        if offer_set.result != "YES":
            raise typer.Exit(REFUSED)


def build_request(
    file: str | None, image: str | None, singularity: bool, notebook: str | None,
    command: str | None, env: list[str], cores: str | None, memory: str | None,
    duration: str | None, windows: list[str], now: datetime | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The request document from the command's arguments (a :class:`DocumentError` when they
    make none)."""
    base = None
    if file is not None:
        base = documents.load_document(read_file(file), "standard input" if file == "-" else file)
    moment = now or datetime.now(UTC)
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    try:
        words = shlex.split(command) if command is not None else []
    except ValueError as e:
        raise DocumentError(f"--command {command!r}: {e}") from None
    return documents.request_document(
        base,
        image=image,
        executable="singularity" if singularity else "docker",
        notebook=notebook,
        command=words,
        environment=documents.parse_environment(env),
        cores=documents.parse_range(cores, "--cores") if cores is not None else None,
        memory=documents.parse_range(memory, "--memory") if memory is not None else None,
        duration=documents.parse_duration(duration) if duration is not None else None,
        windows=[documents.parse_window(w, moment, zone) for w in windows],
    )


def read_file(file: str) -> str:
    if file == "-":
        return sys.stdin.read()
    try:
        return Path(file).read_text()
    except OSError as e:
        raise DocumentError(f"cannot read {file}: {e.strerror or e}") from None


def show_offer_set(printer: Printer, offer_set: OfferSet) -> None:
    if not printer.human:
        printer.document(offer_set.raw)
        return
    if offer_set.result == "YES" and offer_set.offers:
        printer.offers(offer_set)
        printer.messages(offer_set.messages, minimum="WARN")
        printer.note(f"accept one with: {program()} accept OFFER")
    else:
        printer.messages(offer_set.messages)
        printer.note(f"no offers (result {offer_set.result or 'missing'})", style="bold")


@app.command()
def accept(
    ctx: typer.Context,
    offer: Annotated[str, typer.Argument(help="The offer's uuid.")],
    output: Output = None,
) -> None:
    """Accept an offer: it is booked, and its sibling offers are rejected."""
    with calling(ctx, output) as (broker, printer):
        session = broker.update(offer, documents.phase_update("ACCEPTED"))
        show_session(printer, session)
        if printer.human:
            printer.note(f"follow it with: {program()} watch {session.uuid}")


@app.command()
def reject(
    ctx: typer.Context,
    offer: Annotated[str, typer.Argument(help="The offer's uuid.")],
    output: Output = None,
) -> None:
    """Reject one offer (its hold is freed; its siblings stay open)."""
    with calling(ctx, output) as (broker, printer):
        changed(printer, broker.update(offer, documents.phase_update("REJECTED")))


@app.command()
def withdraw(
    ctx: typer.Context,
    offerset: Annotated[str, typer.Argument(help="The offer set's uuid.")],
    output: Output = None,
) -> None:
    """Withdraw an offer set: reject every offer of it still open, in one call."""
    with calling(ctx, output) as (broker, printer):
        offer_set = broker.withdraw(offerset, documents.phase_update("REJECTED"))
        if not printer.human:
            printer.document(offer_set.raw)
            return
        printer.messages(offer_set.messages, minimum="WARN")
        for offer in offer_set.offers:
            printer.out.print(Text(f"{offer.uuid}  ") + phase(offer.phase))


# --- sessions -----------------------------------------------------------------------------------


@app.command()
def cancel(
    ctx: typer.Context,
    session: Annotated[str, typer.Argument(help="The session's uuid.")],
    output: Output = None,
) -> None:
    """Cancel a session (or withdraw one offer): its work is stopped and its booking freed."""
    with calling(ctx, output) as (broker, printer):
        changed(printer, broker.update(session, documents.phase_update("CANCELLED")))


@app.command()
def extend(
    ctx: typer.Context,
    session: Annotated[str, typer.Argument(help="The session's uuid.")],
    by: Annotated[str, typer.Argument(help="How much longer: 30m, 1h, PT30M…")],
    output: Output = None,
) -> None:
    """Move an accepted session's booked end later, when its pools have the room."""
    s = state(ctx, output)
    with failures(s.printer):
        update = documents.extend_update(documents.parse_duration(by))
    with calling(ctx, output) as (broker, printer):
        show_session(printer, broker.update(session, update))


@app.command()
def show(
    ctx: typer.Context,
    session: Annotated[str, typer.Argument(help="The session's uuid.")],
    output: Output = None,
) -> None:
    """One session: its phase, booked times, components, connectors and messages."""
    with calling(ctx, output) as (broker, printer):
        show_session(printer, broker.session(session))


def show_session(printer: Printer, session: Session) -> None:
    if printer.human:
        printer.session(session)
    else:
        printer.document(session.raw)


def changed(printer: Printer, session: Session) -> None:
    if printer.human:
        printer.out.print(Text(f"{session.uuid}  ") + phase(session.phase))
    else:
        printer.document(session.raw)


def instant(text: str | None, flag: str) -> str | None:
    if text is None:
        return None
    zone = datetime.now().astimezone().tzinfo
    assert zone is not None
    try:
        return documents.utc_text(documents.parse_moment(text, datetime.now(UTC), zone))
    except DocumentError as e:
        raise DocumentError(f"{flag}: {e}") from None


PAGE = 200  # the most a page holds (openapi: limit)


@app.command()
def sessions(
    ctx: typer.Context,
    phase_: Annotated[list[str] | None, typer.Option(
        "--phase", help="Only these phases (repeat it, or a comma list).")] = None,
    from_: Annotated[str | None, typer.Option(
        "--from", help="Only sessions booked to end after this: 'today', "
                       "'2026-12-02 09:00'.")] = None,
    to: Annotated[str | None, typer.Option(
        help="Only sessions booked to start before this.")] = None,
    pool: Annotated[list[str] | None, typer.Option(
        help="Only these pools, as PLATFORM/POOL (repeat it).")] = None,
    owner: Annotated[str | None, typer.Option(
        help="(admins) Only this owner's, as sessions record it (issuer:subject).")] = None,
    page_size: Annotated[int, typer.Option(
        min=1, max=PAGE, help="Items asked for per page (every page is read).")] = PAGE,
    output: Output = None,
) -> None:  # fmt: skip
    """Your sessions (everyone's, for admins), offers too, by booked start."""
    s = state(ctx, output)
    with failures(s.printer):
        filters = {
            "phase": ",".join(documents.parse_phases(phase_ or [])) or None,
            "from": instant(from_, "--from"), "to": instant(to, "--to"),
            "pool": pool or None, "owner": owner, "limit": page_size,
        }  # fmt: skip
    with calling(ctx, output) as (broker, printer):
        page = broker.sessions(**filters)
        printer.messages(page.messages, minimum="WARN")
        if printer.human:
            printer.sessions(page.items)
        else:
            printer.document(page.items)


@app.command()
def offersets(
    ctx: typer.Context,
    state_: Annotated[str | None, typer.Option(
        "--state", help="open (an offer can still be accepted) or closed.")] = None,
    result: Annotated[str | None, typer.Option(help="YES or NO.")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Made at or after this.")] = None,
    to: Annotated[str | None, typer.Option(help="Made before this.")] = None,
    owner: Annotated[str | None, typer.Option(help="(admins) Only this owner's.")] = None,
    page_size: Annotated[int, typer.Option(
        min=1, max=PAGE, help="Items asked for per page.")] = PAGE,
    output: Output = None,
) -> None:  # fmt: skip
    """Your offer sets (everyone's, for admins), oldest first."""
    s = state(ctx, output)
    with failures(s.printer):
        if state_ is not None and state_.lower() not in ("open", "closed"):
            raise DocumentError(f"--state {state_!r}: open or closed")
        if result is not None and result.upper() not in ("YES", "NO"):
            raise DocumentError(f"--result {result!r}: YES or NO")
        filters = {
            "state": state_.lower() if state_ else None,
            "result": result.upper() if result else None,
            "from": instant(from_, "--from"), "to": instant(to, "--to"),
            "owner": owner, "limit": page_size,
        }  # fmt: skip
    with calling(ctx, output) as (broker, printer):
        page = broker.offer_sets(**filters)
        printer.messages(page.messages, minimum="WARN")
        if printer.human:
            printer.offer_sets(page.items)
        else:
            printer.document(page.items)


# --- following a session ------------------------------------------------------------------------


def instant_of(stamp: str) -> datetime | None:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None
    except ValueError:
        return None


def milestones(session: Session) -> list[datetime]:
    """The booked instants at which the session's phase should change."""
    found = []
    prep, _ = session.schedule("preparing")
    release, _ = session.schedule("releasing")
    start = instant_of(session.start)
    for stamp in (prep, release):
        moment = instant_of(stamp)
        if moment is not None:
            found.append(moment)
    if start is not None:
        found.append(start)
        span = booked_span(session)
        if span is not None:
            found.append(start + span)
    return sorted(found)


def booked_span(session: Session) -> timedelta | None:
    try:
        return documents.parse_duration(session.duration) if session.duration else None
    except DocumentError:
        return None


def next_poll(delay: float, session: Session, now: datetime, floor: float) -> float:
    """How long to wait: the back-off delay, or less when a booked change comes sooner."""
    for moment in milestones(session):
        ahead = (moment - now).total_seconds()
        if ahead > 0:
            return max(floor, min(delay, ahead + 0.5))
    return delay


def describe(session: Session, now: datetime) -> tuple[str, float | None, float | None]:
    """The progress line: a text, and (done, total) seconds for the bar when it has one."""
    start, span = instant_of(session.start), booked_span(session)
    prep = instant_of(session.schedule("preparing")[0])
    if session.phase in ("ACCEPTED", "WAITING") and (prep or start):
        begin = prep or start
        assert begin is not None
        return f"{session.phase}: preparation in {countdown(begin - now)}", None, None
    if session.phase == "PREPARING" and start:
        return f"PREPARING: starts in {countdown(start - now)}", None, None
    if session.phase in ("AVAILABLE", "RUNNING") and start and span:
        done = min(max((now - start).total_seconds(), 0.0), span.total_seconds())
        return (
            f"{session.phase}: ends in {countdown(start + span - now)}",
            done,
            span.total_seconds(),
        )
    return session.phase, None, None


def countdown(span: timedelta) -> str:
    seconds = max(int(span.total_seconds()), 0)
    return short(documents.iso_duration(timedelta(seconds=seconds))) if seconds else "now"


def follow(
    broker: Broker,
    uuid: str,
    printer: Printer,
    interval: float,
    most: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Session:
    """Poll the session until its phase is final, a line per change and a live progress line
    (on a terminal), backing off from ``interval`` to ``most`` seconds while nothing changes,
    and waking at the next booked change. Connectors are printed once, when it becomes
    AVAILABLE or RUNNING. Six failed polls in a row give up."""
    lines = printer.out if printer.human else printer.err
    seen: str | None = None
    shown = False
    delay, failed = interval, 0
    progress = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
        console=printer.err, transient=True, disable=not printer.err.is_terminal,
    )  # fmt: skip
    with progress:
        task = progress.add_task("", total=None)
        while True:
            try:
                session = broker.session(uuid)
            except (Unreachable, ServerFailed) as e:
                failed += 1
                if failed > 5:
                    raise
                progress.console.print(Text(f"retrying: {e}", style="yellow"))
                sleep(min(most, interval * 2**failed))
                continue
            failed = 0
            now = datetime.now(UTC)
            if session.phase != seen:
                lines.print(Text(f"{when(now.isoformat(), printer.zone)}  ") + phase(session.phase))
                seen, delay = session.phase, interval
            else:
                delay = min(most, delay * 1.5)
            if session.phase in ("AVAILABLE", "RUNNING") and session.connectors and not shown:
                printer.connectors(session.connectors, console=lines)
                shown = True
            text, done, total = describe(session, now)
            progress.update(task, description=text, completed=done or 0, total=total)
            if session.phase in FINAL:
                return session
            sleep(next_poll(delay, session, now, floor=min(interval, 0.5)))


@app.command()
def watch(
    ctx: typer.Context,
    session: Annotated[str, typer.Argument(help="The session's uuid.")],
    interval: Annotated[float, typer.Option(
        min=0.1, help="Seconds between polls at first, and after each change.")] = 1.0,
    most: Annotated[float, typer.Option(
        "--max-interval", min=0.1, help="The most seconds between polls, backing off.")] = 15.0,
    output: Output = None,
) -> None:  # fmt: skip
    """Follow a session's phase until it ends.

    Prints a line per phase and the connectors once it is AVAILABLE. Exits 0 when it ends
    COMPLETED, 1 when it ends otherwise; Ctrl-C stops watching, not the session."""
    with calling(ctx, output) as (broker, printer):
        try:
            last = follow(broker, session, printer, interval, max(most, interval))
        except KeyboardInterrupt:
            printer.note(f"stopped watching {session}; the session goes on")
            raise typer.Exit(INTERRUPTED) from None
        if not printer.human:
            printer.document(last.raw)
        else:
            printer.messages([m for m in last.messages if m.get("level") in ("ERROR", "WARN")])
        if last.phase != "COMPLETED":
            raise typer.Exit(REFUSED)


def new_output(before: str, now: str) -> str:
    """What ``now`` adds to ``before``. The node keeps the last MiB of the output, so once it is
    that long ``now`` is a tail of ``before`` and then the new text: the longest such tail is
    found from where ``now``'s first line (or 256 characters) occurs in ``before``."""
    if now.startswith(before):
        return now[len(before) :]
    anchor = now[: min(256, now.find("\n") + 1 or len(now))]
    at = before.find(anchor) if anchor else -1
    while at >= 0:
        if now.startswith(before[at:]):
            return now[len(before) - at :]
        at = before.find(anchor, at + 1)
    return now


@app.command()
def logs(
    ctx: typer.Context,
    session: Annotated[str, typer.Argument(help="The session's uuid.")],
    follow_: Annotated[bool, typer.Option(
        "--follow", "-f", help="Keep printing new output until the session ends.")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between polls.")] = 2.0,
) -> None:  # fmt: skip
    """The session's output so far (its container's or job's stdout and stderr)."""
    with calling(ctx) as (broker, _):
        text = broker.logs(session)
        write(text)
        if not follow_:
            return
        try:
            while True:
                ended = broker.session(session).phase in FINAL
                later = broker.logs(session)
                write(new_output(text, later))
                text = later
                if ended:
                    return
                time.sleep(interval)
        except KeyboardInterrupt:
            raise typer.Exit(INTERRUPTED) from None


def write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# --- login --------------------------------------------------------------------------------------


@app.command()
def login(
    ctx: typer.Context,
    issuer: Annotated[str | None, typer.Option(
        envvar="EBROKER_ISSUER", help="The OIDC issuer (else the profile's issuer).")] = None,
    client_id: Annotated[str | None, typer.Option(
        envvar="EBROKER_CLIENT_ID", help="The OAuth client id (else the profile's, else "
                                         "ebroker-cli).")] = None,
    scope: Annotated[str | None, typer.Option(
        help="The scopes to ask for (else the profile's, else 'openid').")] = None,
) -> None:  # fmt: skip
    """Log in with a device code, and keep the token for the profile.

    The OAuth 2.0 device authorization grant (RFC 8628): open the address it prints and enter
    the code; the token is stored for the profile, readable by you alone, and never printed."""
    s = state(ctx)
    with failures(s.printer):
        target = profiles.resolve(s.env, s.url, None, None, s.profile)
        issuer = issuer or target.settings.get("issuer")
        if not issuer:
            raise DocumentError("no issuer: give --issuer, EBROKER_ISSUER or the profile's issuer")
        client = str(client_id or target.settings.get("client_id") or "ebroker-cli")
        scopes = scope or target.settings.get("scope") or "openid"
        try:
            with httpx.Client(timeout=s.timeout) as http:
                discovery = oidc.discover(str(issuer), http)
                device = oidc.start(discovery, client, str(scopes), http)
                where = device.verification_uri_complete or device.verification_uri
                s.printer.note(f"open {where}")
                s.printer.note(f"and enter the code {device.user_code}", style="bold")
                tokens = oidc.poll(discovery, client, device, http)
        except httpx.HTTPError as e:
            raise Unreachable(f"cannot reach the issuer {issuer}: {e}") from None
        except KeyboardInterrupt:
            raise typer.Exit(INTERRUPTED) from None
        path = profiles.save_login(
            s.env, target.profile, oidc.stored(tokens, str(issuer), client, time.time())
        )
        s.printer.note(f"logged in; the token is stored in {path} (profile {target.profile})")


@app.command()
def logout(ctx: typer.Context) -> None:
    """Forget the token login stored for the profile."""
    s = state(ctx)
    with failures(s.printer):
        target = profiles.resolve(s.env, s.url, None, None, s.profile)
        gone = profiles.delete_login(s.env, target.profile)
        s.printer.note(f"logged out of profile {target.profile}" if gone else
                       f"no stored login for profile {target.profile}")  # fmt: skip


# --- admin controls -----------------------------------------------------------------------------

admin = typer.Typer(
    name="admin",
    help="(admins) Drain pools, book maintenance, change inventories, read the audit log.",
    epilog="A pool is PLATFORM/POOL, as sessions name it (sim/main). Only members of the "
    "node's auth.admin_groups may change pools or read the log (anyone else: exit 1, a 403); "
    "`pools` is for everyone. An aggregator has no pools: ask the node.\n\n" + EXIT_CODES,
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
maintenance_app = typer.Typer(
    name="maintenance",
    help="(admins) A pool's maintenance windows: list, book, delete.",
    epilog=EXIT_CODES,
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(admin)
admin.add_typer(maintenance_app)

PoolArgument = Annotated[str, typer.Argument(
    help="The pool, as PLATFORM/POOL: sim/main.", show_default=False)]  # fmt: skip
NOT_ADMIN = "admin commands need a caller in one of the node's auth.admin_groups"


@contextmanager
def administering(
    ctx: typer.Context, output: Format | None = None
) -> Iterator[tuple[Broker, Printer]]:
    """:func:`calling`, with what a 403 means here."""
    with calling(ctx, output) as (broker, printer):
        try:
            yield broker, printer
        except Refused as e:
            if e.status != 403:
                raise
            raise Refused(f"{e}\n  {NOT_ADMIN}", e.status, e.problem) from None


def pool_of(printer: Printer, text: str) -> documents.PoolName:
    with failures(printer):
        return documents.parse_pool(text)


def show_pool(printer: Printer, pool: PoolState) -> None:
    if printer.human:
        printer.pool(pool)
    else:
        printer.document(pool.raw)


def show_window(printer: Printer, window: MaintenanceWindow, verb: str) -> None:
    if printer.human:
        printer.window(window, verb)
    else:
        printer.document(window.raw)


@admin.command()
def pools(ctx: typer.Context, output: Output = None) -> None:
    """The node's pools: open or drained (since when, by whom, why), capacity per class, an
    admin's override and maintenance windows (GET /node: for everyone)."""
    with calling(ctx, output) as (broker, printer):
        found = broker.pools()
        if printer.human:
            printer.pools(found)
        else:
            printer.document([p.raw for p in found])


@admin.command()
def drain(
    ctx: typer.Context,
    pool: PoolArgument,
    reason: Annotated[str, typer.Option(
        help="Why: everyone sees it in GET /node and in the NO of a request.",
        show_default=False)],
    output: Output = None,
) -> None:  # fmt: skip
    """Drain a pool: no new sessions (no offers, direct sessions, extensions); what is booked
    stays and runs. Draining again sets a new reason."""
    s = state(ctx, output)
    name = pool_of(s.printer, pool)
    with failures(s.printer):
        if not reason.strip():
            raise DocumentError("--reason: say why (everyone sees it)")
    with administering(ctx, output) as (broker, printer):
        show_pool(printer, broker.drain(str(name), reason))


@admin.command()
def undrain(ctx: typer.Context, pool: PoolArgument, output: Output = None) -> None:
    """Open a drained pool to new sessions again (an open pool stays open)."""
    name = pool_of(state(ctx, output).printer, pool)
    with administering(ctx, output) as (broker, printer):
        show_pool(printer, broker.undrain(str(name)))


@maintenance_app.command("list")
def maintenance_list(ctx: typer.Context, pool: PoolArgument, output: Output = None) -> None:
    """A pool's maintenance windows not yet over, by start, and the sessions each overlaps."""
    name = pool_of(state(ctx, output).printer, pool)
    with administering(ctx, output) as (broker, printer):
        windows = broker.maintenance(str(name))
        if printer.human:
            printer.windows(windows, str(name))
        else:
            printer.document([w.raw for w in windows])


@maintenance_app.command("book")
def maintenance_book(
    ctx: typer.Context,
    pool: PoolArgument,
    from_: Annotated[str, typer.Option(
        "--from", help="When it starts, in your zone: 'tomorrow 08:00', '2027-01-07 08:00', "
                       "'+1h'.", show_default=False)],
    to: Annotated[str, typer.Option(
        help="When it ends: '12:00' (on the start's day), '+4h' (after the start), "
             "'2027-01-07 12:00'.", show_default=False)],
    reason: Annotated[str, typer.Option(
        help="Why: everyone sees it in GET /node.", show_default=False)],
    cores: Annotated[int | None, typer.Option(
        min=0, help="Cores to take (else all of the pool's capacity, every class).",
        show_default=False)] = None,
    memory: Annotated[int | None, typer.Option(
        min=0, help="GiB of memory to take.", show_default=False)] = None,
    storage: Annotated[int | None, typer.Option(
        min=0, help="GiB of storage to take.", show_default=False)] = None,
    gpus: Annotated[int | None, typer.Option(
        min=0, help="GPUs to take.", show_default=False)] = None,
    output: Output = None,
) -> None:  # fmt: skip
    """Book a maintenance window on a pool: offers avoid it from now on. Sessions already
    booked in it are not moved nor cancelled: they are listed, and the window takes what they
    leave (and what they free later)."""
    s = state(ctx, output)
    name = pool_of(s.printer, pool)
    with failures(s.printer):
        zone = datetime.now().astimezone().tzinfo
        assert zone is not None
        amounts = {"cores": cores, "memory": memory, "storage": storage, "gpus": gpus}
        doc = documents.maintenance_document(from_, to, reason, amounts, datetime.now(UTC), zone)
    with administering(ctx, output) as (broker, printer):
        show_window(printer, broker.book_maintenance(str(name), doc), "booked")


@maintenance_app.command("delete")
def maintenance_delete(
    ctx: typer.Context,
    pool: PoolArgument,
    window: Annotated[str, typer.Argument(help="The window's uuid.", show_default=False)],
    output: Output = None,
) -> None:
    """Delete a maintenance window: its capacity is free again."""
    name = pool_of(state(ctx, output).printer, pool)
    with administering(ctx, output) as (broker, printer):
        show_window(printer, broker.delete_maintenance(str(name), window), "deleted")


@admin.command()
def inventory(
    ctx: typer.Context,
    pool: PoolArgument,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="CLASS=TOTAL (cores=12) or CLASS.FIELD=VALUE (memory.reserved=4; the "
                      "fields: total, reserved, allocation_ratio, min_unit, max_unit, "
                      "step_size); repeat it.", show_default=False)] = None,
    reset: Annotated[list[str] | None, typer.Option(
        help="CLASS: back to the platform's values (repeat it).", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Only check: print what would no longer fit; nothing changes.")] = False,
    force: Annotated[bool, typer.Option(
        help="Apply even where booked sessions no longer fit (they keep their bookings).")]
        = False,
    reason: Annotated[str | None, typer.Option(help="Why (kept with the override).")] = None,
    output: Output = None,
) -> None:  # fmt: skip
    """Change a pool's inventory, checked against what is booked. A change that booked
    sessions would no longer fit is refused (exit 1, the sessions listed) unless --force;
    --dry-run lists them and exits 0. Kept over restarts, on top of the platform's values."""
    s = state(ctx, output)
    name = pool_of(s.printer, pool)
    with failures(s.printer):
        doc = documents.inventory_document(set_ or [], reset or [], dry_run, force, reason)
    with administering(ctx, output) as (broker, printer):
        try:
            result = broker.change_inventory(str(name), doc)
        except Conflicts as e:
            if printer.human:
                printer.conflicts(e.conflicts)
            else:
                printer.document(e.problem)
            printer.error(f"{e}\n  check with --dry-run; --force applies it anyway")
            raise typer.Exit(REFUSED) from None
        if printer.human:
            printer.inventory(result)
        else:
            printer.document(result.raw)


@admin.command()
def audit(
    ctx: typer.Context,
    actor: Annotated[str | None, typer.Option(
        help="Only this caller's acts, as sessions record owners (issuer:subject, "
             "basic:NAME).", show_default=False)] = None,
    action: Annotated[list[str] | None, typer.Option(
        help="Only these actions (repeat it, or a comma list): "
             + ", ".join(documents.AUDIT_ACTIONS) + ".", show_default=False)] = None,
    subject: Annotated[str | None, typer.Option(
        help="Only what changed this: session:UUID, offerset:UUID, pool:sim/main or "
             "sim/main.", show_default=False)] = None,
    from_: Annotated[str | None, typer.Option(
        "--from", help="Only events at or after this: '-2h', 'today', '2026-12-02 09:00'.",
        show_default=False)] = None,
    to: Annotated[str | None, typer.Option(
        help="Only events before this.", show_default=False)] = None,
    limit: Annotated[int, typer.Option(
        min=1, max=PAGE, help="Events per page.")] = 50,
    every: Annotated[bool, typer.Option(
        "--all", help="Every page (else the first, oldest first).")] = False,
    output: Output = None,
) -> None:  # fmt: skip
    """The node's audit log, oldest first: who accepted, cancelled, extended, drained, booked
    maintenance, changed inventories… and when."""
    s = state(ctx, output)
    with failures(s.printer):
        filters = {
            "actor": actor, "action": documents.parse_actions(action or []) or None,
            "subject": documents.parse_subject(subject) if subject is not None else None,
            "from": instant(from_, "--from"), "to": instant(to, "--to"), "limit": limit,
        }  # fmt: skip
    with administering(ctx, output) as (broker, printer):
        log = broker.audit(every=every, **filters)
        if printer.human:
            printer.audit(log.events)
        else:
            printer.document(log.raw)
        if log.more:
            printer.note(f"more events after these: --all reads every page, --limit up to {PAGE}")


def main() -> None:
    app()
