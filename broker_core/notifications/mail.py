"""Sending one e-mail through the site's SMTP server (blocking: the worker runs it in a
thread). Plain SMTP, STARTTLS (required when configured: a server that does not offer it is an
error, never a silent fallback) or SMTP over TLS (``ssl``), with the server's certificate and
name verified against the system's CAs or the site's ``ca_file``. A certificate that does not
verify fails the attempt before anything is sent (it is retried: the site may fix it); a login
(``user``, ``password``) is made only over TLS."""

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
    context = ssl.create_default_context(cafile=str(smtp.ca_file) if smtp.ca_file else None)
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
    except smtplib.SMTPNotSupportedError as exc:
        what = "STARTTLS" if "STARTTLS" in str(exc) else "login (AUTH)"
        return Attempt(False, f"{smtp.host} offers no {what}; nothing was sent", retry=True)
    except ssl.SSLCertVerificationError as exc:
        return Attempt(False, f"{smtp.host}:{smtp.port_number}: its certificate is not trusted "
                       f"({exc.verify_message}); nothing was sent. Give the CA that signs it as "
                       "notifications.smtp.ca_file")  # fmt: skip
    except smtplib.SMTPAuthenticationError as exc:
        return Attempt(False, f"{smtp.host} refused the login of {smtp.user} "
                       f"({exc.smtp_code})")  # fmt: skip
    except smtplib.SMTPResponseException as exc:
        permanent = 500 <= exc.smtp_code < 600
        return Attempt(False, f"{smtp.host} answered {exc.smtp_code}", retry=not permanent)
    except (OSError, smtplib.SMTPException) as exc:
        return Attempt(False, f"cannot send through {smtp.host}:{smtp.port_number}: "
                       f"{type(exc).__name__}: {exc}")  # fmt: skip
    return Attempt(True)
