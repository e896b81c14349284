"""User administration in a real browser: an admin deactivates an operator (whose open session
ends at its next click), changes a role, creates an API token shown once and revokes it."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from tests.conftest import make_user
from tests.e2e.test_pages import log_in

pytestmark = pytest.mark.browser


def test_an_admin_deactivates_a_user_and_manages_tokens(app: Flask, live_server: str, page: Any, browser: Any) -> None:
    admin = make_user(app, "admin", "boss@example.com")
    operator = make_user(app, "operator", "op@example.com")
    other = browser.new_context()
    op_page = other.new_page()
    op_page.set_default_timeout(10_000)
    log_in(op_page, live_server, operator)
    op_page.wait_for_url(f"{live_server}/decisions")

    log_in(page, live_server, admin)
    page.wait_for_url(f"{live_server}/decisions")
    page.click("header nav >> text=Users")
    page.wait_for_url(f"{live_server}/admin/users")
    row = page.locator('#users tr[data-user="op@example.com"]')
    assert "active" in row.inner_text()
    assert page.locator('#users tr[data-user="boss@example.com"] button').count() == 0  # not yourself
    row.locator("button.danger").click()
    page.wait_for_url(f"{live_server}/admin/users")
    assert "op@example.com: deactivated" in page.locator("main").inner_text()
    assert "deactivated" in page.locator('#users tr[data-user="op@example.com"] .badge').inner_text()

    op_page.goto(f"{live_server}/decisions")  # the operator's session is over
    assert op_page.url.startswith(f"{live_server}/login")
    other.close()

    row = page.locator('#users tr[data-user="op@example.com"]')
    row.locator("select[name=role]").select_option("auditor")
    row.locator("form.inline button").click()
    page.wait_for_url(f"{live_server}/admin/users")
    assert "role auditor" in page.locator("main").inner_text()

    page.fill("#create-token input[name=name]", "etl-loader")
    page.click("#create-token button[type=submit]")
    token = page.locator("#token-value").inner_text()
    assert token.startswith("slk_")
    page.goto(f"{live_server}/admin/users")
    assert token not in page.content()  # shown once
    page.locator('#tokens tr[data-token="etl-loader"] button.danger').click()
    page.wait_for_url(f"{live_server}/admin/users")
    assert "Token etl-loader is revoked" in page.locator("main").inner_text()
    assert "revoked" in page.locator('#tokens tr[data-token="etl-loader"] .badge').inner_text()
