"""Payment settings: test is the default, and test and live never mix."""

from __future__ import annotations

import pytest

from server.config import ConfigError, Settings

LIVE_BASE = "https://api-m.paypal.com"


def settings(**env: str) -> Settings:
    return Settings.from_env(env)


def test_test_mode_is_the_default_and_secrets_are_redacted() -> None:
    s = settings(
        STRIPE_API_KEY="sk_test_abc",
        STRIPE_WEBHOOK_SECRET="whsec_x",
        PAYPAL_CLIENT_ID="id",
        PAYPAL_CLIENT_SECRET="pw",
        PAYOUT_ENCRYPTION_KEY="bXkgdGVzdCBrZXkgaXMgMzIgYnl0ZXMgbG9uZyEhISE=",
        SMTP_PASSWORD="smtp",
    )
    assert s.payments_mode == "test"
    redacted = s.redacted()
    for name in (
        "stripe_api_key",
        "stripe_webhook_secret",
        "paypal_client_secret",
        "payout_encryption_key",
        "smtp_password",
    ):
        assert redacted[name] == "***", name


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STRIPE_API_KEY": "sk_live_abc"}, "PAYMENTS_MODE=test refuses a live Stripe key"),
        (
            {"PAYMENTS_MODE": "live", "SMARTLINKS_MODE": "live", "STRIPE_API_KEY": "sk_test_abc"},
            "PAYMENTS_MODE=live refuses a test Stripe key",
        ),
        ({"STRIPE_API_KEY": "pk_test_abc"}, "not a Stripe secret"),
        (
            {"PAYPAL_CLIENT_ID": "id", "PAYPAL_CLIENT_SECRET": "pw", "PAYPAL_API_BASE": LIVE_BASE},
            "PAYMENTS_MODE=test refuses PayPal's live API",
        ),
        (
            {
                "PAYMENTS_MODE": "live",
                "SMARTLINKS_MODE": "live",
                "PAYPAL_CLIENT_ID": "id",
                "PAYPAL_CLIENT_SECRET": "pw",
            },
            "needs PayPal's live API",
        ),
        ({"PAYPAL_CLIENT_ID": "id"}, "set both PAYPAL_CLIENT_ID and PAYPAL_CLIENT_SECRET"),
        ({"PAYMENTS_MODE": "live", "SMARTLINKS_MODE": "live"}, "needs live credentials"),
        ({"PAYMENTS_MODE": "live", "STRIPE_API_KEY": "sk_live_abc"}, "needs SMARTLINKS_MODE=live"),
        (
            {
                "PAYMENTS_MODE": "live",
                "SMARTLINKS_MODE": "live",
                "STRIPE_API_KEY": "sk_live_abc",
                "STRIPE_API_BASE": "http://127.0.0.1:12111",
            },
            "unset STRIPE_API_BASE",
        ),
        ({"PAYMENTS_MODE": "sandbox"}, "PAYMENTS_MODE must be test or live"),
        ({"PAYOUT_ENCRYPTION_KEY": "not-a-key"}, "not a Fernet key"),
        ({"DEFAULT_PAYOUT_THRESHOLD": "fifty"}, "DEFAULT_PAYOUT_THRESHOLD"),
        ({"TREASURY_INTERVAL_SECONDS": "5"}, "TREASURY_INTERVAL_SECONDS"),
    ],
)
def test_settings_that_mix_test_and_live_refuse_to_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(**env)


def test_live_mode_with_live_credentials_starts() -> None:
    s = settings(
        PAYMENTS_MODE="live",
        SMARTLINKS_MODE="live",
        STRIPE_API_KEY="sk_live_abc",
        PAYPAL_CLIENT_ID="id",
        PAYPAL_CLIENT_SECRET="pw",
        PAYPAL_API_BASE=LIVE_BASE,
    )
    assert s.payments_mode == "live"
