"""Plain notification emails through the SMTP settings (SMTP_HOST, SMTP_PORT, SMTP_FROM,
SMTP_USER, SMTP_PASSWORD, SMTP_STARTTLS): portal invitations and account notices. Alerts and
financial documents have their own delivery with retries (billing/alerts.py, billing/document_mail.py);
these are best effort: the caller shows or records what happened."""

from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage

from server.config import Settings

log = logging.getLogger(__name__)


def smtp_send(
    message: EmailMessage,
    *,
    host: str,
    port: int,
    username: str | None = None,
    password: str | None = None,
    starttls: bool = False,
    timeout: float = 10.0,
) -> None:
    """Send one message through an SMTP server (STARTTLS and login when configured); SMTP and
    socket errors propagate for the caller to classify. The one SMTP client of the project: alert
    emails (billing/alerts.py), financial documents (billing/document_mail.py) and `send_mail`."""
    with smtplib.SMTP(host, port, timeout=timeout) as smtp:
        if starttls:
            smtp.starttls()
        if username:
            smtp.login(username, password or "")
        smtp.send_message(message)


def send_mail(settings: Settings, *, to: str, subject: str, body: str, what: str) -> str:
    """Send one text email. Returns "sent", "not configured" or "failed: <error class>"; never
    raises for a mail problem and never logs the body (it may hold a link that is a credential).
    `what` names the message in the log line."""
    if not settings.smtp_host:
        return "not configured"
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = settings.smtp_from
    message["To"] = to
    message.set_content(body)
    try:
        smtp_send(
            message,
            host=settings.smtp_host,
            port=settings.smtp_port,
            username=settings.smtp_user,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
        )
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("%s not sent: %s", what, type(exc).__name__)
        return f"failed: {type(exc).__name__}"
    return "sent"
