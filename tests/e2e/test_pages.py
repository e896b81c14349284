"""Admin pages in a real browser: login, the decisions table and its filters, logout."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from tests.conftest import PASSWORD, make_token, make_user
from tests.integration.test_decisions_api import allocation

pytestmark = pytest.mark.browser


def seed_decisions(app: Flask) -> None:
    client = app.test_client()
    header = {"Authorization": f"Bearer {make_token(app, 'service')}"}
    client.post("/v1/decisions", json=allocation({"a": 0.5, "b": 0.5}), headers=header)
    bad = allocation({"a": 0.5, "b": 0.5})
    bad["action"]["params"]["weights"] = {"a": 0.5, "ghost": 0.5}
    client.post("/v1/decisions", json=bad, headers=header)


def log_in(page: Any, live_server: str, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{live_server}/decisions")
    assert "/login" in page.url  # anonymous: sent to the login page, with next=
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_login_filter_and_logout(app: Flask, live_server: str, page: Any) -> None:
    email = make_user(app, "auditor")
    seed_decisions(app)

    log_in(page, live_server, email, "wrong password entirely")
    assert page.locator("[role=alert]").inner_text() == "unknown email or wrong password"

    log_in(page, live_server, email)
    page.wait_for_url(f"{live_server}/decisions")
    rows = page.locator("table#decisions tbody tr")
    assert rows.count() == 2
    assert page.locator("td.reasons code").first.inner_text()  # the deny names its rule

    page.select_option("select[name=allowed]", "false")
    page.click("form.filters button")
    assert rows.count() == 1
    assert "denied" in rows.first.inner_text()
    revision = rows.first.locator("td").nth(6).inner_text()
    assert revision and revision != "—"

    rows.first.locator("a").first.click()
    assert "Input sent to OPA" in page.content()

    page.goto(f"{live_server}/decisions?since=yesterday")
    assert "Invalid filter" in page.locator("[role=alert]").inner_text()

    page.click("header form.logout button")
    page.wait_for_url(f"{live_server}/login")
    page.goto(f"{live_server}/")
    assert "/login" in page.url


def test_dashboard_shows_policy_state(app: Flask, live_server: str, page: Any) -> None:
    email = make_user(app, "operator")
    seed_decisions(app)
    log_in(page, live_server, email)
    page.goto(f"{live_server}/")
    assert page.locator("#opa-status").inner_text() == "OPA healthy"
    assert page.locator("#kill-switch").inner_text() == "off"


def test_a_role_without_access_sees_a_403_page(app: Flask, live_server: str, page: Any) -> None:
    email = make_user(app, "affiliate")
    log_in(page, live_server, email)
    response = page.goto(f"{live_server}/decisions")
    assert response.status == 403
    assert "403" in page.locator("h1").inner_text()
