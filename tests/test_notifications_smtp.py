"""E-mail over TLS against a real SMTP server (aiosmtpd) with a certificate made for the test:
STARTTLS and SMTP over TLS, verified against the site's CA file, with a login whose password
comes from a secret file; a certificate that does not verify (another CA's, or none the
system trusts) fails the attempt, to be retried, and nothing is sent, in clear or otherwise."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage

import pytest
import yaml
from starlette.testclient import TestClient

from broker_core.config import ConfigError, load_config
from broker_core.http.app import create_app
from broker_core.notifications import mail, outbox
from broker_core.notifications.config import SmtpConfig
from broker_core.notifications.worker import NotificationWorker
from tests.conftest import ACCEPT, POOL_CONFIG, make_config, request_doc
from tests.notify_receivers import MailServer
from tests.tls_certs import make_certificate

MODES = {"starttls": False, "ssl": True}  # security: implicit TLS


def _message() -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "b@example.org", "a@example.org", "hi"
    message.set_content("body")
    return message


def _smtp(server: MailServer, security: str, **more: object) -> SmtpConfig:
    return SmtpConfig.model_validate({"host": "127.0.0.1", "port": server.port,
                                      "security": security, "from_address": "b@example.org",
                                      "timeout": "PT5S", **more})  # fmt: skip


@pytest.mark.parametrize("security", list(MODES))
def test_mail_goes_over_tls_verified_against_the_ca_file_with_a_secret_password(
    tmp_path, security
):
    certificate = make_certificate(tmp_path / "pki")
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cret-pw\n")
    with MailServer(certificate, implicit=MODES[security], users={"broker": "s3cret-pw"}) as server:
        path = tmp_path / "node.yaml"
        path.write_text(yaml.safe_dump({
            **POOL_CONFIG, "database": {"url": f"sqlite:///{tmp_path / 'n.db'}"},
            "notifications": {"smtp": {
                "host": "127.0.0.1", "port": server.port, "security": security,
                "user": "broker", "password": {"secret_file": str(secret)},
                "ca_file": str(certificate.ca_file), "from_address": "b@example.org"}},
        }))  # fmt: skip
        smtp = load_config(path).notifications.smtp
        assert smtp is not None and smtp.password == "s3cret-pw"
        sent = mail.send(smtp, _message())
        wrong = mail.send(smtp.model_copy(update={"password": "wrong-pw"}), _message())
    assert sent.ok, sent.error
    assert server.logins == ["broker"]
    assert [m["Subject"] for _, m in server.handler.messages] == ["hi"]
    assert server.handler.encrypted == [True]
    assert not wrong.ok and "refused the login of broker" in (wrong.error or "")
    assert "wrong-pw" not in (wrong.error or "")


@pytest.mark.parametrize("security", list(MODES))
@pytest.mark.parametrize("trusted", ["another CA", "the system's CAs"])
def test_a_certificate_that_does_not_verify_sends_nothing_and_is_retried(
    tmp_path, security, trusted
):
    certificate = make_certificate(tmp_path / "pki")
    other = make_certificate(tmp_path / "other", ca_name="another CA")
    ca_file = str(other.ca_file) if trusted == "another CA" else None
    with MailServer(certificate, implicit=MODES[security]) as server:
        attempt = mail.send(_smtp(server, security, ca_file=ca_file), _message())
    assert not attempt.ok and attempt.retry
    assert "certificate is not trusted" in (attempt.error or "")
    assert "nothing was sent" in (attempt.error or "")
    assert server.handler.commands == [] and server.handler.messages == []


def test_starttls_is_required_when_configured_never_a_fallback_to_clear(tmp_path):
    certificate = make_certificate(tmp_path / "pki")
    with MailServer() as plain:  # offers no STARTTLS
        attempt = mail.send(_smtp(plain, "starttls", ca_file=str(certificate.ca_file)),
                            _message())  # fmt: skip
    assert not attempt.ok and attempt.retry and "offers no STARTTLS" in (attempt.error or "")
    assert plain.handler.commands == [] and plain.handler.messages == []


@pytest.mark.parametrize("smtp, found", [
    ({"security": "none", "user": "u", "password": "p"}, "only over TLS"),
    ({"security": "none", "ca_file": "/etc/hostname"}, "ca_file verifies TLS"),
    ({"security": "starttls", "ca_file": "/no/such/ca.pem"}, "no such file"),
])  # fmt: skip
def test_a_login_or_ca_file_without_tls_is_a_configuration_error(tmp_path, smtp, found):
    with pytest.raises(ConfigError, match=found):
        make_config(f"sqlite:///{tmp_path / 'n.db'}", notifications={"smtp": {
            "host": "mail.example.org", "from_address": "b@example.org", **smtp}})  # fmt: skip


def test_an_untrusted_mail_server_leaves_the_notification_pending_for_a_retry(
    tmp_path, broker_factory, sqlite_url
):
    """Through the worker: the attempt is counted, its error kept, the row due again later."""
    certificate = make_certificate(tmp_path / "pki")
    other = make_certificate(tmp_path / "other", ca_name="another CA")
    with MailServer(certificate) as server:
        broker = broker_factory(sqlite_url, notifications={
            "smtp": {"host": "127.0.0.1", "port": server.port, "security": "starttls",
                     "ca_file": str(other.ca_file), "from_address": "b@example.org",
                     "timeout": "PT5S"},
            "email": {"recipients": "any"}})  # fmt: skip
        with TestClient(create_app(broker, reaper=False, lifecycle=False)) as client:
            offers = client.post("/requests", json={**request_doc(duration="PT1H"),
                                                    "notify": {"email": ["a@example.org"]}})
            uuid = offers.json()["offers"][0]["meta"]["uuid"]
            assert client.post(f"/sessions/{uuid}", json=ACCEPT).status_code == 200
        assert asyncio.run(NotificationWorker(broker).deliver_due()) == 1
    with broker.db.read() as session:
        row = outbox.of_session(session, uuid)[0]
    assert (row.event, row.state, row.attempts) == ("session.accepted", outbox.PENDING, 1)
    assert "certificate is not trusted" in (row.last_error or "")
    assert row.due_at > row.scheduled_at and row.lease_owner is None
    assert server.handler.commands == []
