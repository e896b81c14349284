"""The decision API's direct path (server/governance/direct.py) answers and records exactly as the
Flask path does, on SQLite and PostgreSQL; whatever it does not answer reaches Flask unchanged."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from server import create_app
from server.config import Settings
from server.extensions import services
from server.governance.direct import DecisionDispatcher
from server.governance.models import ActionCount, Decision
from server.policy.sidecar import free_loopback_port
from tests.conftest import make_token
from tests.integration.test_decisions_api import allocation

# Columns that differ between two decisions taken one after the other on the same request.
VOLATILE = {"id", "created_at", "latency_ms", "opa_decision_id"}


def dispatcher(app: Flask) -> DecisionDispatcher:
    wsgi = app.wsgi_app
    while not isinstance(wsgi, DecisionDispatcher):
        wsgi = getattr(wsgi, "app", None) or getattr(wsgi, "inner", None)
        assert wsgi is not None, "the direct path is not installed"
    return wsgi


@pytest.fixture
def flask_only(settings: Settings) -> Iterator[Flask]:
    """The same app without the direct path (DECISION_DIRECT_PATH=false)."""
    app = create_app(settings.with_overrides({"decision_direct_path": False}))
    yield app
    services(app).close()


def row(app: Flask, decision_id: str) -> dict[str, Any]:
    with services(app).db.session() as session:
        decision = session.get(Decision, decision_id)
        assert decision is not None
        return {c.key: getattr(decision, c.key) for c in Decision.__table__.columns}


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in record.items() if k not in VOLATILE}
    # `now` differs, and the second decision counts the first one among the actor's actions.
    out["input"] = {k: v for k, v in record["input"].items() if k not in ("now", "context")}
    return out


def counts(app: Flask) -> list[tuple[str, str, int]]:
    with services(app).db.session() as session:
        rows = session.execute(sa.select(ActionCount.actor_id, ActionCount.granularity, ActionCount.count)).all()
        return sorted((str(a), str(g), int(c)) for a, g, c in rows)


def delta(before: list[tuple[str, str, int]], after: list[tuple[str, str, int]]) -> dict[tuple[str, str], int]:
    old = {(a, g): c for a, g, c in before}
    return {(a, g): c - old.get((a, g), 0) for a, g, c in after if c != old.get((a, g), 0)}


def _unknown_arm() -> dict[str, Any]:
    body = allocation({"a": 0.5, "b": 0.5})
    body["action"]["params"]["weights"] = {"a": 0.5, "zz": 0.5}
    return body


CASES = {
    "allowed": allocation({"a": 0.5, "b": 0.5}),
    "clamped": allocation({"a": 0.95, "b": 0.05}, {"a": 0.5, "b": 0.5}, algorithm="traffic_optimizer"),
    "denied": _unknown_arm(),
    "dry run": allocation({"a": 0.5, "b": 0.5}) | {"dry_run": True},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_direct_path_answers_and_records_like_flask(app: Flask, flask_only: Flask, case: str) -> None:
    token = make_token(app, "service")
    headers = {"Authorization": f"Bearer {token}", "X-Request-ID": "req-direct-1"}
    body = CASES[case]
    before = counts(app)
    via_flask = flask_only.test_client().post("/v1/decisions", json=body, headers=headers)
    after_flask = counts(app)
    direct = app.test_client().post("/v1/decisions", json=body, headers=headers)
    assert dispatcher(app).answered == 1 and dispatcher(app).handed_over == 0
    assert direct.status_code == via_flask.status_code == 200
    assert direct.headers["Content-Type"] == via_flask.headers["Content-Type"] == "application/json"
    assert direct.headers["X-Request-ID"] == "req-direct-1"
    for header in ("X-Content-Type-Options", "X-Frame-Options", "Referrer-Policy"):
        assert direct.headers[header] == via_flask.headers[header]
    answer, expected = direct.get_json(), via_flask.get_json()
    assert answer.pop("decision_id") != expected.pop("decision_id")
    assert answer == expected
    assert answer["outcome"] == {"dry run": "allowed"}.get(case, case) and answer["dry_run"] is (case == "dry run")
    assert comparable(row(app, direct.json["decision_id"])) == comparable(row(app, via_flask.json["decision_id"]))
    # The rate-limit counters moved by the same amount both ways (once per allowed, non-dry-run
    # decision).
    after_direct = counts(app)
    assert delta(before, after_flask) == delta(after_flask, after_direct)


def test_a_direct_row_reads_back_as_the_orm_writes_it(app: Flask, client: FlaskClient) -> None:
    headers = {"Authorization": f"Bearer {make_token(app, 'service')}"}
    answer = client.post("/v1/decisions", json=allocation({"a": 0.6, "b": 0.4}), headers=headers).json
    record = row(app, answer["decision_id"])
    assert record["created_at"].tzinfo is not None and record["created_at"].utcoffset() == UTC.utcoffset(None)
    assert record["allow"] is True and record["executed"] is False and record["dry_run"] is False
    assert record["input"]["action"]["params"]["weights"] == {"a": 0.6, "b": 0.4}
    assert record["input"]["caller"]["kind"] == "service" and record["reasons"] == []
    assert record["result"]["allow"] is True and record["policy_revision"] == answer["policy_revision"]
    assert record["latency_ms"] > 0
    listed = client.get("/v1/decisions?actor=algo:thompson", headers=headers).json["items"]
    assert [d["decision_id"] for d in listed] == [answer["decision_id"]]


def test_what_the_direct_path_does_not_answer_reaches_flask(app: Flask, client: FlaskClient) -> None:
    service = {"Authorization": f"Bearer {make_token(app, 'service')}"}
    operator = {"Authorization": f"Bearer {make_token(app, 'auditor')}"}
    reserved = allocation({"a": 0.5, "b": 0.5})
    reserved["action"]["actor"] = {"id": "system", "kind": "system"}
    cases = [
        ({"Authorization": "Bearer slk_unknown"}, allocation({"a": 0.5, "b": 0.5}), 401),
        (service, "not json", 400),
        (service, [1, 2], 400),
        (service, {"action": {"type": "allocation.update"}}, 400),
        (service, reserved, 400),
        (operator, allocation({"a": 0.5, "b": 0.5}), 403),
    ]
    for headers, body, status in cases:
        if isinstance(body, str):
            response = client.post("/v1/decisions", data=body, headers=headers | {"Content-Type": "application/json"})
        else:
            response = client.post("/v1/decisions", json=body, headers=headers)
        assert response.status_code == status, (body, response.get_json())
        assert response.mimetype == "application/problem+json"
    assert dispatcher(app).answered == 0 and dispatcher(app).handed_over == len(cases)
    with services(app).db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Decision)) == 0  # nothing half-written
    text = client.post("/v1/decisions", data="{}", headers=service | {"Content-Type": "text/plain"})
    assert text.status_code == 415
    big = client.post(
        "/v1/decisions", data="x" * (2 * 1024 * 1024), headers=service | {"Content-Type": "application/json"}
    )
    assert big.status_code == 413


def test_opa_down_is_a_recorded_deny_with_503(settings: Settings) -> None:
    app = create_app(settings.with_overrides({"opa_url": f"http://127.0.0.1:{free_loopback_port()}"}))
    try:
        token = make_token(app, "service")
        response = app.test_client().post(
            "/v1/decisions", json=allocation({"a": 0.5, "b": 0.5}), headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 503 and response.json["allow"] is False
        assert {r["code"] for r in response.json["reasons"]} == {"opa_unavailable"}
        assert dispatcher(app).answered == 1
        assert row(app, response.json["decision_id"])["error_code"] == "opa_unavailable"
    finally:
        services(app).close()
