"""The server as the sidecars' bundle server, with real OPA processes polling it over HTTP.

Activation and rollback are enforced within seconds (asserted loosely here; bench/
policy_activation.py measures them), a tampered or unsigned bundle is never enforced (OPA keeps
the last good one and the server shows why), status reports are recorded, and the long-poll
protocol (ETag/304, `Prefer: wait=N`, the bundles media type) answers as OPA expects."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import threading
import time
from typing import Any

import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from server.extensions import services
from server.governance.models import Decision
from server.policies import services as policies
from server.policies.bundle_server import BUNDLE_MEDIA_TYPE, POLL_INTERVAL
from server.policies.models import PolicyVersion
from server.policies.pipeline import Candidate
from server.policies.serving import bootstrap
from tests.conftest import make_token
from tests.support.policies import (  # noqa: F401 - the *_fixture names register fixtures
    ADMIN,
    AUTHOR,
    OPA_TOKEN,
    BundleStack,
    bundle_stack_fixture,
    candidates_fixture,
    policy_keys_fixture,
    publish,
    settings_fixture,
    toolchain,
    wait_for,
)

OPA_AUTH = {"Authorization": f"Bearer {OPA_TOKEN}"}


def decide(client: FlaskClient, token: str, link: str = "lnk_blocked") -> dict[str, Any]:
    response = client.post(
        "/v1/decisions",
        json={
            "action": {
                "type": "link.pause",
                "actor": {"id": "algo:guard", "kind": "algorithm"},
                "target": {"kind": "link", "id": link},
                "params": {},
            }
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


def codes(body: dict[str, Any]) -> set[str]:
    return {r["code"] for r in body["reasons"]}


def test_activation_and_rollback_are_enforced_within_seconds(
    bundle_stack: BundleStack, candidates: dict[str, Candidate]
) -> None:
    app, client = bundle_stack.app, bundle_stack.client
    service = make_token(app, "service")
    admin = {"Authorization": f"Bearer {make_token(app, 'admin')}"}
    first = decide(client, service)
    assert first["allow"] is True and first["policy_revision"] == "test-base"

    revision = publish(app, candidates["blocked"], AUTHOR)
    impact = client.post(f"/v1/policies/versions/{revision}/impact", json={}, headers=admin)
    assert impact.status_code == 201 and impact.get_json()["allow_to_deny"] >= 1

    response = client.post(
        f"/v1/policies/versions/{revision}/activate", json={"reason": "block lnk_blocked"}, headers=admin
    )
    assert response.status_code == 200, response.get_json()
    activated = time.monotonic()
    wait_for(lambda: decide(client, service)["policy_revision"] == revision, timeout=10, interval=0.02)
    enforced_after = time.monotonic() - activated
    assert enforced_after < 5.0, f"the new version took {enforced_after:.2f}s to be enforced"
    denied = decide(client, service)
    assert denied["allow"] is False and "target_blocked" in codes(denied)
    assert decide(client, service, link="lnk_other")["allow"] is True

    # OPA's status report confirms the activation; the server shows what each sidecar runs.
    def confirmed() -> dict[str, Any] | None:
        latest: dict[str, Any] = client.get("/v1/policies", headers=admin).get_json()["activations"][0]
        return latest if latest["confirmed_at"] else None

    activation = wait_for(confirmed, timeout=10)
    assert activation["revision"] == revision and activation["reason"] == "block lnk_blocked"
    assert activation["confirmed_by"].startswith("primary:") and activation["seconds_to_confirmation"] < 5
    sidecars = client.get("/v1/policies/sidecars", headers=admin).get_json()
    primary = [s for s in sidecars["items"] if s["sidecar"] == "primary"]
    assert primary and primary[0]["active_revision"] == revision and primary[0]["bundle_error"] is None
    assert {s["sidecar"] for s in sidecars["items"]} == {"primary", "shadow"}
    assert sidecars["alerts"] == []

    rolled = client.post("/v1/policies/rollback", json={"reason": "too strict"}, headers=admin)
    assert rolled.status_code == 200 and rolled.get_json()["revision"] == "test-base"
    back = time.monotonic()
    wait_for(lambda: decide(client, service)["policy_revision"] == "test-base", timeout=10, interval=0.02)
    assert time.monotonic() - back < 5.0
    assert decide(client, service)["allow"] is True
    with services(app).db.unit_of_work() as uow:
        statuses = dict(uow.session.execute(select(PolicyVersion.revision, PolicyVersion.status)).all())
        assert statuses == {"test-base": "active", "test-blocked": "retired"}
        actions = uow.session.execute(
            select(Decision.action_type, Decision.actor_id, Decision.allow)
            .where(Decision.action_type.like("policy.%"))
            .order_by(Decision.created_at)
        ).all()
    # Every policy action is a recorded decision with its actor: bootstrap, publish, activate, rollback.
    assert [(a, allow) for a, _, allow in actions] == [
        ("policy.publish", True),
        ("policy.activate", True),
        ("policy.publish", True),
        ("policy.activate", True),
        ("policy.rollback", True),
    ]
    assert actions[0][1] == "system:bootstrap" and actions[2][1] == AUTHOR.id


def _rewrite(bundle: bytes, change: Any) -> bytes:
    """The bundle with its members passed through `change(name, data) -> data | None` (None drops)."""
    source = tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as target:
        for member in source.getmembers():
            extracted = source.extractfile(member)
            data = change(member.name, extracted.read() if extracted else b"")
            if data is None:
                continue
            member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    return out.getvalue()


def _block_lnk_other(name: str, data: bytes) -> bytes:
    if name.endswith("data.json"):
        return data.replace(b'"blocked_targets":[]', b'"blocked_targets":[{"id":"lnk_other","kind":"link"}]')
    return data


def _replace_active_bundle(app: Flask, data: bytes) -> None:
    """What an attacker with write access to the database could do: new bytes and their digest."""
    with services(app).db.unit_of_work() as uow:
        uow.session.execute(
            update(PolicyVersion)
            .where(PolicyVersion.status == "active")
            .values(bundle=data, sha256=hashlib.sha256(data).hexdigest())
        )
        uow.commit()


def test_a_tampered_or_unsigned_bundle_is_never_enforced(
    bundle_stack: BundleStack, candidates: dict[str, Candidate]
) -> None:
    app, client, url = bundle_stack.app, bundle_stack.client, bundle_stack.url
    service = make_token(app, "service")
    admin = {"Authorization": f"Bearer {make_token(app, 'admin')}"}
    assert decide(client, service, "lnk_other")["allow"] is True

    assert requests.get(f"{url}/opa/bundles/active", timeout=5).status_code == 401
    wrong = requests.get(f"{url}/opa/bundles/active", headers={"Authorization": "Bearer nope"}, timeout=5)
    assert wrong.status_code == 401 and wrong.headers["Content-Type"] == "application/problem+json"

    tampered = _rewrite(candidates["base"].bundle, _block_lnk_other)
    assert b"lnk_other" in gzip.decompress(tampered)
    _replace_active_bundle(app, tampered)

    def rejected() -> str | None:
        rows = client.get("/v1/policies/sidecars", headers=admin).get_json()["items"]
        errors = [r["bundle_error"] for r in rows if r["sidecar"] == "primary" and r["bundle_error"]]
        return errors[0] if errors else None

    assert "digest mismatch" in wait_for(rejected, timeout=15)
    still = decide(client, service, "lnk_other")
    assert still["allow"] is True and still["policy_revision"] == "test-base"  # the last good bundle
    alerts = client.get("/v1/policies", headers=admin).get_json()["alerts"]
    assert any(a["code"] == "bundle_rejected" and a["sidecar"] == "primary" for a in alerts)

    unsigned = _rewrite(
        candidates["base"].bundle, lambda name, data: None if name.endswith(".signatures.json") else data
    )
    _replace_active_bundle(app, _rewrite(unsigned, _block_lnk_other))
    wait_for(lambda: (rejected() or "").find("signatures") >= 0, timeout=15)
    still = decide(client, service, "lnk_other")
    assert still["allow"] is True and still["policy_revision"] == "test-base"


def test_long_poll_answers_a_new_version_within_a_poll_interval(app: Flask, candidates: dict[str, Candidate]) -> None:
    client = app.test_client()
    assert client.get("/opa/bundles/active", headers=OPA_AUTH).status_code == 404  # nothing active yet
    svc = services(app)
    assert bootstrap(svc.settings, svc.db, candidate=candidates["base"]) == "test-base"
    # Activated outside a request of this app (as `smartlinks serve` does before gunicorn starts):
    # this process sees it at its next read, POLL_INTERVAL after the 404 above at the latest.
    time.sleep(POLL_INTERVAL)

    first = client.get("/opa/bundles/active", headers=OPA_AUTH)
    assert first.status_code == 200 and first.mimetype == BUNDLE_MEDIA_TYPE
    assert first.data == candidates["base"].bundle and first.headers["X-Policy-Revision"] == "test-base"
    etag = first.headers["ETag"]
    assert etag == f'"{candidates["base"].sha256}"'
    held = {"If-None-Match": etag, **OPA_AUTH}
    assert client.get("/opa/bundles/active", headers=held).status_code == 304  # no Prefer: no wait
    started = time.monotonic()
    waited = client.get("/opa/bundles/active", headers={"Prefer": "modes=snapshot,delta;wait=1", **held})
    assert waited.status_code == 304 and 0.9 < time.monotonic() - started < 3

    revision = publish(app, candidates["blocked"], AUTHOR)
    policies.ensure_impact(svc.db, toolchain(app), revision, ADMIN.id)
    answers: list[Any] = []

    def long_poll() -> None:
        response = app.test_client().get(
            "/opa/bundles/active", headers={"Prefer": "modes=snapshot,delta;wait=10", **held}
        )
        answers.append((time.monotonic(), response.status_code, response.headers.get("X-Policy-Revision")))

    thread = threading.Thread(target=long_poll)
    thread.start()
    time.sleep(0.5)
    # Activation through the service alone (no in-process notification): as if another worker
    # process committed it, the held request sees it by re-reading the database.
    with svc.db.unit_of_work() as uow:
        outcome = policies.activate(uow.session, svc.gateway, toolchain(app), ADMIN, revision)
        assert outcome.allow, outcome.reasons
        uow.commit()
    committed = time.monotonic()
    thread.join(15)
    answered, status, served = answers[0]
    assert status == 200 and served == revision
    assert answered - committed < 1.0, f"held request answered {answered - committed:.2f}s after the commit"

    assert client.get("/opa/bundles/shadow", headers=OPA_AUTH).status_code == 404
    assert client.get("/opa/bundles/other", headers=OPA_AUTH).status_code == 404
    assert client.get("/opa/bundles/active").status_code == 401
