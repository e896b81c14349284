"""Compliance reporting: the period report counts what the records say, the CSV exports stream
every decision and posting of the period (formula-safe), and only audit roles get them."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import timedelta

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from billing import accounts as chart
from billing.ledger import ensure_account, record_entry, reverse_entry
from billing.rules import EntryRequest, Line
from server.db import utcnow
from server.extensions import services
from server.governance.models import Decision
from tests.conftest import login, make_token, make_user
from tests.integration.test_decisions_api import allocation


def bearer(app: Flask, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(app, role, f'{role}-audit')}"}


def seed(app: Flask, client: FlaskClient) -> None:
    service, admin = bearer(app, "service"), bearer(app, "admin")
    assert client.post("/v1/decisions", json=allocation({"a": 0.5, "b": 0.5}), headers=service).json["allow"]
    sneaky = allocation({"a": 0.5, "b": 0.5})
    sneaky["action"]["actor"]["id"] = '=HYPERLINK("http://evil.test")'
    assert client.post("/v1/decisions", json=sneaky, headers=service).status_code == 200
    assert (
        client.post("/v1/controls/kill-switch", json={"enabled": True, "reason": "drill"}, headers=admin).status_code
        == 200
    )
    refused = client.post("/v1/decisions", json=allocation({"a": 0.5, "b": 0.5}), headers=service).json
    assert refused["allow"] is False
    assert client.post("/v1/controls/kill-switch", json={"enabled": False}, headers=admin).status_code == 200
    with services(app).db.unit_of_work() as uow:
        receivable, revenue = chart.advertiser_receivable("adv_1", "EUR"), chart.revenue("EUR")
        for spec in (receivable, revenue):
            ensure_account(uow.session, spec)
        entry = record_entry(
            uow.session,
            EntryRequest("audit-1", (Line.debit(receivable.code, 1250, "EUR"), Line.credit(revenue.code, 1250, "EUR"))),
        )
        reverse_entry(uow.session, entry.entry_id, "audit-1-reversal")
        uow.commit()


def test_the_report_counts_what_the_records_say(app: Flask, client: FlaskClient) -> None:
    seed(app, client)
    report = client.get("/v1/audit/report", headers=bearer(app, "auditor"))
    assert report.status_code == 200, report.json
    body = report.json
    with services(app).db.session() as session:
        total = session.scalar(sa.select(sa.func.count()).select_from(Decision))
    assert body["decisions"]["total"] == total == 5
    assert body["decisions"]["by_outcome"] == {"allowed": 4, "denied": 1}
    assert body["decisions"]["denial_reasons"] == {"kill_switch_active": 1}
    assert body["decisions"]["by_action_type"]["controls.kill_switch"] == {"allowed": 2}
    switches = [(k["enabled"], k["scope"], k["reason"]) for k in body["kill_switches"]]
    assert switches == [(True, "global", "drill"), (False, "global", None)]
    assert body["ledger"] == {"entries": 2, "reversals": 1}
    assert sum(body["decisions"]["by_policy_revision"].values()) == 5
    # A period before any of it is empty.
    old = (utcnow() - timedelta(days=400)).date()
    empty = client.get(
        f"/v1/audit/report?since={old}&until={old + timedelta(days=10)}", headers=bearer(app, "finance")
    ).json
    assert empty["decisions"]["total"] == 0 and empty["kill_switches"] == []


def test_the_exports_stream_every_row_formula_safe(app: Flask, client: FlaskClient) -> None:
    seed(app, client)
    auditor = bearer(app, "auditor")
    exported = client.get("/v1/audit/decisions.csv", headers=auditor)
    assert exported.status_code == 200 and exported.mimetype == "text/csv"
    assert exported.headers["Content-Disposition"].startswith('attachment; filename="decisions-')
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    assert len(rows) == 5
    assert [r["outcome"] for r in rows].count("denied") == 1
    denied = next(r for r in rows if r["outcome"] == "denied")
    assert denied["reason_codes"] == "kill_switch_active" and denied["allow"] == "false"
    sneaky = [r["actor_id"] for r in rows if "HYPERLINK" in r["actor_id"]]
    assert sneaky == ['\'=HYPERLINK("http://evil.test")']  # never a live formula in a spreadsheet

    ledger = client.get("/v1/audit/ledger.csv", headers=auditor)
    postings = list(csv.DictReader(io.StringIO(ledger.get_data(as_text=True))))
    assert len(postings) == 4
    balance: dict[str, int] = defaultdict(int)
    for p in postings:
        balance[p["entry_id"]] += int(p["debit_minor"]) - int(p["credit_minor"])
    assert set(balance.values()) == {0}  # each entry balances
    assert sum(1 for p in postings if p["reverses_entry_id"]) == 2


def test_periods_are_validated_and_only_audit_roles_read(app: Flask, client: FlaskClient) -> None:
    auditor = bearer(app, "auditor")
    for query, field in (
        ("since=2026-02-01&until=2026-01-01", "since"),
        ("since=2024-01-01&until=2026-01-01", "until"),
        ("since=yesterday", "since"),
        ("until=2026-01-01T00:00:00", "until"),
    ):
        refused = client.get(f"/v1/audit/report?{query}", headers=auditor)
        assert refused.status_code == 400 and field in refused.json["errors"], (query, refused.json)
        assert client.get(f"/v1/audit/decisions.csv?{query}", headers=auditor).status_code == 400
    for role in ("operator", "service", "policy_author"):
        assert client.get("/v1/audit/report", headers=bearer(app, role)).status_code == 403
        assert client.get("/v1/audit/ledger.csv", headers=bearer(app, role)).status_code == 403
    assert client.get("/v1/audit/decisions.csv").status_code == 401


def test_the_audit_page_shows_the_report_and_the_downloads(app: Flask, client: FlaskClient) -> None:
    seed(app, client)
    login(client, make_user(app, "auditor"))
    page = client.get("/audit")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "kill_switch_active" in html and 'id="export-decisions"' in html and "drill" in html
    assert "Ledger entries: 2, of which reversals: 1" in html
    bad = client.get("/audit?since=2026-02-01&until=2026-01-01")
    assert bad.status_code == 400 and "since must be before until" in bad.get_data(as_text=True)
