"""Test or live: told apart from the credentials alone, so that a live key in test mode (or the
reverse) is refused before anything starts. No provider library is imported here."""

from __future__ import annotations

STRIPE_LIVE_PREFIXES = ("sk_live_", "rk_live_")
STRIPE_TEST_PREFIXES = ("sk_test_", "rk_test_")
PAYPAL_LIVE_HOSTS = ("api-m.paypal.com", "api.paypal.com")


def stripe_key_mode(api_key: str) -> str | None:
    """'live', 'test', or None for something that is not a Stripe secret or restricted key."""
    if api_key.startswith(STRIPE_LIVE_PREFIXES):
        return "live"
    if api_key.startswith(STRIPE_TEST_PREFIXES):
        return "test"
    return None


def paypal_base_is_live(api_base: str) -> bool:
    host = api_base.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0].lower()
    return host in PAYPAL_LIVE_HOSTS
