"""Impact analysis: the inputs of recorded decisions replayed against a candidate and the active
version (real temporary OPA processes), counted by action type and by rule with examples; an
activation that changes more than the policy's share needs a recorded reason; and the same
report from a committed sample, as the pull-request workflow runs it."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner
from flask import Flask

from server.cli import main
from server.extensions import services
from server.governance.gateway import Action, Actor, Target
from server.governance.models import Decision
from server.policies.pipeline import Candidate
from server.policies.serving import bootstrap
from tests.conftest import ROOT, login, make_token, make_user
from tests.support.policies import (  # noqa: F401 - the *_fixture names register fixtures
    AUTHOR,
    candidates_fixture,
    policy_keys_fixture,
    policy_tree,
    publish,
    settings_fixture,
)


def record(app: Flask, link: str, actor: str = "algo:guard") -> str:
    svc = services(app)
    with svc.db.unit_of_work() as uow:
        outcome = svc.gateway.decide(
            uow.session, Action("link.pause", Actor(actor, "algorithm"), {}, Target("link", link)), caller=None
        )
        uow.commit()
    assert outcome.allow, outcome.reasons
    return outcome.decision_id


def test_impact_counts_changes_by_action_and_rule_with_examples(app: Flask, candidates: dict[str, Candidate]) -> None:
    svc = services(app)
    bootstrap(svc.settings, svc.db, candidate=candidates["base"])
    blocked = [record(app, "lnk_blocked") for _ in range(3)]
    others = [record(app, f"lnk_{i}") for i in range(4)]
    revision = publish(app, candidates["blocked"], AUTHOR)
    client = app.test_client()
    admin = {"Authorization": f"Bearer {make_token(app, 'admin')}"}

    response = client.post(f"/v1/policies/versions/{revision}/impact", json={"sample": 100}, headers=admin)
    assert response.status_code == 201, response.get_json()
    report = response.get_json()
    with svc.db.unit_of_work() as uow:
        recorded = uow.session.query(Decision).count()
    assert report["sample_size"] == recorded and report["sample_requested"] == 100
    assert report["candidate_revision"] == revision and report["baseline_revision"] == "test-base"
    assert report["allow_to_deny"] == 3 and report["deny_to_allow"] == 0
    assert report["by_action"]["link.pause"] == {
        "total": 7,
        "allow_to_deny": 3,
        "deny_to_allow": 0,
        "obligations_changed": 0,
        "reasons_changed": 0,
    }
    assert report["by_rule"] == [{"rule": "safety.target_blocked", "direction": "allow_to_deny", "count": 3}]
    assert sorted(e["decision_id"] for e in report["examples"]) == sorted(blocked)
    assert all(
        e["target"] == "link:lnk_blocked" and e["after"]["reasons"] == ["safety.target_blocked"]
        for e in report["examples"]
    )
    assert not set(others) & {e["decision_id"] for e in report["examples"]}
    # The baseline's own answers are reused (the bootstrap's two decisions were made by test-base);
    # the others were made by another revision (the session's sidecar) and are replayed.
    assert report["baseline_source"] == {"recorded": 2, "replayed": recorded - 2}
    assert abs(report["changed_share"] - 3 / recorded) < 1e-9
    assert client.get(f"/v1/policies/impact/{report['id']}", headers=admin).get_json()["allow_to_deny"] == 3

    # 3 of ~10 decisions change: far above the policy's 2 %, so activation needs a reason.
    refused = client.post(f"/v1/policies/versions/{revision}/activate", json={}, headers=admin)
    assert refused.status_code == 403
    assert [r["code"] for r in refused.get_json()["reasons"]] == ["reason_required"]
    allowed = client.post(
        f"/v1/policies/versions/{revision}/activate", json={"reason": "lnk_blocked is fraudulent"}, headers=admin
    )
    assert allowed.status_code == 200, allowed.get_json()
    activation = client.get("/v1/policies/activations", headers=admin).get_json()["items"][0]
    assert activation["reason"] == "lnk_blocked is fraudulent" and activation["impact_report_id"] == report["id"]

    email = make_user(app, "auditor")
    pages = app.test_client()
    login(pages, email)
    page = pages.get(f"/policies/impact/{report['id']}").get_data(as_text=True)
    assert 'id="allow-to-deny">3<' in page and "safety.target_blocked" in page and blocked[0][:16] in page


def test_impact_of_a_pull_request_on_a_recorded_sample(tmp_path: Path) -> None:
    baseline = policy_tree(tmp_path / "base", "base")
    candidate = policy_tree(tmp_path / "candidate", "blocked")
    sample = ROOT / "tests" / "fixtures" / "decision-sample.jsonl"
    result = CliRunner().invoke(
        main,
        [
            "policy",
            "impact",
            "--sample",
            str(sample),
            "--candidate",
            str(candidate),
            "--baseline",
            str(baseline),
            "--format",
            "markdown",
        ],
        env={"SMARTLINKS_VAR_DIR": str(tmp_path / "var"), "SMARTLINKS_ENV": "development"},
    )
    assert result.exit_code == 0, result.output
    lines = sample.read_text().splitlines()
    assert f"on {len(lines)} recorded decisions" in result.output
    blocked = sum(1 for line in lines if '"lnk_blocked"' in line)
    assert blocked > 0 and "allow → deny: **" in result.output
    assert "| `safety.target_blocked` | allow_to_deny |" in result.output
    assert "deny → allow: **0**" in result.output
