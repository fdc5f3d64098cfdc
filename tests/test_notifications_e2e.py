"""Notifications end to end: real node (and aggregator) processes on the simulated platform
with short sessions, a real webhook receiver (aiohttp) and a real SMTP server (aiosmtpd).

Events arrive in order, each signed as Standard Webhooks has it; a receiver that fails gets
the same event again with the same id; e-mail goes through the site's server with its
templates; a webhook on an internal address is refused at request time and never reached; a
node killed with SIGKILL delivers what it had not delivered after its restart.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.conftest import ACCEPT, POOL_CONFIG, request_doc
from tests.nodes import free_port, start_node
from tests.notify_receivers import MailServer, WebhookReceiver, verify

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes, base64
ORDER = ["session.accepted", "session.preparing", "session.ready", "session.ending_soon",
         "session.ended"]  # fmt: skip


def node_file(tmp: Path, name: str, smtp_port: int | None = None, **notifications: Any) -> Path:
    config = {
        **POOL_CONFIG,
        "site": {"name": name},
        "offers": {"granularity": "PT1S"},
        "database": {"url": f"sqlite:///{tmp / f'{name}.db'}"},
        "lifecycle": {"workdir": str(tmp / f"{name}-sessions"), "poll_interval": "PT1S",
                      "lease": "PT3S"},
        "notifications": {
            "ending_soon": "PT4S", "poll_interval": "PT0.2S", "lease": "PT3S",
            "retry_base": "PT1S", "retry_max": "PT2S", "max_attempts": 100,
            "webhook": {"allow_networks": ["127.0.0.1/32"], "timeout": "PT2S"},
            **({"smtp": {"host": "127.0.0.1", "port": smtp_port, "security": "none",
                         "from_address": "broker@example.org", "timeout": "PT2S"},
                "email": {"recipients": "any"}} if smtp_port else {}),
            **notifications,
        },
    }  # fmt: skip
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def book(url: str, notify: dict[str, Any], duration: str = "PT10S") -> str:
    doc = {**request_doc(duration=duration), "notify": notify}
    r = httpx.post(f"{url}/requests", json=doc, timeout=30)
    assert r.status_code == 200 and r.json()["result"] == "YES", r.text
    offer = r.json()["offers"][0]
    r = httpx.post(f"{url}/sessions/{offer['meta']['uuid']}", json=ACCEPT, timeout=30)
    assert r.status_code == 200, r.text
    assert "secret" not in r.text
    assert r.json()["notify"]["webhook"] == {"url": notify["webhook"]["url"]}
    return str(offer["meta"]["uuid"])


def test_events_arrive_in_order_signed_retried_with_the_same_id_and_mailed(tmp_path):
    with WebhookReceiver(fail_first=2) as hook, MailServer() as mail:
        node = start_node(node_file(tmp_path, "n", mail.port), tmp_path, "n")
        try:
            uuid = book(node.url, {"webhook": {"url": hook.url, "secret": SECRET},
                                   "email": ["alice@example.org"]})  # fmt: skip
            got = hook.wait_for(len(ORDER))
            messages = mail.wait_for(len(ORDER))
        finally:
            node.stop()
    events = [d.event for d in got]
    assert [e["type"] for e in events] == ORDER
    assert all(e["data"]["session"]["uuid"] == uuid for e in events)
    for delivery in hook.got:
        verify(SECRET, delivery.headers, delivery.body)
    # the first two attempts failed: the first event came again, with the same id
    assert [d.status for d in hook.got[:3]] == [500, 500, 204]
    assert hook.got[0].id == hook.got[1].id == hook.got[2].id == got[0].id
    assert len({d.id for d in got}) == len(ORDER)
    ready = events[2]["data"]
    assert ready["session"]["phase"] == "AVAILABLE" and "connectors" in ready
    assert events[-1]["data"]["session"]["phase"] == "COMPLETED"
    subjects = [m["Subject"] for _, m in messages]
    assert subjects[0] == f"[n] session {uuid} is booked", subjects
    assert "is ready" in subjects[2] and "has ended (COMPLETED)" in subjects[-1]
    assert all(rcpt == ["alice@example.org"] for rcpt, _ in messages)
    assert all(m["From"] == "broker@example.org" for _, m in messages)
    assert f"/sessions/{uuid}" in messages[0][1].get_content()


def test_a_webhook_on_an_internal_address_is_refused_and_never_reached(tmp_path):
    with WebhookReceiver(host="127.0.0.2") as hook:  # loopback, but not allowed
        node = start_node(node_file(tmp_path, "n"), tmp_path, "n")
        try:
            doc = {**request_doc(duration="PT10S"),
                   "notify": {"webhook": {"url": hook.url, "secret": SECRET}}}  # fmt: skip
            r = httpx.post(f"{node.url}/requests", json=doc, timeout=30)
            time.sleep(1)
        finally:
            node.stop()
    assert r.status_code == 200 and r.json()["result"] == "NO", r.text
    text = " ".join(m["message"] for m in r.json()["meta"]["messages"])
    assert "/notify/webhook/url" in text and "loopback" in text, text
    assert SECRET not in r.text
    assert hook.got == []


def test_a_node_killed_with_undelivered_notifications_delivers_them_after_restart(tmp_path):
    port = free_port()
    config = node_file(tmp_path, "n")
    node = start_node(config, tmp_path, "n")
    url = f"http://127.0.0.1:{port}/hook"
    try:  # nothing listens on the webhook's port yet: every attempt fails
        uuid = book(node.url, {"webhook": {"url": url, "secret": SECRET}}, duration="PT30S")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not _attempted(tmp_path / "n.db", 3):
            time.sleep(0.2)
        assert _attempted(tmp_path / "n.db", 3)
    finally:
        node.kill()
    stored = _outbox(tmp_path / "n.db")
    assert [row[1] for row in stored][:3] == ORDER[:3]
    with WebhookReceiver(port=port) as hook:
        again = start_node(config, tmp_path, "n-again")
        try:
            got = hook.wait_for(3, timeout=60)
        finally:
            again.stop()
    assert [d.event["type"] for d in got[:3]] == ORDER[:3]
    assert [d.id for d in got[:3]] == [row[0] for row in stored[:3]]
    assert all(d.event["data"]["session"]["uuid"] == uuid for d in got)


def _outbox(path: Path) -> list[tuple[str, str, int, str]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT message_id, event, attempts, state FROM notification_outbox "
                          "ORDER BY scheduled_at, id").fetchall()  # fmt: skip


def _attempted(path: Path, events: int) -> bool:
    """The first ``events`` events are stored and the first was tried at least once."""
    rows = _outbox(path)
    return len(rows) >= events + 1 and rows[0][2] >= 1 and len({r[1] for r in rows}) >= events



def test_an_aggregator_passes_notify_on_to_the_node_that_books_it(tmp_path):
    with WebhookReceiver() as hook:
        node = start_node(node_file(tmp_path, "n"), tmp_path, "n")
        aggregator_file = tmp_path / "agg.yaml"
        aggregator_file.write_text(yaml.safe_dump({
            "site": {"name": "agg"}, "database": {"url": f"sqlite:///{tmp_path / 'agg.db'}"},
            "upstreams": [{"name": "n", "url": node.url}],
        }))  # fmt: skip
        aggregator = start_node(aggregator_file, tmp_path, "agg", command="aggregator")
        try:
            book(aggregator.url, {"webhook": {"url": hook.url, "secret": SECRET},
                                  "events": ["session.accepted", "session.ready"]})  # fmt: skip
            got = hook.wait_for(2)
        finally:
            aggregator.stop()
            node.stop()
    assert [d.event["type"] for d in got] == ["session.accepted", "session.ready"]
    assert all(d.event["data"]["site"] == "n" for d in got)
    for delivery in got:
        verify(SECRET, delivery.headers, delivery.body)
