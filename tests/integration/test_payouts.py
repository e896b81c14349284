"""Payouts end to end on SQLite and PostgreSQL: the treasury run through the governance gateway
and the payouts policy, Stripe (stripe-mock) and PayPal (the local PayPal server) with their
failures, timeouts and 5xx, the approval queue, and the ledger after each of them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from billing import accounts
from billing.models import Alert, Payout, PayoutEvent, PayoutProfile
from billing.payouts import resume_payouts
from billing.reconcile import reconcile
from billing.treasury import run_treasury
from billing.webhooks import apply_stripe_event
from server.db import utcnow
from server.extensions import services
from server.finance.services import payment_services
from server.governance.models import Decision
from tests.conftest import login, make_token, make_user
from tests.support.finance import (  # noqa: F401 - the *_fixture names register fixtures
    add_affiliate,
    assert_ledger_ok,
    balance,
    fund,
    owe,
    payments,
    paypal_fixture,
    paypal_server_fixture,
    settings_fixture,
    stripe_mock_fixture,
    stripe_proxy_fixture,
    stripe_proxy_server_fixture,
)
from tests.support.paypal_server import PayPalServer
from tests.support.stripe_mock import StripeProxy


def treasury(app: Flask) -> Any:
    svc = services(app)
    ps = payment_services(app)
    return run_treasury(
        svc.db.session,
        svc.gateway,
        ps.payments.providers,
        utcnow(),
        vault=ps.vault,
        default_threshold="50.00",
        workers=4,
    )


def payouts_of(app: Flask) -> dict[str, Payout]:
    with services(app).db.unit_of_work() as uow:
        rows = uow.session.scalars(select(Payout)).all()
        for row in rows:
            uow.session.expunge(row)
        return {p.affiliate_id: p for p in rows}


def history(app: Flask, payout_id: str) -> list[str]:
    with services(app).db.unit_of_work() as uow:
        return [
            e.to_state
            for e in uow.session.scalars(
                select(PayoutEvent).where(PayoutEvent.payout_id == payout_id).order_by(PayoutEvent.id)
            )
        ]


def alerts(app: Flask) -> dict[str, int]:
    with services(app).db.unit_of_work() as uow:
        return {a.kind: a.occurrences for a in uow.session.scalars(select(Alert))}


def test_the_treasury_pays_eligible_affiliates_once_through_stripe(app: Flask, stripe_proxy: StripeProxy) -> None:
    fund(app, 1_000_000)
    add_affiliate(app, "aff_due")
    add_affiliate(app, "aff_small")
    add_affiliate(app, "aff_hold", on_hold=True)
    add_affiliate(app, "aff_new", age_days=3)
    add_affiliate(app, "aff_own", threshold=2_000)
    owe(app, "aff_due", 12_345)
    owe(app, "aff_small", 4_999)  # below the 50.00 default threshold
    owe(app, "aff_hold", 20_000)
    owe(app, "aff_new", 20_000)
    owe(app, "aff_own", 2_500)  # above its own 20.00 threshold

    report = treasury(app)
    assert report.candidates == 3  # hold excluded up front; the new affiliate reaches the policy
    assert report.approved == 2 and report.denied == 1, report
    found = payouts_of(app)
    assert set(found) == {"aff_due", "aff_new", "aff_own"}
    assert found["aff_new"].state == "voided"
    assert found["aff_new"].reasons[0]["code"] == "affiliate_in_hold_period"
    due = found["aff_due"]
    assert due.state == "submitted" and due.amount_minor == 12_345 and due.provider_ref
    assert history(app, due.id) == ["proposed", "approved", "submitted"]
    assert stripe_proxy.state.transfer_creations() == {due.idempotency_key: 1, found["aff_own"].idempotency_key: 1}
    transfer = stripe_proxy.state.transfers[due.provider_ref]
    assert (transfer["amount"], transfer["currency"], transfer["destination"]) == (12_345, "eur", "acct_aff_due")
    # Reserved, not yet gone: payable and cash are held by the pending entry.
    assert balance(app, accounts.affiliate_payable("aff_due", "EUR").code) == (0, 12_345, 12_345, 0)
    with services(app).db.unit_of_work() as uow:
        decision = uow.session.get(Decision, due.decision_id)
        assert decision is not None and decision.action_type == "payout.create" and decision.executed

    # A second run while the payouts are in flight pays nobody twice; the new affiliate is
    # proposed again and refused again by the policy (each refusal is recorded).
    again = treasury(app)
    assert (again.candidates, again.approved, again.denied) == (1, 0, 1)
    assert stripe_proxy.state.transfer_creations() == {due.idempotency_key: 1, found["aff_own"].idempotency_key: 1}

    # Stripe confirms (the webhook path is tested in test_payouts_webhooks): paid, posted.
    with services(app).db.unit_of_work() as uow:
        result = apply_stripe_event(
            uow.session,
            {"id": "evt_1", "type": "transfer.created", "data": {"object": {**transfer, "object": "transfer"}}},
        )
        uow.commit()
    assert result.status == "processed"
    assert payouts_of(app)["aff_due"].state == "paid"
    assert balance(app, accounts.affiliate_payable("aff_due", "EUR").code) == (12_345, 12_345, 0, 0)
    assert balance(app, accounts.cash("EUR").code)[1] == 12_345
    assert_ledger_ok(app)

    with services(app).db.unit_of_work() as uow:
        rec = reconcile(uow.session, payment_services(app).payments.providers["stripe"], utcnow() - timedelta(days=1))
        uow.commit()
        assert rec.status == "clean", rec.differences
        assert rec.matched == 2 and rec.matched_minor == {"EUR": 12_345}


def test_stripe_errors_leave_the_payout_to_be_retried_with_the_same_key(app: Flask, stripe_proxy: StripeProxy) -> None:
    fund(app, 100_000)
    add_affiliate(app, "aff_1")
    owe(app, "aff_1", 10_000)
    stripe_proxy.fail("500", count=1)
    report = treasury(app)
    payout = payouts_of(app)["aff_1"]
    assert report.approved == 1 and payout.state == "approved"
    assert payout.last_error and "unknown error" in payout.last_error
    assert alerts(app) == {"provider_error": 1}
    summary = resume_payouts(services(app).db.session, payments(app), now=utcnow() + timedelta(hours=1))
    assert summary.submitted == 1
    payout = payouts_of(app)["aff_1"]
    assert payout.state == "submitted"
    assert stripe_proxy.state.transfer_creations() == {payout.idempotency_key: 1}
    assert_ledger_ok(app)


def test_a_refused_transfer_fails_the_payout_and_gives_the_money_back(app: Flask, stripe_proxy: StripeProxy) -> None:
    fund(app, 100_000)
    add_affiliate(app, "aff_bad", destination="acct_closed")
    owe(app, "aff_bad", 10_000)
    stripe_proxy.fail("400")  # Stripe refuses the destination: not worth retrying
    report = treasury(app)
    payout = payouts_of(app)["aff_bad"]
    assert report.failed == 1 and payout.state == "failed"
    assert "not a connected account" in (payout.last_error or "")
    assert history(app, payout.id) == ["proposed", "approved", "failed"]
    assert balance(app, accounts.affiliate_payable("aff_bad", "EUR").code) == (0, 10_000, 0, 0)
    assert balance(app, accounts.cash("EUR").code) == (100_000, 0, 0, 0)
    assert alerts(app) == {"payout_failed": 1}
    assert_ledger_ok(app)


def test_paypal_pays_through_a_batch_polled_to_success(app: Flask, paypal: PayPalServer) -> None:
    fund(app, 100_000)
    add_affiliate(app, "aff_pp", method="paypal")
    add_affiliate(app, "aff_pp_fail", method="paypal")
    paypal.state.outcomes["aff_pp_fail@example.com"] = "FAILED"
    owe(app, "aff_pp", 7_500)
    owe(app, "aff_pp_fail", 6_000)
    report = treasury(app)
    assert report.approved == 2 and report.submitted == 2, report
    found = payouts_of(app)
    assert paypal.batches_for(found["aff_pp"].idempotency_key) == 1
    sender_batch = paypal.state.batches[found["aff_pp"].provider_ref].sender_batch_header  # type: ignore[index]
    assert sender_batch["sender_batch_id"] == found["aff_pp"].idempotency_key
    for _ in range(3):  # PENDING -> PROCESSING -> SUCCESS as PayPal processes the batch
        resume_payouts(services(app).db.session, payments(app), now=utcnow(), poll_after=timedelta(0))
    found = payouts_of(app)
    assert found["aff_pp"].state == "paid"
    assert found["aff_pp_fail"].state == "failed"
    assert history(app, found["aff_pp_fail"].id) == ["proposed", "approved", "submitted", "failed"]
    assert balance(app, accounts.affiliate_payable("aff_pp", "EUR").code) == (7_500, 7_500, 0, 0)
    assert balance(app, accounts.affiliate_payable("aff_pp_fail", "EUR").code) == (0, 6_000, 0, 0)
    assert alerts(app) == {"payout_failed": 1}
    assert_ledger_ok(app)
    with services(app).db.unit_of_work() as uow:
        rec = reconcile(uow.session, payment_services(app).payments.providers["paypal"], utcnow() - timedelta(days=1))
        assert rec.status == "clean", rec.differences
        assert rec.matched == 2 and rec.matched_minor == {"EUR": 7_500}


def test_paypal_5xx_timeouts_and_lost_answers_never_pay_twice(app: Flask, paypal: PayPalServer) -> None:
    fund(app, 100_000)
    for name in ("aff_a", "aff_b"):
        add_affiliate(app, name, method="paypal")
        owe(app, name, 5_000)
    paypal.fail("/v1/payments/payouts", "503", count=1)
    provider = payment_services(app).payments.providers["paypal"]
    provider._timeout = (1.0, 1.0)  # type: ignore[attr-defined] - a short read timeout for the slow answer
    report = treasury(app)
    states = sorted(p.state for p in payouts_of(app).values())
    assert report.approved == 2 and states == ["approved", "submitted"], report
    # The next attempt is slow (timeout: outcome unknown), then PayPal answers normally.
    paypal.fail("/v1/payments/payouts", "slow", count=1, seconds=1.5)
    resume_payouts(services(app).db.session, payments(app), now=utcnow() + timedelta(hours=1))
    resume_payouts(services(app).db.session, payments(app), now=utcnow() + timedelta(hours=2))
    found = payouts_of(app)
    assert all(p.state == "submitted" for p in found.values()), [(p.state, p.last_error) for p in found.values()]
    for payout in found.values():
        assert paypal.batches_for(payout.idempotency_key) == 1
    assert alerts(app).get("provider_error", 0) >= 1
    assert_ledger_ok(app)


def test_live_payouts_above_the_threshold_wait_for_a_finance_approval(
    app: Flask, client: FlaskClient, stripe_proxy: StripeProxy
) -> None:
    fund(app, 5_000_000)
    add_affiliate(app, "aff_big")
    owe(app, "aff_big", 1_500_000)  # above the test-mode approval threshold (10,000.00)
    requester = make_user(app, "finance", "alice@example.com")
    approver = make_user(app, "finance", "bob@example.com")
    csrf = login(client, requester)
    made = client.post(
        "/v1/payouts",
        json={"affiliate_id": "aff_big", "currency": "EUR", "reason": "month end"},
        headers={"X-CSRF-Token": csrf},
    )
    assert made.status_code == 201, made.json
    payout = made.json["payout"]
    assert made.json["decision"]["outcome"] == "pending_approval"
    assert payout["state"] == "proposed" and payout["approval"] == "required"
    queue = client.get("/v1/payouts?awaiting_approval=true").json["items"]
    assert [p["id"] for p in queue] == [payout["id"]]
    own = client.post(f"/v1/payouts/{payout['id']}/approve", json={"reason": "mine"}, headers={"X-CSRF-Token": csrf})
    assert own.status_code == 403 and own.json["type"].endswith("/denied-by-policy")
    assert {r["code"] for r in own.json["reasons"]} == {"approver_is_requester"}
    assert stripe_proxy.state.transfer_creations() == {}

    client.post("/logout", data={"csrf_token": csrf})
    csrf = login(client, approver)
    approved = client.post(
        f"/v1/payouts/{payout['id']}/approve", json={"reason": "checked the invoices"}, headers={"X-CSRF-Token": csrf}
    )
    assert approved.status_code == 200, approved.json
    body = approved.json["payout"]
    assert body["state"] == "submitted" and body["approved_by"].startswith("user:")
    assert [h["to"] for h in body["history"]] == ["proposed", "proposed", "proposed", "approved", "submitted"]
    assert len(stripe_proxy.state.transfer_creations()) == 1
    again = client.post(f"/v1/payouts/{payout['id']}/approve", json={}, headers={"X-CSRF-Token": csrf})
    assert again.status_code == 409
    assert_ledger_ok(app)


def test_a_rejection_needs_a_reason_and_voids_the_payout(app: Flask, client: FlaskClient) -> None:
    fund(app, 5_000_000)
    add_affiliate(app, "aff_big")
    owe(app, "aff_big", 1_200_000)
    token = {"Authorization": f"Bearer {make_token(app, 'finance')}"}
    made = client.post(
        "/v1/payouts", json={"affiliate_id": "aff_big", "currency": "EUR", "amount": "11000.00"}, headers=token
    )
    assert made.status_code == 201
    payout_id = made.json["payout"]["id"]
    approver = make_user(app, "admin", "root@example.com")
    csrf = login(client, approver)
    bare = client.post(f"/v1/payouts/{payout_id}/reject", json={}, headers={"X-CSRF-Token": csrf})
    assert bare.status_code == 403 and {r["code"] for r in bare.json["reasons"]} == {"reason_required"}
    done = client.post(
        f"/v1/payouts/{payout_id}/reject", json={"reason": "duplicate invoice"}, headers={"X-CSRF-Token": csrf}
    )
    assert done.status_code == 200 and done.json["payout"]["state"] == "voided"
    assert done.json["payout"]["approval"] == "rejected"
    assert balance(app, accounts.affiliate_payable("aff_big", "EUR").code) == (0, 1_200_000, 0, 0)
    assert_ledger_ok(app)


def test_manual_payouts_are_judged_like_the_treasurys(app: Flask, client: FlaskClient) -> None:
    fund(app, 10_000)
    add_affiliate(app, "aff_1")
    owe(app, "aff_1", 8_000)
    finance = {"Authorization": f"Bearer {make_token(app, 'finance')}"}
    too_much = client.post(
        "/v1/payouts", json={"affiliate_id": "aff_1", "currency": "EUR", "amount": "90.00"}, headers=finance
    )
    assert too_much.status_code == 403
    assert {r["code"] for r in too_much.json["reasons"]} == {"above_payable_balance"}
    assert too_much.json["payout"]["state"] == "voided"
    odd = client.post(
        "/v1/payouts", json={"affiliate_id": "aff_1", "currency": "JPY", "amount": "10.5"}, headers=finance
    )
    assert odd.status_code == 400
    operator = {"Authorization": f"Bearer {make_token(app, 'operator')}"}
    assert (
        client.post("/v1/payouts", json={"affiliate_id": "aff_1", "currency": "EUR"}, headers=operator).status_code
        == 403
    )
    fine = client.post(
        "/v1/payouts", json={"affiliate_id": "aff_1", "currency": "EUR", "amount": "80.00"}, headers=finance
    )
    assert fine.status_code == 201 and fine.json["payout"]["state"] == "submitted", fine.json
    assert_ledger_ok(app)


def test_a_destination_changed_through_the_portal_is_held_before_it_is_paid(
    app: Flask, stripe_proxy: StripeProxy
) -> None:
    """A stolen portal login must not redirect the next payout: the payouts policy holds a
    destination the affiliate changed themselves for destination_change_hold_hours (48); a change
    made by finance carries no hold."""
    from server.finance.queries import save_profile

    fund(app, 1_000_000)
    add_affiliate(app, "aff_self")
    add_affiliate(app, "aff_staff")
    owe(app, "aff_self", 10_000)
    owe(app, "aff_staff", 10_000)
    vault = payment_services(app).vault
    with services(app).db.unit_of_work() as uow:
        mine = {"method": "stripe", "destination": "acct_attacker"}
        save_profile(uow.session, vault, "aff_self", mine, changed_by="user:9", self_service=True)
        theirs = {"method": "stripe", "destination": "acct_new_bank"}
        save_profile(uow.session, vault, "aff_staff", theirs, changed_by="user:1", self_service=False)
        uow.commit()

    report = treasury(app)
    assert (report.approved, report.denied) == (1, 1), report
    found = payouts_of(app)
    assert found["aff_self"].state == "voided"
    assert [r["code"] for r in found["aff_self"].reasons] == ["destination_recently_changed"]
    assert found["aff_staff"].state == "submitted"
    assert stripe_proxy.state.transfers[found["aff_staff"].provider_ref]["destination"] == "acct_new_bank"
    with services(app).db.unit_of_work() as uow:
        decision = uow.session.get(Decision, found["aff_self"].decision_id)
        assert decision is not None
        assert decision.input["state"]["affiliate"]["destination"]["self_service"] is True
        assert decision.input["state"]["affiliate"]["destination"]["changed_hours_ago"] < 1

    # Two days later the new destination is paid.
    with services(app).db.unit_of_work() as uow:
        profile = uow.session.get(PayoutProfile, "aff_self")
        assert profile is not None and profile.destination_changed_by == "user:9"
        profile.destination_changed_at = utcnow() - timedelta(hours=49)
        uow.commit()
    later = treasury(app)
    assert later.approved == 1, later
    paid = [p for p in payouts_of_all(app) if p.affiliate_id == "aff_self" and p.state == "submitted"]
    assert len(paid) == 1
    assert stripe_proxy.state.transfers[paid[0].provider_ref]["destination"] == "acct_attacker"
    assert_ledger_ok(app)


def payouts_of_all(app: Flask) -> list[Payout]:
    with services(app).db.unit_of_work() as uow:
        rows = list(uow.session.scalars(select(Payout)))
        for row in rows:
            uow.session.expunge(row)
        return rows
