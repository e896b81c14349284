"""The decision API against a real OPA sidecar and real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.extensions import services
from server.governance.models import Decision
from tests.conftest import make_token


def allocation(
    weights: dict[str, float],
    current: dict[str, float] | None = None,
    clicks: int = 5000,
    algorithm: str = "thompson_sampling",
) -> dict[str, Any]:
    arms = sorted(weights)
    return {
        "action": {
            "type": "allocation.update",
            "actor": {"id": "algo:thompson", "kind": "algorithm"},
            "target": {"kind": "link", "id": "lnk_1"},
            "params": {"algorithm": algorithm, "weights": weights},
        },
        "state": {
            "arms": arms,
            "current_weights": current or {a: 1 / len(arms) for a in arms},
            "evidence": {a: {"clicks": clicks, "conversions": clicks // 20, "revenue": clicks / 4} for a in arms},
        },
    }


def stored(app: Flask, decision_id: str) -> Decision:
    with services(app).db.unit_of_work() as uow:
        decision = uow.session.get(Decision, decision_id)
        assert decision is not None, "every decision is stored before the reply"
        uow.session.expunge(decision)
        return decision


def test_allowed_decision_is_recorded_with_revision(
    app: Flask, client: FlaskClient, auth_header: dict[str, str]
) -> None:
    response = client.post("/v1/decisions", json=allocation({"a": 0.55, "b": 0.45}), headers=auth_header)
    assert response.status_code == 200, response.json
    body = response.json
    assert body["allow"] is True and body["reasons"] == []
    assert body["policy_revision"]
    record = stored(app, body["decision_id"])
    assert record.allow and record.outcome == "allowed"
    assert record.policy_revision == body["policy_revision"]
    assert record.caller_id and record.caller_id.startswith("token:")
    assert record.input["action"]["params"]["weights"] == {"a": 0.55, "b": 0.45}
    assert record.latency_ms > 0


def test_clamp_obligation_is_applied_and_rechecked(
    app: Flask, client: FlaskClient, auth_header: dict[str, str]
) -> None:
    response = client.post(
        "/v1/decisions",
        json=allocation({"a": 0.95, "b": 0.05}, {"a": 0.5, "b": 0.5}, algorithm="traffic_optimizer"),
        headers=auth_header,
    )
    body = response.json
    assert response.status_code == 200 and body["allow"] is True, body
    assert body["outcome"] == "clamped"
    assert "clamp" in body["obligations"]
    assert body["params"]["weights"]["a"] < 0.95
    assert sum(body["params"]["weights"].values()) == pytest.approx(1.0)
    assert stored(app, body["decision_id"]).outcome == "clamped"


def test_kill_switch_denies_with_a_named_reason(app: Flask, client: FlaskClient, auth_header: dict[str, str]) -> None:
    admin = {"Authorization": f"Bearer {make_token(app, 'admin')}"}
    flipped = client.post("/v1/controls/kill-switch", json={"enabled": True, "reason": "incident"}, headers=admin)
    assert flipped.status_code == 200, flipped.json
    response = client.post("/v1/decisions", json=allocation({"a": 0.5, "b": 0.5}), headers=auth_header)
    body = response.json
    assert body["allow"] is False
    assert "kill_switch_active" in {r["code"] for r in body["reasons"]}
    assert all({"code", "policy", "message"} <= set(r) for r in body["reasons"])
    # the kill switch can still be turned off (it is exempt from itself)
    assert client.post("/v1/controls/kill-switch", json={"enabled": False}, headers=admin).status_code == 200
    assert client.post("/v1/decisions", json=allocation({"a": 0.5, "b": 0.5}), headers=auth_header).json["allow"]


def test_dry_run_is_recorded_but_not_counted(app: Flask, client: FlaskClient, auth_header: dict[str, str]) -> None:
    payload = allocation({"a": 0.5, "b": 0.5}) | {"dry_run": True}
    body = client.post("/v1/decisions", json=payload, headers=auth_header).json
    assert body["allow"] is True and body["dry_run"] is True
    assert stored(app, body["decision_id"]).dry_run is True


def test_list_filters_and_paginates(app: Flask, client: FlaskClient, auth_header: dict[str, str]) -> None:
    for _ in range(3):
        client.post("/v1/decisions", json=allocation({"a": 0.5, "b": 0.5}), headers=auth_header)
    bad = allocation({"a": 0.5, "b": 0.5})
    bad["action"]["params"]["weights"] = {"a": 0.5, "zz": 0.5}
    client.post("/v1/decisions", json=bad, headers=auth_header)

    denied = client.get("/v1/decisions?allowed=false", headers=auth_header).json["items"]
    assert len(denied) == 1 and denied[0]["allow"] is False
    page1 = client.get("/v1/decisions?limit=2", headers=auth_header).json
    assert len(page1["items"]) == 2 and page1["next_cursor"]
    page2 = client.get(f"/v1/decisions?limit=2&cursor={page1['next_cursor']}", headers=auth_header).json
    ids = {d["decision_id"] for d in page1["items"]} | {d["decision_id"] for d in page2["items"]}
    assert len(ids) == 4 and page2["next_cursor"] is None
    by_type = client.get("/v1/decisions?action_type=allocation.update&actor=algo:thompson", headers=auth_header).json
    assert len(by_type["items"]) == 4
    one = client.get(f"/v1/decisions/{denied[0]['decision_id']}", headers=auth_header).json
    assert one["input"]["action"]["type"] == "allocation.update" and one["result"]["allow"] is False


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"action": {"type": "teleport", "actor": {"id": "x", "kind": "service"}}}, "action"),
        ({"action": {"actor": {"id": "x", "kind": "service"}}}, "action"),
        ({"action": {"type": "allocation.update", "actor": {"id": "x", "kind": "robot"}, "params": {}}}, "action"),
        (
            {
                "action": {
                    "type": "allocation.update",
                    "actor": {"id": "x", "kind": "algorithm"},
                    "params": {"algorithm": "ucb", "weights": {"a": "lots"}},
                }
            },
            "action",
        ),
        (
            {
                "action": {
                    "type": "allocation.update",
                    "actor": {"id": "x", "kind": "algorithm"},
                    "params": {"algorithm": "ucb", "weights": {"a": 1.5}},
                }
            },
            "action",
        ),
        (
            {
                "action": {
                    "type": "budget.reallocate",
                    "actor": {"id": "x", "kind": "algorithm"},
                    "params": {"budgets": {"c": -3}},
                }
            },
            "action",
        ),
        ({"action": {"type": "link.pause", "actor": {"id": "x", "kind": "user"}}, "dry_run": "sometimes"}, "dry_run"),
        ({}, "action"),
    ],
)
def test_bad_input_is_a_problem_and_writes_nothing(
    app: Flask, client: FlaskClient, auth_header: dict[str, str], payload: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/decisions", json=payload, headers=auth_header)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert field in response.json["errors"]
    with services(app).db.unit_of_work() as uow:
        assert uow.session.query(Decision).count() == 0


def test_malformed_json_and_wrong_content_type(client: FlaskClient, auth_header: dict[str, str]) -> None:
    bad = client.post("/v1/decisions", data="{not json", headers=auth_header | {"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json["title"] == "Malformed JSON"
    text = client.post("/v1/decisions", data="hello", headers=auth_header | {"Content-Type": "text/plain"})
    assert text.status_code == 415 and text.mimetype == "application/problem+json"
    array = client.post("/v1/decisions", json=[1, 2], headers=auth_header)
    assert array.status_code == 400


def test_oversized_body_is_413(client: FlaskClient, auth_header: dict[str, str]) -> None:
    huge = {
        "action": {"type": "link.pause", "actor": {"id": "x", "kind": "user"}, "params": {"reason": "x" * 2_000_000}}
    }
    response = client.post("/v1/decisions", json=huge, headers=auth_header)
    assert response.status_code == 413 and response.mimetype == "application/problem+json"


def test_invalid_tokens_are_401(client: FlaskClient) -> None:
    payload = allocation({"a": 0.5, "b": 0.5})
    for header in ("Bearer slk_nope", "Basic abc", "Bearer "):
        response = client.post("/v1/decisions", json=payload, headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.mimetype == "application/problem+json"
    assert client.post("/v1/decisions", json=payload).status_code == 401


def test_wrong_role_is_403_in_the_same_query(app: Flask, client: FlaskClient) -> None:
    affiliate = {"Authorization": f"Bearer {make_token(app, 'affiliate')}"}
    response = client.post("/v1/decisions", json=allocation({"a": 0.5, "b": 0.5}), headers=affiliate)
    assert response.status_code == 403 and "forbidden" in response.json["reasons"]
    with services(app).db.unit_of_work() as uow:
        assert uow.session.query(Decision).count() == 0


def test_revoked_token_stops_working(app: Flask, client: FlaskClient) -> None:
    admin = {"Authorization": f"Bearer {make_token(app, 'admin')}"}
    created = client.post("/v1/tokens", json={"name": "svc", "role": "service"}, headers=admin)
    assert created.status_code == 201 and created.json["token"].startswith("slk_")
    header = {"Authorization": f"Bearer {created.json['token']}"}
    assert client.get("/v1/me", headers=header).json["roles"] == ["service"]
    listed = client.get("/v1/tokens", headers=admin).json["items"]
    assert all("token" not in t for t in listed), "a token is shown once, at creation"
    assert client.delete(f"/v1/tokens/{created.json['id']}", headers=admin).status_code == 200
    assert client.get("/v1/me", headers=header).status_code == 401


def test_claimed_actor_roles_carry_no_privilege(client: FlaskClient, auth_header: dict[str, str]) -> None:
    """A service may say which algorithm proposes an action, not which roles it holds."""
    claim = {
        "action": {
            "type": "link.resume",
            "actor": {"id": "mallory", "kind": "service", "roles": ["admin"]},
            "target": {"kind": "link", "id": "lnk_1"},
        }
    }
    body = client.post("/v1/decisions", json=claim, headers=auth_header).json
    assert body["allow"] is False
    assert "actor_not_permitted" in {r["code"] for r in body["reasons"]}
    system = {
        "action": {"type": "link.resume", "actor": {"id": "sys", "kind": "system"}, "target": claim["action"]["target"]}
    }
    response = client.post("/v1/decisions", json=system, headers=auth_header)
    assert response.status_code == 400 and "actor" in response.json["errors"]["action"]
