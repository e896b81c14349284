"""The portal in a real browser: an operator invites a user from the affiliate's admin page, the
invitee opens the link, sets a password, accepts the terms and lands on a dashboard with its
affiliate's numbers; another affiliate's link is not there for it, and staff see the acceptance."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from tests.conftest import make_user
from tests.e2e.test_pages import log_in
from tests.support.portal import seed_network

pytestmark = pytest.mark.browser

NEW_PASSWORD = "portal password 2026"  # noqa: S105


def test_invite_accept_terms_and_see_the_own_dashboard_only(app: Flask, live_server: str, page: Any) -> None:
    seed_network(app)
    operator = make_user(app, "operator", "ops@example.com")
    log_in(page, live_server, operator)
    page.wait_for_url(f"{live_server}/decisions")
    page.goto(f"{live_server}/links")
    page.click("#affiliates >> text=Affiliate A")
    page.wait_for_url(f"{live_server}/affiliates/aff_a")
    page.fill("#invite input[name=email]", "newcomer@example.com")
    page.click("#invite button[type=submit]")
    link = page.locator("#invitation-url").inner_text()
    assert link.startswith(f"{live_server}/portal/invitations/")
    assert "SMTP is not configured" in page.locator("#invitation-created").inner_text()
    page.click("header form.logout button")
    page.wait_for_url(f"{live_server}/login")

    page.goto(link)
    assert "Affiliate A" in page.locator("main").inner_text()
    page.fill("input[name=password]", NEW_PASSWORD)
    page.fill("input[name=password_confirmation]", "not the same password")
    page.check("input[name=accept]")
    page.click("#accept-invitation button[type=submit]")
    assert "the two passwords differ" in page.locator("#form-error").inner_text()
    page.fill("input[name=password]", NEW_PASSWORD)
    page.fill("input[name=password_confirmation]", NEW_PASSWORD)
    page.check("input[name=accept]")
    page.click("#accept-invitation button[type=submit]")
    page.wait_for_url(f"{live_server}/portal/")

    assert page.locator("h1").inner_text() == "Affiliate A"
    assert page.locator("#links .tracking-url").all_inner_texts() == [f"{live_server}/r/alpha"]
    month = page.locator("#totals-last_30_days")
    assert month.locator(".clicks").inner_text() == "3"
    assert month.locator(".conversions").inner_text() == "2"
    assert "14.00 EUR" in month.locator(".earnings").inner_text()
    assert "14.00 EUR" in page.locator("#balances").inner_text()
    assert "bravo" not in page.content()
    page.click("#portal-nav >> text=Balance & payouts")
    assert page.locator("#payouts tbody tr").count() == 1 and "pay_a" in page.locator("#payouts").inner_text()

    response = page.goto(f"{live_server}/portal/links/lnk_b")
    assert response.status == 404
    response = page.goto(f"{live_server}/affiliates/aff_b")
    assert response.status == 403
    page.goto(link)
    assert "used already" in page.locator("#invitation-invalid").inner_text()
    page.goto(f"{live_server}/portal/")
    page.click("header form.logout button")
    page.wait_for_url(f"{live_server}/login")

    log_in(page, live_server, operator)
    page.wait_for_url(f"{live_server}/decisions")
    page.goto(f"{live_server}/affiliates/aff_a")
    assert "newcomer@example.com" in page.locator("#acceptances").inner_text()
    assert "affiliate-terms" in page.locator("#acceptances").inner_text()
    assert "accepted" in page.locator("#invitations").inner_text()


def test_an_existing_portal_user_must_accept_the_terms_first(app: Flask, live_server: str, page: Any) -> None:
    seed_network(app)
    email = make_user(app, "advertiser", "buyer@example.com", entity_id="adv_a")
    page.goto(f"{live_server}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", "correct horse battery staple")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server}/portal/terms?next=/portal/")
    assert "Advertiser terms of sale (CGV)" in page.locator("h1").inner_text()
    page.check("#accept-terms input[name=accept]")
    page.click("#accept-terms button[type=submit]")
    page.wait_for_url(f"{live_server}/portal/")
    assert "Offer A" in page.locator("#offers").inner_text()
    assert "Offer B" not in page.content()
