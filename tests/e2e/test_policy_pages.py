"""Policy pages in a real browser: the versions list, the diff between two versions, activation
and rollback each behind a confirmation, and the playground naming the rules that decided."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask

from server.extensions import services
from server.governance.gateway import Action, Actor, Target
from server.policies.pipeline import Candidate
from server.policies.serving import bootstrap
from tests.conftest import PASSWORD, make_user
from tests.support.policies import (  # noqa: F401 - the *_fixture names register fixtures
    AUTHOR,
    candidates_fixture,
    policy_keys_fixture,
    publish,
    settings_fixture,
)

pytestmark = pytest.mark.browser


def log_in(page: Any, live_server: str, email: str) -> None:
    page.goto(f"{live_server}/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server}/")


def two_versions(app: Flask, candidates: dict[str, Candidate]) -> str:
    svc = services(app)
    bootstrap(svc.settings, svc.db, candidate=candidates["base"])
    return publish(app, candidates["blocked"], AUTHOR, message="block lnk_blocked")


def test_versions_diff_activate_and_roll_back(
    app: Flask, live_server: str, page: Any, candidates: dict[str, Candidate]
) -> None:
    revision = two_versions(app, candidates)
    log_in(page, live_server, make_user(app, "admin"))
    page.click("header nav a:text('Policies')")
    page.wait_for_url(f"{live_server}/policies")
    assert page.locator("#active-revision").inner_text() == "test-base"
    rows = page.locator("table#versions tbody tr")
    assert rows.count() == 2
    blocked = page.locator(f"table#versions tr[data-revision='{revision}']")
    assert "draft" in blocked.inner_text() and "block lnk_blocked" in blocked.inner_text()

    blocked.locator("a:text('diff')").click()
    assert "1 file(s) differ" in page.locator("#diff-summary").inner_text()
    added = page.locator("pre.diff span.add")
    assert any("lnk_blocked" in text for text in added.all_inner_texts())

    page.goto(f"{live_server}/policies")
    page.locator(f"table#versions tr[data-revision='{revision}'] a.activate").click()
    assert page.locator("#confirm-revision").inner_text() == revision
    page.click("#confirm-button")  # not confirmed: refused, nothing changes
    assert "not confirmed" in page.locator(".flash.error").inner_text()
    page.check("#confirm-box")
    page.fill("textarea[name=reason]", "block a fraudulent link")
    page.click("#confirm-button")
    page.wait_for_url(f"{live_server}/policies")
    assert "activated" in page.locator(".flash.ok").inner_text()
    assert page.locator("#active-revision").inner_text() == revision
    assert "block a fraudulent link" in page.locator("table#activations tbody tr").first.inner_text()

    page.click("#rollback-link")
    assert page.locator("#confirm-revision").inner_text() == "test-base"
    page.check("#confirm-box")
    page.click("#confirm-button")
    page.wait_for_url(f"{live_server}/policies")
    assert "Rolled back" in page.locator(".flash.ok").inner_text()
    assert page.locator("#active-revision").inner_text() == "test-base"
    assert "retired" in page.locator(f"table#versions tr[data-revision='{revision}']").inner_text()


def test_a_policy_author_cannot_activate(
    app: Flask, live_server: str, page: Any, candidates: dict[str, Candidate]
) -> None:
    revision = two_versions(app, candidates)
    log_in(page, live_server, make_user(app, "policy_author"))
    response = page.goto(f"{live_server}/policies/versions/{revision}/activate")
    assert response.status == 403


def test_the_playground_names_the_rules_that_decided(
    app: Flask, live_server: str, page: Any, candidates: dict[str, Candidate]
) -> None:
    revision = two_versions(app, candidates)
    log_in(page, live_server, make_user(app, "auditor"))
    page.goto(f"{live_server}/policies/playground")
    document = {
        "action": {
            "type": "link.pause",
            "actor": {"id": "algo:guard", "kind": "algorithm", "roles": []},
            "target": {"kind": "link", "id": "lnk_blocked"},
            "params": {},
        },
        "controls": {"kill_switch": False, "target_kill_switch": False},
        "context": {"actor_action_counts": {"60": 0, "3600": 0, "86400": 0}},
        "mode": "test",
        "now": "2026-11-25T10:00:00Z",
    }
    page.select_option("select[name=revision]", revision)
    page.fill("textarea[name=input]", json.dumps(document))
    page.click("#evaluate")
    assert page.locator("#verdict").inner_text() == "deny"
    rules = page.locator("#rules").inner_text()
    assert "safety.target_blocked" in rules and "smartlinks/safety/safety.rego:" in rules

    page.select_option("select[name=revision]", "test-base")
    page.click("#evaluate")
    assert page.locator("#verdict").inner_text() == "allow"
    assert "judged by package smartlinks.operations" in page.locator("#playground-result").inner_text().lower()

    page.fill("textarea[name=input]", "{not json")
    page.click("#evaluate")
    assert page.locator("#playground-error").is_visible()


def test_impact_report_and_decision_explorer(
    app: Flask, live_server: str, page: Any, candidates: dict[str, Candidate]
) -> None:
    revision = two_versions(app, candidates)
    svc = services(app)
    with svc.db.unit_of_work() as uow:
        for link in ("lnk_blocked", "lnk_1"):
            svc.gateway.decide(
                uow.session, Action("link.pause", Actor("algo:guard", "algorithm"), {}, Target("link", link))
            )
        uow.commit()
    log_in(page, live_server, make_user(app, "admin"))
    page.goto(f"{live_server}/policies/versions/{revision}")
    page.click("#run-impact")
    page.wait_for_url(f"{live_server}/policies/impact/*")
    assert page.locator("#allow-to-deny").inner_text() == "1"
    assert "safety.target_blocked" in page.locator("table#by-rule").inner_text()
    assert "lnk_blocked" in page.locator("table#examples").inner_text()

    page.goto(f"{live_server}/policies/decisions")
    assert page.locator("table#explorer tbody tr").count() >= 4  # two pauses, publish, bootstrap
    page.select_option("select[name=action_type]", "link.pause")
    page.click("form.filters button")
    rows = page.locator("table#explorer tbody tr")
    assert rows.count() == 2
    page.select_option("select[name=audit]", "no_id")  # the session's sidecar keeps no decision log
    page.click("form.filters button")
    assert rows.count() == 2
    rows.first.locator("a").first.click()
    assert "Input sent to OPA" in page.content()
