"""Policy versions: what a tree must pass to become a version (build, strict check, tests,
coverage, a clean git tree), publishing, listing, diffing, activating and rolling back through
the API and the CLI, with roles (authors publish, admins activate, nobody approves their own
version) and every refusal clear, recorded, and leaving the active version running."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from sqlalchemy import select

from server.cli import main
from server.extensions import services
from server.governance.models import Decision
from server.policies.keys import SigningKeys
from server.policies.models import PolicyVersion
from server.policies.pipeline import Candidate, PipelineError, build_candidate
from server.policies.serving import bootstrap
from tests.conftest import OPA_BIN, PASSWORD, TEST_SECRET, make_token, make_user
from tests.support.policies import (  # noqa: F401 - the *_fixture names register fixtures
    OPA_TOKEN,
    candidates_fixture,
    policy_keys_fixture,
    policy_tree,
    settings_fixture,
)

POLICY = """package tiny

default allow := false

allow if input.x == 1

allow if input.y == 2
"""
TESTS = """package tiny_test

import data.tiny

test_x if tiny.allow with input as {"x": 1}

test_y if tiny.allow with input as {"y": 2}

test_default if not tiny.allow with input as {}
"""


def tiny_tree(folder: Path, policy: str = POLICY, tests: str = TESTS) -> Path:
    folder.mkdir(parents=True)
    (folder / "tiny.rego").write_text(policy)
    (folder / "tiny_test.rego").write_text(tests)
    return folder


def build(folder: Path, keys: SigningKeys, threshold: float = 90.0, **kwargs: Any) -> Candidate:
    return build_candidate(OPA_BIN, folder, signing_key=keys.private, coverage_threshold=threshold, **kwargs)


# -- the pipeline's gates (no database) -------------------------------------------------------------
def test_a_tree_that_does_not_build_or_check_is_refused(tmp_path: Path, policy_keys: SigningKeys) -> None:
    broken = tiny_tree(tmp_path / "syntax", policy="package tiny\n\nallow if {\n")
    with pytest.raises(PipelineError) as syntax:
        build(broken, policy_keys)
    assert syntax.value.title == "Policy build failed" and "rego_parse_error" in syntax.value.message
    assert str(broken) not in syntax.value.message  # paths relative to the tree
    strict = tiny_tree(
        tmp_path / "strict", policy=POLICY.replace("package tiny\n", "package tiny\n\nimport data.unused\n")
    )
    with pytest.raises(PipelineError) as check:
        build(strict, policy_keys)
    assert check.value.title == "Policy check failed" and "import data.unused unused" in check.value.message
    clock = tiny_tree(tmp_path / "clock", policy=POLICY + "\nlate if time.now_ns() > 0\n")
    with pytest.raises(PipelineError) as forbidden:
        build(clock, policy_keys)
    assert forbidden.value.title == "Policy check failed" and "read the time from input.now" in forbidden.value.message


def test_failing_tests_and_low_coverage_make_a_version_that_cannot_run(
    tmp_path: Path, policy_keys: SigningKeys
) -> None:
    good = build(tiny_tree(tmp_path / "good"), policy_keys)
    assert good.validated and good.tests_passed == 3 and good.coverage == 100.0 and good.signed
    failing = build(
        tiny_tree(tmp_path / "failing", tests=TESTS + '\ntest_wrong if tiny.allow with input as {"x": 3}\n'),
        policy_keys,
    )
    assert not failing.validated and failing.tests_failed == 1
    assert failing.test_failures[0]["name"] == "tiny_test.test_wrong" and failing.test_failures[0][
        "location"
    ].startswith("tiny_test.rego:")
    uncovered = build(tiny_tree(tmp_path / "uncovered", tests=TESTS.split("test_y")[0]), policy_keys)
    assert uncovered.tests_failed == 0 and uncovered.coverage is not None and uncovered.coverage < 90
    assert not uncovered.validated


def test_a_dirty_git_tree_is_refused_unless_told(tmp_path: Path, policy_keys: SigningKeys) -> None:
    repo = tmp_path / "repo"
    folder = tiny_tree(repo / "rego")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Ada",
        "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada",
        "GIT_COMMITTER_EMAIL": "ada@example.com",
    }

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True
        ).stdout

    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "Allow y == 2")
    clean = build(folder, policy_keys)
    head = git("rev-parse", "HEAD").strip()
    assert clean.revision == head[:12] and clean.git_commit == head
    assert clean.author_hint == "Ada <ada@example.com>" and clean.message_hint == "Allow y == 2"
    (folder / "tiny.rego").write_text(POLICY + "\nallow if input.z == 3\n")
    with pytest.raises(PipelineError) as dirty:
        build(folder, policy_keys)
    assert dirty.value.title == "Uncommitted policy changes" and "--allow-dirty" in dirty.value.message
    anyway = build(folder, policy_keys, threshold=0.0, allow_dirty=True)
    assert anyway.revision.startswith("sha256-") and anyway.git_commit is None


# -- the API ---------------------------------------------------------------------------------------------
def _codes(response: Any) -> list[str]:
    return [r["code"] for r in response.get_json().get("reasons", [])]


def test_publish_diff_activate_and_roll_back_through_the_api(app: Flask, candidates: dict[str, Candidate]) -> None:
    svc = services(app)
    bootstrap(svc.settings, svc.db, candidate=candidates["base"])
    client = app.test_client()
    author = {"Authorization": f"Bearer {make_token(app, 'policy_author')}"}
    admin = {"Authorization": f"Bearer {make_token(app, 'admin')}"}
    auditor = {"Authorization": f"Bearer {make_token(app, 'auditor')}"}
    files = candidates["blocked"].sources

    assert client.post("/v1/policies/versions", json={"files": files}, headers=auditor).status_code == 403
    published = client.post(
        "/v1/policies/versions", json={"files": files, "message": "block lnk_blocked"}, headers=author
    )
    assert published.status_code == 201, published.get_json()
    body = published.get_json()
    revision = body["version"]["revision"]
    assert revision.startswith("sha256-") and body["activatable"] is True and body["allow"] is True
    assert body["version"]["status"] == "draft" and body["version"]["signed"] is True
    again = client.post("/v1/policies/versions", json={"files": files}, headers=author)
    assert again.status_code == 409 and "already published" in again.get_json()["detail"]

    syntax = dict(files, **{"smartlinks/broken.rego": "package smartlinks.broken\n\nallow if {\n"})
    refused = client.post("/v1/policies/versions", json={"files": syntax}, headers=author)
    assert refused.status_code == 422 and refused.get_json()["title"] == "Policy build failed"
    strict = dict(files, **{"smartlinks/unused.rego": "package smartlinks.unused\n\nimport data.nothing\n\nx := 1\n"})
    refused = client.post("/v1/policies/versions", json={"files": strict}, headers=author)
    assert refused.status_code == 422 and "unused" in refused.get_json()["detail"]
    escape = client.post("/v1/policies/versions", json={"files": {"../x.rego": "package x"}}, headers=author)
    assert escape.status_code == 422 and escape.get_json()["title"] == "Invalid policy file name"
    failing = client.post("/v1/policies/versions", json={"files": candidates["failing"].sources}, headers=author)
    assert failing.status_code == 201 and failing.get_json()["activatable"] is False
    failing_revision = failing.get_json()["version"]["revision"]

    listed = client.get("/v1/policies/versions", headers=auditor).get_json()["items"]
    assert [v["revision"] for v in listed] == [failing_revision, revision, "test-base"]
    assert listed[0]["validation"]["tests"]["failures"][0]["name"] == "smartlinks.failing_test.test_this_fails"
    missing = client.get("/v1/policies/versions/nope", headers=auditor)
    assert missing.status_code == 404 and "nope" in missing.get_json()["detail"]
    diff = client.get(f"/v1/policies/diff?from=test-base&to={revision}", headers=auditor).get_json()
    assert [f["path"] for f in diff["files"]] == ["config/data.json"]
    assert '+    "blocked_targets": [{"kind": "link", "id": "lnk_blocked"}],' in diff["files"][0]["diff"]

    # Authors may not activate; admins may, but not an untested, unknown or their own version.
    assert client.post(f"/v1/policies/versions/{revision}/activate", json={}, headers=author).status_code == 403
    untested = client.post(f"/v1/policies/versions/{failing_revision}/activate", json={}, headers=admin)
    assert untested.status_code == 403 and _codes(untested) == ["version_not_validated"]  # and nothing else
    assert "1 test(s) failed" in untested.get_json()["detail"]
    assert client.post("/v1/policies/versions/nope/activate", json={}, headers=admin).status_code == 404
    own = client.post(
        "/v1/policies/versions",
        json={"files": dict(files, **{"smartlinks/x.rego": "package smartlinks.x\n\nx := 1\n"})},
        headers=admin,
    )
    own_revision = own.get_json()["version"]["revision"]
    self_approved = client.post(
        f"/v1/policies/versions/{own_revision}/activate", json={"reason": "mine"}, headers=admin
    )
    assert self_approved.status_code == 403 and _codes(self_approved) == ["self_approval"]

    activated = client.post(
        f"/v1/policies/versions/{revision}/activate", json={"reason": "fraud on lnk_blocked"}, headers=admin
    )
    assert activated.status_code == 200, activated.get_json()
    twice = client.post(f"/v1/policies/versions/{revision}/activate", json={"reason": "x"}, headers=admin)
    assert twice.status_code == 403 and _codes(twice) == ["already_active"]
    rolled = client.post("/v1/policies/rollback", json={}, headers=admin)
    assert rolled.status_code == 200 and rolled.get_json()["revision"] == "test-base"
    retired = client.post(f"/v1/policies/versions/{revision}/activate", json={"reason": "again"}, headers=admin)
    assert retired.status_code == 403 and _codes(retired) == ["version_retired"]
    nothing = client.post("/v1/policies/rollback", json={}, headers=admin)
    assert nothing.status_code == 403 and _codes(nothing) == ["nothing_to_roll_back"]

    overview = client.get("/v1/policies", headers=auditor).get_json()
    assert overview["active"]["revision"] == "test-base" and overview["rollback_target"] is None
    with svc.db.unit_of_work() as uow:
        statuses = dict(uow.session.execute(select(PolicyVersion.revision, PolicyVersion.status)).all())
        assert statuses[revision] == "retired" and statuses["test-base"] == "active"
        denied = uow.session.execute(
            select(Decision.action_type, Decision.actor_id).where(
                Decision.action_type.like("policy.%"), Decision.allow.is_(False)
            )
        ).all()
    # Every refusal by the policy is recorded with its actor (the authz refusals never reach it).
    assert sorted(a for a, _ in denied) == ["policy.activate"] * 4 + ["policy.rollback"]
    assert all(actor.startswith("token:") for _, actor in denied)


def test_the_cli_publishes_lists_diffs_activates_and_rolls_back(
    app: Flask, candidates: dict[str, Candidate], policy_keys: SigningKeys, tmp_path: Path
) -> None:
    svc = services(app)
    bootstrap(svc.settings, svc.db, candidate=candidates["base"])
    author, admin = make_user(app, "policy_author", "author@example.com"), make_user(app, "admin", "boss@example.com")
    env = {
        "DATABASE_URL": svc.settings.database_url,
        "OPA_URL": svc.settings.opa_url or "",
        "SMARTLINKS_VAR_DIR": str(tmp_path / "var"),
        "SECRET_KEY": TEST_SECRET,
        "OPA_SIGNING_KEY_FILE": str(policy_keys.private),
        "OPA_VERIFICATION_KEY_FILE": str(policy_keys.public),
        "OPA_BUNDLE_TOKEN": OPA_TOKEN,
        "POLICY_COVERAGE_THRESHOLD": "0",
        "BOOTSTRAP_ADMIN_PASSWORD": PASSWORD,
    }
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(main, ["policy", *args], env=env)

    tree = policy_tree(tmp_path / "rego", "blocked")
    published = run("publish", "--rego", str(tree), "-m", "block lnk_blocked", "--as", author)
    assert published.exit_code == 0, published.output
    revision = next(line.split()[1] for line in published.output.splitlines() if line.startswith("published "))
    assert run("publish", "--rego", str(tree), "--as", author).exit_code == 1  # already published
    listed = run("list")
    assert revision in listed.output and "draft" in listed.output and "test-base" in listed.output
    diff = run("diff", "test-base", revision)
    assert '+    "blocked_targets": [{"kind": "link", "id": "lnk_blocked"}],' in diff.output
    assert "config/data.json +1 -1" in run("diff", "test-base", revision, "--stat").output

    by_author = run("activate", revision, "--as", author)
    assert (
        by_author.exit_code == 1 and "actor_not_permitted" in by_author.output and "self_approval" in by_author.output
    )
    activated = run("activate", revision, "--as", admin, "--reason", "fraud")
    assert activated.exit_code == 0, activated.output
    assert "0 allow->deny" in activated.output and f"{revision} is active" in activated.output
    again = run("activate", revision, "--as", admin)
    assert again.exit_code == 1 and "already_active" in again.output
    assert "unknown-policy" not in run("activate", "nope", "--as", admin).output
    assert "no policy version 'nope'" in run("activate", "nope", "--as", admin).output
    rolled = run("rollback", "--as", admin)
    assert rolled.exit_code == 0 and "rolled back to test-base" in rolled.output
    assert "nobody@example.com" in run("rollback", "--as", "nobody@example.com").output


def test_the_cli_bootstraps_for_external_sidecars_and_writes_their_config(
    app: Flask, policy_keys: SigningKeys, tmp_path: Path
) -> None:
    """What docker-compose.yml runs: `policy bootstrap` before `serve` (the sidecars are external,
    OPA_URL), and `policy sidecar-config --token-path` for an OPA container that reads its bearer
    token from a secret file."""
    import json

    svc = services(app)
    env = {
        "DATABASE_URL": svc.settings.database_url,
        "OPA_URL": svc.settings.opa_url or "",
        "SMARTLINKS_VAR_DIR": str(tmp_path / "var"),
        "SECRET_KEY": TEST_SECRET,
        "OPA_SIGNING_KEY_FILE": str(policy_keys.private),
        "OPA_VERIFICATION_KEY_FILE": str(policy_keys.public),
        "OPA_BUNDLE_TOKEN": OPA_TOKEN,
        "POLICY_COVERAGE_THRESHOLD": "0",
    }
    runner = CliRunner()
    first = runner.invoke(main, ["policy", "bootstrap"], env=env)
    assert first.exit_code == 0, first.output
    assert "published and activated the working tree's policies as " in first.output
    with services(app).db.unit_of_work() as uow:
        active = uow.session.scalars(select(PolicyVersion).where(PolicyVersion.status == "active")).all()
        assert len(active) == 1 and active[0].source == "bootstrap"
    again = runner.invoke(main, ["policy", "bootstrap"], env=env)
    assert again.exit_code == 0 and "nothing to do" in again.output

    printed = runner.invoke(
        main,
        [
            "policy",
            "sidecar-config",
            "--url",
            "http://server:8000/opa",
            "--token-path",
            "/run/secrets/opa_bundle_token",
        ],
        env=env,
    )
    assert printed.exit_code == 0, printed.output
    config = json.loads(printed.output)
    service = config["services"]["smartlinks"]
    assert service["url"] == "http://server:8000/opa"
    assert service["credentials"] == {"bearer": {"token_path": "/run/secrets/opa_bundle_token"}}
    assert config["bundles"]["smartlinks"]["resource"] == "bundles/active"
    assert "BEGIN PUBLIC KEY" in next(iter(config["keys"].values()))["key"]
