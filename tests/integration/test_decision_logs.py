"""Decision-log audit: the primary sidecar's decision_logs plugin uploads gzip batches to the
server, which stores each event once (by decision_id), masked by system.log.mask, linked to the
server's own decision record (still complete); OPA's dropped-event counters become an alert."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import func, select

from server.extensions import services
from server.governance.models import Decision
from server.policies.bundle_server import gzip_json
from server.policies.models import OpaDecisionLog
from tests.conftest import login, make_token, make_user
from tests.support.policies import (  # noqa: F401 - the *_fixture names register fixtures
    OPA_TOKEN,
    BundleStack,
    bundle_stack_fixture,
    candidates_fixture,
    policy_keys_fixture,
    settings_fixture,
    wait_for,
)

OPA_AUTH = {"Authorization": f"Bearer {OPA_TOKEN}"}
GZIP = {"Content-Encoding": "gzip", "Content-Type": "application/json", **OPA_AUTH}


def test_the_sidecars_log_reaches_the_audit_trail_masked_and_linked(bundle_stack: BundleStack) -> None:
    app, client = bundle_stack.app, bundle_stack.client
    header = {"Authorization": f"Bearer {make_token(app, 'service')}"}
    response = client.post(
        "/v1/decisions",
        json={
            "action": {
                "type": "link.pause",
                "actor": {"id": "algo:guard", "kind": "algorithm"},
                "target": {"kind": "link", "id": "lnk_7"},
                "params": {"reason": "fraud suspected"},
            },
            "state": {
                "affiliate": {"email": "jane@example.com", "payout_account": {"iban": "FR7630006000011234567890189"}}
            },
        },
        headers=header,
    )
    assert response.status_code == 200
    with services(app).db.unit_of_work() as uow:
        record = uow.session.get(Decision, response.get_json()["decision_id"])
        assert record is not None and record.opa_decision_id
        opa_id, record_id = record.opa_decision_id, record.id
        # The server's own record, written with the action, keeps the full input.
        assert record.input["state"]["affiliate"]["email"] == "jane@example.com"

    admin = {"Authorization": f"Bearer {make_token(app, 'admin')}"}
    event = wait_for(
        lambda: (
            (r := client.get(f"/v1/policies/decision-logs/{opa_id}", headers=admin)).status_code == 200 and r.get_json()
        ),
        timeout=15,
    )
    assert event["server_decision_id"] == record_id and event["server_decision_ids"] == [record_id]
    assert event["path"] == "smartlinks/gate" and event["revision"] == "test-base" and event["sidecar"] == "primary"
    affiliate = event["input"]["state"]["affiliate"]
    assert affiliate["email"] == "***" and affiliate["payout_account"] == "***"
    assert event["input"]["action"]["params"]["reason"] == "fraud suspected"
    assert {"/input/state/affiliate/email", "/input/state/affiliate/payout_account"} <= set(event["masked"])
    assert event["result"]["decision"]["allow"] is True

    # The explorer links the server's record to the sidecar's event, and the event page shows the mask.
    email = make_user(app, "auditor")
    pages = app.test_client()
    login(pages, email)
    explorer = pages.get("/policies/decisions?audit=logged").get_data(as_text=True)
    assert f"/policies/decision-logs/{opa_id}" in explorer
    page = pages.get(f"/policies/decision-logs/{opa_id}").get_data(as_text=True)
    assert "jane@example.com" not in page and "/input/state/affiliate/email" in page and record_id in page
    sidecars = client.get("/v1/policies/sidecars", headers=admin).get_json()
    assert [s["decision_log_error"] for s in sidecars["items"] if s["sidecar"] == "primary"] == [None]


def event(decision_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "labels": {"id": "inst-1", "sidecar": "primary", "version": "1.22.3"},
        "decision_id": decision_id,
        "bundles": {"smartlinks": {"revision": "rev-1"}},
        "path": "smartlinks/decision",
        "input": {"action": {"type": "link.pause"}},
        "result": {"allow": True, "reasons": [], "obligations": {}},
        "timestamp": "2026-11-26T01:18:45.132319759Z",
        **extra,
    }


def test_one_batch_query_links_every_record_it_answered(app: Flask) -> None:
    from datetime import timedelta

    from server.db import utcnow
    from server.policies.services import records_for_log

    start = utcnow()
    with services(app).db.unit_of_work() as uow:
        for i in range(3):
            uow.session.add(
                Decision(
                    id=f"dec_batch_{i}",
                    created_at=start + timedelta(milliseconds=i),
                    action_type="payout.create",
                    actor_id="system:treasury",
                    actor_kind="system",
                    allow=True,
                    outcome="allowed",
                    dry_run=False,
                    mode="test",
                    reasons=[],
                    obligations={},
                    input={},
                    latency_ms=1.0,
                    executed=True,
                    opa_decision_id="opa-batch-1",
                )
            )
        uow.commit()
    with services(app).db.unit_of_work() as uow:
        assert [r.id for r in records_for_log(uow.session, "opa-batch-1")] == [f"dec_batch_{i}" for i in range(3)]
        assert records_for_log(uow.session, "opa-unknown") == []


def test_batches_are_stored_once_per_decision_id(app: Flask) -> None:
    client = app.test_client()
    batch = [event("d-1"), event("d-2", masked=["/input/secret"]), event("d-1")]
    first = client.post("/opa/logs/primary", data=gzip_json(batch), headers=GZIP)
    assert first.status_code == 200 and first.get_json() == {"received": 3, "stored": 2}
    again = client.post("/opa/logs/primary", data=gzip_json(batch), headers=GZIP)
    assert again.status_code == 200 and again.get_json()["stored"] == 0
    with services(app).db.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(OpaDecisionLog)) == 2
        stored = uow.session.get(OpaDecisionLog, "d-2")
        assert stored is not None and stored.revision == "rev-1" and stored.masked == ["/input/secret"]
        assert stored.timestamp.isoformat().startswith("2026-11-26T01:18:45.132319")

    bad = client.post("/opa/logs/primary", data=b"not gzip", headers=GZIP)
    assert bad.status_code == 400 and bad.mimetype == "application/problem+json"
    assert client.post("/opa/logs/primary", data=gzip_json({"not": "a list"}), headers=GZIP).status_code == 400
    assert (
        client.post("/opa/logs/primary", data=gzip_json(batch), headers={"Content-Encoding": "gzip"}).status_code == 401
    )


def test_dropped_events_are_an_alert(app: Flask) -> None:
    client = app.test_client()
    report = {
        "labels": {"id": "inst-9", "sidecar": "primary", "version": "1.22.3"},
        "bundles": {"smartlinks": {"name": "smartlinks", "active_revision": "rev-1"}},
        "decision_logs": {
            "code": "decision_log_error",
            "message": "log upload failed, server replied with HTTP 503 Service Unavailable",
            "http_code": 503,
        },
        "metrics": {
            "prometheus": {
                "counter_decision_logs_dropped_buffer_size_limit_bytes_exceeded": 3,
                "counter_decision_logs_chunks_upload_failed": 8,
                "go_gc_duration_seconds": {"name": "go_gc_duration_seconds", "type": "SUMMARY"},
            }
        },
    }
    assert client.post("/opa/status/primary", json=report, headers=OPA_AUTH).status_code == 204
    admin = {"Authorization": f"Bearer {make_token(app, 'admin')}"}
    body = client.get("/v1/policies/sidecars", headers=admin).get_json()
    assert body["items"][0]["dropped_events"] == 3 and body["items"][0]["upload_failures"] == 8
    alert_codes = {a["code"] for a in body["alerts"]}
    assert {"decision_logs_dropped", "decision_logs_failing"} <= alert_codes
    assert client.post("/opa/status/primary", json=report).status_code == 401
