"""Drivers that push a simulated market (`server.autopilot.simulator`) through the real service:
clicks through `GET /r/<slug>`, conversions through `/postback`, cycles through `optimize_link`
(in process, Flask test client, real OPA) or `POST /v1/links/<id>/optimize` (over HTTP against a
running server). Tests, `smartlinks simulate` and `bench/autopilot.py` share them."""

from __future__ import annotations

import heapq
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import numpy as np
from flask import Flask
from sqlalchemy.orm import Session

from server.autopilot.services import autopilot_actor, optimize_link
from server.autopilot.simulator import Market, Scenario, Tally, Visit
from server.clicks.redirect import click_handler
from server.config import Settings
from server.db import Database
from server.extensions import services
from server.links.models import Advertiser, Affiliate, LinkArm, Offer, SmartLink

OFFER_TEMPLATE = "https://sim.invalid/{offer}?cid={click_id}&src={sub1}"
ADDRESS_HEADER = "X-Forwarded-For"


@dataclass
class CycleRecord:
    minute: float
    outcome: str
    reasons: list[str]
    decision_id: str | None
    approved: dict[str, float] | None


@dataclass
class SimulationResult:
    tally: Tally
    cycles: list[CycleRecord] = field(default_factory=list)

    def outcomes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.cycles:
            out[c.outcome] = out.get(c.outcome, 0) + 1
        return out

    def reason_codes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.cycles:
            for code in c.reasons:
                out[code] = out.get(code, 0) + 1
        return out


class Driver(Protocol):
    def click(self, visit: Visit) -> tuple[str | None, str | None]: ...
    def postback(self, click_id: str, payout: float, txid: str) -> None: ...
    def settle(self) -> None: ...
    def cycle(self, minute: float) -> CycleRecord: ...


def seed_market(session: Session, scenario: Scenario, *, suffix: str = "") -> tuple[str, str]:
    """Advertiser, affiliate, offers and a link over them (no allocation yet). Returns (link id, slug)."""
    if session.get(Advertiser, "adv_sim") is None:
        session.add(Advertiser(id="adv_sim", name="Simulated advertiser"))
    if session.get(Affiliate, "aff_sim") is None:
        session.add(Affiliate(id="aff_sim", name="Simulated affiliate"))
    session.flush()
    for arm in scenario.arms:
        session.add(
            Offer(
                id=arm.offer_id + suffix,
                advertiser_id="adv_sim",
                name=arm.offer_id,
                url_template=OFFER_TEMPLATE,
                payout=Decimal(str(arm.payout)),
                currency="USD",
                countries=list(arm.countries),
                devices=list(arm.devices),
                status="active",
            )
        )
    link_id, slug = f"lnk_sim{suffix}", f"sim{suffix}"
    session.add(
        SmartLink(
            id=link_id,
            slug=slug,
            name="Simulated link",
            affiliate_id="aff_sim",
            algorithm=scenario.algorithm,
            algorithm_params=dict(scenario.params),
        )
    )
    session.flush()
    for arm in scenario.arms:
        session.add(LinkArm(link_id=link_id, offer_id=arm.offer_id + suffix))
    session.flush()
    return link_id, slug


def _offer_and_click(location: str, suffix: str) -> tuple[str | None, str | None]:
    parts = urlsplit(location)
    offer = parts.path.strip("/")
    if suffix and offer.endswith(suffix):
        offer = offer[: -len(suffix)]
    click_id = parse_qs(parts.query).get("cid", [None])[0]
    return offer or None, click_id


