"""The smart-link JSON API against a real OPA sidecar and real databases (SQLite and PostgreSQL):
CRUD of advertisers, offers, affiliates, links, traffic sources, campaigns and costs; validation
problems that write nothing; governed allocations, arm changes, pauses and resumes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from marshmallow import Schema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from sqlalchemy import func, select

from server.db import Base
from server.extensions import services
from server.governance.models import Decision
from server.links import schemas
from server.links.models import Allocation, Campaign, CampaignCost, LinkArm, Offer, SmartLink
from tests.conftest import make_token
from tests.integration.test_openapi import SPEC_PATH, SPEC_URI, conforms, marshmallow_fields, schema_fields

PROBLEM = "application/problem+json"
URL = "https://adv.example/land?cid={click_id}&s1={sub1}&c={country}"


# --- helpers --------------------------------------------------------------------------------
def header(app: Flask, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(app, role)}"}


@pytest.fixture
def operator(app: Flask) -> dict[str, str]:
    return header(app, "operator")


def count(app: Flask, model: type[Base], *where: Any) -> int:
    with services(app).db.unit_of_work() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def created(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.json
    body: dict[str, Any] = response.json
    return body


def seed(client: FlaskClient, h: dict[str, str], offers: int = 3) -> dict[str, Any]:
    adv = created(client.post("/v1/advertisers", json={"name": "Acme", "email": "ads@acme.example"}, headers=h))
    offer_ids = [
        created(
            client.post(
                "/v1/offers",
                json={
                    "advertiser_id": adv["id"],
                    "name": f"Offer {i}",
                    "url_template": URL,
                    "payout": "2.50",
                    "currency": "EUR",
                },
                headers=h,
            )
        )["id"]
        for i in range(offers)
    ]
    aff = created(client.post("/v1/affiliates", json={"name": "Pat"}, headers=h))
    return {"advertiser": adv["id"], "offers": offer_ids, "affiliate": aff["id"]}


def make_link(client: FlaskClient, h: dict[str, str], world: dict[str, Any], **extra: Any) -> Any:
    body = {"slug": "summer", "name": "Summer", "affiliate_id": world["affiliate"], "arms": world["offers"][:2]}
    return client.post("/v1/links", json=body | extra, headers=h)


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.json)
    assert response.mimetype == PROBLEM
    body: dict[str, Any] = response.json
    return body


def kill_switch(client: FlaskClient, app: Flask, enabled: bool, **scope: Any) -> None:
    admin = header(app, "admin")
    response = client.post("/v1/controls/kill-switch", json={"enabled": enabled} | scope, headers=admin)
    assert response.status_code == 200, response.json


# --- advertisers, affiliates, offers --------------------------------------------------------
def test_advertiser_and_affiliate_crud(client: FlaskClient, operator: dict[str, str]) -> None:
    for path, status in (("/v1/advertisers", "paused"), ("/v1/affiliates", "suspended")):
        first = created(client.post(path, json={"name": "  One ", "email": None}, headers=operator))
        assert first["name"] == "One" and first["status"] == "active" and first["email"] is None
        second = created(client.post(path, json={"name": "Two", "email": "two@example.com"}, headers=operator))
        assert client.get(f"{path}/{first['id']}", headers=operator).json == first

        changed = client.patch(
            f"{path}/{first['id']}", json={"email": "one@example.com", "status": status}, headers=operator
        )
        assert changed.status_code == 200 and changed.json["email"] == "one@example.com"
        assert changed.json["status"] == status

        page1 = client.get(f"{path}?limit=1", headers=operator).json
        assert [i["id"] for i in page1["items"]] == [second["id"]] and page1["next_cursor"]
        page2 = client.get(f"{path}?limit=1&cursor={page1['next_cursor']}", headers=operator).json
        assert [i["id"] for i in page2["items"]] == [first["id"]] and page2["next_cursor"] is None

        assert problem(client.get(f"{path}/nope", headers=operator), 404)["title"] == "Not Found"
        problem(client.patch(f"{path}/nope", json={"name": "x"}, headers=operator), 404)
        problem(client.patch(f"{path}/{first['id']}", json={"status": "gone"}, headers=operator), 400)
        problem(client.get(f"{path}?cursor=garbage", headers=operator), 400)


def test_offer_crud(client: FlaskClient, operator: dict[str, str]) -> None:
    world = seed(client, operator, offers=1)
    offer_id = world["offers"][0]
    offer = client.get(f"/v1/offers/{offer_id}", headers=operator).json
    assert offer["payout"] == "2.5000" and offer["currency"] == "EUR" and offer["status"] == "active"
    assert offer["countries"] == [] and offer["devices"] == [] and offer["daily_cap"] is None

    changed = client.patch(
        f"/v1/offers/{offer_id}",
        json={"payout": 3.1, "currency": "usd", "countries": ["de", "FR"], "devices": ["mobile"], "daily_cap": 50},
        headers=operator,
    )
    assert changed.status_code == 200, changed.json
    assert changed.json["payout"] == "3.1000" and changed.json["currency"] == "USD"
    assert changed.json["countries"] == ["DE", "FR"] and changed.json["daily_cap"] == 50
    # the advertiser and the status are not plain data: unknown fields for PATCH
    errors = problem(client.patch(f"/v1/offers/{offer_id}", json={"status": "paused"}, headers=operator), 400)
    assert "status" in errors["errors"]
    assert client.get(f"/v1/offers/{offer_id}", headers=operator).json["status"] == "active"

    listed = client.get(f"/v1/offers?advertiser_id={world['advertiser']}&status=active", headers=operator).json
    assert [o["id"] for o in listed["items"]] == [offer_id]
    assert client.get("/v1/offers?status=paused", headers=operator).json["items"] == []
    problem(client.get("/v1/offers?colour=red", headers=operator), 400)


@pytest.mark.parametrize(
    "change, field, words",
    [
        ({"url_template": "https://adv.example/?c={clickid}"}, "url_template", "unknown macro {clickid}"),
        ({"url_template": "ftp://adv.example/{click_id}"}, "url_template", "http"),
        ({"url_template": "adv.example/{click_id}"}, "url_template", "absolute"),
        ({"url_template": "https://adv.example/?c={click_id"}, "url_template", "never closed"),
        ({"url_template": "https://adv.example/?c=click_id}"}, "url_template", "closes nothing"),
        ({"url_template": "https://adv.example/?c={{click_id}}"}, "url_template", "inside the macro"),
        ({"url_template": "https://{sub1}/land"}, "url_template", "host"),
        ({"url_template": "https://adv.example/a b"}, "url_template", "spaces"),
        ({"currency": "XYZ"}, "currency", "unknown currency"),
        ({"payout": -1}, "payout", "negative"),
        ({"payout": "1.23456"}, "payout", "decimal places"),
        ({"payout": "NaN"}, "payout", "not permitted"),
        ({"countries": ["Germany"]}, "countries", "country"),
        ({"devices": ["fridge"]}, "devices", "one of"),
        ({"daily_cap": 0}, "daily_cap", "greater"),
        ({"name": "   "}, "name", "blank"),
        ({"advertiser_id": "adv_missing"}, "advertiser_id", "no advertiser"),
        ({"color": "red"}, "color", "Unknown field"),
    ],
)
def test_bad_offers_are_400_with_field_errors_and_write_nothing(
    app: Flask, client: FlaskClient, operator: dict[str, str], change: dict[str, Any], field: str, words: str
) -> None:
    adv = created(client.post("/v1/advertisers", json={"name": "Acme"}, headers=operator))
    body = {"advertiser_id": adv["id"], "name": "Deal", "url_template": URL, "payout": 1, "currency": "EUR"}
    response = client.post("/v1/offers", json=body | change, headers=operator)
    errors = problem(response, 400)["errors"]
    assert field in errors, errors
    assert words.lower() in str(errors[field]).lower(), errors
    assert count(app, Offer) == 0


def test_malformed_bodies(client: FlaskClient, operator: dict[str, str]) -> None:
    problem(client.post("/v1/advertisers", data="{", content_type="application/json", headers=operator), 400)
    problem(client.post("/v1/advertisers", data="name=x", headers=operator), 415)
    problem(client.post("/v1/advertisers", json=["x"], headers=operator), 400)
    problem(client.delete("/v1/advertisers", headers=operator), 405)


# --- links and their allocations ------------------------------------------------------------
def test_creating_a_link_approves_its_first_allocation(
    app: Flask, client: FlaskClient, operator: dict[str, str]
) -> None:
    world = seed(client, operator)
    body = created(make_link(client, operator, world, fallback_offer_id=world["offers"][0], slug="Summer-1"))
    assert body["slug"] == "summer-1" and body["algorithm"] == "thompson_sampling"
    assert body["algorithm_params"]["n_samples"] == 10000  # the registry's defaults, made explicit
    assert body["commission_rate"] == "0.7000" and body["status"] == "active"
    decision = body["decision"]
    assert decision["allow"] is True and decision["outcome"] == "allowed"
    allocation = body["current_allocation"]
    assert allocation["weights"] == {world["offers"][0]: 0.5, world["offers"][1]: 0.5}
    assert allocation["decision_id"] == decision["decision_id"]
    assert [a["id"] for a in body["allocation_history"]] == [allocation["id"]]

    with services(app).db.unit_of_work() as uow:
        record = uow.session.get(Decision, decision["decision_id"])
        assert record is not None and record.action_type == "allocation.update" and record.executed
        assert record.target_kind == "link" and record.target_id == body["id"]
        assert record.actor_kind == "service" and record.actor_id.startswith("token:")
        assert record.input["state"]["arms"] == sorted(world["offers"][:2])
        link = uow.session.get(SmartLink, body["id"])
        assert link is not None and link.current_allocation_id == allocation["id"]

    detail = client.get(f"/v1/links/{body['id']}", headers=operator).json
    assert {a["offer_id"]: a["weight"] for a in detail["arm_offers"]} == allocation["weights"]
    assert detail["kill_switch"] is False
    listed = client.get(f"/v1/links?affiliate_id={world['affiliate']}", headers=operator).json["items"]
    assert [item["id"] for item in listed] == [body["id"]]
    assert listed[0]["current_allocation"]["weights"] == allocation["weights"]


def test_a_link_with_the_callers_weights_and_one_without_arms(client: FlaskClient, operator: dict[str, str]) -> None:
    world = seed(client, operator)
    a, b = world["offers"][:2]
    body = created(make_link(client, operator, world, weights={a: 0.7, b: 0.3}))
    assert body["current_allocation"]["weights"] == {a: 0.7, b: 0.3}
    bare = created(make_link(client, operator, world, slug="bare", arms=[]))
    assert bare["decision"] is None and bare["current_allocation"] is None and bare["arms"] == []


def test_a_denied_first_allocation_still_creates_the_link(
    app: Flask, client: FlaskClient, operator: dict[str, str]
) -> None:
    world = seed(client, operator)
    kill_switch(client, app, True)
    body = created(make_link(client, operator, world))
    assert body["current_allocation"] is None and body["allocation_history"] == []
    assert body["decision"]["allow"] is False
    assert "kill_switch_active" in {r["code"] for r in body["decision"]["reasons"]}
    assert count(app, Decision, Decision.target_id == body["id"], Decision.outcome == "denied") == 1
    assert count(app, LinkArm, LinkArm.link_id == body["id"]) == 2


@pytest.mark.parametrize(
    "change, field",
    [
        ({"slug": "no spaces"}, "slug"),
        ({"slug": "-dash"}, "slug"),
        ({"affiliate_id": "aff_missing"}, "affiliate_id"),
        ({"arms": ["off_missing"]}, "arms"),
        ({"arms": ["DUP", "DUP"]}, "arms"),
        ({"fallback_offer_id": "OTHER"}, "fallback_offer_id"),
        ({"algorithm": "budget_arbitrage"}, "algorithm"),
        ({"algorithm": "magic"}, "algorithm"),
        ({"algorithm_params": {"gamma": 7}}, "algorithm_params"),
        ({"algorithm_params": {"nope": 1}}, "algorithm_params"),
        ({"weights": {"A": 0.5, "B": 0.4}}, "weights"),
        ({"weights": {"A": 1.0}}, "weights"),
        ({"commission_rate": 1.5}, "commission_rate"),
    ],
)
def test_bad_links_are_400_and_write_nothing(
    app: Flask, client: FlaskClient, operator: dict[str, str], change: dict[str, Any], field: str
) -> None:
    world = seed(client, operator)
    a, b, c = world["offers"]
    names = {"A": a, "B": b, "OTHER": c, "DUP": a}

    def real(value: Any) -> Any:
        if isinstance(value, str):
            return names.get(value, value)
        if isinstance(value, list):
            return [real(v) for v in value]
        if isinstance(value, dict):
            return {real(k): v for k, v in value.items()}
        return value

    errors = problem(make_link(client, operator, world, **{k: real(v) for k, v in change.items()}), 400)["errors"]
    assert field in errors, errors
    assert count(app, SmartLink) == 0 and count(app, Decision) == 0


def test_a_duplicate_slug_is_409(app: Flask, client: FlaskClient, operator: dict[str, str]) -> None:
    world = seed(client, operator)
    created(make_link(client, operator, world))
    body = problem(make_link(client, operator, world, slug="SUMMER"), 409)
    assert "summer" in body["detail"]
    assert count(app, SmartLink) == 1 and count(app, Allocation) == 1


def test_patching_a_link(client: FlaskClient, operator: dict[str, str]) -> None:
    world = seed(client, operator)
    link = created(make_link(client, operator, world))
    url = f"/v1/links/{link['id']}"
    changed = client.patch(url, json={"algorithm": "ucb", "name": "Renamed"}, headers=operator)
    assert changed.status_code == 200, changed.json
    assert changed.json["algorithm"] == "ucb" and changed.json["name"] == "Renamed"
    assert "gamma" not in changed.json["algorithm_params"]  # the new algorithm's own defaults
    tuned = client.patch(url, json={"algorithm_params": {"variant": "kl_ucb"}}, headers=operator)
    assert tuned.status_code == 200 and tuned.json["algorithm_params"]["variant"] == "kl_ucb"
    assert (
        "algorithm_params"
        in problem(client.patch(url, json={"algorithm_params": {"x": 1}}, headers=operator), 400)["errors"]
    )
    fallback = client.patch(url, json={"fallback_offer_id": world["offers"][2]}, headers=operator)
    assert "fallback_offer_id" in problem(fallback, 400)["errors"]
    assert client.patch(url, json={"fallback_offer_id": world["offers"][1]}, headers=operator).status_code == 200
    for immutable in ({"slug": "other"}, {"affiliate_id": world["affiliate"]}, {"status": "paused"}):
        problem(client.patch(url, json=immutable, headers=operator), 400)
    problem(client.patch("/v1/links/lnk_missing", json={"name": "x"}, headers=operator), 404)


def test_changing_the_arms_approves_a_new_allocation(app: Flask, client: FlaskClient, operator: dict[str, str]) -> None:
    world = seed(client, operator)
    a, b, c = world["offers"]
    link = created(make_link(client, operator, world, fallback_offer_id=a))
    url = f"/v1/links/{link['id']}/arms"

    response = client.put(url, json={"arms": [a, b, c]}, headers=operator)
    assert response.status_code == 200, response.json
    body = response.json
    assert body["decision"]["allow"] is True and body["arms"] == sorted([a, b, c])
    assert body["current_allocation"]["weights"] == pytest.approx({a: 1 / 3, b: 1 / 3, c: 1 / 3})
    assert body["current_allocation"]["decision_id"] == body["decision"]["decision_id"]
    assert len(body["allocation_history"]) == 2

    same = client.put(url, json={"arms": [c, b, a]}, headers=operator)
    assert same.status_code == 200 and same.json["decision"] is None
    assert count(app, Allocation) == 2

    without_fallback = problem(client.put(url, json={"arms": [b, c]}, headers=operator), 400)
    assert "fallback" in without_fallback["detail"]
    problem(client.put(url, json={"arms": []}, headers=operator), 400)
    problem(client.put(url, json={"arms": [a, "off_missing"]}, headers=operator), 400)
    problem(client.put("/v1/links/lnk_missing/arms", json={"arms": [a]}, headers=operator), 404)
    assert count(app, Allocation) == 2


def test_a_denied_arm_change_changes_nothing_but_is_recorded(
    app: Flask, client: FlaskClient, operator: dict[str, str]
) -> None:
    world = seed(client, operator)
    a, b, c = world["offers"]
    link = created(make_link(client, operator, world))
    kill_switch(client, app, True, scope="link", target_id=link["id"])

    body = problem(client.put(f"/v1/links/{link['id']}/arms", json={"arms": [a, c]}, headers=operator), 403)
    assert body["type"].endswith("/denied-by-policy") and body["allow"] is False
    assert "target_kill_switch_active" in {r["code"] for r in body["reasons"]}
    with services(app).db.unit_of_work() as uow:
        record = uow.session.get(Decision, body["decision_id"])
        assert record is not None and record.outcome == "denied" and record.target_id == link["id"]
        assert record.input["state"]["arms"] == sorted([a, c])  # what was asked
    after = client.get(f"/v1/links/{link['id']}", headers=operator).json
    assert after["arms"] == sorted([a, b]) and after["current_allocation"] == link["current_allocation"]
    assert after["kill_switch"] is True


# --- governed pause and resume --------------------------------------------------------------
@pytest.mark.parametrize("kind", ["links", "offers"])
def test_operator_pauses_and_resumes(app: Flask, client: FlaskClient, operator: dict[str, str], kind: str) -> None:
    world = seed(client, operator)
    target = created(make_link(client, operator, world))["id"] if kind == "links" else world["offers"][0]
    url = f"/v1/{kind}/{target}"

    paused = client.post(f"{url}/pause", json={"reason": "fraud spike"}, headers=operator)
    assert paused.status_code == 200, paused.json
    assert paused.json["status"] == "paused" and paused.json["decision"]["allow"] is True
    assert client.get(url, headers=operator).json["status"] == "paused"
    problem(client.post(f"{url}/pause", headers=operator), 409)

    resumed = client.post(f"{url}/resume", headers=operator)  # an empty body is fine
    assert resumed.status_code == 200 and resumed.json["status"] == "active"
    with services(app).db.unit_of_work() as uow:
        records = uow.session.scalars(
            select(Decision).where(Decision.target_id == target, Decision.action_type.like("%.p%"))
        ).all()
        assert [(r.action_type, r.outcome, r.executed) for r in records] == [(f"{kind[:-1]}.pause", "allowed", True)]
        assert records[0].input["action"]["params"] == {"reason": "fraud spike"}
    problem(client.post(f"/v1/{kind}/missing/pause", headers=operator), 404)
    problem(client.post(f"{url}/pause", json={"reason": 42}, headers=operator), 400)


@pytest.mark.parametrize("kind", ["links", "offers"])
def test_the_policy_refuses_a_service_and_the_refusal_is_recorded(
    app: Flask, client: FlaskClient, operator: dict[str, str], kind: str
) -> None:
    world = seed(client, operator)
    target = created(make_link(client, operator, world))["id"] if kind == "links" else world["offers"][0]
    service = header(app, "service")  # may ask (links:operate), but the operations policy says no

    body = problem(client.post(f"/v1/{kind}/{target}/pause", headers=service), 403)
    assert body["type"].endswith("/denied-by-policy") and body["allow"] is False
    assert [r["code"] for r in body["reasons"]] == ["actor_not_permitted"]
    assert client.get(f"/v1/{kind}/{target}", headers=operator).json["status"] == "active"
    with services(app).db.unit_of_work() as uow:
        record = uow.session.get(Decision, body["decision_id"])
        assert record is not None and record.outcome == "denied" and not record.executed
        assert record.action_type == f"{kind[:-1]}.pause" and record.actor_kind == "service"


def test_roles_read_and_write_what_they_should(app: Flask, client: FlaskClient, operator: dict[str, str]) -> None:
    world = seed(client, operator)
    auditor = header(app, "auditor")
    for path in ("/v1/advertisers", "/v1/offers", "/v1/affiliates", "/v1/links", "/v1/campaigns"):
        assert client.get(path, headers=auditor).status_code == 200, path
    assert problem(client.post("/v1/affiliates", json={"name": "x"}, headers=auditor), 403)["reasons"] == ["forbidden"]
    assert problem(client.post(f"/v1/offers/{world['offers'][0]}/pause", headers=auditor), 403)["reasons"] == [
        "forbidden"
    ]
    service = header(app, "service")
    assert client.get("/v1/links", headers=service).status_code == 200
    problem(client.get("/v1/offers", headers=service), 403)
    problem(client.get("/v1/links"), 401)


# --- traffic sources, campaigns and costs ---------------------------------------------------
def test_campaigns_and_traffic_sources(app: Flask, client: FlaskClient, operator: dict[str, str]) -> None:
    source = created(client.post("/v1/traffic-sources", json={"name": "Push", "cost_model": "cpc"}, headers=operator))
    renamed = client.patch(f"/v1/traffic-sources/{source['id']}", json={"name": "Push ads"}, headers=operator)
    assert renamed.json["name"] == "Push ads"
    problem(client.post("/v1/traffic-sources", json={"name": "X", "cost_model": "cpx"}, headers=operator), 400)

    body = {
        "name": "Q4",
        "traffic_source_id": source["id"],
        "daily_budget": 100,
        "daily_cap": "250.5",
        "currency": "EUR",
    }
    campaign = created(client.post("/v1/campaigns", json=body, headers=operator))
    assert campaign["daily_budget"] == "100.0000" and campaign["daily_cap"] == "250.5000"
    assert campaign["link_id"] is None and campaign["status"] == "active"
    url = f"/v1/campaigns/{campaign['id']}"

    over = problem(client.post("/v1/campaigns", json=body | {"daily_budget": 300}, headers=operator), 400)
    assert "daily_budget" in over["errors"]
    unknown = client.post("/v1/campaigns", json=body | {"link_id": "lnk_missing"}, headers=operator)
    assert "link_id" in problem(unknown, 400)["errors"]
    problem(client.post("/v1/campaigns", json=body | {"traffic_source_id": "ts_x"}, headers=operator), 400)
    assert count(app, Campaign) == 1

    assert "daily_budget" in problem(client.patch(url, json={"daily_cap": 50}, headers=operator), 400)["errors"]
    both = client.patch(url, json={"daily_cap": 50, "daily_budget": 40, "status": "paused"}, headers=operator)
    assert both.status_code == 200 and both.json["daily_budget"] == "40.0000" and both.json["status"] == "paused"
    problem(client.patch(url, json={"currency": "USD"}, headers=operator), 400)  # fixed at creation
    listed = client.get(f"/v1/campaigns?traffic_source_id={source['id']}", headers=operator).json["items"]
    assert [c["id"] for c in listed] == [campaign["id"]]
    problem(client.get("/v1/campaigns/cmp_missing", headers=operator), 404)


# --- governed configuration: link.configure and campaign.configure ----------------------------
def campaign_body(source_id: str, budget: float, cap: float = 5000) -> dict[str, Any]:
    return {"name": "C", "traffic_source_id": source_id, "daily_budget": budget, "daily_cap": cap, "currency": "EUR"}


def test_campaign_budgets_are_decided_by_policy(app: Flask, client: FlaskClient, operator: dict[str, str]) -> None:
    source = created(client.post("/v1/traffic-sources", json={"name": "Push", "cost_model": "cpc"}, headers=operator))
    campaign = created(client.post("/v1/campaigns", json=campaign_body(source["id"], 100), headers=operator))
    assert campaign["decision"]["allow"] is True and campaign["decision"]["outcome"] == "allowed"
    url = f"/v1/campaigns/{campaign['id']}"

    renamed = client.patch(url, json={"name": "Renamed"}, headers=operator)
    assert renamed.status_code == 200 and renamed.json["decision"] is None  # descriptive only

    raised = client.patch(url, json={"daily_budget": 400}, headers=operator)
    assert raised.status_code == 200 and raised.json["daily_budget"] == "400.0000"
    with services(app).db.unit_of_work() as uow:
        record = uow.session.get(Decision, raised.json["decision"]["decision_id"])
        assert record is not None and record.action_type == "campaign.configure" and record.executed
        assert record.input["action"]["params"] == {
            "daily_budget": 400.0,
            "daily_cap": 5000.0,
            "status": "active",
            "currency": "EUR",
        }
        assert record.input["state"] == {
            "campaign": {"daily_budget": 100.0, "daily_cap": 5000.0, "status": "active", "currency": "EUR"},
            "others_total": 0.0,
        }

    # Above the per-campaign cap of the bundle (5000), though under the campaign's own cap.
    over = problem(client.patch(url, json={"daily_cap": 9000, "daily_budget": 6000}, headers=operator), 403)
    assert over["type"].endswith("/denied-by-policy") and over["allow"] is False
    assert {r["code"] for r in over["reasons"]} == {"above_campaign_cap"}
    after = client.get(url, headers=operator).json
    assert after["daily_budget"] == "400.0000" and after["daily_cap"] == "5000.0000"  # the whole edit refused
    assert count(app, Decision, Decision.target_id == campaign["id"], Decision.outcome == "denied") == 1


def test_no_hand_edit_takes_total_spend_above_the_global_cap(
    app: Flask, client: FlaskClient, operator: dict[str, str]
) -> None:
    source = created(client.post("/v1/traffic-sources", json={"name": "Push", "cost_model": "cpc"}, headers=operator))
    ids = [
        created(client.post("/v1/campaigns", json=campaign_body(source["id"], 5000), headers=operator))["id"]
        for _ in range(10)
    ]  # 50 000: the global daily cap of the bundle
    refused = problem(client.post("/v1/campaigns", json=campaign_body(source["id"], 10), headers=operator), 403)
    assert {r["code"] for r in refused["reasons"]} == {"total_above_global_cap"}
    assert count(app, Campaign) == 10  # nothing created; the decision is recorded
    assert count(app, Decision, Decision.action_type == "campaign.configure", Decision.outcome == "denied") == 1

    usd = created(
        client.post("/v1/campaigns", json=campaign_body(source["id"], 10) | {"currency": "USD"}, headers=operator)
    )
    assert usd["decision"]["allow"] is True  # another currency, another total

    paused = created(
        client.post("/v1/campaigns", json=campaign_body(source["id"], 10) | {"status": "paused"}, headers=operator)
    )
    reactivate = problem(
        client.patch(f"/v1/campaigns/{paused['id']}", json={"status": "active"}, headers=operator), 403
    )
    assert {r["code"] for r in reactivate["reasons"]} == {"total_above_global_cap"}
    lowered = client.patch(f"/v1/campaigns/{ids[0]}", json={"daily_budget": 4990}, headers=operator)
    assert lowered.status_code == 200, lowered.json
    again = client.patch(f"/v1/campaigns/{paused['id']}", json={"status": "active"}, headers=operator)
    assert again.status_code == 200 and again.json["status"] == "active"


def test_link_algorithm_changes_are_decided_by_policy(
    app: Flask, client: FlaskClient, operator: dict[str, str]
) -> None:
    world = seed(client, operator)
    link = created(make_link(client, operator, world, algorithm="ucb"))
    url = f"/v1/links/{link['id']}"
    switched = client.patch(url, json={"algorithm": "thompson_sampling"}, headers=operator)
    assert switched.status_code == 200 and switched.json["decision"]["outcome"] == "allowed"
    with services(app).db.unit_of_work() as uow:
        record = uow.session.get(Decision, switched.json["decision"]["decision_id"])
        assert record is not None and record.action_type == "link.configure"
        assert record.input["state"]["algorithm"] == "ucb"
        assert record.input["action"]["params"]["algorithm_params"]["n_samples"] == 10000  # defaults filled in

    # The registry accepts 100 Monte Carlo draws; the policy's bounds start at 1000.
    too_few = problem(
        client.patch(url, json={"algorithm_params": {"n_samples": 100}, "name": "X"}, headers=operator), 403
    )
    assert {(r["code"], r.get("target")) for r in too_few["reasons"]} == {("parameter_out_of_bounds", "n_samples")}
    after = client.get(url, headers=operator).json
    assert after["algorithm_params"]["n_samples"] == 10000 and after["name"] == link["name"]

    renamed = client.patch(url, json={"name": "Renamed"}, headers=operator)
    assert renamed.status_code == 200 and renamed.json["decision"] is None


def test_commission_changes_are_decided_by_policy(app: Flask, client: FlaskClient, operator: dict[str, str]) -> None:
    world = seed(client, operator)
    link = created(make_link(client, operator, world, algorithm="ucb"))  # commission 0.7 by default
    url = f"/v1/links/{link['id']}"
    same = client.patch(url, json={"commission_rate": "0.7000", "name": "Same rate"}, headers=operator)
    assert same.status_code == 200 and same.json["decision"] is None  # no change of the rate

    moved = client.patch(url, json={"commission_rate": "0.75"}, headers=operator)
    assert moved.status_code == 200 and moved.json["commission_rate"] == "0.7500"
    with services(app).db.unit_of_work() as uow:
        record = uow.session.get(Decision, moved.json["decision"]["decision_id"])
        assert record is not None and record.action_type == "link.commission" and record.executed
        assert record.input["action"]["params"] == {"commission_rate": 0.75}
        assert record.input["state"] == {"commission_rate": 0.7}

    # A typo-sized jump is refused and nothing of the edit is applied.
    typo = problem(client.patch(url, json={"commission_rate": "0.075", "name": "Typo"}, headers=operator), 403)
    assert {r["code"] for r in typo["reasons"]} == {"commission_change_too_large"}
    after = client.get(url, headers=operator).json
    assert after["commission_rate"] == "0.7500" and after["name"] == "Same rate"

    # With an algorithm change in the same edit: the commission is denied, so the algorithm is not
    # even decided and nothing changes.
    both = problem(
        client.patch(url, json={"commission_rate": "0.99", "algorithm": "thompson_sampling"}, headers=operator), 403
    )
    assert {r["code"] for r in both["reasons"]} == {"commission_change_too_large", "commission_out_of_bounds"}
    assert client.get(url, headers=operator).json["algorithm"] == "ucb"
    assert count(app, Decision, Decision.target_id == link["id"], Decision.action_type == "link.configure") == 0

    # Both allowed: two decisions, the edit applied once, inside the second.
    ok = client.patch(url, json={"commission_rate": "0.8", "algorithm": "thompson_sampling"}, headers=operator)
    assert ok.status_code == 200 and ok.json["algorithm"] == "thompson_sampling"
    assert ok.json["commission_rate"] == "0.8000"
    assert ok.json["decision"]["outcome"] == "allowed"
    with services(app).db.unit_of_work() as uow:
        kinds = uow.session.scalars(
            select(Decision.action_type).where(Decision.target_id == link["id"], Decision.outcome == "allowed")
        ).all()
        assert sorted(kinds).count("link.commission") == 2 and kinds.count("link.configure") == 1


def test_configuration_fails_closed_when_opa_is_unreachable(app: Flask, operator: dict[str, str]) -> None:
    from server.governance.gateway import Actor, Gateway
    from server.links import services as links
    from server.policy.opa_client import OpaClient
    from server.policy.sidecar import free_loopback_port

    dead = Gateway(OpaClient(f"http://127.0.0.1:{free_loopback_port()}", timeout=0.2))
    person = Actor(id="user:1", kind="user", roles=("operator",))
    with services(app).db.unit_of_work() as uow:
        source = links.create_traffic_source(uow.session, {"name": "Push", "cost_model": "cpc"})
        campaign = links.create_campaign(uow.session, campaign_body(source.id, 100))
        uow.commit()
    with services(app).db.unit_of_work() as uow:
        _, outcome = links.configure_campaign(uow.session, dead, person, campaign.id, {"daily_budget": Decimal(200)})
        assert not outcome.allow and outcome.record.error_code == "opa_unavailable"
        created_campaign, refused = links.open_campaign(uow.session, dead, person, campaign_body(source.id, 10))
        assert created_campaign is None and refused.record.error_code == "opa_unavailable"
        uow.commit()
    with services(app).db.unit_of_work() as uow:
        stored = uow.session.get(Campaign, campaign.id)
        assert stored is not None and stored.daily_budget == Decimal(100)
        assert uow.session.scalar(select(func.count()).select_from(Campaign)) == 1
        errors = select(func.count()).select_from(Decision).where(Decision.outcome == "error")
        assert uow.session.scalar(errors) == 2


def test_cost_import_is_an_idempotent_upsert(app: Flask, client: FlaskClient, operator: dict[str, str]) -> None:
    source = created(client.post("/v1/traffic-sources", json={"name": "Push", "cost_model": "cpc"}, headers=operator))
    campaign = created(
        client.post(
            "/v1/campaigns",
            json={
                "name": "Q4",
                "traffic_source_id": source["id"],
                "daily_budget": 10,
                "daily_cap": 20,
                "currency": "EUR",
            },
            headers=operator,
        )
    )
    url = f"/v1/campaigns/{campaign['id']}/costs"
    today = datetime.now(UTC).date()
    d1, d2 = (today - timedelta(days=2)).isoformat(), (today - timedelta(days=1)).isoformat()
    rows = [{"day": d1, "amount": "12.30", "clicks": 100}, {"day": d2, "amount": 7}]

    first = client.post(url, json=rows, headers=operator)
    assert first.status_code == 200, first.json
    assert (first.json["created"], first.json["updated"]) == (2, 0)
    assert [(r["day"], r["amount"], r["clicks"]) for r in first.json["items"]] == [
        (d1, "12.3000", 100),
        (d2, "7.0000", 0),
    ]
    again = client.post(url, json=rows, headers=operator).json
    assert (again["created"], again["updated"]) == (0, 2)
    corrected = client.post(url, json=[{"day": d2, "amount": 8, "clicks": 5}], headers=operator).json
    assert (corrected["created"], corrected["updated"]) == (0, 1)
    stored = client.get(url, headers=operator).json["items"]
    assert [(r["day"], r["amount"], r["clicks"]) for r in stored] == [(d1, "12.3000", 100), (d2, "8.0000", 5)]
    assert client.get(f"{url}?since={d2}", headers=operator).json["items"][0]["day"] == d2

    future = (today + timedelta(days=1)).isoformat()
    bad_rows: list[tuple[Any, str]] = [
        ([{"day": future, "amount": 1}], "0"),
        ([{"day": d1, "amount": 1}, {"day": d1, "amount": 2}], "_schema"),
        ([{"day": d1, "amount": 1}, {"day": "yesterday", "amount": -1}], "1"),
        ([], "_schema"),
    ]
    for bad, key in bad_rows:
        errors = problem(client.post(url, json=bad, headers=operator), 400)["errors"]
        assert key in errors, (bad, errors)
    problem(client.post(url, json={"day": d1, "amount": 1}, headers=operator), 400)
    problem(client.post("/v1/campaigns/cmp_missing/costs", json=rows, headers=operator), 404)
    problem(client.get("/v1/campaigns/cmp_missing/costs", headers=operator), 404)
    with services(app).db.unit_of_work() as uow:
        amounts = dict(uow.session.execute(select(CampaignCost.day, CampaignCost.amount)).all())
    assert amounts == {date.fromisoformat(d1): Decimal("12.3"), date.fromisoformat(d2): Decimal(8)}


# --- the OpenAPI document describes these endpoints -----------------------------------------
@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    return loaded


def test_request_schemas_match_the_document(spec: dict[str, Any]) -> None:
    pairs: dict[str, type[Schema]] = {
        "AdvertiserCreate": schemas.AdvertiserSchema,
        "AdvertiserUpdate": schemas.AdvertiserUpdateSchema,
        "AffiliateCreate": schemas.AffiliateSchema,
        "AffiliateUpdate": schemas.AffiliateUpdateSchema,
        "OfferCreate": schemas.OfferCreateSchema,
        "OfferUpdate": schemas.OfferUpdateSchema,
        "LinkCreate": schemas.LinkCreateSchema,
        "LinkUpdate": schemas.LinkUpdateSchema,
        "ArmsReplace": schemas.ArmsSchema,
        "ReasonRequest": schemas.ReasonSchema,
        "TrafficSourceCreate": schemas.TrafficSourceSchema,
        "TrafficSourceUpdate": schemas.TrafficSourceUpdateSchema,
        "CampaignCreate": schemas.CampaignCreateSchema,
        "CampaignUpdate": schemas.CampaignUpdateSchema,
        "CostRow": schemas.CostRowSchema,
    }
    for name, schema in pairs.items():
        declared, required = marshmallow_fields(schema)
        if name.endswith("Update"):
            required = set()  # loaded with partial=True
        assert schema_fields(spec, name) == (declared, required), name
        assert spec["components"]["schemas"][name]["additionalProperties"] is False, name
    components = spec["components"]["schemas"]
    assert components["Currency"]["enum"] == list(schemas.CURRENCIES)
    assert set(components["LinkCreate"]["properties"]["algorithm"]["enum"]) == set(schemas.allocation_algorithms())


def test_real_answers_conform_to_the_document(
    app: Flask, client: FlaskClient, operator: dict[str, str], spec: dict[str, Any]
) -> None:
    registry = Registry().with_resource(SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012))
    world = seed(client, operator)
    link = make_link(client, operator, world, fallback_offer_id=world["offers"][0])
    conforms(spec, registry, link, "/v1/links", "post")
    link_id = link.json["id"]
    source = client.post("/v1/traffic-sources", json={"name": "Push", "cost_model": "cpm"}, headers=operator)
    conforms(spec, registry, source, "/v1/traffic-sources", "post")
    campaign = client.post(
        "/v1/campaigns",
        json={
            "name": "Q4",
            "traffic_source_id": source.json["id"],
            "link_id": link_id,
            "daily_budget": 1,
            "daily_cap": 2,
            "currency": "EUR",
        },
        headers=operator,
    )
    conforms(spec, registry, campaign, "/v1/campaigns", "post")
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    costs_url = f"/v1/campaigns/{campaign.json['id']}/costs"
    imported = client.post(costs_url, json=[{"day": yesterday, "amount": 3}], headers=operator)
    conforms(spec, registry, imported, "/v1/campaigns/{campaign_id}/costs", "post")

    service = header(app, "service")
    checks = [
        (client.get("/v1/advertisers", headers=operator), "/v1/advertisers", "get"),
        (
            client.get(f"/v1/advertisers/{world['advertiser']}", headers=operator),
            "/v1/advertisers/{advertiser_id}",
            "get",
        ),
        (client.get("/v1/offers", headers=operator), "/v1/offers", "get"),
        (client.get(f"/v1/offers/{world['offers'][0]}", headers=operator), "/v1/offers/{offer_id}", "get"),
        (client.get("/v1/affiliates", headers=operator), "/v1/affiliates", "get"),
        (client.get("/v1/links", headers=operator), "/v1/links", "get"),
        (client.get(f"/v1/links/{link_id}", headers=operator), "/v1/links/{link_id}", "get"),
        (client.get("/v1/traffic-sources", headers=operator), "/v1/traffic-sources", "get"),
        (client.get("/v1/campaigns", headers=operator), "/v1/campaigns", "get"),
        (client.get(costs_url, headers=operator), "/v1/campaigns/{campaign_id}/costs", "get"),
        (
            client.put(f"/v1/links/{link_id}/arms", json={"arms": world["offers"]}, headers=operator),
            "/v1/links/{link_id}/arms",
            "put",
        ),
        (client.post(f"/v1/links/{link_id}/pause", headers=operator), "/v1/links/{link_id}/pause", "post"),
        (client.post(f"/v1/links/{link_id}/resume", headers=service), "/v1/links/{link_id}/resume", "post"),
        (
            client.post(f"/v1/offers/{world['offers'][0]}/pause", headers=operator),
            "/v1/offers/{offer_id}/pause",
            "post",
        ),
        (client.post("/v1/offers", json={"name": "x"}, headers=operator), "/v1/offers", "post"),
        (
            client.post(
                "/v1/links", json={"slug": "summer", "name": "x", "affiliate_id": world["affiliate"]}, headers=operator
            ),
            "/v1/links",
            "post",
        ),
        (client.get("/v1/links/lnk_missing", headers=operator), "/v1/links/{link_id}", "get"),
        (client.patch("/v1/campaigns/cmp_missing", json={}, headers=operator), "/v1/campaigns/{campaign_id}", "patch"),
    ]
    for response, path, method in checks:
        conforms(spec, registry, response, path, method)
    assert [r.status_code for r, _, _ in checks] == [200] * 12 + [403, 200, 400, 409, 404, 404]
