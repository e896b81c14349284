"""Autopilot cycles through the real policies: allowed, clamped and denied cycles (the old
allocation stays, every cycle recorded with its reasons), the kill switch blocks approvals while
clicks keep flowing, budget arbitrage, the lease that keeps two schedulers from running the same
cycle, the optimize API and the run-once CLI."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from server.autopilot.lease import Lease
from server.autopilot.models import AutopilotRun
from server.autopilot.scheduler import AutopilotScheduler
from server.autopilot.services import autopilot_actor, optimize_link, run_budget_arbitrage
from server.cli import main
from server.clicks.redirect import click_handler
from server.config import Settings
from server.db import utcnow
from server.extensions import services
from server.governance.gateway import Actor
from server.governance.models import Decision
from server.governance.services import set_kill_switch
from server.links.models import ArmStat, Campaign, CampaignCost, Click, Conversion, SmartLink, TrafficSource
from tests.conftest import ROOT, TEST_SECRET, make_token
from tests.support import factories

OPERATOR = Actor(id="user:ops", kind="user", roles=("operator",))
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


@pytest.fixture(autouse=True)
def _close_click_path(app: Flask) -> Iterator[None]:
    yield
    click_handler(app).close()


def evidence(app: Flask, link_id: str, stats: dict[str, tuple[int, int]]) -> None:
    """Hourly counters as the click writer and the postback would have left them."""
    hour = int(time.time()) // 3600 * 3600
    with services(app).db.unit_of_work() as uow:
        for offer, (clicks, conversions) in stats.items():
            uow.session.add(
                ArmStat(
                    link_id=link_id,
                    offer_id=offer,
                    hour=hour - 3600,
                    clicks=clicks,
                    bot_clicks=0,
                    conversions=conversions,
                    revenue=Decimal(conversions * 10),
                )
            )
        uow.commit()


def cycle(app: Flask, link_id: str) -> Any:
    svc = services(app)
    with svc.db.unit_of_work() as uow:
        link = uow.session.get(SmartLink, link_id)
        assert link is not None
        result = optimize_link(
            uow.session, svc.gateway, link, actor=autopilot_actor(link), rng=np.random.default_rng(3), now=utcnow()
        )
        uow.commit()
    return result


def current_allocation(app: Flask, link_id: str) -> int | None:
    with services(app).db.session() as session:
        link = session.get(SmartLink, link_id)
        assert link is not None
        return link.current_allocation_id


def test_an_allowed_cycle_makes_a_new_current_allocation(app: Flask) -> None:
    link_id = factories.seed_link(app, {"a": 0.5, "b": 0.5}, params={"floor": 0.05, "n_samples": 2000})
    evidence(app, link_id, {"a": (1000, 60), "b": (1000, 20)})
    before = current_allocation(app, link_id)
    result = cycle(app, link_id)
    assert result.outcome == "allowed" and result.reasons == []
    assert result.approved == pytest.approx({"a": 0.95, "b": 0.05}, abs=1e-6)
    after = current_allocation(app, link_id)
    assert after != before and after == result.allocation_id
    with services(app).db.session() as session:
        run = session.get(AutopilotRun, result.run.id)
        assert run is not None and run.decision_id == result.decision_id and run.algorithm_state is not None
        decision = session.get(Decision, result.decision_id)
        assert decision is not None and decision.action_type == "allocation.update" and decision.executed


def test_a_clamped_cycle_records_why(app: Flask) -> None:
    link_id = factories.seed_link(app, {"a": 0.5, "b": 0.5}, params={"n_samples": 2000})
    evidence(app, link_id, {"a": (1000, 60), "b": (1000, 20)})
    result = cycle(app, link_id)
    assert result.outcome == "clamped"
    assert {r["code"] for r in result.reasons} == {"below_exploration_floor"}
    floor = json.loads((ROOT / "rego" / "config" / "data.json").read_text())["thompson_sampling"]["exploration_floor"]
    assert result.proposed["b"] < floor <= result.approved["b"] + 1e-9
    assert sum(result.approved.values()) == pytest.approx(1.0)
    assert current_allocation(app, link_id) == result.allocation_id


def test_a_denied_cycle_keeps_the_old_allocation(app: Flask) -> None:
    link_id = factories.seed_link(app, {"a": 0.5, "b": 0.5}, algorithm="traffic_optimizer", params={"min_clicks": 0})
    evidence(app, link_id, {"a": (50, 5), "b": (50, 1)})  # 100 clicks: under min_total_clicks
    before = current_allocation(app, link_id)
    result = cycle(app, link_id)
    assert result.outcome == "denied" and result.approved is None
    assert "insufficient_evidence" in {r["code"] for r in result.reasons}
    assert current_allocation(app, link_id) == before
    with services(app).db.session() as session:
        run = session.get(AutopilotRun, result.run.id)
        assert run is not None and run.outcome == "denied" and run.reasons[0]["code"] == "insufficient_evidence"


def test_the_kill_switch_stops_approvals_while_clicks_flow(app: Flask, client: FlaskClient) -> None:
    link_id = factories.seed_link(app, {"a": 0.7, "b": 0.3}, slug="killed", params={"floor": 0.05, "n_samples": 2000})
    evidence(app, link_id, {"a": (1000, 20), "b": (1000, 60)})
    before = current_allocation(app, link_id)
    svc = services(app)
    for scope, code in (("global", "kill_switch_active"), ("link", "target_kill_switch_active")):
        with svc.db.unit_of_work() as uow:
            assert set_kill_switch(
                uow.session, svc.gateway, OPERATOR, enabled=True, scope=scope, target_id=link_id
            ).allow
            uow.commit()
        result = cycle(app, link_id)
        assert result.outcome == "denied" and code in {r["code"] for r in result.reasons}
        assert current_allocation(app, link_id) == before
        statuses = [
            client.get("/r/killed", headers={"User-Agent": BROWSER}, environ_base={"REMOTE_ADDR": f"10.0.0.{i}"})
            for i in range(1, 41)
        ]
        assert {r.status_code for r in statuses} == {302}
        with svc.db.unit_of_work() as uow:
            assert set_kill_switch(
                uow.session, svc.gateway, OPERATOR, enabled=False, scope=scope, target_id=link_id
            ).allow
            uow.commit()
    assert cycle(app, link_id).outcome == "allowed"  # switched off: approvals resume


def test_paused_links_and_broken_configurations_are_recorded_without_asking_opa(app: Flask) -> None:
    link_id = factories.seed_link(app, {"a": 1.0}, status="paused")
    assert cycle(app, link_id).outcome == "skipped"
    with services(app).db.unit_of_work() as uow:
        link = uow.session.get(SmartLink, link_id)
        assert link is not None
        link.status, link.algorithm = "active", "no_such_algorithm"
        uow.commit()
    result = cycle(app, link_id)
    assert result.outcome == "error" and result.reasons[0]["code"] == "unknown_algorithm"
    with services(app).db.session() as session:
        assert (
            session.scalar(sa.select(sa.func.count()).select_from(Decision).where(Decision.target_id == link_id)) == 1
        )


def test_budget_arbitrage_moves_budget_through_the_gateway(app: Flask) -> None:
    svc = services(app)
    now = utcnow().replace(hour=12, minute=0)
    with svc.db.unit_of_work() as uow:
        s = uow.session
        offer = factories.offer(s, "bud_offer")
        good = factories.link(s, [offer.id], id="lnk_good")
        bad = factories.link(s, [offer.id], id="lnk_bad")
        s.add(TrafficSource(id="src_1", name="Source", cost_model="cpc"))
        s.flush()
        for cid, link in (("cmp_good", good), ("cmp_bad", bad)):
            s.add(
                Campaign(
                    id=cid,
                    name=cid,
                    traffic_source_id="src_1",
                    link_id=link.id,
                    daily_budget=Decimal(200),
                    daily_cap=Decimal(1000),
                    currency="USD",
                )
            )
        s.flush()
        today: date = now.date()
        for day in (today - timedelta(days=1), today):
            s.add(CampaignCost(campaign_id="cmp_good", day=day, amount=Decimal(100), clicks=500))
            s.add(CampaignCost(campaign_id="cmp_bad", day=day, amount=Decimal(100), clicks=500))
        uow.commit()
    # Revenue only on the good campaign's link: ROI 2.0 against -1.0.
    with svc.db.unit_of_work() as uow:
        uow.session.add(Click(id="b" * 32, link_id="lnk_good", offer_id="bud_offer", probability=1.0, subs={}))
        uow.session.flush()
        uow.session.add(
            Conversion(
                click_id="b" * 32,
                txid="",
                link_id="lnk_good",
                offer_id="bud_offer",
                amount=600,
                currency="USD",
                status="approved",
            )
        )
        uow.commit()
    with svc.db.unit_of_work() as uow:
        (result,) = run_budget_arbitrage(uow.session, svc.gateway, now=now)
        uow.commit()
    assert result.outcome in ("allowed", "clamped"), result.reasons
    assert result.proposed["cmp_good"] > 200 > result.proposed["cmp_bad"]
    with svc.db.session() as session:
        good_budget = session.get(Campaign, "cmp_good").daily_budget  # type: ignore[union-attr]
        bad_budget = session.get(Campaign, "cmp_bad").daily_budget  # type: ignore[union-attr]
        decision = session.get(Decision, result.decision_id)
    assert decision is not None and decision.action_type == "budget.reallocate" and decision.executed
    assert Decimal(good_budget) == Decimal(str(result.approved["cmp_good"])).quantize(Decimal("0.0001"))
    assert Decimal(good_budget) > 200 > Decimal(bad_budget) >= 100  # never below what it spent today
    assert Decimal(good_budget) - 200 <= 100  # the shift limit (max_shift_amount) holds


def test_a_lease_lets_one_of_two_schedulers_run(app: Flask) -> None:
    svc = services(app)
    for arms in ({"a": 0.5, "b": 0.5}, {"c": 0.5, "d": 0.5}):
        factories.seed_link(app, arms, params={"n_samples": 500})
    first = AutopilotScheduler(svc.db, svc.gateway, interval=1.0, owner="host-a:1")
    second = AutopilotScheduler(svc.db, svc.gateway, interval=1.0, owner="host-b:2")
    first.start()
    second.start()
    deadline = time.monotonic() + 20
    while first.cycles + second.cycles < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    first.stop()
    second.stop()
    assert first.cycles + second.cycles >= 3
    assert min(first.cycles, second.cycles) == 0  # only the lease holder ran
    with svc.db.session() as session:
        owners = set(session.scalars(sa.select(AutopilotRun.owner)))
        per_cycle = session.execute(sa.select(AutopilotRun.scope, sa.func.count()).group_by(AutopilotRun.scope)).all()
    assert len(owners) == 1
    assert {n for _, n in per_cycle} == {max(first.cycles, second.cycles)}


def test_a_lease_is_atomic_and_expires(app: Flask) -> None:
    db = services(app).db
    clock = [datetime(2026, 11, 26, 12, 0, tzinfo=UTC)]
    leases = [Lease(db, "job", f"owner-{i}", ttl=30, clock=lambda: clock[0]) for i in range(6)]
    barrier = threading.Barrier(len(leases))
    won: list[str] = []

    def contend(lease: Lease) -> None:
        barrier.wait()
        if lease.acquire():
            won.append(lease.owner)

    threads = [threading.Thread(target=contend, args=(lease,)) for lease in leases]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(won) == 1
    holder = next(lease for lease in leases if lease.owner == won[0])
    other = next(lease for lease in leases if lease.owner != won[0])
    clock[0] += timedelta(seconds=20)
    assert holder.acquire() and not other.acquire()  # renewed by its heartbeat
    clock[0] += timedelta(seconds=31)
    assert other.acquire() and not holder.acquire()  # expired: taken over
    other.release()
    assert holder.acquire()


def test_the_optimize_api(app: Flask, client: FlaskClient) -> None:
    link_id = factories.seed_link(app, {"a": 0.5, "b": 0.5}, params={"floor": 0.05, "n_samples": 2000})
    evidence(app, link_id, {"a": (1000, 60), "b": (1000, 20)})
    admin = {"Authorization": f"Bearer {make_token(app, 'admin')}"}
    ok = client.post(f"/v1/links/{link_id}/optimize", headers=admin)
    assert ok.status_code == 200, ok.json
    assert ok.json["outcome"] == "allowed" and ok.json["approved"]["a"] == pytest.approx(0.95)
    assert ok.json["decision_id"] and ok.json["run_id"]

    svc = services(app)
    with svc.db.unit_of_work() as uow:
        set_kill_switch(uow.session, svc.gateway, OPERATOR, enabled=True)
        uow.commit()
    denied = client.post(f"/v1/links/{link_id}/optimize", headers=admin)
    assert denied.status_code == 403 and denied.mimetype == "application/problem+json"
    assert denied.json["type"].endswith("/denied-by-policy") and denied.json["outcome"] == "denied"
    assert [r["code"] for r in denied.json["reasons"]] == ["kill_switch_active"]

    assert client.post("/v1/links/lnk_missing/optimize", headers=admin).status_code == 404
    service = {"Authorization": f"Bearer {make_token(app, 'service')}"}
    assert client.post(f"/v1/links/{link_id}/optimize", headers=service).status_code == 403  # links:read only
    with svc.db.session() as session:
        triggers = set(session.scalars(sa.select(AutopilotRun.triggered_by)))
    assert len(triggers) == 1 and next(iter(triggers)).startswith("token:")


def test_run_once_prints_each_links_outcome(app: Flask, settings: Settings) -> None:
    allowed = factories.seed_link(app, {"a": 0.5, "b": 0.5}, params={"floor": 0.05, "n_samples": 1000})
    evidence(app, allowed, {"a": (1000, 60), "b": (1000, 20)})
    denied = factories.seed_link(app, {"c": 0.5, "d": 0.5}, algorithm="traffic_optimizer", params={"min_clicks": 0})
    evidence(app, denied, {"c": (50, 5), "d": (50, 1)})
    env = {
        "DATABASE_URL": settings.database_url,
        "OPA_URL": str(settings.opa_url),
        "SECRET_KEY": TEST_SECRET,
        "SMARTLINKS_VAR_DIR": settings.var_dir,
    }
    result = CliRunner().invoke(main, ["autopilot", "run-once"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith(f"{allowed}\tallowed\tdec_") and "a=0.950 b=0.050" in line for line in lines)
    assert any(line.startswith(f"{denied}\tdenied\tdec_") for line in lines)
    assert any("insufficient_evidence:" in line for line in lines)
    with services(app).db.session() as session:
        assert set(session.scalars(sa.select(AutopilotRun.trigger))) == {"cli"}
