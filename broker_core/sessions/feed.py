"""GET /sessions.ics: the caller's booked sessions as an iCalendar feed (RFC 5545), so that
their bookings show up in their own calendar app.

One VEVENT per booked session (accepted, in any phase after: offers still open, rejected or
expired are no bookings), its booked window as DTSTART/DTEND in UTC, the session's link as URL,
and STATUS CONFIRMED, or CANCELLED once it was cancelled or failed (so that a calendar that
showed it takes it away). The session's generation is the event's SEQUENCE: it changes with
every change to the session, as RFC 5545 asks.

Bounded: sessions that ended less than ``PAST`` ago or start within ``AHEAD``, at most
``MAX_EVENTS`` of them (the first by start), read as the caller's list is
(``sessions.listing``), along ``ix_session_owner_start``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from icalendar import Calendar, Event

from ..broker import Broker
from ..db.tables import ExecutionSession
from ..identity import Identity
from ..schedule import instant
from .listing import SessionFilters, sessions_query
from .phases import CANCELLED, EXPIRED, FAILED, OFFERED, PHASES, REJECTED
from .record import SessionRecord

PAST = timedelta(days=90)
AHEAD = timedelta(days=400)
MAX_EVENTS = 1000
# bare, as the spec lists it (connexion compares them verbatim): RFC 5545 text is UTF-8
MEDIA_TYPE = "text/calendar"
BOOKED = tuple(p for p in PHASES if p not in (OFFERED, REJECTED, EXPIRED))
ENDED = frozenset({CANCELLED, FAILED})
PRODID = "-//ebroker//session feed//EN"


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def feed_rows(broker: Broker, identity: Identity, now: int) -> list[ExecutionSession]:
    """The caller's booked sessions the feed holds, by start: the query of their list
    (``GET /sessions`` with these filters), one page of ``MAX_EVENTS``."""
    filters = SessionFilters(
        owner=identity.owner,
        phases=BOOKED,
        start=now - int(PAST.total_seconds()),
        end=now + int(AHEAD.total_seconds()),
    )
    with broker.db.read() as session:
        return list(session.exec(sessions_query(filters, None, MAX_EVENTS)))[:MAX_EVENTS]


def event(row: ExecutionSession, base_url: str, host: str, stamp: datetime) -> Event:
    record = SessionRecord.of(row.record)
    pools = ", ".join(f"{row.platform}/{name}" for name in record.pools) or row.platform
    href = f"{base_url}/sessions/{row.uuid}"
    title = record.name or "ebroker session"
    item = Event()
    item.add("uid", f"{row.uuid}@{host}")
    item.add("dtstamp", stamp)
    item.add("dtstart", _at(row.start_at))
    item.add("dtend", _at(row.end_at))
    item.add("summary", f"{title} ({row.phase.lower()}) on {pools}")
    item.add("status", "CANCELLED" if row.phase in ENDED else "CONFIRMED")
    item.add("url", href)
    item.add("last-modified", _at(row.modified_at))
    item.add("created", _at(row.created_at))
    item.add("sequence", row.generation)
    item.add("transp", "OPAQUE")
    item.add(
        "description",
        f"Session {row.uuid}, {row.phase}, on {pools}.\n"
        f"Preparation from {instant(row.prepare_at)}; booked "
        f"{instant(row.start_at)} to {instant(row.end_at)} (UTC).\n{href}",
    )
    return item


def calendar(rows: Sequence[ExecutionSession], broker: Broker, now: int) -> bytes:
    base_url = broker.base_url
    host = urlsplit(base_url).hostname or "ebroker"
    feed = Calendar()
    feed.add("prodid", PRODID)
    feed.add("version", "2.0")
    feed.add("calscale", "GREGORIAN")
    feed.add("method", "PUBLISH")
    name = f"{broker.config.site.name} sessions"
    feed.add("name", name)  # RFC 7986
    feed.add("x-wr-calname", name)  # what most calendar apps read
    feed.add("refresh-interval", timedelta(minutes=15), parameters={"VALUE": "DURATION"})
    feed.add("x-published-ttl", "PT15M")
    stamp = _at(now)
    for row in rows:
        feed.add_component(event(row, base_url, host, stamp))
    return feed.to_ical()


def session_feed(broker: Broker, identity: Identity, now: int | None = None) -> bytes:
    """The caller's feed, as iCalendar text."""
    now = int(time.time()) if now is None else now
    return calendar(feed_rows(broker, identity, now), broker, now)
