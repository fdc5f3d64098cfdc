"""Sending one e-mail through the site's SMTP server (blocking: the worker runs it in a
thread). Plain SMTP, STARTTLS (required when configured: a server that does not offer it is an
error, never a silent fallback) or SMTP over TLS, with the server's certificate verified."""

from __future__ import annotations

import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formatdate

from .config import SmtpConfig
from .templates import Mail
from .webhook import Attempt


def message_of(
    mail: Mail, sender: str, recipients: list[str], message_id: str, at: int
) -> EmailMessage:
    """The e-mail; its ``Message-ID`` comes from the outbox row's id, so a repeated attempt
    sends the same message (a receiving system can drop the copy)."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = mail.subject
    message["Date"] = format_datetime(datetime.fromtimestamp(at, UTC)) if at else formatdate()
    message["Message-ID"] = f"<{message_id}@{sender.rpartition('@')[2]}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to a robot
    message.set_content(mail.body)
    return message


def send(smtp: SmtpConfig, message: EmailMessage) -> Attempt:
    timeout = smtp.timeout.total_seconds()
    context = ssl.create_default_context()
    try:
        if smtp.security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                smtp.host, smtp.port_number, timeout=timeout, context=context
            )
        else:
            client = smtplib.SMTP(smtp.host, smtp.port_number, timeout=timeout)
        with client:
            if smtp.security == "starttls":
                client.starttls(context=context)
            if smtp.user:
                client.login(smtp.user, smtp.password or "")
            client.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        refused = ", ".join(f"{a} ({code})" for a, (code, _) in exc.recipients.items())
        return Attempt(False, f"the mail server refused {refused}", retry=False)
    except smtplib.SMTPNotSupportedError:
        return Attempt(False, f"{smtp.host} offers no STARTTLS", retry=True)
    except smtplib.SMTPResponseException as exc:
        permanent = 500 <= exc.smtp_code < 600
        return Attempt(False, f"{smtp.host} answered {exc.smtp_code}", retry=not permanent)
    except (OSError, smtplib.SMTPException) as exc:
        return Attempt(False, f"cannot send through {smtp.host}:{smtp.port_number}: "
                       f"{type(exc).__name__}: {exc}")  # fmt: skip
    return Attempt(True)