class InProcessDriver:
    """The app in this process (its own OPA sidecar or OPA_URL); simulated time drives the
    gateway's clock so that rate limits and decision times follow the simulation."""

    def __init__(self, app: Flask, link_id: str, slug: str, start: datetime | None = None, suffix: str = "") -> None:
        self.app = app
        self.client = app.test_client()
        self.link_id = link_id
        self.slug = slug
        self.suffix = suffix
        self.start = start or datetime.now(UTC)
        self.minute = 0.0
        self.rng = np.random.default_rng(1234)
        svc = services(app)
        svc.gateway.clock = self.now
        self._country = svc.settings.country_header
        self.handler = click_handler(app)

    def now(self) -> datetime:
        return self.start + timedelta(minutes=self.minute)

    def click(self, visit: Visit) -> tuple[str | None, str | None]:
        self.minute = visit.minute
        response = self.client.get(
            f"/r/{self.slug}",
            query_string={"sub1": visit.source},
            headers={"User-Agent": visit.user_agent, self._country: visit.country, ADDRESS_HEADER: visit.address},
        )
        if response.status_code != 302:
            return None, None
        return _offer_and_click(response.headers["Location"], self.suffix)

    def postback(self, click_id: str, payout: float, txid: str) -> None:
        response = self.client.get("/postback", query_string={"cid": click_id, "payout": f"{payout:.2f}", "txid": txid})
        if response.status_code != 200:
            raise RuntimeError(f"postback refused: {response.status_code} {response.get_data(as_text=True)}")

    def settle(self) -> None:
        self.handler.writer.flush()
        self.handler.routes.refresh()

    def cycle(self, minute: float) -> CycleRecord:
        self.minute = minute
        svc = services(self.app)
        with svc.db.unit_of_work() as uow:
            link = uow.session.get(SmartLink, self.link_id)
            assert link is not None
            result = optimize_link(
                uow.session,
                svc.gateway,
                link,
                actor=autopilot_actor(link),
                rng=self.rng,
                now=self.now(),
                trigger="simulator",
            )
            uow.commit()
        self.handler.routes.refresh()
        return CycleRecord(
            minute,
            result.outcome,
            [str(r.get("code")) for r in result.reasons],
            result.decision_id,
            {k.removesuffix(self.suffix): v for k, v in (result.approved or {}).items()},
        )


