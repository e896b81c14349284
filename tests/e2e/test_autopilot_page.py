"""The autopilot page in a real browser: an operator turns the global kill switch on (with the
confirmation), a cycle runs and is denied with kill_switch_active, and the page shows it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flask import Flask

from server.autopilot.services import autopilot_actor, optimize_link
from server.clicks.redirect import click_handler
from server.db import utcnow
from server.extensions import services
from server.links.models import SmartLink
from tests.conftest import PASSWORD, make_user
from tests.support import factories

pytestmark = pytest.mark.browser


def run_cycle(app: Flask, link_id: str) -> str:
    svc = services(app)
    with svc.db.unit_of_work() as uow:
        link = uow.session.get(SmartLink, link_id)
        assert link is not None
        result = optimize_link(
            uow.session, svc.gateway, link, actor=autopilot_actor(link), rng=np.random.default_rng(1), now=utcnow()
        )
        uow.commit()
    return result.outcome


def test_flip_the_kill_switch_and_see_a_cycle_denied(app: Flask, live_server: str, page: Any) -> None:
    email = make_user(app, "operator")
    link_id = factories.seed_link(app, {"a": 0.5, "b": 0.5}, params={"n_samples": 500})
    assert run_cycle(app, link_id) in ("allowed", "clamped")

    page.goto(f"{live_server}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.click("header nav >> text=Autopilot")
    page.wait_for_url(f"{live_server}/autopilot")
    assert page.locator("#global-kill-switch").inner_text() == "off"
    assert page.locator(f"#links tr[data-link={link_id}] .badge").inner_text() in ("allowed", "clamped")

    page.fill("#kill-switch-form input[name=reason]", "incident drill")
    page.click("#kill-switch-form button")  # the browser refuses: the confirmation box is required
    assert page.locator("#global-kill-switch").inner_text() == "off"
    page.check("#kill-switch-form input[name=confirm]")
    page.click("#kill-switch-form button")
    page.wait_for_url(f"{live_server}/autopilot")
    assert page.locator("#global-kill-switch").inner_text() == "ON"

    assert run_cycle(app, link_id) == "denied"
    page.reload()
    row = page.locator(f"#links tr[data-link={link_id}]")
    assert row.locator(".badge").inner_text() == "denied"
    assert "kill_switch_active" in row.locator("td.reasons").inner_text()
    assert "kill_switch_active" in page.locator("#cycles tbody tr").first.inner_text()

    page.check("#kill-switch-form input[name=confirm]")
    page.click("#kill-switch-form button")  # and back off
    page.wait_for_url(f"{live_server}/autopilot")
    assert page.locator("#global-kill-switch").inner_text() == "off"
    click_handler(app).close()


def test_a_role_without_controls_write_cannot_flip_it(app: Flask, live_server: str, page: Any) -> None:
    email = make_user(app, "auditor")
    page.goto(f"{live_server}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.goto(f"{live_server}/autopilot")
    assert page.locator("#global-kill-switch").inner_text() == "off"
    page.check("#kill-switch-form input[name=confirm]")
    page.click("#kill-switch-form button")
    assert "403" in page.locator("h1").inner_text()
