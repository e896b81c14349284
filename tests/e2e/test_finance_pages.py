"""Finance pages in a real browser: accounts and balances, the journal, a manual payout that
waits for approval, the approval queue (the requester may not approve; another finance user
does, with a reason; a rejection needs one), payout history, reconciliation and alerts."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from tests.conftest import make_user
from tests.e2e.test_pages import log_in
from tests.support.finance import (  # noqa: F401 - the *_fixture names register fixtures
    add_affiliate,
    assert_ledger_ok,
    fund,
    owe,
    paypal_fixture,
    paypal_server_fixture,
    settings_fixture,
    stripe_mock_fixture,
    stripe_proxy_fixture,
    stripe_proxy_server_fixture,
)
from tests.support.stripe_mock import StripeProxy

pytestmark = pytest.mark.browser


def log_out(page: Any, live_server: str) -> None:
    page.click("header form.logout button")
    page.wait_for_url(f"{live_server}/login")


def test_a_manual_payout_goes_through_the_approval_queue(
    app: Flask, live_server: str, page: Any, stripe_proxy: StripeProxy
) -> None:
    fund(app, 5_000_000)
    add_affiliate(app, "aff_big")
    add_affiliate(app, "aff_other")
    owe(app, "aff_big", 1_500_000)
    owe(app, "aff_other", 1_200_000)
    alice = make_user(app, "finance", "alice@example.com")
    bob = make_user(app, "finance", "bob@example.com")

    log_in(page, live_server, alice)
    page.wait_for_url(f"{live_server}/decisions")
    page.click("header nav >> text=Finance")
    assert page.locator("#accounts").is_visible()
    payable = page.locator("#accounts tr", has_text="affiliate:aff_big:payable:EUR")
    assert payable.locator("td.balance").inner_text() == "15000.00 EUR"
    page.click("nav.subnav >> text=Journal")
    assert page.locator("#entries tbody tr").count() == 3
    assert "credit affiliate:aff_big:payable:EUR 15000.00 EUR" in page.locator("#entries").inner_text()

    for affiliate in ("aff_big", "aff_other"):
        page.click("nav.subnav >> text=Payouts")
        page.fill("#manual-payout input[name=affiliate_id]", affiliate)
        page.fill("#manual-payout input[name=reason]", "month end")
        page.click("#manual-payout button[type=submit]")
        assert "waits for a finance approval" in page.locator(".flash").inner_text()
    assert page.locator("#payout-state").inner_text() == "proposed"
    page.click("nav.subnav >> text=Approvals")
    row = page.locator("#approvals tr[data-payout]", has_text="aff_big")
    row.locator("input[name=reason]").fill("my own")
    row.locator("button[value=approve]").click()
    assert "approver_is_requester" in page.content() or "someone other than" in page.locator(".flash").inner_text()
    assert page.locator("#approvals tr[data-payout]").count() == 2
    log_out(page, live_server)

    log_in(page, live_server, bob)
    page.wait_for_url(f"{live_server}/decisions")
    page.goto(f"{live_server}/finance/approvals")
    other = page.locator("#approvals tr[data-payout]", has_text="aff_other")
    other.locator("button[value=reject]").click()
    assert "a rejection gives its reason" in page.locator(".flash").inner_text()
    other = page.locator("#approvals tr[data-payout]", has_text="aff_other")
    other.locator("input[name=reason]").fill("duplicate invoice")
    other.locator("button[value=reject]").click()
    assert "rejected" in page.locator(".flash").inner_text()
    big = page.locator("#approvals tr[data-payout]", has_text="aff_big")
    big.locator("input[name=reason]").fill("invoices checked")
    big.locator("button[value=approve]").click()
    assert "approved and sent" in page.locator(".flash").inner_text()
    assert page.locator("#queue-empty").is_visible()
    assert len(stripe_proxy.state.transfer_creations()) == 1

    page.goto(f"{live_server}/finance/payouts?state=submitted")
    page.locator("#payouts tbody tr a").first.click()
    assert page.locator("#payout-state").inner_text() == "submitted"
    steps = page.locator("#history tbody tr td:nth-child(3)").all_inner_texts()
    assert steps == ["proposed", "proposed", "proposed", "approved", "submitted"]
    assert "invoices checked" in page.locator("#history").inner_text()

    page.goto(f"{live_server}/finance/reconciliation")
    page.select_option("#run-reconciliation select[name=provider]", "stripe")
    page.click("#run-reconciliation button")
    assert "clean" in page.locator(".flash").inner_text()
    assert page.locator("section.report").count() == 1
    assert_ledger_ok(app)


def test_alerts_are_listed_and_acknowledged(app: Flask, live_server: str, page: Any, stripe_proxy: StripeProxy) -> None:
    fund(app, 100_000)
    add_affiliate(app, "aff_bad")
    owe(app, "aff_bad", 10_000)
    stripe_proxy.fail("400")
    email = make_user(app, "finance", "carol@example.com")
    log_in(page, live_server, email)
    page.wait_for_url(f"{live_server}/decisions")
    page.goto(f"{live_server}/finance/payouts")
    page.fill("#manual-payout input[name=affiliate_id]", "aff_bad")
    page.click("#manual-payout button[type=submit]")
    assert page.locator("#payout-state").inner_text() == "failed"
    page.goto(f"{live_server}/finance/alerts")
    row = page.locator("#alerts tr[data-alert]", has_text="payout_failed")
    assert "failed" in row.inner_text()
    row.locator("button").click()
    assert "acknowledged" in page.locator(".flash").inner_text()
    assert "acknowledged by user:" in page.locator("#alerts").inner_text()


def test_roles_without_finance_access_see_no_finance(app: Flask, live_server: str, page: Any) -> None:
    email = make_user(app, "operator", "op@example.com")
    log_in(page, live_server, email)
    page.wait_for_url(f"{live_server}/decisions")
    assert page.locator("header nav >> text=Finance").count() == 0
    response = page.goto(f"{live_server}/finance/payouts")
    assert response.status == 403
