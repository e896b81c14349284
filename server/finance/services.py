"""The payment services of one app (or one CLI run), built from settings on first use: the
providers, the destination vault, the alert channels and the payout engine's `Payments`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from flask import Flask, current_app
from sqlalchemy.orm import Session

from billing.alerts import Channel, EmailChannel, WebhookChannel, deliver_alerts
from billing.money import to_minor
from billing.payouts import Payments
from billing.providers.base import PayoutProvider
from billing.vault import Vault
from server.config import Settings
from server.governance.gateway import Gateway

KEY = "smartlinks.payments"


def make_providers(settings: Settings) -> dict[str, PayoutProvider]:
    providers: dict[str, PayoutProvider] = {}
    if settings.stripe_api_key:
        from billing.providers.stripe_connect import StripeProvider

        providers["stripe"] = StripeProvider(settings.stripe_api_key, api_base=settings.stripe_api_base)
    if settings.paypal_client_id and settings.paypal_client_secret:
        from billing.providers.paypal import PayPalProvider

        providers["paypal"] = PayPalProvider(
            settings.paypal_client_id, settings.paypal_client_secret, api_base=settings.paypal_api_base
        )
    return providers


def make_channels(settings: Settings) -> list[Channel]:
    channels: list[Channel] = []
    if settings.alert_webhook_url:
        channels.append(WebhookChannel(settings.alert_webhook_url))
    if settings.smtp_host and settings.alert_email_to:
        channels.append(
            EmailChannel(
                host=settings.smtp_host,
                port=settings.smtp_port,
                sender=settings.smtp_from,
                recipients=[r.strip() for r in settings.alert_email_to.split(",") if r.strip()],
                username=settings.smtp_user,
                password=settings.smtp_password,
                starttls=settings.smtp_starttls,
            )
        )
    return channels


def default_threshold(settings: Settings) -> Callable[[str], int]:
    amount = Decimal(settings.default_payout_threshold)

    def minor(currency: str) -> int:
        return to_minor(amount, currency)

    return minor


@dataclass
class PaymentServices:
    settings: Settings
    payments: Payments
    channels: list[Channel]

    @property
    def vault(self) -> Vault:
        return self.payments.vault

    def close(self) -> None:
        for provider in self.payments.providers.values():
            provider.close()


def build(settings: Settings, gateway: Gateway) -> PaymentServices:
    payments = Payments(
        gateway=gateway,
        providers=make_providers(settings),
        vault=Vault(settings.payout_encryption_key),
        payments_mode=settings.payments_mode,
        default_threshold=default_threshold(settings),
    )
    return PaymentServices(settings=settings, payments=payments, channels=make_channels(settings))


def payment_services(app: Flask | None = None) -> PaymentServices:
    """This app's payment services, built on first use (no network: clients connect lazily)."""
    from server.extensions import services

    target: Any = app or current_app
    found = target.extensions.get(KEY)
    if found is None:
        svc = services(target)
        found = build(svc.settings, svc.gateway)
        target.extensions[KEY] = found
    assert isinstance(found, PaymentServices)
    return found


def close_payment_services(app: Flask) -> None:
    """Release the providers' connections of an app (its payment services, if built)."""
    found = app.extensions.pop(KEY, None)
    if isinstance(found, PaymentServices):
        found.close()


def dispatch_alerts(session_factory: Callable[[], Session], channels: list[Channel]) -> int:
    """Deliver pending alerts now; a channel failure is logged and retried on the next dispatch."""
    if not channels:
        return 0
    return deliver_alerts(session_factory, channels)


def treasury_job(settings: Settings, session_factory: Callable[[], Session], gateway: Gateway) -> dict[str, Any]:
    """One scheduled treasury run with this deployment's payment settings (the scheduler's job;
    `smartlinks treasury run` does the same by hand). Returns the run's report."""
    from billing.treasury import run_treasury
    from server.db import utcnow

    services = build(settings, gateway)
    try:
        report = run_treasury(
            session_factory,
            gateway,
            services.payments.providers,
            utcnow(),
            vault=services.vault,
            payments_mode=settings.payments_mode,
            default_threshold=settings.default_payout_threshold,
        )
        dispatch_alerts(session_factory, services.channels)
        return report.as_dict()
    finally:
        services.close()
