"""Payment incident alerts: stored once per incident (a dedupe key), counted when they recur, and
delivered through configurable channels (a webhook URL, email), each at most once per channel.

Raising an alert writes in the caller's transaction; delivery happens after commit
(`deliver_alerts`), so a rolled-back incident is never announced."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import make_msgid
from typing import Any, Protocol

import requests
from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from billing.ledger import rowcount
from billing.models import Alert, AlertDelivery
from server.db import json_safe, utcnow
from server.mail import smtp_send

log = logging.getLogger(__name__)

KINDS = (
    "payout_failed",
    "webhook_signature",
    "provider_error",
    "reconciliation_mismatch",
    "ledger_verification",
    "booking_failed",
    "document_delivery_failed",
)
MAX_ATTEMPTS = 5


def raise_alert(
    session: Session,
    kind: str,
    dedupe_key: str,
    title: str,
    detail: str,
    *,
    severity: str = "error",
    data: dict[str, Any] | None = None,
) -> str:
    """Record an incident; a repeat of the same dedupe key only bumps its count. Returns its id."""
    from billing.ledger import _dialect_insert

    now = utcnow()
    key = f"{kind}:{dedupe_key}"[:200]
    stmt = _dialect_insert(session, Alert).values(
        id=f"alr_{uuid.uuid4().hex}",
        dedupe_key=key,
        kind=kind,
        severity=severity,
        title=title[:300],
        detail=detail,
        data=json_safe(data or {}),
        status="open",
        occurrences=1,
        first_seen_at=now,
        last_seen_at=now,
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["dedupe_key"],
        set_={"occurrences": Alert.occurrences + 1, "last_seen_at": now},
    )
    session.execute(stmt)
    alert_id = session.execute(select(Alert.id).where(Alert.dedupe_key == key)).scalar_one()
    log.warning("payment alert %s: %s", kind, title)
    return str(alert_id)


class Channel(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...


def alert_payload(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.id,
        "kind": alert.kind,
        "severity": alert.severity,
        "title": alert.title,
        "detail": alert.detail,
        "data": alert.data,
        "occurrences": alert.occurrences,
        "first_seen_at": alert.first_seen_at.isoformat(),
    }


@dataclass
class WebhookChannel:
    url: str
    timeout: float = 5.0
    name: str = "webhook"

    def send(self, alert: Alert) -> None:
        response = requests.post(
            self.url,
            data=json.dumps(alert_payload(alert)),
            headers={"Content-Type": "application/json", "Idempotency-Key": alert.id, "X-Alert-Id": alert.id},
            timeout=self.timeout,
        )
        if response.status_code >= 300:
            raise RuntimeError(f"alert webhook answered HTTP {response.status_code}")


@dataclass
class EmailChannel:
    host: str
    port: int
    sender: str
    recipients: Sequence[str]
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout: float = 10.0
    name: str = "email"

    def send(self, alert: Alert) -> None:
        message = EmailMessage()
        message["Subject"] = f"[SmartLinks payments] {alert.severity.upper()}: {alert.title}"
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["Message-ID"] = make_msgid(idstring=alert.id)
        message["X-Alert-Id"] = alert.id
        message.set_content(
            f"{alert.title}\n\n{alert.detail}\n\nkind: {alert.kind}\nalert: {alert.id}\n"
            f"first seen: {alert.first_seen_at.isoformat()}\n\n{json.dumps(alert.data, indent=2, default=str)}\n"
        )
        smtp_send(
            message,
            host=self.host,
            port=self.port,
            username=self.username,
            password=self.password,
            starttls=self.starttls,
            timeout=self.timeout,
        )


def deliver_alerts(session_factory: Callable[[], Session], channels: Sequence[Channel]) -> int:
    """Send every undelivered alert through every channel; returns how many sends succeeded.

    A delivery is claimed with a compare-and-set before sending, so two processes never send the
    same alert through the same channel; a failed send is retried later, up to MAX_ATTEMPTS."""
    sent = 0
    for channel in channels:
        with session_factory() as session:
            missing = session.scalars(
                select(Alert.id)
                .outerjoin(
                    AlertDelivery, and_(AlertDelivery.alert_id == Alert.id, AlertDelivery.channel == channel.name)
                )
                .where(AlertDelivery.alert_id.is_(None))
            ).all()
            for alert_id in missing:
                session.add(AlertDelivery(alert_id=alert_id, channel=channel.name, status="pending", attempts=0))
            session.commit()
            due = session.scalars(
                select(AlertDelivery.alert_id).where(
                    AlertDelivery.channel == channel.name,
                    AlertDelivery.status.in_(("pending", "failed")),
                    AlertDelivery.attempts < MAX_ATTEMPTS,
                )
            ).all()
        for alert_id in due:
            error: str | None
            sent_at: datetime | None
            with session_factory() as session:
                claimed = rowcount(
                    session.execute(
                        update(AlertDelivery)
                        .where(
                            AlertDelivery.alert_id == alert_id,
                            AlertDelivery.channel == channel.name,
                            AlertDelivery.status.in_(("pending", "failed")),
                        )
                        .values(status="sending", attempts=AlertDelivery.attempts + 1)
                    )
                )
                session.commit()
                if claimed != 1:
                    continue
                alert = session.get(Alert, alert_id)
                assert alert is not None
                try:
                    channel.send(alert)
                except Exception as exc:  # any channel failure is retried later, never fatal
                    log.warning("alert %s not delivered by %s: %s", alert_id, channel.name, exc)
                    status, error, sent_at = "failed", f"{type(exc).__name__}: {exc}"[:1000], None
                else:
                    status, error, sent_at = "sent", None, utcnow()
                    sent += 1
                session.execute(
                    update(AlertDelivery)
                    .where(AlertDelivery.alert_id == alert_id, AlertDelivery.channel == channel.name)
                    .values(status=status, last_error=error, sent_at=sent_at)
                )
                session.commit()
    return sent
