"""The click path: `GET /r/<slug>` routes by the approved allocation (propensity recorded),
skips arms that may not take this click, falls back, fills macros, redirects bots without
learning from them, answers unknown links with an HTML 404, flushes on shutdown, and never asks
OPA (clicks keep flowing with OPA stopped)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from server import create_app
from server.clicks.redirect import click_handler, close_click_path
from server.config import Settings
from server.extensions import services
from server.links.models import ArmStat, Click, Conversion
from server.policy.bundle import BundleInfo
from server.policy.sidecar import OpaSidecar, free_loopback_port
from tests.conftest import ROOT, TEST_SECRET
from tests.support import factories
from tests.support.postgres import wait_port

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"


@pytest.fixture(autouse=True)
def _close_click_path(app: Flask) -> Iterator[None]:
    yield
    click_handler(app).close()


def click(client: FlaskClient, slug: str, n: int = 0, **headers: str) -> tuple[int, str]:
    """One human-looking click from address 10.x.y.z (distinct per n); (status, Location)."""
    response = client.get(
        f"/r/{slug}",
        headers={"User-Agent": BROWSER, **{k.replace("_", "-"): v for k, v in headers.items()}},
        environ_base={"REMOTE_ADDR": f"10.{n // 62500 % 256}.{n // 250 % 250}.{n % 250 + 1}"},
    )
    return response.status_code, response.headers.get("Location", "")


def offer_of(location: str) -> str:
    return urlsplit(location).path.strip("/")


def clicks(app: Flask) -> list[Click]:
    click_handler(app).writer.flush()
    with services(app).db.session() as session:
        return list(session.scalars(sa.select(Click).order_by(Click.created_at)))


def arm_stats(app: Flask, link_id: str) -> dict[str, tuple[int, int]]:
    with services(app).db.session() as session:
        rows = session.execute(
            sa.select(ArmStat.offer_id, sa.func.sum(ArmStat.clicks), sa.func.sum(ArmStat.bot_clicks))
            .where(ArmStat.link_id == link_id)
            .group_by(ArmStat.offer_id)
        ).all()
    return {offer: (int(c), int(b)) for offer, c, b in rows}


def test_routing_follows_the_approved_weights_and_records_propensities(app: Flask, client: FlaskClient) -> None:
    weights = {"a": 0.6, "b": 0.3, "c": 0.1}
    link_id = factories.seed_link(app, weights, slug="split")
    n = 2000
    seen = Counter(offer_of(click(client, "split", i)[1]) for i in range(n))
    for arm, w in weights.items():
        tolerance = 5 * math.sqrt(w * (1 - w) / n)  # five standard deviations
        assert abs(seen[arm] / n - w) < tolerance, (arm, seen[arm] / n)
    rows = clicks(app)
    assert len(rows) == n and not any(r.is_bot or r.is_fallback for r in rows)
    allocation_id = rows[0].allocation_id
    assert allocation_id is not None and {r.allocation_id for r in rows} == {allocation_id}
    for r in rows:
        assert r.probability == pytest.approx(weights[str(r.offer_id)])
        assert r.ip_hash and len(r.ip_hash) == 64 and "10." not in r.ip_hash
    assert arm_stats(app, link_id) == {arm: (seen[arm], 0) for arm in weights}


def test_ineligible_arms_are_skipped_by_renormalising(app: Flask, client: FlaskClient) -> None:
    weights = {"fr_only": 0.3, "mobile_only": 0.2, "paused": 0.2, "capped": 0.1, "open": 0.2}
    link_id = factories.seed_link(
        app,
        weights,
        slug="eligible",
        offer_options={
            "fr_only": {"countries": ["FR"]},
            "mobile_only": {"devices": ["mobile"]},
            "capped": {"daily_cap": 1},
        },
    )
    with services(app).db.unit_of_work() as uow:  # pause one offer, and fill the cap of another
        uow.session.execute(sa.text("UPDATE offers SET status = 'paused' WHERE id = 'paused'"))
        now = datetime.now(UTC)
        uow.session.add(
            Click(id="c" * 32, link_id=link_id, offer_id="capped", created_at=now, probability=0.1, subs={})
        )
        uow.session.flush()
        uow.session.add(
            Conversion(
                click_id="c" * 32,
                txid="",
                link_id=link_id,
                offer_id="capped",
                amount=1,
                currency="USD",
                status="approved",
            )
        )
        uow.commit()
    click_handler(app).ensure_started()
    click_handler(app).routes.refresh(force=True)

    cases = [
        ({"CF_IPCountry": "FR"}, BROWSER, {"fr_only": 0.6, "open": 0.4}),
        ({"CF_IPCountry": "US"}, IPHONE, {"mobile_only": 0.5, "open": 0.5}),
        ({"CF_IPCountry": "fr"}, IPHONE, {"fr_only": 0.3 / 0.7, "mobile_only": 0.2 / 0.7, "open": 0.2 / 0.7}),
        ({}, BROWSER, {"open": 1.0}),  # no country header: country-restricted offers are out
    ]
    n = 0
    for headers, agent, expected in cases:
        seen: Counter[str] = Counter()
        for _ in range(300):
            n += 1
            status, location = click(client, "eligible", n, **headers, User_Agent=agent)
            assert status == 302
            seen[offer_of(location)] += 1
        assert set(seen) == set(expected), (headers, seen)
        batch = clicks(app)[-300:]
        for row in batch:
            assert row.probability == pytest.approx(expected[str(row.offer_id)])
            assert not row.is_fallback


def test_fallback_paused_link_and_nothing_to_route(app: Flask, client: FlaskClient) -> None:
    factories.seed_link(
        app,
        {"fr_only": 1.0},
        slug="with-fallback",
        fallback="catch_all",
        offer_options={"fr_only": {"countries": ["FR"]}},
    )
    with services(app).db.unit_of_work() as uow:
        factories.link(uow.session, ["fr_only"], slug="no-fallback", id="lnk_nofb")
        factories.link(uow.session, ["fr_only"], slug="paused", id="lnk_paused", status="paused", fallback="catch_all")
        factories.link(uow.session, ["fr_only"], slug="unapproved", id="lnk_unapproved", fallback="catch_all")
        uow.commit()
    factories.approve(app, "lnk_nofb", {"fr_only": 1.0})
    factories.approve(app, "lnk_paused", {"fr_only": 1.0})

    status, location = click(client, "with-fallback", 1, CF_IPCountry="US")
    assert status == 302 and offer_of(location) == "catch_all"
    assert offer_of(click(client, "with-fallback", 2, CF_IPCountry="FR")[1]) == "fr_only"
    assert offer_of(click(client, "paused", 3, CF_IPCountry="FR")[1]) == "catch_all"  # paused link: the fallback
    assert offer_of(click(client, "unapproved", 4, CF_IPCountry="FR")[1]) == "catch_all"  # nothing approved yet

    page = client.get("/r/no-fallback", headers={"User-Agent": BROWSER, "CF-IPCountry": "US"})
    assert page.status_code == 503 and page.mimetype == "text/html"
    assert "No offer available" in page.get_data(as_text=True)

    rows = {(r.link_id, r.offer_id, r.is_fallback, r.probability) for r in clicks(app)}
    assert ("lnk_nofb", None, False, 0.0) in rows  # recorded, routed nowhere
    fallback_rows = [r for r in clicks(app) if r.is_fallback]
    assert len(fallback_rows) == 3 and all(r.probability == 1.0 and r.allocation_id is None for r in fallback_rows)
    assert all(stats == (0, 0) for stats in arm_stats(app, "lnk_paused").values())  # fallback clicks teach nothing


def test_macros_are_filled_and_url_encoded(app: Flask, client: FlaskClient) -> None:
    template = (
        "https://adv.example/land ing/{offer}?c={click_id}&l={link}&s1={sub1}&s5={sub5}&geo={country}&d={device}&é=1"
    )
    link_id = factories.seed_link(app, {"o1": 1.0}, slug="macros", offer_options={"o1": {"template": template}})
    response = client.get(
        "/r/macros?sub1=a b%26c%3Dd%2Fé&sub5=x&sub9=ignored",
        headers={"User-Agent": IPHONE, "CF-IPCountry": "de"},
    )
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.isascii() and " " not in location
    assert location.startswith("https://adv.example/land%20ing/o1?c=")
    query = parse_qs(urlsplit(location).query)
    (row,) = clicks(app)
    assert query["c"] == [row.id] and query["l"] == [link_id]
    assert query["s1"] == ["a b&c=d/é"] and query["s5"] == ["x"]
    assert query["geo"] == ["DE"] and query["d"] == ["mobile"]
    assert "s1=a%20b%26c%3Dd%2F%C3%A9" in location
    assert row.subs == {"sub1": "a b&c=d/é", "sub5": "x"} and row.country == "DE" and row.device == "mobile"
    assert response.headers["Cache-Control"] == "no-store"


def test_bots_are_redirected_but_not_learned_from(app: Flask, client: FlaskClient) -> None:
    link_id = factories.seed_link(app, {"a": 1.0}, slug="bots")
    ua = {"User-Agent": BROWSER}
    assert (
        client.get("/r/bots", headers={"User-Agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"}).status_code
        == 302
    )
    assert client.get("/r/bots", headers={"User-Agent": "curl/8.5.0"}).status_code == 302
    assert client.get("/r/bots", headers={"User-Agent": ""}).status_code == 302  # no user agent
    head = client.head("/r/bots", headers=ua)
    assert head.status_code == 302 and head.headers["Location"].startswith("https://offers.example/a")
    assert client.get("/r/bots", headers={**ua, "Sec-Purpose": "prefetch;prerender"}).status_code == 302
    assert client.get("/r/bots", headers={**ua, "Purpose": "prefetch"}).status_code == 302
    assert client.get("/r/bots", headers={**ua, "X-Moz": "prefetch"}).status_code == 302
    for _ in range(70):  # one address, above 60 a minute
        assert client.get("/r/bots", headers=ua, environ_base={"REMOTE_ADDR": "192.0.2.7"}).status_code == 302
    rows = clicks(app)
    reasons = Counter(r.bot_reason for r in rows)
    assert reasons == {
        "crawler_user_agent": 2,
        "no_user_agent": 1,
        "head_request": 1,
        "prefetch": 3,
        None: 60,
        "rate_limit": 10,
    }
    assert all(r.is_bot == (r.bot_reason is not None) for r in rows)
    assert arm_stats(app, link_id) == {"a": (60, 17)}


def test_unknown_link_is_an_html_404(client: FlaskClient) -> None:
    page = client.get("/r/no-such-link", headers={"User-Agent": BROWSER, "Accept": "text/html"})
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "Link not found" in page.get_data(as_text=True)
    api = client.get("/r/no-such-link", headers={"Accept": "application/json"})
    assert api.status_code == 404 and api.mimetype == "application/problem+json"
    assert api.json["title"] == "Link not found"


def test_clicks_wait_in_the_buffer_and_are_flushed_on_shutdown(settings: Settings) -> None:
    app = create_app(settings.with_overrides({"click_flush_interval": 60.0}))
    client = app.test_client()
    factories.seed_link(app, {"a": 1.0}, slug="buffered")
    for i in range(25):
        assert click(client, "buffered", i)[0] == 302
    with services(app).db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Click)) == 0  # nothing on the request path
    close_click_path(app)  # what gunicorn's worker_exit hook does
    with services(app).db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Click)) == 25
    services(app).close()


def test_gunicorn_graceful_stop_writes_every_click(database_url: str, app: Flask, tmp_path: Path) -> None:
    """The production server (gunicorn with server/gunicorn_conf.py): SIGTERM flushes the buffers."""
    factories.seed_link(app, {"a": 0.5, "b": 0.5}, slug="served")
    port = free_loopback_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET,
        "OPA_URL": f"http://127.0.0.1:{free_loopback_port()}",  # no OPA at all: the click path needs none
        "CLICK_FLUSH_INTERVAL": "60",
        "SMARTLINKS_VAR_DIR": str(tmp_path),
    }
    command = [sys.executable, "-m", "gunicorn", "--config", "python:server.gunicorn_conf", "--workers", "2"]
    command += ["--worker-class", "gthread", "--threads", "4", "--bind", f"127.0.0.1:{port}", "server.wsgi:app"]
    log = (tmp_path / "gunicorn.log").open("wb")
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port("127.0.0.1", port, timeout=20)
        http = requests.Session()
        for _ in range(120):
            response = http.get(
                f"http://127.0.0.1:{port}/r/served", headers={"User-Agent": BROWSER}, allow_redirects=False
            )
            assert response.status_code == 302
        http.close()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()
    with services(app).db.session() as session:
        written = session.scalar(sa.select(sa.func.count()).select_from(Click))
    assert written == 120, (tmp_path / "gunicorn.log").read_text()


@pytest.fixture
def own_opa(opa_bin: Path, policy_bundle: BundleInfo, tmp_path: Path) -> Iterator[OpaSidecar]:
    sidecar = OpaSidecar(opa_bin, policy_bundle.path, tmp_path / "own-opa.log")
    sidecar.start()
    sidecar.wait_ready(30)
    yield sidecar
    sidecar.stop()


def test_clicks_flow_with_opa_stopped(settings: Settings, own_opa: OpaSidecar) -> None:
    app = create_app(settings.with_overrides({"opa_url": own_opa.url, "routing_refresh_seconds": 0.1}))
    client = app.test_client()
    link_id = factories.seed_link(app, {"a": 0.5, "b": 0.5}, slug="no-opa")  # approved while OPA runs
    own_opa.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(own_opa.url + "/health", timeout=1)
    statuses = Counter(click(client, "no-opa", i)[0] for i in range(200))
    time.sleep(0.3)  # a few routing refreshes (database only) happen meanwhile
    statuses.update(click(client, "no-opa", 1000 + i)[0] for i in range(100))
    assert statuses == {302: 300}
    rows = clicks(app)
    assert len(rows) == 300 and {r.link_id for r in rows} == {link_id}
    click_handler(app).close()
    services(app).close()
