"""The smart-link admin pages in a real browser: an operator creates an advertiser, offers, an
affiliate and a link through the forms, sees the link's allocation bars and its history chart
after two allocations, pauses an offer, and reads what went wrong when a form is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask

from tests.conftest import PASSWORD, make_user

pytestmark = pytest.mark.browser

GOOD_URL = "https://adv.example/land?cid={click_id}&s1={sub1}"


def log_in(page: Any, live_server: str, email: str) -> None:
    page.goto(f"{live_server}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server}/")


def create_offer(page: Any, live_server: str, name: str, url_template: str = GOOD_URL) -> None:
    page.goto(f"{live_server}/offers")
    form = page.locator("form#new-offer")
    form.locator("select[name=advertiser_id]").select_option(label="Acme")
    form.locator("input[name=name]").fill(name)
    form.locator("input[name=url_template]").fill(url_template)
    form.locator("input[name=payout]").fill("2.50")
    form.locator("select[name=currency]").select_option("EUR")
    form.locator("button[type=submit]").click()


def test_create_a_link_and_watch_its_allocations(app: Flask, live_server: str, page: Any) -> None:
    csp_violations: list[str] = []
    page.on("console", lambda msg: csp_violations.append(msg.text) if "Content Security Policy" in msg.text else None)
    log_in(page, live_server, make_user(app, "operator"))
    assert page.locator("header nav a", has_text="Links").count() == 1

    # an advertiser, then an offer whose URL template is refused with a readable reason
    page.goto(f"{live_server}/offers")
    page.fill("form#new-advertiser input[name=name]", "Acme")
    page.click("form#new-advertiser button[type=submit]")
    assert page.locator(".flash").inner_text() == "Advertiser Acme created."

    create_offer(page, live_server, "Spring deal", "https://adv.example/land?cid={clickid}")
    alert = page.locator("form#new-offer").locator("xpath=..").locator("[role=alert]")
    assert "url template: unknown macro {clickid}" in alert.inner_text()
    assert page.locator("form#new-offer input[name=name]").input_value() == "Spring deal"  # kept
    page.fill("form#new-offer input[name=url_template]", GOOD_URL)
    page.click("form#new-offer button[type=submit]")
    page.wait_for_url("**/offers/off_*")
    assert page.locator("h1").inner_text().startswith("Offer Spring deal")
    create_offer(page, live_server, "Summer deal")
    page.wait_for_url("**/offers/off_*")

    # an affiliate and a link with one arm: its first allocation gives that arm everything
    page.goto(f"{live_server}/links")
    page.fill("form#new-affiliate input[name=name]", "Pat")
    page.click("form#new-affiliate button[type=submit]")
    form = page.locator("form#new-link")
    form.locator("input[name=slug]").fill("spring")
    form.locator("input[name=name]").fill("Spring campaign")
    form.locator("select[name=affiliate_id]").select_option(label="Pat")
    form.locator("label.check", has_text="Spring deal").locator("input").check()
    form.locator("select[name=fallback_offer_id]").select_option(label="Spring deal")
    form.locator("button[type=submit]").click()
    page.wait_for_url("**/links/lnk_*")
    assert "First allocation allowed" in page.locator(".flash").inner_text()
    bars = page.locator("table#arms svg.allocation-bar rect.share")
    assert bars.count() == 1 and bars.first.get_attribute("width") == "100.000"
    assert page.locator("#allocation-history path.series").count() == 1

    # a second allocation: adding an arm asks the policy for an equal split
    page.locator("form#arms-form label.check", has_text="Summer deal").locator("input").check()
    page.click("form#arms-form button[type=submit]")
    page.wait_for_url("**/links/lnk_*")
    assert "Arms changed; new allocation allowed." in page.locator(".flash").inner_text()
    assert [bars.nth(i).get_attribute("width") for i in range(bars.count())] == ["50.000", "50.000"]
    assert page.locator("table#arms td.weight").all_inner_texts() == ["50.0 %", "50.0 %"]
    chart = page.locator("svg#allocation-history")
    assert chart.locator("path.series").count() == 2 and chart.locator("line.marker").count() == 2
    assert "2 approved allocations" in page.content()
    decisions = page.locator("table#link-decisions tbody tr")
    assert decisions.count() == 2 and "allocation.update" in decisions.first.inner_text()

    # the link's kill switch: turned on from the page, after which the policy refuses a pause
    page.click("form#kill-switch-form button[type=submit]")
    assert page.locator("#link-kill-switch").inner_text() == "on"
    page.click("form#link-status-form button[type=submit]")
    assert "Denied by policy" in page.locator("#page-alert").inner_text()
    assert page.locator("#link-status").inner_text() == "active"
    assert "denied" in page.locator("table#link-decisions tbody tr").first.inner_text()

    # pausing an offer is a governed action too
    page.locator("table#arms a", has_text="Summer deal").click()
    page.wait_for_url("**/offers/off_*")
    page.click("form#offer-status-form button[type=submit]")
    assert page.locator(".flash").inner_text() == "Offer paused."
    assert page.locator("#offer-status").inner_text() == "paused"
    assert "offer.pause" in page.locator("table#offer-decisions").inner_text()
    page.goto(f"{live_server}/offers")
    assert "paused" in page.locator("table#offers tr", has_text="Summer deal").inner_text()

    assert csp_violations == []


def test_refused_forms_read_well_and_costs_import_from_csv(app: Flask, live_server: str, page: Any) -> None:
    log_in(page, live_server, make_user(app, "operator"))
    page.goto(f"{live_server}/offers")
    page.fill("form#new-advertiser input[name=name]", "Acme")
    page.click("form#new-advertiser button[type=submit]")
    create_offer(page, live_server, "Deal", "ftp://adv.example/{click_id")
    text = page.locator("[role=alert]").inner_text()
    assert "never closed" in text

    page.goto(f"{live_server}/campaigns")
    page.fill("form#new-source input[name=name]", "Push")
    page.click("form#new-source button[type=submit]")
    form = page.locator("form#new-campaign")
    form.locator("input[name=name]").fill("Q4")
    form.locator("select[name=traffic_source_id]").select_option(label="Push (cpc)")
    form.locator("input[name=daily_budget]").fill("500")
    form.locator("input[name=daily_cap]").fill("100")
    form.locator("button[type=submit]").click()
    assert "daily budget 500 is above the daily cap 100" in page.locator("[role=alert]").inner_text()
    form.locator("input[name=daily_cap]").fill("1000")  # the refused values were kept
    form.locator("button[type=submit]").click()
    assert page.locator(".flash").inner_text() == "Campaign Q4 created."

    # a budget above the policy's per-campaign cap (5000): refused by OPA, said on the page
    row = page.locator("table#campaigns form.row-edit").first
    row.locator("input[name=daily_cap]").fill("9000")
    row.locator("input[name=daily_budget]").fill("6000")
    row.locator("button[type=submit]").click()
    alert = page.locator("[role=alert]").inner_text()
    assert "Campaign Q4 was not changed. Denied by policy" in alert and "per-campaign cap 5000" in alert
    assert page.locator("table#campaigns form.row-edit input[name=daily_budget]").first.input_value() == "500.00"

    # costs from a CSV file: a bad line is named, a good file is upserted
    def upload(content: str) -> None:
        page.locator("form#import-costs select[name=campaign_id]").select_option(label="Q4")
        page.set_input_files(
            "form#import-costs input[name=file]",
            files=[{"name": "costs.csv", "mimeType": "text/csv", "buffer": content.encode()}],
        )
        page.click("form#import-costs button[type=submit]")

    today = datetime.now(UTC).date()
    yesterday, before = (today - timedelta(days=1)).isoformat(), (today - timedelta(days=2)).isoformat()
    upload(f"day,amount,clicks\n{before},12.50,100\n{yesterday},lots,7\n")
    assert "line 3 amount: Not a valid number." in page.locator("[role=alert]").inner_text()
    upload(f"day,amount,clicks\n{before},12.50,100\n{yesterday},3,7\n")
    assert page.locator(".flash").inner_text() == "Imported 2 days of cost (2 new, 0 updated)."
    assert page.locator("table#campaigns td.cost").inner_text() == "15.50 EUR · 107 clicks"
    upload(f"day,amount\n{yesterday},4\n")
    assert page.locator(".flash").inner_text() == "Imported 1 day of cost (0 new, 1 updated)."
    assert page.locator("table#campaigns td.cost").inner_text() == "16.50 EUR · 100 clicks"

    response = page.goto(f"{live_server}/links/lnk_missing")
    assert response.status == 404 and "404" in page.locator("h1").inner_text()
