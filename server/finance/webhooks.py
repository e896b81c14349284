"""Provider webhooks (public endpoints: the signature is the authentication).

`POST /webhooks/stripe` checks `Stripe-Signature` (HMAC-SHA256 of "{t}.{body}") with a tolerance
on its timestamp; `POST /webhooks/paypal` asks PayPal's verification endpoint and refuses stale
transmissions. A refused delivery is answered 400 and raises a (deduplicated) alert; an accepted
event is applied once by its id, and a repeat is answered 200 without doing anything again."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import stripe as _stripe_lib
from flask import Blueprint, Response, jsonify, request

from billing.providers.base import ProviderError
from billing.providers.paypal import PayPalProvider
from billing.webhooks import EventResult, apply_paypal_event, apply_stripe_event, record_rejected
from server.db import utcnow
from server.errors import Problem
from server.extensions import services
from server.finance.services import dispatch_alerts, payment_services

log = logging.getLogger(__name__)

webhooks = Blueprint("webhooks", __name__, url_prefix="/webhooks")


def _refuse(provider: str, reason: str) -> Problem:
    svc = services()
    with svc.db.unit_of_work() as uow:
        record_rejected(uow.session, provider, reason, remote=request.remote_addr)
        uow.commit()
    dispatch_alerts(svc.db.session, payment_services().channels)
    log.warning("%s webhook refused: %s", provider, reason)
    return Problem(
        400, "Invalid signature", f"the {provider} webhook was refused: {reason}", type_="invalid-webhook-signature"
    )


def _require_json() -> None:
    if not request.is_json:
        raise Problem(415, "Unsupported Media Type", "send the event as application/json")


def _answer(result: EventResult) -> Response:
    dispatch_alerts(services().db.session, payment_services().channels)
    return jsonify({"status": result.status, "payout_id": result.payout_id, "detail": result.detail})


@webhooks.post("/stripe")
def stripe() -> Response:  # the endpoint is named webhooks.stripe in the authz data
    _require_json()
    settings = services().settings
    secret = settings.stripe_webhook_secret
    if not secret:
        raise Problem(
            503, "Webhooks not configured", "STRIPE_WEBHOOK_SECRET is not set", type_="webhooks-not-configured"
        )
    payload = request.get_data(cache=False)
    header = request.headers.get("Stripe-Signature")
    try:
        _stripe_lib.Webhook.construct_event(payload, header, secret, tolerance=settings.stripe_webhook_tolerance)
    except _stripe_lib.SignatureVerificationError as exc:
        raise _refuse("stripe", str(exc.user_message or exc) or "bad signature") from exc
    except ValueError as exc:
        raise _refuse("stripe", "the body is not a JSON event") from exc
    event: dict[str, Any] = json.loads(payload)
    svc = services()
    with svc.db.unit_of_work() as uow:
        result = apply_stripe_event(uow.session, event)
        uow.commit()
    return _answer(result)


PAYPAL_HEADERS = (
    "PAYPAL-AUTH-ALGO",
    "PAYPAL-CERT-URL",
    "PAYPAL-TRANSMISSION-ID",
    "PAYPAL-TRANSMISSION-SIG",
    "PAYPAL-TRANSMISSION-TIME",
)


@webhooks.post("/paypal")
def paypal() -> Response:
    _require_json()
    svc = services()
    settings = svc.settings
    provider = payment_services().payments.providers.get("paypal")
    if provider is None or not settings.paypal_webhook_id:
        raise Problem(
            503,
            "Webhooks not configured",
            "PayPal credentials or PAYPAL_WEBHOOK_ID are not set",
            type_="webhooks-not-configured",
        )
    headers = {name: request.headers.get(name, "") for name in PAYPAL_HEADERS}
    if not all(headers.values()):
        raise _refuse("paypal", "PayPal transmission headers are missing")
    try:
        sent = datetime.fromisoformat(headers["PAYPAL-TRANSMISSION-TIME"].replace("Z", "+00:00"))
        if sent.tzinfo is None:
            sent = sent.replace(tzinfo=UTC)
    except ValueError as exc:
        raise _refuse("paypal", "PAYPAL-TRANSMISSION-TIME is not a time") from exc
    age = abs((utcnow() - sent).total_seconds())
    if age > settings.stripe_webhook_tolerance:
        raise _refuse(
            "paypal",
            f"the transmission is {int(age)} s old, more than the {settings.stripe_webhook_tolerance} s tolerance",
        )
    event = request.get_json(silent=True)
    if not isinstance(event, dict):
        raise _refuse("paypal", "the body is not a JSON event")
    try:
        assert isinstance(provider, PayPalProvider)
        genuine = provider.verify_webhook(settings.paypal_webhook_id, headers, event)
    except ProviderError as exc:
        raise Problem(
            503,
            "Verification unavailable",
            f"PayPal could not verify the event: {exc.message}",
            type_="webhook-verification-unavailable",
        ) from exc
    if not genuine:
        raise _refuse("paypal", "PayPal did not verify the signature")
    with svc.db.unit_of_work() as uow:
        result = apply_paypal_event(uow.session, event)
        uow.commit()
    return _answer(result)
