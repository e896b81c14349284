"""Payment incident alerts: stored once per incident, delivered through a webhook URL and email
(a real SMTP server), each channel at most once per alert, failed deliveries retried."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select

from billing.alerts import EmailChannel, WebhookChannel, deliver_alerts, raise_alert
from billing.models import Alert, AlertDelivery
from server.extensions import services
from server.finance.services import make_channels
from tests.support.sinks import SmtpSink, WebhookSink


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def hook() -> Iterator[WebhookSink]:
    sink = WebhookSink().start()
    yield sink
    sink.stop()


def test_an_incident_is_one_alert_delivered_once_per_channel(app: Flask, smtp: SmtpSink, hook: WebhookSink) -> None:
    db = services(app).db
    channels = [
        WebhookChannel(hook.url),
        EmailChannel("127.0.0.1", smtp.port, "payments@smartlinks.test", ["finance@smartlinks.test"]),
    ]
    for _ in range(3):  # the same failure seen three times
        with db.unit_of_work() as uow:
            raise_alert(
                uow.session,
                "payout_failed",
                "po_1",
                "Payout po_1 failed (90.00 EUR)",
                "stripe refused the destination",
                data={"payout_id": "po_1"},
            )
            uow.commit()
    assert deliver_alerts(db.session, channels) == 2
    assert deliver_alerts(db.session, channels) == 0  # nothing new to say
    with db.unit_of_work() as uow:
        raise_alert(uow.session, "payout_failed", "po_1", "Payout po_1 failed (90.00 EUR)", "again")
        uow.commit()
    assert deliver_alerts(db.session, channels) == 0
    assert len(hook.received) == 1 and len(smtp.messages) == 1
    body = hook.received[0]["body"]
    assert body["kind"] == "payout_failed" and body["data"] == {"payout_id": "po_1"}
    assert hook.received[0]["headers"]["Idempotency-Key"] == body["id"]
    mail = smtp.messages[0]
    assert mail["Subject"] == "[SmartLinks payments] ERROR: Payout po_1 failed (90.00 EUR)"
    assert mail["To"] == "finance@smartlinks.test" and mail["X-Alert-Id"] == body["id"]
    with db.unit_of_work() as uow:
        alert = uow.session.scalars(select(Alert)).one()
        assert alert.occurrences == 4
        assert {d.channel: d.status for d in uow.session.scalars(select(AlertDelivery))} == {
            "webhook": "sent",
            "email": "sent",
        }


def test_a_failed_delivery_is_retried_and_other_channels_are_not_held_back(app: Flask, smtp: SmtpSink) -> None:
    db = services(app).db
    broken = WebhookSink(status=503).start()
    try:
        channels = [WebhookChannel(broken.url), EmailChannel("127.0.0.1", smtp.port, "p@s.test", ["f@s.test"])]
        with db.unit_of_work() as uow:
            raise_alert(uow.session, "provider_error", "paypal:timeout", "PayPal timed out", "retrying")
            uow.commit()
        assert deliver_alerts(db.session, channels) == 1  # the email went out
        assert len(broken.received) == 1
        broken.status = 200
        assert deliver_alerts(db.session, channels) == 1  # the webhook, on the retry
        assert len(broken.received) == 2 and len(smtp.messages) == 1
    finally:
        broken.stop()


def test_channels_come_from_the_settings(app: Flask, smtp: SmtpSink, hook: WebhookSink) -> None:
    settings = services(app).settings.with_overrides(
        {
            "alert_webhook_url": hook.url,
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "alert_email_to": "a@s.test, b@s.test",
        }
    )
    channels = make_channels(settings)
    assert [c.name for c in channels] == ["webhook", "email"]
    with services(app).db.unit_of_work() as uow:
        raise_alert(
            uow.session, "ledger_verification", "x", "Ledger verification failed", "1 violation", severity="critical"
        )
        uow.commit()
    assert deliver_alerts(services(app).db.session, channels) == 2
    assert smtp.messages[0]["To"] == "a@s.test, b@s.test"
    assert make_channels(services(app).settings) == []
