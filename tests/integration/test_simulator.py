"""Simulator smoke test: a small drifting market through the real service in process (clicks via
/r/<slug>, conversions via /postback, cycles via optimize_link with the real OPA)."""

from __future__ import annotations

import sqlalchemy as sa

from server import create_app
from server.autopilot.simulation import InProcessDriver, report, run_simulation, seed_market
from server.autopilot.simulator import Market, default_scenario
from server.clicks.redirect import click_handler
from server.config import Settings
from server.extensions import services
from server.links.models import ArmStat, Click, Conversion


def test_a_small_market_runs_through_the_real_service(settings: Settings) -> None:
    app = create_app(settings.with_overrides({"client_ip_header": "X-Forwarded-For"}))
    try:
        scenario = default_scenario(hours=4, clicks_per_hour=150, cycle_minutes=60, seed=3)
        market = Market(scenario)
        with services(app).db.unit_of_work() as uow:
            link_id, slug = seed_market(uow.session, scenario)
            uow.commit()
        result = run_simulation(market, InProcessDriver(app, link_id, slug))
        assert len(result.cycles) == scenario.cycles == 4
        assert {c.outcome for c in result.cycles} <= {"allowed", "clamped"}
        assert all(c.decision_id for c in result.cycles)
        with services(app).db.session() as session:
            clicks = session.scalar(sa.select(sa.func.count()).select_from(Click))
            bots = session.scalar(sa.select(sa.func.count()).select_from(Click).where(Click.is_bot))
            conversions = session.scalar(sa.select(sa.func.count()).select_from(Conversion))
            learned = session.scalar(sa.select(sa.func.sum(ArmStat.clicks)))
        assert clicks == len(market.visits) == result.tally.clicks == 600
        assert bots == 0 and learned == result.tally.routed
        assert conversions == result.tally.conversions > 0
        text = report(market, result)
        assert "best fixed allocation (hindsight)" in text and "80/20 best EPC heuristic" in text
    finally:
        click_handler(app).close()
        services(app).close()
