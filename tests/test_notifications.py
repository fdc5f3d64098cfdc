"""Notifications without a node process: signing against the Standard Webhooks reference, the
back-off, the templates (a broken or unsafe one stops start-up), what a request may ask for,
and the outbox's leases on SQLite and PostgreSQL (one process per row, in order per session)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from broker_core.config import ConfigError
from broker_core.db.tables import NotificationOutbox
from broker_core.http.app import create_app
from broker_core.node import build_broker
from broker_core.notifications import outbox, signing
from broker_core.notifications.events import EVENT_TYPES
from broker_core.notifications.request import Webhook
from broker_core.notifications.templates import Templates, sample
from tests.conftest import make_config, request_doc
from tests.notify_receivers import SignatureInvalid, verify

# the Standard Webhooks specification's own example
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID, SPEC_TIME, SPEC_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SMTP = {"host": "127.0.0.1", "port": 2525, "security": "none", "from_address": "b@example.org"}


def test_signatures_are_the_standard_webhooks_ones():
    key = Webhook(url="https://x.example/", secret=SPEC_SECRET).key()
    headers = signing.headers(key, SPEC_ID, SPEC_TIME, SPEC_BODY)
    assert headers["webhook-signature"] == SPEC_SIGNATURE
    verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TIME)  # the reference check agrees
    with pytest.raises(SignatureInvalid):
        verify(SPEC_SECRET, headers, SPEC_BODY + b" ", now=SPEC_TIME)
    with pytest.raises(SignatureInvalid):
        verify(SPEC_SECRET, headers, SPEC_BODY, now=SPEC_TIME + 3600)  # a replay, later


def test_a_plain_secret_signs_with_its_bytes_and_a_bad_whsec_is_refused():
    assert Webhook(url="https://x.example/", secret="s" * 16).key() == b"s" * 16
    with pytest.raises(ValueError, match="base64"):
        Webhook(url="https://x.example/", secret="whsec_not base64!!")


def test_back_off_doubles_up_to_its_ceiling_with_jitter():
    rng = random.Random(1)
    for attempt in range(1, 12):
        full = min(60.0, 2.0 * 2 ** (attempt - 1))
        delays = [outbox.backoff(attempt, 2.0, 60.0, rng) for _ in range(50)]
        assert all(full / 2 <= d <= full for d in delays)
        assert len({round(d, 6) for d in delays}) > 40  # spread out, not all at once


def test_the_built_in_templates_render_every_event():
    templates = Templates()
    for event in EVENT_TYPES:
        mail = templates.render(sample(event))
        assert mail.subject.startswith("[site]") and "sessions/" in mail.body


def test_a_site_template_replaces_the_built_in_one(tmp_path):
    (tmp_path / "ready.txt").write_text("Subject: up: {{ session.uuid }}\n\nat {{ end }}\n")
    mail = Templates(tmp_path).render(sample("session.ready"))
    assert mail.subject == "up: 00000000-0000-4000-8000-000000000000"
    assert mail.body == "at 2027-01-15T09:01:00Z\n"


@pytest.mark.parametrize("text, found", [
    ("Subject: {{ session.uuid\n\nbody", "ready.txt"),  # a syntax error
    ("no subject line\n\nbody", "Subject"),
    ("Subject: x\n\n{{ no_such_name }}", "no_such_name"),  # undefined: an error, not blank
    ("Subject: x\n\n{{ ''.__class__.__mro__ }}", "unsafe"),  # the sandbox
])  # fmt: skip
def test_a_broken_or_unsafe_template_stops_the_node_at_start_up(tmp_path, text, found):
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "ready.txt").write_text(text)
    config = make_config(f"sqlite:///{tmp_path / 'n.db'}",
                         notifications={"email": {"templates": str(folder)}})  # fmt: skip
    with pytest.raises(ConfigError, match=r"notifications\.email\.templates") as error:
        build_broker(config)
    assert found in str(error.value)


def test_a_template_named_for_no_event_is_an_error(tmp_path):
    (tmp_path / "redy.txt").write_text("Subject: x\n\nbody")
    with pytest.raises(ValueError, match="no event is called 'redy'"):
        Templates(tmp_path)


def _ask(tmp_path: Path, notify: dict, **notifications: object) -> dict:
    broker = build_broker(make_config(f"sqlite:///{tmp_path / 'n.db'}",
                                      notifications=notifications))  # fmt: skip
    try:
        with TestClient(create_app(broker, reaper=False, lifecycle=False)) as client:
            r = client.post("/requests", json={**request_doc(duration="PT1H"), "notify": notify})
    finally:
        broker.close()
    return {"status": r.status_code, **r.json()}


def _said(answer: dict) -> str:
    return " ".join(m["message"] for m in answer["meta"]["messages"])


def test_e_mail_goes_only_to_the_callers_own_address(tmp_path):
    answer = _ask(tmp_path, {"email": ["bob@example.org"]}, smtp=SMTP)
    assert answer["result"] == "NO"
    assert "/notify/email/0: bob@example.org is not your address" in _said(answer)
    assert "your token carries none" in _said(answer)


def test_e_mail_to_any_address_when_the_site_allows_it(tmp_path):
    answer = _ask(tmp_path, {"email": ["bob@example.org"]}, smtp=SMTP,
                  email={"recipients": "any"})  # fmt: skip
    assert answer["result"] == "YES", _said(answer)
    assert answer["offers"][0]["notify"] == {"email": ["bob@example.org"]}


def test_e_mail_without_a_mail_server_is_refused(tmp_path):
    answer = _ask(tmp_path, {"email": ["bob@example.org"]})
    assert answer["result"] == "NO" and "sends no e-mail" in _said(answer)


@pytest.mark.parametrize("notify, pointer", [
    ({"webhook": {"url": "https://x.example/", "secret": "short"}}, "/notify/webhook/secret"),
    ({"webhook": {"url": "https://x.example/"}}, "/notify/webhook/secret"),
    ({"email": ["not an address"]}, "/notify/email/0"),
    ({"events": ["session.exploded"]}, "/notify/events/0"),
])  # fmt: skip
def test_a_malformed_notify_is_a_400_naming_the_field(tmp_path, notify, pointer):
    answer = _ask(tmp_path, notify)
    assert answer["status"] == 400
    assert pointer in str(answer), answer


@pytest.mark.parametrize("url, why", [
    ("http://169.254.169.254/latest", "link-local"),
    ("http://localhost:8080/hook", "loopback"),
    ("http://10.1.2.3/hook", "private"),
    ("ftp://example.org/hook", "http:// or https://"),
])  # fmt: skip
def test_a_webhook_the_node_may_not_post_to_is_a_no(tmp_path, url, why):
    answer = _ask(tmp_path, {"webhook": {"url": url, "secret": "s" * 20}})
    assert answer["result"] == "NO" and "/notify/webhook/url" in _said(answer)
    assert why in _said(answer)
    assert "s" * 20 not in str(answer)


# --- the outbox's leases ----------------------------------------------------------------------


def _rows(broker, sessions: int, per_session: int = 1) -> None:
    with broker.db.write() as session:
        for s in range(sessions):
            for i in range(per_session):
                session.add(NotificationOutbox(
                    message_id=f"msg_{s}_{i}", session_uuid=f"s{s}", event="session.ready",
                    channel="webhook", state=outbox.PENDING, created_at=0, scheduled_at=10 + i,
                    due_at=10 + i, data={},
                ))  # fmt: skip


def _claim(broker, owner: str, now: int = 100, limit: int = 50) -> list[str]:
    with broker.db.write() as session:
        return [r.message_id for r in outbox.claim(session, owner, now, limit, 30)]


def test_a_leased_row_goes_to_one_process_and_rows_go_in_order(broker_factory, database_url):
    broker = broker_factory(database_url)
    _rows(broker, 3, per_session=2)
    first = _claim(broker, "a")
    assert sorted(first) == ["msg_0_0", "msg_1_0", "msg_2_0"]  # each session's first only
    assert _claim(broker, "b") == []  # leased, and the rest wait for them
    with broker.db.write() as session:
        row = session.exec(outbox.select(NotificationOutbox).where(
            NotificationOutbox.message_id == "msg_1_0")).one()  # fmt: skip
        assert outbox.settle(session, row.id, "a", state=outbox.DELIVERED)
        assert not outbox.settle(session, row.id, "b", state=outbox.FAILED)  # not b's
    assert _claim(broker, "b") == ["msg_1_1"]
    # the leases run out (a died; b never settled): the rows are taken again
    assert sorted(_claim(broker, "b", now=200)) == ["msg_0_0", "msg_1_1", "msg_2_0"]


def test_concurrent_workers_never_take_the_same_row(broker_factory, database_url):
    broker = broker_factory(database_url)
    _rows(broker, 60)
    taken: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    start = threading.Barrier(3)

    def work(owner: str) -> None:
        start.wait()
        while got := _claim(broker, owner, limit=4):
            taken[owner] += got
            time.sleep(0.001)

    threads = [threading.Thread(target=work, args=(o,)) for o in taken]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    everything = [m for got in taken.values() for m in got]
    assert len(everything) == len(set(everything)) == 60
    assert sum(1 for got in taken.values() if got) >= 2  # they did work side by side


# --- with identities: the caller's own address, and maintenance over a booking ----------------


def test_a_caller_is_mailed_at_its_own_address_and_told_of_maintenance(
    issuer, broker_factory, database_url
):
    from datetime import UTC, datetime, timedelta

    from tests.conftest import ACCEPT

    broker = broker_factory(
        database_url, auth={**issuer.auth_config(), "admin_groups": ["test:admins"]},
        holds={"caller": {}, "anonymous": {}, "replace": False}, notifications={"smtp": SMTP},
    )  # fmt: skip
    alice = {"Authorization": "Bearer " + issuer.token(sub="alice", email="Alice@Example.org")}
    liar = {"Authorization": "Bearer " + issuer.token(sub="bob", email="alice@example.org",
                                                      email_verified=False)}  # fmt: skip
    root = {"Authorization": "Bearer " + issuer.token(sub="root", groups=["admins"])}
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=3)
    doc = {**request_doc(start=f"{start.isoformat()}/PT1H", duration="PT1H"),
           "notify": {"email": ["alice@example.org"]}}  # fmt: skip
    with TestClient(create_app(broker, reaper=False, lifecycle=False)) as client:
        refused = client.post("/requests", json=doc, headers=liar).json()
        assert refused["result"] == "NO" and "not your address" in _said(refused)
        offers = client.post("/requests", json=doc, headers=alice).json()
        assert offers["result"] == "YES", _said(offers)
        uuid = offers["offers"][0]["meta"]["uuid"]
        assert client.post(f"/sessions/{uuid}", json=ACCEPT, headers=alice).status_code == 200
        window = client.post("/pools/sim/main/maintenance", headers=root, json={
            "start": (start - timedelta(hours=1)).isoformat(),
            "end": (start + timedelta(hours=3)).isoformat(), "reason": "new switches"})
        assert window.status_code == 201, window.text
    with broker.db.read() as session:
        rows = outbox.of_session(session, uuid)
    assert [(r.event, r.channel) for r in rows] == [
        ("session.accepted", "email"), ("session.maintenance", "email"),
        ("session.ending_soon", "email")]  # fmt: skip
    told = rows[1].data["maintenance"]
    assert told["reason"] == "new switches" and told["window"] == window.json()["uuid"]


def test_a_webhook_url_with_credentials_is_a_no(tmp_path):
    answer = _ask(tmp_path, {"webhook": {"url": "https://u:p@x.example/", "secret": "s" * 20}})
    assert answer["result"] == "NO" and "carries credentials" in _said(answer)


def test_the_lease_must_outlast_a_delivery_attempt(tmp_path):
    with pytest.raises(ConfigError, match="lease"):
        make_config(f"sqlite:///{tmp_path / 'n.db'}",
                    notifications={"lease": "PT5S", "webhook": {"timeout": "PT10S"}})  # fmt: skip


def test_a_delivery_reaches_only_an_allowed_address():
    """The check is made on the address connected to: 127.0.0.2 is loopback, and only
    127.0.0.1 is allowed, so the receiver there is never reached, and not tried again."""
    import asyncio

    from broker_core.notifications.config import NotificationsConfig
    from broker_core.notifications.request import webhook_rules
    from broker_core.notifications.webhook import post
    from tests.notify_receivers import WebhookReceiver

    rules = webhook_rules(NotificationsConfig.model_validate(
        {"webhook": {"allow_networks": ["127.0.0.1/32"], "timeout": "PT2S"}}))  # fmt: skip
    with WebhookReceiver(host="127.0.0.2") as hook:
        refused = asyncio.run(post(hook.url, b"k" * 16, "msg_1", 1, b"{}", rules))
        assert not refused.ok and refused.retry is False
        assert "loopback" in (refused.error or "")
    assert hook.got == []


def test_rows_leased_by_a_dead_process_of_this_host_are_taken_over_at_once(
    broker_factory, database_url
):
    """The lease (30 s here) has not run out: a dead holder on this host lets go at once, a
    live one (this test's parent process) and one of another host keep theirs."""
    import os
    import socket
    import subprocess

    broker = broker_factory(database_url)
    _rows(broker, 3)
    exited = subprocess.Popen(["true"])
    exited.wait()
    host = socket.gethostname()
    dead, alive, elsewhere = f"{host}:{exited.pid}:1", f"{host}:{os.getppid()}:1", "other:1:1"
    mine = f"{host}:{os.getpid()}:1"
    assert _claim(broker, alive, limit=1) == ["msg_0_0"]
    assert _claim(broker, elsewhere, limit=1) == ["msg_1_0"]
    assert _claim(broker, dead, limit=1) == ["msg_2_0"]
    assert _claim(broker, mine) == ["msg_2_0"]  # the dead one's only
    assert _claim(broker, alive) == []  # and now this process's
    with broker.db.read() as session:
        holders = {r.message_id: r.lease_owner for r in session.exec(
            outbox.select(NotificationOutbox))}  # fmt: skip
    assert holders == {"msg_0_0": alive, "msg_1_0": elsewhere, "msg_2_0": mine}


def _answers(*hosts: str):
    import socket

    async def resolve(self, host: str, port: int = 0, family=socket.AF_INET):
        return [{"hostname": host, "host": h, "port": port, "family": socket.AF_INET,
                 "proto": 0, "flags": 0} for h in hosts]  # fmt: skip

    return resolve


def test_a_webhook_connects_through_stagings_guard_on_the_checked_address(monkeypatch):
    """One guarded connection serves staging and webhooks: a name resolving to a forbidden
    and an allowed address is posted to on the allowed one; a resolver letting a forbidden
    address through is stopped where the socket is made. An error names the URL's origin, not
    its path or query (a receiver's token)."""
    import asyncio

    from broker_core.notifications.config import NotificationsConfig
    from broker_core.notifications.request import webhook_rules
    from broker_core.notifications.webhook import post
    from broker_core.staging import fetch
    from tests.notify_receivers import WebhookReceiver

    rules = webhook_rules(NotificationsConfig.model_validate(
        {"webhook": {"allow_networks": ["127.0.0.1/32"], "timeout": "PT2S"}}))  # fmt: skip
    with WebhookReceiver(fail_first=1) as hook:
        url = f"http://rebind.example:{hook.port}/hook?token=TOKEN-123"
        monkeypatch.setattr(fetch.ThreadedResolver, "resolve", _answers("127.0.0.2", "127.0.0.1"))
        failed = asyncio.run(post(url, b"k" * 16, "msg_1", 1, b"{}", rules))
        assert not failed.ok and failed.retry
        origin = f"http://rebind.example:{hook.port}"
        assert failed.error == f"{origin} answered 500 Internal Server Error"
        assert asyncio.run(post(url, b"k" * 16, "msg_1", 1, b"{}", rules)).ok
        assert [d.headers["user-agent"] for d in hook.got] == ["ebroker-notifications"] * 2
        monkeypatch.setattr(fetch.GuardedResolver, "resolve", _answers("127.0.0.1"))
        strict = webhook_rules(NotificationsConfig.model_validate({}))  # 127.0.0.1 not allowed
        refused = asyncio.run(post(url, b"k" * 16, "msg_2", 1, b"{}", strict))
    assert not refused.ok and refused.retry is False and "loopback" in (refused.error or "")
    assert len(hook.got) == 2


def test_the_owner_sees_how_each_notification_went_and_nobody_else_does(
    issuer, broker_factory, database_url
):
    """``notify.deliveries`` of the session read by its owner: pending, then failed with the
    receiver's answer (naming the URL's origin, not its token) and when it is due again, then
    delivered; another caller is told there is no such session."""
    import asyncio

    from broker_core.notifications.status import Delivery
    from broker_core.notifications.worker import NotificationWorker
    from tests.conftest import ACCEPT
    from tests.notify_receivers import WebhookReceiver

    broker = broker_factory(
        database_url, auth=issuer.auth_config(), server={"validate_responses": True},
        notifications={"webhook": {"allow_networks": ["127.0.0.1/32"], "timeout": "PT2S"}},
    )  # fmt: skip
    alice = {"Authorization": "Bearer " + issuer.token(sub="alice")}
    bob = {"Authorization": "Bearer " + issuer.token(sub="bob")}
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    with WebhookReceiver(fail_first=1) as hook, TestClient(
        create_app(broker, reaper=False, lifecycle=False)
    ) as client:  # fmt: skip
        url = f"{hook.url}?token=TOKEN-123"
        doc = {**request_doc(duration="PT1H"), "notify": {
            "webhook": {"url": url, "secret": secret}, "events": ["session.accepted"]}}
        offers = client.post("/requests", json=doc, headers=alice).json()
        uuid = offers["offers"][0]["meta"]["uuid"]
        assert client.post(f"/sessions/{uuid}", json=ACCEPT, headers=alice).status_code == 200

        def shown() -> list[dict]:
            r = client.get(f"/sessions/{uuid}", headers=alice)
            assert r.status_code == 200 and secret not in r.text and "TOKEN-123" not in str(
                r.json()["notify"]["deliveries"])  # fmt: skip
            return [{k: v for k, v in d.items() if k not in ("due", "delivered")} | {
                "times": sorted(k for k in d if k in ("due", "delivered"))}
                for d in r.json()["notify"]["deliveries"]]  # fmt: skip

        first = {"event": "session.accepted", "channel": "webhook"}
        assert shown() == [{**first, "state": "pending", "attempts": 0, "times": ["due"]}]
        worker = NotificationWorker(broker)
        assert asyncio.run(worker.deliver_due()) == 1
        assert shown() == [{**first, "state": "failed", "attempts": 1, "times": ["due"],
                            "error": f"http://127.0.0.1:{hook.port} answered 500 Internal "
                            "Server Error"}]  # fmt: skip
        with broker.db.write() as session:
            (row,) = outbox.of_session(session, uuid)
            row.due_at = 0
            session.add(row)
        assert asyncio.run(worker.deliver_due()) == 1
        assert shown() == [{**first, "state": "delivered", "attempts": 2, "times": ["delivered"]}]
        other = client.get(f"/sessions/{uuid}", headers=bob)
        assert other.status_code == 404 and "deliveries" not in other.text
        listed = client.get("/sessions", headers=alice)
        assert listed.status_code == 200 and "deliveries" not in listed.text
    assert len(hook.got) == 2
    old = NotificationOutbox(event="session.ready", channel="webhook", state=outbox.FAILED,
                             attempts=10, last_error=f"{url} answered 502")  # fmt: skip
    given_up = Delivery.of(old, url).wire()
    assert given_up == {"event": "session.ready", "channel": "webhook", "state": "given_up",
                        "attempts": 10, "error": f"http://127.0.0.1:{hook.port} answered 502"}
