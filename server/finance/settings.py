"""Checks of the payment settings, run by Settings.check(): test and live never mix."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from billing.providers.modes import paypal_base_is_live, stripe_key_mode

if TYPE_CHECKING:
    from server.config import Settings

PAYMENTS_MODES = ("test", "live")


def check_payment_settings(settings: Settings) -> None:
    """Refuse payment settings that mix test and live, or that cannot work."""
    from server.config import ConfigError

    mode = settings.payments_mode
    if mode not in PAYMENTS_MODES:
        raise ConfigError(f"PAYMENTS_MODE must be test or live, got {mode!r}")
    live_credentials: list[str] = []
    if settings.stripe_api_key:
        key_mode = stripe_key_mode(settings.stripe_api_key)
        if key_mode is None:
            raise ConfigError("STRIPE_API_KEY is not a Stripe secret or restricted key (sk_test_..., sk_live_...)")
        if key_mode != mode:
            raise ConfigError(
                f"PAYMENTS_MODE={mode} refuses a {key_mode} Stripe key: use a {mode} key (sk_{mode}_...)"
                + (", or set PAYMENTS_MODE=live to pay for real" if key_mode == "live" else "")
            )
        if key_mode == "live":
            live_credentials.append("stripe")
    if settings.paypal_client_id or settings.paypal_client_secret:
        if not (settings.paypal_client_id and settings.paypal_client_secret):
            raise ConfigError("set both PAYPAL_CLIENT_ID and PAYPAL_CLIENT_SECRET")
        paypal_live = paypal_base_is_live(settings.paypal_api_base)
        if paypal_live and mode == "test":
            raise ConfigError(
                f"PAYMENTS_MODE=test refuses PayPal's live API ({settings.paypal_api_base}): use "
                "https://api-m.sandbox.paypal.com, or set PAYMENTS_MODE=live to pay for real"
            )
        if not paypal_live and mode == "live":
            raise ConfigError(
                f"PAYMENTS_MODE=live needs PayPal's live API (https://api-m.paypal.com), not {settings.paypal_api_base}"
            )
        if paypal_live:
            live_credentials.append("paypal")
    if mode == "live":
        if not live_credentials:
            raise ConfigError("PAYMENTS_MODE=live needs live credentials (a sk_live_ Stripe key or PayPal live)")
        if settings.mode != "live":
            raise ConfigError("PAYMENTS_MODE=live needs SMARTLINKS_MODE=live (the payout policy judges live payouts)")
        if settings.stripe_api_base:
            raise ConfigError("PAYMENTS_MODE=live talks to Stripe's own API: unset STRIPE_API_BASE")
    if settings.payout_encryption_key:
        from billing.vault import Vault, VaultError

        try:
            Vault(settings.payout_encryption_key)
        except VaultError as exc:
            raise ConfigError(str(exc)) from exc
    try:
        threshold = Decimal(settings.default_payout_threshold)
    except InvalidOperation as exc:
        raise ConfigError(
            f"DEFAULT_PAYOUT_THRESHOLD must be a decimal amount, got {settings.default_payout_threshold!r}"
        ) from exc
    if not threshold.is_finite() or threshold < 0:
        raise ConfigError("DEFAULT_PAYOUT_THRESHOLD must be a finite amount >= 0")
    if settings.stripe_webhook_tolerance <= 0:
        raise ConfigError("STRIPE_WEBHOOK_TOLERANCE must be a positive number of seconds")
    if settings.treasury_interval_seconds < 60:
        raise ConfigError("TREASURY_INTERVAL_SECONDS must be at least 60")
