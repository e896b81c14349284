"""`/postback`: conversions attributed to clicks, idempotent on (click, txid) even under
concurrent repeats, every bad input refused with nothing written, learning counters in the
click's hour bucket, and the optional shared secret."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from server import create_app
from server.clicks.conversions import Postback, record_conversion
from server.clicks.redirect import click_handler
from server.clicks.writer import hour_of
from server.config import Settings
from server.extensions import services
from server.links.models import ArmStat, Click, Conversion
from tests.support import factories

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


@pytest.fixture(autouse=True)
def _close_click_path(app: Flask) -> Iterator[None]:
    yield
    click_handler(app).close()


def make_click(
    app: Flask, link_id: str, offer_id: str | None = "a", *, age: timedelta = timedelta(0), **extra: Any
) -> str:
    """A click row as the writer stores it (optionally in the past)."""
    click_id = uuid.uuid4().hex
    with services(app).db.unit_of_work() as uow:
        uow.session.add(
            Click(
                id=click_id,
                link_id=link_id,
                offer_id=offer_id,
                created_at=datetime.now(UTC) - age,
                probability=1.0,
                subs={},
                **extra,
            )
        )
        uow.commit()
    return click_id


def state(app: Flask) -> tuple[int, list[tuple[Any, ...]]]:
    with services(app).db.session() as session:
        count = session.scalar(sa.select(sa.func.count()).select_from(Conversion)) or 0
        stats = [
            (r.offer_id, r.hour, r.clicks, r.conversions, Decimal(r.revenue))
            for r in session.scalars(sa.select(ArmStat).order_by(ArmStat.offer_id, ArmStat.hour))
        ]
    return count, stats


@pytest.fixture
def link_id(app: Flask) -> str:
    return factories.seed_link(app, {"a": 1.0}, slug="pb", offer_options={"a": {"payout": "7.50", "currency": "EUR"}})


def routed_click(app: Flask, client: FlaskClient) -> str:
    response = client.get("/r/pb", headers={"User-Agent": BROWSER})
    assert response.status_code == 302
    return response.headers["Location"].split("cid=")[1].split("&")[0]


def test_a_conversion_is_recorded_once_per_click_and_txid(app: Flask, client: FlaskClient, link_id: str) -> None:
    click_id = routed_click(app, client)  # still in the click buffer: the postback flushes it
    first = client.get("/postback", query_string={"cid": click_id, "payout": "12.5", "txid": "T-1"})
    assert first.status_code == 200, first.json
    body = first.json
    assert body["duplicate"] is False and body["amount"] == "12.5000" and body["currency"] == "EUR"
    assert body["status"] == "approved" and body["link_id"] == link_id and body["offer_id"] == "a"
    again = client.post("/postback", data={"click_id": click_id, "payout": "99", "txid": "T-1"})
    assert again.status_code == 200
    assert again.json["duplicate"] is True and again.json["conversion_id"] == body["conversion_id"]
    assert again.json["amount"] == "12.5000"
    count, stats = state(app)
    assert count == 1
    assert [(o, c, n, r) for o, _, c, n, r in stats] == [("a", 1, 1, Decimal("12.5"))]

    # Another txid on the same click: a second conversion adds revenue, not a converting click.
    other = client.post("/postback", json={"click_id": click_id, "txid": "T-2", "currency": "EUR"})
    assert other.status_code == 200 and other.json["duplicate"] is False
    assert other.json["amount"] == "7.5000"  # the offer's payout by default
    count, stats = state(app)
    assert count == 2 and [(c, n, r) for _, _, c, n, r in stats] == [(1, 1, Decimal("20"))]


def test_counters_use_the_clicks_hour_and_skip_what_was_not_learned(
    app: Flask, client: FlaskClient, link_id: str
) -> None:
    old = make_click(app, link_id, age=timedelta(hours=5))
    assert client.get("/postback", query_string={"cid": old, "payout": "3"}).status_code == 200
    bot = make_click(app, link_id, is_bot=True, bot_reason="crawler_user_agent")
    assert client.get("/postback", query_string={"cid": bot, "payout": "4"}).status_code == 200
    rejected = make_click(app, link_id)
    response = client.get("/postback", query_string={"cid": rejected, "payout": "5", "status": "rejected"})
    assert response.status_code == 200 and response.json["status"] == "rejected"
    usd = make_click(app, link_id)
    assert (
        client.get("/postback", query_string={"cid": usd, "payout": "6", "currency": "usd"}).json["currency"] == "USD"
    )
    count, stats = state(app)
    assert count == 4
    with services(app).db.session() as session:
        old_hour = hour_of(session.get(Click, old).created_at.timestamp())  # type: ignore[union-attr]
    by_hour = {hour: (n, r) for _, hour, _, n, r in stats}
    assert by_hour[old_hour] == (1, Decimal("3"))  # the click's hour, five hours ago
    assert sum(n for n, _ in by_hour.values()) == 2  # the old click and the USD one; not the bot, not rejected
    assert sum(r for _, r in by_hour.values()) == Decimal("3")  # USD revenue stays out of EUR counters


BAD = [
    ({"payout": "-5"}, 400, "payout"),
    ({"payout": "abc"}, 400, "payout"),
    ({"payout": "NaN"}, 400, "payout"),
    ({"payout": "Infinity"}, 400, "payout"),
    ({"payout": "1e3"}, 400, "payout"),
    ({"payout": "1.23456"}, 400, "payout"),
    ({"payout": "100000000000000"}, 400, "payout"),
    ({"currency": "XYZ"}, 400, "currency"),
    ({"currency": "EURO"}, 400, "currency"),
    ({"status": "maybe"}, 400, "status"),
    ({"txid": "x" * 129}, 400, "txid"),
    ({"click_id": "other"}, 400, "cid"),
    ({"cid": None}, 400, "click_id"),
    ({"cid": "f" * 32}, 404, None),
]


@pytest.mark.parametrize("change, status, field", BAD)
def test_bad_postbacks_change_nothing(
    app: Flask, client: FlaskClient, link_id: str, change: dict[str, str | None], status: int, field: str | None
) -> None:
    click_id = make_click(app, link_id)
    assert client.get("/postback", query_string={"cid": click_id, "txid": "ok"}).status_code == 200
    before = state(app)
    params: dict[str, str | None] = {"cid": click_id, "payout": "1.00", "txid": "new", **change}
    response = client.get("/postback", query_string={k: v for k, v in params.items() if v is not None})
    assert response.status_code == status, response.json
    assert response.mimetype == "application/problem+json"
    if field:
        assert field in response.json["errors"]
    assert state(app) == before


def test_clicks_outside_the_window_or_routed_nowhere_are_refused(app: Flask, client: FlaskClient, link_id: str) -> None:
    old = make_click(app, link_id, age=timedelta(days=31))
    nowhere = make_click(app, link_id, offer_id=None)
    before = state(app)
    late = client.get("/postback", query_string={"cid": old, "payout": "1"})
    assert late.status_code == 422 and late.json["type"].endswith("/outside-attribution-window")
    lost = client.get("/postback", query_string={"cid": nowhere, "payout": "1"})
    assert lost.status_code == 422 and lost.json["type"].endswith("/click-not-routed")
    assert state(app) == before


def test_the_shared_secret_is_required_when_configured(settings: Settings) -> None:
    app = create_app(settings.with_overrides({"postback_secret": "s3cret-postback"}))
    client = app.test_client()
    link_id = factories.seed_link(app, {"a": 1.0}, slug="secret")
    click_id = make_click(app, link_id)
    assert client.get("/postback", query_string={"cid": click_id}).status_code == 403
    assert client.get("/postback", query_string={"cid": click_id, "secret": "wrong"}).status_code == 403
    assert state(app)[0] == 0
    ok = client.get("/postback", query_string={"cid": click_id, "secret": "s3cret-postback"})
    assert ok.status_code == 200
    click_handler(app).close()
    services(app).close()


def test_concurrent_repeats_make_one_conversion(app: Flask, link_id: str) -> None:
    click_id = make_click(app, link_id)
    barrier = threading.Barrier(8)
    answers: list[tuple[int, bool, int]] = []

    def post() -> None:
        client = app.test_client()
        barrier.wait()
        response = client.get("/postback", query_string={"cid": click_id, "payout": "2", "txid": "race"})
        answers.append((response.status_code, response.json["duplicate"], response.json["conversion_id"]))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(answers) == 8 and {a[0] for a in answers} == {200}
    assert sorted(a[1] for a in answers) == [False] + [True] * 7
    assert len({a[2] for a in answers}) == 1
    count, stats = state(app)
    assert count == 1 and [(n, r) for _, _, _, n, r in stats] == [(1, Decimal("2"))]


def test_the_loser_of_an_insert_race_answers_with_the_winners_row(app: Flask, link_id: str) -> None:
    """Deterministic race: B inserts while A's insert is uncommitted; the unique constraint makes
    B wait and fail (PostgreSQL) or B waits for A's write lock (SQLite); B answers duplicate."""
    click_id = make_click(app, link_id)
    db = services(app).db
    now = datetime.now(UTC)
    postback = Postback(click_id=click_id, txid="tx", payout=Decimal("3"), status="approved", currency=None)
    window = timedelta(days=30)
    loser: list[Any] = []
    with db.unit_of_work() as first:
        won = record_conversion(first.session, postback, now=now, attribution_window=window)
        assert won.duplicate is False

        def second() -> None:
            with db.unit_of_work() as uow:
                loser.append(record_conversion(uow.session, postback, now=now, attribution_window=window).as_dict())
                uow.commit()

        thread = threading.Thread(target=second)
        thread.start()
        thread.join(0.5)
        assert thread.is_alive()  # blocked behind the uncommitted insert
        first.commit()
    thread.join(30)
    assert loser and loser[0]["duplicate"] is True and loser[0]["conversion_id"] == won.conversion.id
    assert state(app)[0] == 1
