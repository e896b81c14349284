"""Provider webhooks: Stripe-Signature checked with a tolerance, PayPal deliveries verified by
PayPal's endpoint, each event applied once, and refused deliveries recorded and alerted."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from billing import accounts
from billing.models import Alert, Payout, WebhookEvent
from billing.treasury import run_treasury
from server.db import utcnow
from server.extensions import services
from server.finance.services import payment_services
from tests.support import paypal_server as pp
from tests.support.finance import (  # noqa: F401 - the *_fixture names register fixtures
    WEBHOOK_SECRET,
    add_affiliate,
    assert_ledger_ok,
    balance,
    fund,
    owe,
    paypal_fixture,
    paypal_server_fixture,
    settings_fixture,
    stripe_event,
    stripe_mock_fixture,
    stripe_proxy_fixture,
    stripe_proxy_server_fixture,
    stripe_signature,
)
from tests.support.paypal_server import PayPalServer
from tests.support.stripe_mock import StripeProxy


def pay_one(app: Flask, affiliate_id: str, method: str = "stripe", minor: int = 9_000) -> Payout:
    fund(app, 100_000)
    add_affiliate(app, affiliate_id, method=method)
    owe(app, affiliate_id, minor)
    svc, ps = services(app), payment_services(app)
    run_treasury(svc.db.session, svc.gateway, ps.payments.providers, utcnow(), vault=ps.vault)
    with svc.db.unit_of_work() as uow:
        payout = uow.session.scalars(select(Payout).where(Payout.affiliate_id == affiliate_id)).one()
        uow.session.expunge(payout)
    assert payout.state == "submitted", payout.last_error
    return payout


def post_stripe(client: FlaskClient, payload: bytes, signature: str | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return client.post("/webhooks/stripe", data=payload, headers=headers)


def state_of(app: Flask, payout_id: str) -> str:
    with services(app).db.unit_of_work() as uow:
        payout = uow.session.get(Payout, payout_id)
        assert payout is not None
        return payout.state


def alert_counts(app: Flask) -> dict[str, int]:
    with services(app).db.unit_of_work() as uow:
        return {a.kind: a.occurrences for a in uow.session.scalars(select(Alert))}


def test_a_signed_stripe_event_pays_once_and_duplicates_are_absorbed(
    app: Flask, client: FlaskClient, stripe_proxy: StripeProxy
) -> None:
    payout = pay_one(app, "aff_s")
    transfer = stripe_proxy.state.transfers[payout.provider_ref or ""]
    payload = stripe_event("transfer.created", {**transfer, "object": "transfer"}, event_id="evt_paid_1")
    first = post_stripe(client, payload, stripe_signature(payload))
    assert first.status_code == 200, first.json
    assert first.json == {"status": "processed", "payout_id": payout.id, "detail": "paid"}
    assert state_of(app, payout.id) == "paid"
    after_first = balance(app, accounts.cash("EUR").code)
    for _ in range(2):  # Stripe retries a delivery it thinks failed
        again = post_stripe(client, payload, stripe_signature(payload))
        assert again.status_code == 200 and again.json["status"] == "duplicate"
    assert balance(app, accounts.cash("EUR").code) == after_first
    with services(app).db.unit_of_work() as uow:
        event = uow.session.scalars(select(WebhookEvent)).one()
        assert (event.event_id, event.status, event.deliveries) == ("evt_paid_1", "processed", 3)
    assert_ledger_ok(app)


def test_bad_stale_or_missing_stripe_signatures_are_refused_and_alerted_once(
    app: Flask, client: FlaskClient, stripe_proxy: StripeProxy
) -> None:
    payout = pay_one(app, "aff_s")
    transfer = stripe_proxy.state.transfers[payout.provider_ref or ""]
    payload = stripe_event("transfer.created", {**transfer, "object": "transfer"})
    forged = post_stripe(client, payload, stripe_signature(payload, secret="whsec_attacker"))
    stale = post_stripe(client, payload, stripe_signature(payload, timestamp=int(utcnow().timestamp()) - 3600))
    missing = post_stripe(client, payload, None)
    tampered = post_stripe(
        client, payload.replace(b'"transfer.created"', b'"transfer.reversed"'), stripe_signature(payload)
    )
    for response in (forged, stale, missing, tampered):
        assert response.status_code == 400 and response.mimetype == "application/problem+json"
        assert response.json["type"].endswith("/invalid-webhook-signature")
    assert "Timestamp outside the tolerance zone" in stale.json["detail"]
    assert state_of(app, payout.id) == "submitted"
    assert alert_counts(app) == {"webhook_signature": 4}  # one incident, counted, not four alerts
    assert_ledger_ok(app)


def test_a_reversed_transfer_fails_the_payout_even_after_it_was_paid(
    app: Flask, client: FlaskClient, stripe_proxy: StripeProxy
) -> None:
    payout = pay_one(app, "aff_r", minor=7_000)
    transfer = {**stripe_proxy.state.transfers[payout.provider_ref or ""], "object": "transfer"}
    paid = stripe_event("transfer.created", transfer)
    assert post_stripe(client, paid, stripe_signature(paid)).json["detail"] == "paid"
    reversed_ = stripe_event(
        "transfer.reversed", {**stripe_proxy.reverse(payout.provider_ref or ""), "object": "transfer"}
    )
    response = post_stripe(client, reversed_, stripe_signature(reversed_))
    assert response.json["detail"] == "failed"
    assert state_of(app, payout.id) == "failed"
    # The settlement was reversed by a correcting entry: the affiliate is owed the money again.
    payable = balance(app, accounts.affiliate_payable("aff_r", "EUR").code)
    assert payable[1] - payable[0] == 7_000
    assert alert_counts(app) == {"payout_failed": 1}
    assert_ledger_ok(app)


def test_an_event_that_disagrees_with_the_payout_is_not_applied(
    app: Flask, client: FlaskClient, stripe_proxy: StripeProxy
) -> None:
    payout = pay_one(app, "aff_m")
    transfer = {**stripe_proxy.state.transfers[payout.provider_ref or ""], "object": "transfer", "amount": 1}
    payload = stripe_event("transfer.created", transfer)
    response = post_stripe(client, payload, stripe_signature(payload))
    assert response.json["status"] == "ignored" and "event says 1 EUR" in response.json["detail"]
    assert state_of(app, payout.id) == "submitted"
    assert alert_counts(app) == {"reconciliation_mismatch": 1}


def paypal_event(
    event_type: str, payout: Payout, *, event_id: str = "WH-EVT-1", value: str = "90.00"
) -> dict[str, Any]:
    return {
        "id": event_id,
        "event_version": "1.0",
        "create_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "resource_type": "payouts_item",
        "event_type": event_type,
        "summary": "A payout item has succeeded",
        "resource": {
            "payout_item_id": "ITEM1",
            "transaction_status": "SUCCESS" if event_type.endswith("SUCCEEDED") else "FAILED",
            "payout_batch_id": payout.provider_ref,
            "payout_item": {
                "recipient_type": "EMAIL",
                "amount": {"value": value, "currency": "EUR"},
                "receiver": "aff_p@example.com",
                "sender_item_id": payout.id,
            },
        },
    }


def post_paypal(client: FlaskClient, event: dict[str, Any], headers: dict[str, str]) -> Any:
    return client.post(
        "/webhooks/paypal", data=json.dumps(event), headers={**headers, "Content-Type": "application/json"}
    )


def test_paypal_events_are_verified_by_paypal_and_applied_once(
    app: Flask, client: FlaskClient, paypal: PayPalServer
) -> None:
    payout = pay_one(app, "aff_p", method="paypal")
    event = paypal_event("PAYMENT.PAYOUTS-ITEM.SUCCEEDED", payout)
    first = post_paypal(client, event, pp.sign(event))
    assert first.status_code == 200 and first.json["status"] == "processed", first.json
    assert state_of(app, payout.id) == "paid"
    assert post_paypal(client, event, pp.sign(event)).json["status"] == "duplicate"
    assert ("POST", "/v1/notifications/verify-webhook-signature") in paypal.state.requests
    assert_ledger_ok(app)


def test_paypal_deliveries_with_bad_or_stale_signatures_are_refused(
    app: Flask, client: FlaskClient, paypal: PayPalServer
) -> None:
    payout = pay_one(app, "aff_p", method="paypal")
    event = paypal_event("PAYMENT.PAYOUTS-ITEM.FAILED", payout)
    forged = dict(pp.sign(event))
    forged["PAYPAL-TRANSMISSION-SIG"] = "AAAA" + forged["PAYPAL-TRANSMISSION-SIG"][4:]
    assert post_paypal(client, event, forged).status_code == 400
    other = paypal_event("PAYMENT.PAYOUTS-ITEM.FAILED", payout, event_id="WH-EVT-2")
    assert post_paypal(client, other, pp.sign(event)).status_code == 400  # signature of another event
    stale = pp.sign(event, when=datetime.now(UTC) - timedelta(hours=2))
    refused = post_paypal(client, event, stale)
    assert refused.status_code == 400 and "old" in refused.json["detail"]
    assert post_paypal(client, event, {}).status_code == 400
    paypal.fail("/v1/notifications/verify-webhook-signature", "500")
    unavailable = post_paypal(client, event, pp.sign(event))
    assert unavailable.status_code == 503  # PayPal retries the delivery later
    assert state_of(app, payout.id) == "submitted"
    assert alert_counts(app) == {"webhook_signature": 4}
    failed = post_paypal(client, event, pp.sign(event))
    assert failed.json["status"] == "processed" and state_of(app, payout.id) == "failed"
    assert balance(app, accounts.affiliate_payable("aff_p", "EUR").code) == (0, 9_000, 0, 0)
    assert_ledger_ok(app)


def test_webhooks_answer_503_until_configured(app: Flask, client: FlaskClient) -> None:
    # Another app on the same settings, without the webhook secrets.
    from server import create_app

    bare = create_app(services(app).settings.with_overrides({"stripe_webhook_secret": None, "paypal_webhook_id": None}))
    bare.testing = True
    with bare.test_client() as c:
        assert c.post("/webhooks/stripe", json={}).status_code == 503
        assert c.post("/webhooks/stripe", data=b"{}", content_type="text/plain").status_code == 415
        assert c.post("/webhooks/paypal", json={}).status_code == 503
    services(bare).close()
    assert WEBHOOK_SECRET
