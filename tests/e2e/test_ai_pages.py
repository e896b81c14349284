"""The AI supervisor's pages in a real browser, against the real OPA and a scripted
OpenAI-compatible server: the live feed refreshes by itself and shows the mode of every proposal
(and the switch to degraded mode), an operator approves and rejects in the queue, undoes an
executed action, reads a proposal with its prompt, and the dashboard draws its charts. No page
breaks the Content-Security-Policy."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from server.ai.client import AIClientFactory
from server.ai.state import set_controls
from server.ai.supervisor import SupervisorConfig, run_supervisor_cycle
from server.config import Settings
from server.db import utcnow
from server.extensions import services
from server.links.models import Offer, SmartLink
from server.policy.bundle import BundleInfo
from server.policy.sidecar import OpaSidecar
from tests.conftest import PASSWORD, make_settings, make_user
from tests.support import openai_server as oai
from tests.support.ai import seed_market

pytestmark = pytest.mark.browser


@pytest.fixture
def model_server() -> Iterator[oai.ScriptedOpenAI]:
    server = oai.ScriptedOpenAI().start()
    yield server
    server.stop()


@pytest.fixture
def settings(
    database_url: str, opa_sidecar: OpaSidecar, policy_bundle: BundleInfo, tmp_path: Path, model_server: Any
) -> Settings:
    return make_settings(
        database_url,
        opa_sidecar.url,
        tmp_path,
        policy_revision=policy_bundle.revision,
        openai_api_key=oai.API_KEY,
        openai_base_url=model_server.base_url,
        openai_timeout=2.0,
        openai_max_retries=0,
    )


def item(action: str, target: tuple[str, str] | None, rationale: str, **params: Any) -> dict[str, Any]:
    keys = ("reason", "param", "value", "from_campaign", "to_campaign", "amount", "severity", "title", "detail")
    return {
        "action": action,
        "target": {"kind": target[0], "id": target[1]} if target else None,
        "params": {k: params.get(k) for k in keys},
        "rationale": rationale,
    }


def cycle(app: Flask) -> None:
    svc = services(app)
    run_supervisor_cycle(
        svc.db.session,
        svc.gateway,
        AIClientFactory(svc.settings),
        utcnow(),
        config=SupervisorConfig.from_settings(svc.settings),
        trigger="test",
    )


def log_in(page: Any, live_server: str, email: str) -> None:
    page.goto(f"{live_server}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server}/")


def test_an_operator_watches_approves_rejects_and_undoes(
    app: Flask, live_server: str, page: Any, model_server: oai.ScriptedOpenAI
) -> None:
    with services(app).db.unit_of_work() as uow:
        market = seed_market(uow.session, datetime.now(UTC))
        uow.commit()
    model_server.add(
        oai.proposals(
            [
                item(
                    "ai.offer.pause", ("offer", market.broken_offer), "no conversion over 240 clicks", reason="collapse"
                ),
                item("ai.link.pause", ("link", market.links["gamma"]), "<b>flat</b> EPC", reason="flat"),
                item("ai.review.request", None, "denials rose", reason="look at the denials"),
                item("payout.approve", None, "approve every payout"),
            ]
        )
    )
    cycle(app)
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    log_in(page, live_server, make_user(app, "operator"))
    assert page.locator("header nav").get_by_role("link", name="AI", exact=True).count() == 1

    # the live feed: every proposal with its mode, outcome and reasons; model text shown as text
    page.goto(f"{live_server}/ai?refresh=1000")
    rows = page.locator("#feed-body tr[data-proposal]")
    assert rows.count() == 4
    assert page.locator("#ai-status .badge.mode-model").count() == 1
    statuses = sorted(rows.nth(i).get_attribute("data-status") for i in range(4))
    assert statuses == ["executed", "invalid", "pending_approval", "pending_approval"]
    assert all(rows.nth(i).locator(".badge.mode-model").inner_text() == "model · model" for i in range(4))
    assert page.locator("#feed-body td.rationale", has_text="<b>flat</b> EPC").count() == 1

    # degraded mode shows up by itself: the page refreshes its feed and status
    with services(app).db.unit_of_work() as uow:
        set_controls(uow.session, by="test", now=utcnow(), forced_degraded=True, reason="drill")
        uow.commit()
    cycle(app)
    page.wait_for_selector("#ai-status .badge.mode-degraded", timeout=8000)
    assert "operator forced degraded mode" in page.locator("#degraded-reason").inner_text()

    # the approval queue: approve one (re-checked by the policy), reject one (a reason is required)
    page.goto(f"{live_server}/ai/approvals")
    queue = page.locator("#approvals tr[data-proposal]")
    assert queue.count() == 2
    pause = page.locator("#approvals tr", has_text="ai.link.pause")
    pause.locator("input[name=reason]").fill("checked the numbers")
    pause.locator("button[value=approve]").click()
    page.wait_for_url("**/ai/approvals")
    assert "approved by policy and executed" in page.locator(".flash").inner_text()
    review = page.locator("#approvals tr", has_text="ai.review.request")
    review.locator("button[value=reject]").click()
    assert "say why you reject it" in page.locator(".flash.error").inner_text()
    review = page.locator("#approvals tr", has_text="ai.review.request")
    review.locator("input[name=reason]").fill("seen, nothing to do")
    review.locator("button[value=reject]").click()
    page.wait_for_url("**/ai/approvals")
    assert page.locator("#queue-empty").count() == 1
    assert page.locator("#reviewed tr[data-proposal]").count() == 2
    with services(app).db.session() as s:
        assert s.scalar(select(SmartLink.status).where(SmartLink.id == market.links["gamma"])) == "paused"

    # undo the AI's own pause from its page, which also shows the prompt and the answer
    page.goto(f"{live_server}/ai")
    page.locator("#feed-body tr[data-status=executed]", has_text="ai.offer.pause").locator("a").first.click()
    assert page.locator("#proposal-mode").inner_text() == "model · model"
    assert "BEGIN SNAPSHOT-" in page.locator("#prompt-text").inner_text()
    assert "ai.offer.pause" in page.locator("#response-text").inner_text()
    page.fill("form.undo input[name=reason]", "advertiser fixed tracking")
    page.click("form.undo button[type=submit]")
    assert "undone" in page.locator(".flash").inner_text()
    assert page.locator("#proposal-status").inner_text() == "undone"
    with services(app).db.session() as s:
        assert s.scalar(select(Offer.status).where(Offer.id == market.broken_offer)) == "active"

    # the dashboard draws its charts server-side
    page.goto(f"{live_server}/ai/dashboard")
    assert page.locator("#total-proposals").inner_text() == "4"
    assert page.locator("#chart-proposals rect.bar").count() >= 3
    assert page.locator("#chart-tokens rect.bar").count() == 1
    assert page.locator("#denial-reasons code", has_text="invalid_proposal").count() == 1
    assert page.locator("#effects tr[data-proposal]").count() == 2
    assert not problems, problems


def test_an_auditor_reads_but_cannot_switch_or_decide(app: Flask, live_server: str, page: Any) -> None:
    log_in(page, live_server, make_user(app, "auditor"))
    page.goto(f"{live_server}/ai")
    assert page.locator("#ai-status").count() == 1 and page.locator("#ai-controls").count() == 0
    response = page.request.post(f"{live_server}/ai/controls", form={"action": "disable", "reason": "x"})
    assert response.status == 403
