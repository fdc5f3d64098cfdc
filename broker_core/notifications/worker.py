"""The delivery loop of a node process: lease due outbox rows, send them, write what happened.

Each row is judged against its session as it is now (a session that ended needs no
"ending soon"; an extended one moves it), sent on its channel, and settled: delivered, retried
after an exponential back-off with jitter, or given up after ``max_attempts`` or ``max_age``
(the attempts and the last error stay on the row). Nothing here touches a session: a receiver
that is down, slow or hostile delays only its own notifications.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from ..broker import Broker
from ..db.tables import ExecutionSession, NotificationOutbox
from ..observability.metrics import NOTIFICATIONS
from ..owners import process_owner
from ..sessions.phases import ACCEPTED, AVAILABLE, PREPARING, RUNNING, WAITING
from ..sessions.record import SessionRecord
from . import mail, outbox, webhook
from .events import ENDING_SOON, Event
from .request import webhook_rules
from .templates import MailContext, Templates
from .webhook import Attempt

log = logging.getLogger(__name__)
BEFORE_THE_END = (ACCEPTED, WAITING, PREPARING, AVAILABLE, RUNNING)


@dataclass
class Settled:
    """A row needing no attempt now: dropped, given up, or moved (``values`` of the row)."""

    values: dict[str, Any]
    outcome: str


class NotificationWorker:
    def __init__(self, broker: Broker, templates: Templates | None = None, owner: str = ""):
        self.broker = broker
        self.config = broker.config.notifications
        self.templates = templates or broker.mail_templates or Templates()
        self.owner = owner or process_owner()
        self.rules = webhook_rules(self.config)

    async def run(self) -> None:
        tick = self.config.poll_interval.total_seconds()
        while True:
            try:
                await self.deliver_due()
            except Exception:  # the worker must outlive a database hiccup
                log.exception("notification delivery failed; retrying")
            await asyncio.sleep(tick)

    async def deliver_due(self, now: int | None = None) -> int:
        """Lease what is due and deliver it, each row on its own; how many were leased."""
        rows = await asyncio.to_thread(self._claim, now)
        if rows:
            await asyncio.gather(*(self._deliver(row) for row in rows))
        return len(rows)

    def _claim(self, now: int | None) -> list[NotificationOutbox]:
        now = int(time.time()) if now is None else now
        lease = max(int(self.config.lease.total_seconds()), 1)
        with self.broker.db.write(durable=False) as session:
            rows = outbox.claim(session, self.owner, now, self.config.batch, lease)
            session.expunge_all()
        return rows

    async def _deliver(self, row: NotificationOutbox) -> None:
        try:
            plan = await asyncio.to_thread(self._plan, row)
            if isinstance(plan, Settled):
                values, outcome = plan.values, plan.outcome
            else:
                attempt = await self._send(row, *plan)
                values, outcome = self._after(row, attempt)
        except Exception as exc:  # a bug in one row must not stop the others
            log.exception("notification %s: delivery raised", row.message_id)
            values, outcome = self._after(row, Attempt(False, f"internal error: {exc}"))
        NOTIFICATIONS.labels(row.channel, outcome).inc()
        with self.broker.db.write() as session:
            outbox.settle(session, row.id or 0, self.owner, **values)

    def _plan(self, row: NotificationOutbox) -> Settled | tuple[Event, SessionRecord]:
        """What the row needs now: the event to send (as its session is now) and the
        session's record, or why it is settled without an attempt."""
        now = int(time.time())
        with self.broker.db.read() as session:
            found = session.get(ExecutionSession, row.session_uuid)
        if found is None:
            return Settled({"state": outbox.DROPPED, "last_error": "the session is gone"},
                           "dropped")  # fmt: skip
        record = SessionRecord.of(found.record)
        event = Event.model_validate(row.data)
        if record.notify is None or (row.channel == outbox.WEBHOOK and not record.notify.webhook):
            return Settled({"state": outbox.DROPPED, "last_error": "nothing to notify"}, "dropped")
        if now - row.scheduled_at > self.config.max_age.total_seconds():
            return Settled({"state": outbox.FAILED, "last_error": _given_up(row, "max_age")},
                           "failed")  # fmt: skip
        if row.event == ENDING_SOON:
            if found.phase not in BEFORE_THE_END:
                return Settled({"state": outbox.DROPPED,
                                "last_error": f"the session ended first ({found.phase})"},
                               "dropped")  # fmt: skip
            due = max(found.end_at - int(self.config.ending_soon.total_seconds()), found.start_at)
            if due > now + 1:  # extended since it was scheduled
                return Settled({"scheduled_at": due, "due_at": due}, "moved")
            event = event.model_copy(update={"phase": found.phase, "end_at": found.end_at,
                                             "at": now})  # fmt: skip
        return event, record

    async def _send(self, row: NotificationOutbox, event: Event, record: SessionRecord) -> Attempt:
        notify = record.notify
        assert notify is not None
        base = self.broker.base_url
        if row.channel == outbox.WEBHOOK:
            assert notify.webhook is not None
            body = webhook.body_of(event.payload(base))
            return await webhook.post(notify.webhook.url, notify.webhook.key(), row.message_id,
                                      int(time.time()), body, self.rules)  # fmt: skip
        smtp = self.config.smtp
        if smtp is None:
            return Attempt(False, "this node has no mail server (notifications.smtp)", False)
        rendered = self.templates.render(MailContext.of(event, base))
        message = mail.message_of(rendered, smtp.from_address, list(notify.email),
                                  row.message_id, event.at)  # fmt: skip
        return await asyncio.to_thread(mail.send, smtp, message)

    def _after(self, row: NotificationOutbox, attempt: Attempt) -> tuple[dict[str, Any], str]:
        """The row's next state after an attempt."""
        now = int(time.time())
        attempts = row.attempts + 1
        if attempt.ok:
            return {"state": outbox.DELIVERED, "delivered_at": now, "attempts": attempts,
                    "last_error": None}, "delivered"  # fmt: skip
        error = (attempt.error or "failed")[:1000]
        old = now - row.scheduled_at >= self.config.max_age.total_seconds()
        if not attempt.retry or attempts >= self.config.max_attempts or old:
            log.warning("notification %s (%s of session %s) given up after %d attempts: %s",
                        row.message_id, row.event, row.session_uuid, attempts, error)  # fmt: skip
            return {"state": outbox.FAILED, "attempts": attempts, "last_error": error}, "failed"
        delay = outbox.backoff(attempts, self.config.retry_base.total_seconds(),
                               self.config.retry_max.total_seconds())  # fmt: skip
        log.info("notification %s (%s of session %s) attempt %d failed, again in %.1f s: %s",
                 row.message_id, row.event, row.session_uuid, attempts, delay, error)  # fmt: skip
        return {"attempts": attempts, "last_error": error,
                "due_at": now + max(round(delay), 1)}, "retry"  # fmt: skip


def _given_up(row: NotificationOutbox, why: str) -> str:
    text = f"not delivered within notifications.{why}"
    return f"{text}; last error: {row.last_error}" if row.last_error else text

