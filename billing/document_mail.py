"""Emailing financial documents (PDF attached) through SMTP, with a delivery state machine:

    pending ──claim (attempt id committed)──► sending ──SMTP accepted──► sent
       ▲                                         │
       └──── temporary failure, with backoff ────┤
                                                 └── permanent failure, or attempts used up ──► failed (alert)

Never sent twice on purpose: a delivery is claimed with a compare-and-set that records a fresh
attempt id and is committed before the SMTP conversation, so two workers never send the same
delivery. A crash after the server accepted the message but before `sent` was written leaves the
row `sending`; after STALE_AFTER it is retried with the same Message-ID (derived from the document
and the delivery), so the bound is at least once, with at most one extra copy per such crash, and
that copy is recognisably the same message (mail systems that deduplicate by Message-ID drop it).

A permanently failing address raises one alert per address (billing/alerts.py dedupe key), however
many documents bounce on it."""

from __future__ import annotations

import logging
import smtplib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from billing.alerts import raise_alert
from billing.documents import claim_delivery
from billing.models import DocumentDelivery, FinancialDocument
from server.db import utcnow
from server.mail import smtp_send

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
BACKOFF = (60, 300, 1800, 7200, 21600)  # seconds before the next attempt, by attempts made
STALE_AFTER = timedelta(minutes=10)  # a `sending` row older than this was left by a crash


class PermanentFailure(Exception):
    """The server refused the message for good (5xx): retrying cannot help."""


@dataclass
class DocumentMailer:
    host: str
    port: int
    sender: str
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout: float = 20.0

    def send(self, message: EmailMessage) -> None:
        """Send one message; a 5xx answer is a PermanentFailure, anything else may be retried."""
        try:
            smtp_send(
                message,
                host=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                starttls=self.starttls,
                timeout=self.timeout,
            )
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if all(500 <= code < 600 for code in codes):
                raise PermanentFailure(f"recipient refused: {exc.recipients}") from exc
            raise
        except smtplib.SMTPResponseException as exc:
            if 500 <= exc.smtp_code < 600 and not isinstance(exc, smtplib.SMTPAuthenticationError):
                raise PermanentFailure(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}") from exc
            raise


def build_message(document: FinancialDocument, delivery: DocumentDelivery, sender: str) -> EmailMessage:
    message = EmailMessage()
    title = str(document.content.get("title", document.kind))
    message["Subject"] = f"{title} {document.number}"
    message["From"] = sender
    message["To"] = delivery.recipient or ""
    message["Date"] = format_datetime(document.issued_at)
    message["Message-ID"] = delivery.message_id
    message["X-Document-Number"] = document.number
    message["X-Document-Sha256"] = document.pdf_sha256
    totals = ", ".join(f"{t['amount']} {t['currency']}" for t in document.content.get("totals", []))
    message.set_content(
        f"Hello {document.recipient_name},\n\nplease find attached {title.lower()} {document.number}"
        f" ({totals}).\n\n{document.content.get('note', '')}\n\n"
        f"{document.content.get('issuer', {}).get('name', '')}\n"
    )
    message.add_alternative(document.html, subtype="html")
    message.add_attachment(document.pdf, maintype="application", subtype="pdf", filename=f"{document.number}.pdf")
    return message


@dataclass
class DeliveryRun:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def due_deliveries(session: Session, now: datetime, limit: int) -> Sequence[DocumentDelivery]:
    return session.scalars(
        select(DocumentDelivery)
        .where(
            or_(
                (DocumentDelivery.status == "pending")
                & or_(DocumentDelivery.next_attempt_at.is_(None), DocumentDelivery.next_attempt_at <= now),
                (DocumentDelivery.status == "sending") & (DocumentDelivery.claimed_at <= now - STALE_AFTER),
            )
        )
        .order_by(DocumentDelivery.id)
        .limit(limit)
    ).all()


def pending_count(session: Session) -> int:
    return int(
        session.scalar(
            select(func.count())
            .select_from(DocumentDelivery)
            .where(DocumentDelivery.status.in_(("pending", "sending")))
        )
        or 0
    )


def _finish(session: Session, delivery_id: int, attempt_id: str, **values: object) -> bool:
    """Write the outcome of our attempt, unless another worker has since claimed the row."""
    result = session.execute(
        update(DocumentDelivery)
        .where(DocumentDelivery.id == delivery_id, DocumentDelivery.attempt_id == attempt_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def deliver_documents(
    session_factory: Callable[[], Session],
    mailer: DocumentMailer,
    *,
    now: Callable[[], datetime] = utcnow,
    limit: int = 200,
) -> DeliveryRun:
    """Send every due delivery once (see the module docstring); one session per delivery."""
    run = DeliveryRun()
    with session_factory() as session:
        due = [(d.id, d.status, d.attempts) for d in due_deliveries(session, now(), limit)]
        session.rollback()
    for delivery_id, _status, _attempts in due:
        attempt_id = f"att_{uuid.uuid4().hex}"
        with session_factory() as session:
            delivery = session.get(DocumentDelivery, delivery_id)
            if delivery is None or not claim_delivery(session, delivery, attempt_id, now()):
                session.rollback()
                continue
            session.commit()  # the attempt is on record before anything is sent
            session.refresh(delivery)
            document = session.get(FinancialDocument, delivery.document_id)
            assert document is not None
            error: str | None = None
            permanent = False
            if not delivery.recipient:
                error, permanent = f"{document.recipient_name} has no email address", True
            else:
                try:
                    mailer.send(build_message(document, delivery, mailer.sender))
                except PermanentFailure as exc:
                    error, permanent = str(exc), True
                except Exception as exc:  # network, timeouts, 4xx: retried with backoff
                    error = f"{type(exc).__name__}: {exc}"
            if error is None:
                _finish(session, delivery_id, attempt_id, status="sent", sent_at=now(), last_error=None)
                session.commit()
                run.sent += 1
                continue
            log.warning("document %s not emailed to %s: %s", document.number, delivery.recipient, error)
            run.errors.append(f"{document.number}: {error}")
            if permanent or delivery.attempts >= MAX_ATTEMPTS:
                if _finish(session, delivery_id, attempt_id, status="failed", last_error=error[:1000]):
                    address = delivery.recipient or f"{document.affiliate_id or document.advertiser_id}:no-address"
                    raise_alert(
                        session,
                        "document_delivery_failed",
                        address.lower(),
                        f"Financial documents cannot be emailed to {delivery.recipient or document.recipient_name}",
                        f"{document.number}: {error}",
                        severity="warning",
                        data={
                            "document": document.number,
                            "recipient": delivery.recipient,
                            "affiliate_id": document.affiliate_id,
                            "advertiser_id": document.advertiser_id,
                        },
                    )
                session.commit()
                run.failed += 1
            else:
                wait = BACKOFF[min(delivery.attempts, len(BACKOFF)) - 1]
                _finish(
                    session,
                    delivery_id,
                    attempt_id,
                    status="pending",
                    last_error=error[:1000],
                    next_attempt_at=now() + timedelta(seconds=wait),
                )
                session.commit()
                run.retried += 1
    return run
