"""Shadow mode: a candidate version runs in the shadow sidecar (fed by the bundle server); every
live decision is evaluated by it too, its answer recorded and never enforced, and the report
shows the disagreements as they happen."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import func, select

from server.autopilot.cli import runtime
from server.extensions import services
from server.governance.gateway import Action, Actor, Target
from server.governance.models import Decision
from server.policies.models import PolicyVersion, ShadowResult
from server.policies.pipeline import Candidate
from server.policies.shadow import evaluator_of
from tests.conftest import login, make_token, make_user
from tests.support.policies import (  # noqa: F401 - the *_fixture names register fixtures
    AUTHOR,
    BundleStack,
    bundle_stack_fixture,
    candidates_fixture,
    policy_keys_fixture,
    publish,
    wait_for,
)


def pause(client: FlaskClient, token: str, link: str) -> dict[str, Any]:
    response = client.post(
        "/v1/decisions",
        json={
            "action": {
                "type": "link.pause",
                "actor": {"id": "algo:guard", "kind": "algorithm"},
                "target": {"kind": "link", "id": link},
            }
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    body: dict[str, Any] = response.get_json()
    return body


def test_live_decisions_are_evaluated_in_shadow_and_never_enforced(
    bundle_stack: BundleStack, candidates: dict[str, Candidate]
) -> None:
    app, client = bundle_stack.app, bundle_stack.client
    service = make_token(app, "service")
    author = {"Authorization": f"Bearer {make_token(app, 'policy_author')}"}
    revision = publish(app, candidates["blocked"], AUTHOR)

    started = client.post(f"/v1/policies/versions/{revision}/shadow", headers=author)
    assert started.status_code == 200 and started.get_json()["shadow_revision"] == revision

    def shadow_runs() -> bool:
        rows = client.get("/v1/policies/sidecars", headers=author).get_json()["items"]
        return any(r["sidecar"] == "shadow" and r["active_revision"] == revision for r in rows)

    wait_for(shadow_runs, timeout=15)
    assert pause(client, service, "lnk_warmup")["allow"] is True  # starts the evaluator
    evaluator = evaluator_of(app)
    assert evaluator is not None
    wait_for(lambda: evaluator.revision == revision, timeout=5)

    answers = [pause(client, service, link) for link in ("lnk_blocked", "lnk_1", "lnk_blocked", "lnk_2", "lnk_blocked")]
    assert all(a["allow"] for a in answers) and {a["policy_revision"] for a in answers} == {"test-base"}
    assert evaluator.drain(10)
    report = wait_for(
        lambda: (r := client.get("/v1/policies/shadow", headers=author).get_json())["total"] >= 5 and r, timeout=10
    )
    assert report["revision"] == revision
    assert report["allow_to_deny"] == 3 and report["deny_to_allow"] == 0 and report["errors"] == 0
    assert report["agree"] == report["total"] - 3
    assert report["by_action"]["link.pause"]["allow_to_deny"] == 3
    newest = report["disagreements"][0]
    assert newest["decision_id"] == answers[-1]["decision_id"]
    assert newest["active_allow"] is True and newest["shadow_allow"] is False
    assert newest["shadow_reasons"] == ["safety.target_blocked"] and newest["active_revision"] == "test-base"

    # Decisions made outside a web request (the scheduler's autopilot and treasury cycles) are
    # shadowed too: the scheduler's runtime gets its own evaluator on the shadow sidecar.
    assert bundle_stack.shadow is not None
    rt = runtime(services(app).settings, bundle_stack.primary.url, "test-base", bundle_stack.shadow.url)
    try:
        assert rt.shadow is not None and rt.gateway.shadow is rt.shadow
        rt.shadow.start()
        wait_for(lambda: rt.shadow is not None and rt.shadow.revision == revision, timeout=5)
        with rt.db.unit_of_work() as uow:
            system = Actor(id="system:autopilot", kind="system")
            action = Action("link.pause", system, {"reason": "scheduled"}, Target(kind="link", id="lnk_blocked"))
            scheduled = rt.gateway.decide(uow.session, action, caller=system)
            uow.commit()
        assert scheduled.allow and rt.shadow.drain(10) and rt.shadow.evaluated == 1
        with services(app).db.unit_of_work() as uow:
            shadowed = uow.session.scalar(select(ShadowResult).where(ShadowResult.decision_id == scheduled.record.id))
            assert shadowed is not None and shadowed.shadow_allow is False
    finally:
        rt.close()
    report = client.get("/v1/policies/shadow", headers=author).get_json()
    assert report["allow_to_deny"] == 4

    # The report page shows the same, and reloads itself while a shadow runs.
    email = make_user(app, "policy_author")
    pages = app.test_client()
    login(pages, email)
    page = pages.get("/policies/shadow")
    assert page.status_code == 200 and page.headers.get("Refresh") == "5"
    assert 'id="shadow-allow-to-deny">4<' in page.get_data(as_text=True)

    stopped = client.delete("/v1/policies/shadow", headers=author)
    assert stopped.status_code == 200 and stopped.get_json()["stopped"] == revision
    wait_for(lambda: evaluator.revision is None, timeout=5)
    assert evaluator.drain(10)

    def results() -> int:
        with services(app).db.unit_of_work() as uow:
            return int(uow.session.scalar(select(func.count()).select_from(ShadowResult)) or 0)

    before = results()
    pause(client, service, "lnk_blocked")
    assert evaluator.drain(10) and results() == before  # no shadow: nothing evaluated any more
    with services(app).db.unit_of_work() as uow:
        assert uow.session.scalar(select(PolicyVersion.status).where(PolicyVersion.revision == revision)) == "draft"
        recorded = uow.session.execute(
            select(Decision.action_type, Decision.allow).where(Decision.action_type.like("policy.shadow%"))
        ).all()
        assert sorted(recorded) == [("policy.shadow_start", True), ("policy.shadow_stop", True)]
    # Stopping again is refused by the policy (no shadow runs) and recorded.
    again = client.delete("/v1/policies/shadow", headers=author)
    assert again.status_code == 403 and again.get_json()["reasons"][0]["code"] == "no_shadow"
