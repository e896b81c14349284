"""The ledger through its API and services, on SQLite and PostgreSQL: balanced entries only,
idempotency keys, two-phase entries, reversals, account flags, append-only rows, booking
conversions, and `smartlinks ledger verify`."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from billing.booking import book_approved_conversions
from billing.models import AppendOnlyViolation, JournalEntry, Posting
from server.cli import main
from server.db import utcnow
from server.extensions import services
from server.links.models import Advertiser, Affiliate, Click, Conversion, Offer, SmartLink
from tests.conftest import make_token
from tests.support.finance import (  # noqa: F401 - the *_fixture names register fixtures
    assert_ledger_ok,
    balance,
    paypal_fixture,
    paypal_server_fixture,
    settings_fixture,
    stripe_mock_fixture,
    stripe_proxy_fixture,
    stripe_proxy_server_fixture,
)


@pytest.fixture
def finance_header(app: Flask) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(app, 'finance')}"}


def account(
    client: FlaskClient, header: dict[str, str], code: str, type_: str, currency: str = "EUR", **extra: Any
) -> dict[str, Any]:
    response = client.post(
        "/v1/ledger/accounts",
        json={"code": code, "name": code, "type": type_, "currency": currency, **extra},
        headers=header,
    )
    assert response.status_code in (200, 201), response.json
    return dict(response.json or {})


def posting(account: str, direction: str, amount: str, currency: str = "EUR") -> dict[str, str]:
    return {"account": account, "direction": direction, "amount": amount, "currency": currency}


def entry(key: str, *postings: dict[str, str], kind: str = "posted") -> dict[str, Any]:
    return {"idempotency_key": key, "kind": kind, "description": key, "postings": list(postings)}


@pytest.fixture
def chart(client: FlaskClient, finance_header: dict[str, str]) -> dict[str, str]:
    account(client, finance_header, "bank:cash:EUR", "asset", may_go_negative=False)
    account(client, finance_header, "customer:acme:receivable:EUR", "asset")
    account(client, finance_header, "sales:revenue:EUR", "revenue")
    account(client, finance_header, "sales:revenue:JPY", "revenue", currency="JPY")
    account(client, finance_header, "customer:acme:receivable:JPY", "asset", currency="JPY")
    return finance_header


def test_a_balanced_entry_moves_balances_and_a_retry_returns_it(client: FlaskClient, chart: dict[str, str]) -> None:
    body = entry(
        "sale-1",
        posting("customer:acme:receivable:EUR", "debit", "120.50"),
        posting("sales:revenue:EUR", "credit", "120.50"),
    )
    first = client.post("/v1/ledger/entries", json=body, headers=chart)
    assert first.status_code == 201, first.json
    assert [p["minor"] for p in first.json["postings"]] == [12050, 12050]
    again = client.post("/v1/ledger/entries", json=body, headers=chart)
    assert again.status_code == 200 and again.json["replayed"] is True
    assert again.json["id"] == first.json["id"]
    receivable = client.get("/v1/ledger/accounts/customer:acme:receivable:EUR", headers=chart).json
    assert receivable["debits_posted"] == 12050 and receivable["balance"]["amount"] == "120.50"
    revenue = client.get("/v1/ledger/accounts/sales:revenue:EUR", headers=chart).json
    assert revenue["credits_posted"] == 12050 and revenue["balance"]["amount"] == "120.50"
    listed = client.get("/v1/ledger/entries?account=sales:revenue:EUR", headers=chart).json["items"]
    assert [e["id"] for e in listed] == [first.json["id"]]


def test_bad_entries_are_refused_with_a_clear_problem(app: Flask, client: FlaskClient, chart: dict[str, str]) -> None:
    ok = entry(
        "sale-2",
        posting("customer:acme:receivable:EUR", "debit", "10.00"),
        posting("sales:revenue:EUR", "credit", "10.00"),
    )
    assert client.post("/v1/ledger/entries", json=ok, headers=chart).status_code == 201
    cases = [
        (
            entry(
                "k-unbalanced",
                posting("customer:acme:receivable:EUR", "debit", "10.00"),
                posting("sales:revenue:EUR", "credit", "9.99"),
            ),
            400,
            "unbalanced-entry",
        ),
        (
            entry(
                "k-unknown",
                posting("customer:nobody:receivable:EUR", "debit", "1.00"),
                posting("sales:revenue:EUR", "credit", "1.00"),
            ),
            422,
            "unknown-account",
        ),
        (
            entry(
                "k-currency",
                posting("customer:acme:receivable:EUR", "debit", "100", "JPY"),
                posting("sales:revenue:JPY", "credit", "100", "JPY"),
            ),
            400,
            "currency-mismatch",
        ),
        (
            entry(
                "k-mixed",
                posting("customer:acme:receivable:EUR", "debit", "1.00"),
                posting("sales:revenue:JPY", "credit", "1", "JPY"),
            ),
            400,
            "unbalanced-entry",
        ),
        (
            entry(
                "k-decimals",
                posting("customer:acme:receivable:EUR", "debit", "1.005"),
                posting("sales:revenue:EUR", "credit", "1.005"),
            ),
            400,
            "invalid-entry",
        ),
        (
            entry(
                "k-yen",
                posting("customer:acme:receivable:JPY", "debit", "10.5", "JPY"),
                posting("sales:revenue:JPY", "credit", "10.5", "JPY"),
            ),
            400,
            "invalid-entry",
        ),
        (
            entry(
                "k-zero",
                posting("customer:acme:receivable:EUR", "debit", "0.00"),
                posting("sales:revenue:EUR", "credit", "0.00"),
            ),
            400,
            "invalid-entry",
        ),
        (
            entry(
                "k-negative",
                posting("customer:acme:receivable:EUR", "debit", "-1.00"),
                posting("sales:revenue:EUR", "credit", "-1.00"),
            ),
            400,
            "validation-failed",
        ),
        (entry("k-one", posting("customer:acme:receivable:EUR", "debit", "1.00")), 400, "validation-failed"),
        (
            entry(
                "sale-2",
                posting("customer:acme:receivable:EUR", "debit", "11.00"),
                posting("sales:revenue:EUR", "credit", "11.00"),
            ),
            409,
            "idempotency-conflict",
        ),
        (
            entry("k-cash", posting("bank:cash:EUR", "credit", "5.00"), posting("sales:revenue:EUR", "debit", "5.00")),
            422,
            "balance-limit-exceeded",
        ),
    ]
    for body, status, slug in cases:
        response = client.post("/v1/ledger/entries", json=body, headers=chart)
        assert response.status_code == status, (body["idempotency_key"], response.json)
        assert response.mimetype == "application/problem+json"
        assert response.json["type"].endswith("/" + slug), (body["idempotency_key"], response.json)
        assert response.json.get("detail")
    with services(app).db.unit_of_work() as uow:
        assert uow.session.scalar(sa.select(sa.func.count()).select_from(JournalEntry)) == 1
    assert balance(app, "bank:cash:EUR") == (0, 0, 0, 0)
    assert client.get("/v1/ledger/verification", headers=chart).json["ok"] is True


def test_pending_entries_are_posted_or_voided_once(app: Flask, client: FlaskClient, chart: dict[str, str]) -> None:
    client.post(
        "/v1/ledger/entries",
        json=entry(
            "fund",
            posting("bank:cash:EUR", "debit", "100.00"),
            posting("customer:acme:receivable:EUR", "credit", "100.00"),
        ),
        headers=chart,
    )
    hold = entry(
        "hold-1",
        posting("customer:acme:receivable:EUR", "debit", "30.00"),
        posting("bank:cash:EUR", "credit", "30.00"),
        kind="pending",
    )
    pending = client.post("/v1/ledger/entries", json=hold, headers=chart).json
    assert pending["kind"] == "pending"
    assert balance(app, "bank:cash:EUR") == (10000, 0, 0, 3000)
    too_much = entry(
        "hold-2",
        posting("customer:acme:receivable:EUR", "debit", "80.00"),
        posting("bank:cash:EUR", "credit", "80.00"),
        kind="pending",
    )
    refused = client.post("/v1/ledger/entries", json=too_much, headers=chart)
    assert refused.status_code == 422  # 30 reserved + 80 > 100: pending credits count
    posted = client.post(
        f"/v1/ledger/entries/{pending['id']}/post", json={"idempotency_key": "hold-1:post"}, headers=chart
    )
    assert posted.status_code == 201 and posted.json["pending_entry_id"] == pending["id"]
    assert balance(app, "bank:cash:EUR") == (10000, 3000, 0, 0)
    replay = client.post(
        f"/v1/ledger/entries/{pending['id']}/post", json={"idempotency_key": "hold-1:post"}, headers=chart
    )
    assert replay.status_code == 200 and replay.json["id"] == posted.json["id"]
    void = client.post(
        f"/v1/ledger/entries/{pending['id']}/void", json={"idempotency_key": "hold-1:void"}, headers=chart
    )
    assert void.status_code == 409 and void.json["type"].endswith("/pending-not-open")
    reverse = client.post(
        f"/v1/ledger/entries/{posted.json['id']}/reverse", json={"idempotency_key": "fix-1"}, headers=chart
    )
    assert reverse.status_code == 201 and reverse.json["reverses_entry_id"] == posted.json["id"]
    assert balance(app, "bank:cash:EUR") == (13000, 3000, 0, 0)
    twice = client.post(
        f"/v1/ledger/entries/{posted.json['id']}/reverse", json={"idempotency_key": "fix-2"}, headers=chart
    )
    assert twice.status_code == 409
    detail = client.get(f"/v1/ledger/entries/{pending['id']}", headers=chart).json
    assert detail["resolved_by"] == {"id": posted.json["id"], "kind": "post_pending"}
    assert_ledger_ok(app)


def test_entries_and_postings_cannot_be_changed_or_removed(
    app: Flask, client: FlaskClient, chart: dict[str, str]
) -> None:
    made = client.post(
        "/v1/ledger/entries",
        json=entry(
            "sale-3",
            posting("customer:acme:receivable:EUR", "debit", "1.00"),
            posting("sales:revenue:EUR", "credit", "1.00"),
        ),
        headers=chart,
    ).json
    db = services(app).db
    with db.unit_of_work() as uow:
        row = uow.session.get(JournalEntry, made["id"])
        assert row is not None
        row.description = "rewritten"
        with pytest.raises(AppendOnlyViolation):
            uow.session.flush()
    with db.unit_of_work() as uow, pytest.raises(AppendOnlyViolation):
        uow.session.execute(sa.delete(Posting).where(Posting.entry_id == made["id"]))
    if db.engine.dialect.name == "postgresql":  # the database itself refuses, whatever the client
        for statement in (
            f"UPDATE ledger_postings SET amount = 1 WHERE entry_id = '{made['id']}'",
            f"DELETE FROM ledger_entries WHERE id = '{made['id']}'",
        ):
            with db.engine.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="append-only"):
                conn.execute(sa.text(statement))
    assert_ledger_ok(app)


def seed_conversion(app: Flask, amount: str, status: str = "approved", currency: str = "EUR") -> int:
    with services(app).db.unit_of_work() as uow:
        s = uow.session
        if s.get(Advertiser, "adv_1") is None:
            s.add(Advertiser(id="adv_1", name="Acme"))
            s.add(Affiliate(id="aff_1", name="Publisher", created_at=utcnow() - timedelta(days=90)))
            s.flush()
            s.add(
                Offer(
                    id="off_1",
                    advertiser_id="adv_1",
                    name="Offer",
                    url_template="https://x.test/{click_id}",
                    payout=Decimal("10"),
                    currency="EUR",
                    countries=[],
                    devices=[],
                )
            )
            s.flush()
            s.add(
                SmartLink(
                    id="lnk_1",
                    slug="s1",
                    name="L",
                    affiliate_id="aff_1",
                    algorithm="thompson_sampling",
                    algorithm_params={},
                    commission_rate=Decimal("0.7000"),
                )
            )
            s.flush()
        click_id = f"c{utcnow().timestamp():.6f}".replace(".", "")
        s.add(Click(id=click_id, link_id="lnk_1", offer_id="off_1", probability=1.0, subs={}))
        s.flush()
        conversion = Conversion(
            click_id=click_id,
            txid=click_id,
            link_id="lnk_1",
            offer_id="off_1",
            amount=Decimal(amount),
            currency=currency,
            status=status,
        )
        s.add(conversion)
        uow.commit()
        return conversion.id


def test_a_conversion_is_booked_once_with_the_commission_owed(
    app: Flask, client: FlaskClient, finance_header: dict[str, str]
) -> None:
    conversion_id = seed_conversion(app, "12.35")
    first = client.post(f"/v1/ledger/conversions/{conversion_id}/book", headers=finance_header)
    assert first.status_code == 201, first.json
    lines = {(p["account"], p["direction"]): p["minor"] for p in first.json["postings"]}
    assert lines == {
        ("advertiser:adv_1:receivable:EUR", "debit"): 1235,
        ("platform:revenue:EUR", "credit"): 1235,
        ("platform:commission_expense:EUR", "debit"): 864,  # 70 % of 12.35 = 8.645, half to even
        ("affiliate:aff_1:payable:EUR", "credit"): 864,
    }
    again = client.post(f"/v1/ledger/conversions/{conversion_id}/book", headers=finance_header)
    assert again.status_code == 200 and again.json["id"] == first.json["id"]
    with services(app).db.unit_of_work() as uow:
        assert uow.session.get(Conversion, conversion_id).booked_entry_id == first.json["id"]  # type: ignore[union-attr]

    pending = seed_conversion(app, "5.00", status="pending")
    refused = client.post(f"/v1/ledger/conversions/{pending}/book", headers=finance_header)
    assert refused.status_code == 400 and "only approved" in refused.json["detail"]
    odd = seed_conversion(app, "1.2345")
    many = [seed_conversion(app, "2.00") for _ in range(3)]
    with services(app).db.unit_of_work() as uow:
        run = book_approved_conversions(uow.session)
        uow.commit()
    assert run.booked == 3 and run.failed == 1 and run.errors is not None
    assert "allows 2 decimals" in run.errors[odd]
    assert all(m not in run.errors for m in many)
    assert_ledger_ok(app)


def test_the_cli_books_conversions_and_verifies_the_ledger(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = services(app).settings
    seed_conversion(app, "20.00")
    seed_conversion(app, "3.333")
    monkeypatch.setenv("DATABASE_URL", cfg.database_url)
    monkeypatch.setenv("SMARTLINKS_VAR_DIR", cfg.var_dir)
    runner = CliRunner()
    booked = runner.invoke(main, ["ledger", "book-conversions"])
    assert booked.exit_code == 0, booked.output
    assert "booked 1 conversion(s), 1 refused" in booked.output
    ok = runner.invoke(main, ["ledger", "verify"])
    assert ok.exit_code == 0, ok.output
    assert "ledger OK" in ok.output
    # Tamper with a running balance behind the ledger's back: verify must notice and fail.
    engine = services(app).db.engine
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE ledger_accounts SET credits_posted = credits_posted + 1 WHERE code = 'platform:revenue:EUR'"
            )
        )
    broken = runner.invoke(main, ["ledger", "verify"])
    assert broken.exit_code == 1
    assert "balance_mismatch" in broken.output and "trial_balance_nonzero" in broken.output
    with engine.connect() as conn:
        kinds = conn.execute(sa.text("SELECT kind, occurrences FROM alerts")).all()
    assert ("ledger_verification", 1) in [(k, n) for k, n in kinds]
    assert ("booking_failed", 1) in [(k, n) for k, n in kinds]


def test_a_batch_of_entries_is_recorded_like_single_ones_or_not_at_all(app: Flask) -> None:
    from billing import accounts as chart
    from billing.ledger import ensure_account, record_entries, record_entry
    from billing.rules import BalanceLimitExceeded, EntryRequest, IdempotencyConflict, Line

    db = services(app).db
    cash, receivable, revenue = chart.cash("EUR"), chart.advertiser_receivable("a", "EUR"), chart.revenue("EUR")
    with db.unit_of_work() as uow:
        for spec in (cash, receivable, revenue):
            ensure_account(uow.session, spec)
        first = record_entry(
            uow.session,
            EntryRequest("b-0", (Line.debit(receivable.code, 100, "EUR"), Line.credit(revenue.code, 100, "EUR"))),
        )
        uow.commit()
    batch = [
        EntryRequest(
            f"b-{i}",
            (Line.debit(receivable.code, 100 * (i + 1), "EUR"), Line.credit(revenue.code, 100 * (i + 1), "EUR")),
        )
        for i in range(5)
    ]
    batch[0] = EntryRequest("b-0", (Line.debit(receivable.code, 100, "EUR"), Line.credit(revenue.code, 100, "EUR")))
    with db.unit_of_work() as uow:
        results = record_entries(uow.session, batch)
        uow.commit()
    assert results[0].replayed and results[0].entry_id == first.entry_id
    assert [r.replayed for r in results[1:]] == [False] * 4
    assert balance(app, revenue.code) == (0, 1_500, 0, 0)
    for bad, error in (
        (
            [EntryRequest("b-1", (Line.debit(receivable.code, 1, "EUR"), Line.credit(revenue.code, 1, "EUR")))],
            IdempotencyConflict,
        ),
        (
            [
                EntryRequest("b-9", (Line.debit(receivable.code, 1, "EUR"), Line.credit(revenue.code, 1, "EUR"))),
                EntryRequest("b-10", (Line.debit(revenue.code, 1, "EUR"), Line.credit(cash.code, 1, "EUR"))),
            ],
            BalanceLimitExceeded,
        ),
    ):
        with db.unit_of_work() as uow, pytest.raises(error):
            record_entries(uow.session, bad)
    assert balance(app, revenue.code) == (0, 1_500, 0, 0)  # nothing of a refused batch stays
    with db.unit_of_work() as uow:
        assert uow.session.scalar(sa.select(sa.func.count()).select_from(JournalEntry)) == 5
    assert_ledger_ok(app)