class HttpDriver:
    """A running server at `url` (started with CLIENT_IP_HEADER=X-Forwarded-For, or every
    simulated click after the first 60 a minute counts as a bot from 127.0.0.1)."""

    def __init__(self, url: str, token: str, link_id: str, slug: str, suffix: str, settle_seconds: float = 1.5) -> None:
        import requests

        self.http = requests.Session()
        self.url = url.rstrip("/")
        self.token = token
        self.link_id = link_id
        self.slug = slug
        self.suffix = suffix
        self.settle_seconds = settle_seconds

    def click(self, visit: Visit) -> tuple[str | None, str | None]:
        response = self.http.get(
            f"{self.url}/r/{self.slug}",
            params={"sub1": visit.source},
            headers={"User-Agent": visit.user_agent, "CF-IPCountry": visit.country, ADDRESS_HEADER: visit.address},
            allow_redirects=False,
            timeout=10,
        )
        if response.status_code != 302:
            return None, None
        return _offer_and_click(response.headers["Location"], self.suffix)

    def postback(self, click_id: str, payout: float, txid: str) -> None:
        for _ in range(20):  # the click may still wait in the server's buffer for one flush interval
            response = self.http.get(
                f"{self.url}/postback", params={"cid": click_id, "payout": f"{payout:.2f}", "txid": txid}, timeout=10
            )
            if response.status_code != 404:
                return
            time.sleep(0.1)

    def settle(self) -> None:
        time.sleep(self.settle_seconds)  # a flush interval and a routing refresh

    def cycle(self, minute: float) -> CycleRecord:
        response = self.http.post(
            f"{self.url}/v1/links/{self.link_id}/optimize",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        body: dict[str, Any] = response.json()
        if "outcome" not in body:
            raise RuntimeError(f"optimize failed: {response.status_code} {body}")
        time.sleep(self.settle_seconds)
        return CycleRecord(
            minute,
            str(body["outcome"]),
            [str(r.get("code")) for r in body.get("reasons", [])],
            body.get("decision_id"),
            {k.removesuffix(self.suffix): float(v) for k, v in (body.get("approved") or {}).items()},
        )


def run_simulation(
    market: Market, driver: Driver, on_cycle: Callable[[CycleRecord], None] | None = None
) -> SimulationResult:
    """Every visit through the redirect, every conversion through the postback when it is due,
    and a cycle every `cycle_minutes` of simulated time (the first one at minute 0)."""
    scenario = market.scenario
    tally = Tally()
    result = SimulationResult(tally)
    pending: list[tuple[float, int, str, float]] = []
    txids = 0

    def cycle(minute: float) -> None:
        driver.settle()
        record = driver.cycle(minute)
        result.cycles.append(record)
        if on_cycle is not None:
            on_cycle(record)

    cycle(0.0)
    index = 0
    for c in range(1, scenario.cycles + 1):
        end = c * scenario.cycle_minutes
        while index < len(market.visits) and market.visits[index].minute < end:
            visit = market.visits[index]
            index += 1
            tally.clicks += 1
            tally.cost += market.cost(visit)
            offer, click_id = driver.click(visit)
            if offer is None or click_id is None:
                continue
            tally.routed += 1
            tally.per_arm[offer] = tally.per_arm.get(offer, 0) + 1
            if market.is_eligible(offer, visit.country, visit.device):
                tally.expected_revenue += market.values[visit.index, market.arm_ids.index(offer)]
            arrival = market.convert(offer, visit)
            if arrival is not None:
                txids += 1
                heapq.heappush(pending, (arrival, txids, click_id, market.arms[offer].payout))
        while pending and pending[0][0] <= end:
            _, n, click_id, payout = heapq.heappop(pending)
            driver.postback(click_id, payout, f"tx{n}")
            tally.conversions += 1
            tally.revenue += payout
        if c < scenario.cycles:
            cycle(float(end))
    driver.settle()
    return result


def report(market: Market, result: SimulationResult, *, baselines: bool = True) -> str:
    s = market.scenario
    t = result.tally
    lines = [
        f"market: {len(s.arms)} offers, {len(market.visits):,} visits over {s.hours} h, drift {s.drift.kind}, "
        f"a cycle every {s.cycle_minutes} min ({len(result.cycles)} cycles), algorithm {s.algorithm}",
        f"traffic cost {t.cost:,.2f}; clicks routed {t.routed:,} of {t.clicks:,}; "
        f"conversions delivered {t.conversions:,}",
        f"{'policy':<32}{'expected revenue':>18}{'expected profit':>17}",
        f"{'autopilot (governed, real service)':<32}{t.expected_revenue:>18,.2f}{t.expected_profit:>17,.2f}"
        f"   realised revenue {t.revenue:,.2f}, profit {t.profit:,.2f}",
    ]
    if baselines:
        weights, best = market.best_fixed()
        heuristic = market.epc_heuristic()
        shown = " ".join(f"{k}={v:.2f}" for k, v in weights.items())
        lines += [
            f"{'best fixed allocation (hindsight)':<32}{best:>18,.2f}{best - t.cost:>17,.2f}   ({shown})",
            f"{'80/20 best EPC heuristic':<32}{heuristic:>18,.2f}{heuristic - t.cost:>17,.2f}",
            f"autopilot / best fixed: {t.expected_revenue / best:.3f} (revenue), "
            f"autopilot / 80-20: {t.expected_revenue / heuristic:.3f} (revenue)",
        ]
    lines.append(f"decisions: {result.outcomes()}; reasons: {result.reason_codes() or '{}'}")
    lines.append(f"clicks per offer: {dict(sorted(t.per_arm.items()))}")
    return "\n".join(lines)


def in_process_app(settings: Settings, database_url: str, opa_url: str, var_dir: Path) -> Flask:
    from server import create_app

    app = create_app(
        settings.with_overrides(
            {
                "database_url": database_url,
                "opa_url": opa_url,
                "var_dir": str(var_dir),
                "client_ip_header": ADDRESS_HEADER,
                "environment": "test" if settings.environment != "production" else "production",
            }
        )
    )
    return app


def run_cli_simulation(
    settings: Settings, scenario: Scenario, *, url: str | None, token: str | None, echo: Callable[[str], None]
) -> str:
    """`smartlinks simulate`: in process on a temporary SQLite database, or against `url`."""
    from server.autopilot.cli import opa_for
    from server.migrate import upgrade

    market = Market(scenario)

    def progress(record: CycleRecord) -> None:
        if int(record.minute) % (6 * 60) == 0:
            echo(f"  t={record.minute / 60:5.1f} h  {record.outcome:<8} {','.join(record.reasons)}")

    if url is not None:
        assert token is not None
        suffix = "_" + uuid.uuid4().hex[:6]
        db = Database()
        db.configure(settings.database_url)
        with db.unit_of_work() as uow:
            link_id, slug = seed_market(uow.session, scenario, suffix=suffix)
            uow.commit()
        db.dispose()
        echo(f"seeded link {link_id} (/r/{slug}) in {settings.redacted()['database_url']}; driving {url}")
        result = run_simulation(market, HttpDriver(url, token, link_id, slug, suffix), progress)
        return report(market, result)

    with tempfile.TemporaryDirectory(prefix="smartlinks-sim-") as tmp, opa_for(settings) as (opa_url, _revision):
        database_url = f"sqlite:///{Path(tmp) / 'sim.db'}"
        upgrade(database_url)
        app = in_process_app(settings, database_url, opa_url, Path(tmp))
        try:
            with services(app).db.unit_of_work() as uow:
                link_id, slug = seed_market(uow.session, scenario)
                uow.commit()
            echo(f"simulating in process (OPA at {opa_url}, database {database_url})")
            result = run_simulation(market, InProcessDriver(app, link_id, slug), progress)
            return report(market, result)
        finally:
            click_handler(app).close()
            services(app).close()
