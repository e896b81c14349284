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
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=10) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password or "")
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("%s not sent: %s", what, type(exc).__name__)
        return f"failed: {type(exc).__name__}"
    return "sent"
