"""Fixtures and helpers of the money tests: stripe-mock behind its proxy, the local PayPal server,
an app configured for both, and ways to owe affiliates money and fund the treasury.

Test modules import the fixtures they use by name (`from tests.support.finance import ...`);
`settings` here replaces the conftest one, so `app` and `client` are payment-enabled."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from billing import accounts
from billing.ledger import ensure_account, record_entry, verify
from billing.models import PayoutProfile
from billing.rules import EntryRequest, Line
from billing.vault import Vault, mask
from server.config import Settings
from server.db import utcnow
from server.extensions import services
from server.finance.services import payment_services
from server.links.models import Affiliate
from server.policy.bundle import BundleInfo
from server.policy.sidecar import OpaSidecar
from tests.conftest import make_settings
from tests.support import paypal_server as pp
from tests.support.paypal_server import PayPalServer
from tests.support.stripe_mock import StripeMockProcess, StripeProxy

ENCRYPTION_KEY = "bXkgdGVzdCBrZXkgaXMgMzIgYnl0ZXMgbG9uZyEhISE="  # 32 bytes, url-safe base64
STRIPE_KEY = "sk_test_smartlinks0123456789"
WEBHOOK_SECRET = "whsec_test_smartlinks_0123456789"  # noqa: S105


@pytest.fixture(name="stripe_mock", scope="session")
def stripe_mock_fixture() -> Iterator[StripeMockProcess]:
    process = StripeMockProcess()
    process.start()
    yield process
    process.stop()


@pytest.fixture(name="stripe_proxy_server", scope="session")
def stripe_proxy_server_fixture(stripe_mock: StripeMockProcess) -> Iterator[StripeProxy]:
    proxy = StripeProxy(stripe_mock.url).start()
    yield proxy
    proxy.stop()


@pytest.fixture(name="stripe_proxy")
def stripe_proxy_fixture(stripe_proxy_server: StripeProxy) -> StripeProxy:
    stripe_proxy_server.reset()
    return stripe_proxy_server


@pytest.fixture(name="paypal_server", scope="session")
def paypal_server_fixture() -> Iterator[PayPalServer]:
    server = PayPalServer().start()
    yield server
    server.stop()


@pytest.fixture(name="paypal")
def paypal_fixture(paypal_server: PayPalServer) -> PayPalServer:
    state = paypal_server.state
    with state.lock:
        state.faults.clear()
        state.outcomes.clear()
        state.requests.clear()
    state.release.set()
    import threading

    state.release = threading.Event()
    state.held = threading.Event()
    return paypal_server


def finance_overrides(stripe_base: str, paypal_base: str) -> dict[str, Any]:
    return {
        "stripe_api_key": STRIPE_KEY,
        "stripe_api_base": stripe_base,
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "paypal_client_id": pp.CLIENT_ID,
        "paypal_client_secret": pp.CLIENT_SECRET,
        "paypal_api_base": paypal_base,
        "paypal_webhook_id": pp.WEBHOOK_ID,
        "payout_encryption_key": ENCRYPTION_KEY,
        "default_payout_threshold": "50.00",
    }


@pytest.fixture(name="settings")
def settings_fixture(
    database_url: str,
    opa_sidecar: OpaSidecar,
    policy_bundle: BundleInfo,
    tmp_path: Path,
    stripe_proxy: StripeProxy,
    paypal: PayPalServer,
) -> Settings:
    return make_settings(
        database_url,
        opa_sidecar.url,
        tmp_path,
        policy_revision=policy_bundle.revision,
        **finance_overrides(stripe_proxy.url, paypal.url),
    )


@pytest.fixture(name="app")
def app_fixture(settings: Settings) -> Iterator[Flask]:
    from server import create_app
    from server.finance.services import close_payment_services

    app = create_app(settings)
    app.testing = True
    yield app
    close_payment_services(app)
    services(app).close()


# -- seeding ------------------------------------------------------------------------------------------
def add_affiliate(
    app: Flask,
    affiliate_id: str,
    *,
    method: str = "stripe",
    destination: str | None = None,
    age_days: float = 60,
    on_hold: bool = False,
    status: str = "active",
    threshold: int | None = None,
    currency: str = "EUR",
) -> None:
    vault = Vault(ENCRYPTION_KEY)
    destination = destination or (f"acct_{affiliate_id}" if method == "stripe" else f"{affiliate_id}@example.com")
    with services(app).db.unit_of_work() as uow:
        uow.session.add(
            Affiliate(
                id=affiliate_id,
                name=f"Affiliate {affiliate_id}",
                status=status,
                created_at=utcnow() - timedelta(days=age_days),
            )
        )
        uow.session.flush()
        uow.session.add(
            PayoutProfile(
                affiliate_id=affiliate_id,
                method=method,
                destination_enc=vault.encrypt(destination),
                destination_hint=mask(destination),
                threshold_minor=threshold,
                threshold_currency=currency if threshold is not None else None,
                on_hold=on_hold,
            )
        )
        uow.commit()


def owe(app: Flask, affiliate_id: str, minor: int, currency: str = "EUR", key: str | None = None) -> None:
    """Book a commission the platform owes `affiliate_id`."""
    payable = accounts.affiliate_payable(affiliate_id, currency)
    expense = accounts.commission_expense(currency)
    with services(app).db.unit_of_work() as uow:
        ensure_account(uow.session, payable)
        ensure_account(uow.session, expense)
        record_entry(
            uow.session,
            EntryRequest(
                key or f"owe:{affiliate_id}:{minor}:{time.monotonic_ns()}",
                (Line.debit(expense.code, minor, currency), Line.credit(payable.code, minor, currency)),
                description=f"commission owed to {affiliate_id}",
            ),
        )
        uow.commit()


def fund(app: Flask, minor: int, currency: str = "EUR") -> None:
    """An advertiser pays: cash comes in against the receivable."""
    cash = accounts.cash(currency)
    receivable = accounts.advertiser_receivable("adv_funding", currency)
    with services(app).db.unit_of_work() as uow:
        ensure_account(uow.session, cash)
        ensure_account(uow.session, receivable)
        record_entry(
            uow.session,
            EntryRequest(
                f"fund:{currency}:{minor}:{time.monotonic_ns()}",
                (Line.debit(cash.code, minor, currency), Line.credit(receivable.code, minor, currency)),
                description="advertiser payment received",
            ),
        )
        uow.commit()


def balance(app: Flask, code: str) -> tuple[int, int, int, int]:
    from billing.ledger import account_by_code

    with services(app).db.unit_of_work() as uow:
        account = account_by_code(uow.session, code)
        assert account is not None, code
        return account.debits_posted, account.credits_posted, account.debits_pending, account.credits_pending


def assert_ledger_ok(app: Flask) -> None:
    with services(app).db.unit_of_work() as uow:
        report = verify(uow.session)
        assert report.ok, report.violations


def payments(app: Flask) -> Any:
    return payment_services(app).payments


def stripe_signature(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    signed = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={signed}"


def stripe_event(event_type: str, transfer: dict[str, Any], event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or f"evt_{time.monotonic_ns()}",
            "object": "event",
            "type": event_type,
            "api_version": "2024-06-20",
            "created": int(time.time()),
            "data": {"object": transfer},
            "livemode": False,
        }
    ).encode()
