"""Batch decisions (`Gateway.decide_many`, `resolve_many`) against the real OPA sidecar on SQLite
and PostgreSQL: a batch decides exactly what the same actions decided one by one would (allow,
deny, clamp, kill switch, rate limits), each payout of a treasury run is judged on the approvals
before it, and an OPA that is down or answers nonsense denies every item with its own code."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from billing import accounts
from billing.models import Payout, TreasuryDay
from billing.treasury import run_treasury_with
from server.extensions import services
from server.finance.services import payment_services
from server.governance.gateway import Action, Actor, Gateway, Target
from server.governance.models import ActionCount, Control, Decision
from server.policy.opa_client import OpaClient
from tests.support.finance import (  # noqa: F401 - the *_fixture names register fixtures
    add_affiliate,
    app_fixture,
    assert_ledger_ok,
    balance,
    fund,
    owe,
    paypal_fixture,
    paypal_server_fixture,
    settings_fixture,
    stripe_mock_fixture,
    stripe_proxy_fixture,
    stripe_proxy_server_fixture,
)
from tests.support.stripe_mock import StripeProxy, free_port

NOW = datetime(2026, 11, 25, 10, 0, 7, tzinfo=UTC)
DAILY_CAP = 100_000_000  # data.config.payouts.daily_cap.default


def allocation(actor: str, kind: int) -> tuple[Action, dict[str, Any]]:
    """Four kinds of allocation update: allowed, clamped, denied by the policy, kill-switched."""
    algorithm = "traffic_optimizer" if kind == 1 else "thompson_sampling"
    weights = [{"a": 0.55, "b": 0.45}, {"a": 0.95, "b": 0.05}, {"a": 0.9, "b": 0.9}, {"a": 0.5, "b": 0.5}][kind]
    target = Target("link", "lnk_off" if kind == 3 else "lnk_1")
    state = {
        "arms": ["a", "b"],
        "current_weights": {"a": 0.5, "b": 0.5},
        "evidence": {arm: {"clicks": 5000, "conversions": 250, "revenue": 1250.0} for arm in ("a", "b")},
    }
    action = Action(
        "allocation.update", Actor(actor, "algorithm"), {"algorithm": algorithm, "weights": weights}, target
    )
    return action, state


def comparable(record: Decision) -> dict[str, Any]:
    doc = json.loads(json.dumps(record.input).replace(record.actor_id, "ACTOR"))
    return {
        "allow": record.allow,
        "outcome": record.outcome,
        "executed": record.executed,
        "reasons": record.reasons,
        "obligations": record.obligations,
        "input": doc,
        "error_code": record.error_code,
        "policy_revision": record.policy_revision,
    }


def counted(app: Flask, actor: str) -> int:
    with services(app).db.unit_of_work() as uow:
        return int(
            uow.session.scalar(
                select(func.sum(ActionCount.count)).where(ActionCount.actor_id == actor, ActionCount.granularity == "m")
            )
            or 0
        )


def test_a_batch_decides_what_the_same_actions_decide_one_by_one(app: Flask) -> None:
    svc = services(app)
    gateway = Gateway(svc.opa, mode="test", clock=lambda: NOW)
    gateway.batch_size = 7  # many queries, and answers that differ from the guess inside them
    with svc.db.unit_of_work() as uow:
        uow.session.add(Control(key="kill_switch:link:lnk_off", enabled=True, reason="test"))
        uow.commit()
    # 260 updates by one actor: past the 120 a minute of the safety policy, the rest are denied.
    ran: dict[str, list[dict[str, Any]]] = {"one": [], "batch": []}

    def execute_as(name: str) -> Any:
        return lambda _session, params: ran[name].append(params)

    one_by_one: list[Decision] = []
    with svc.db.unit_of_work() as uow:
        for i in range(260):
            action, state = allocation("algo:one", i % 4)
            outcome = gateway.decide(uow.session, action, state=state, execute=execute_as("one"))
            one_by_one.append(outcome.record)
        uow.commit()
    with svc.db.unit_of_work() as uow:
        pairs = [allocation("algo:batch", i % 4) for i in range(260)]
        outcomes = gateway.decide_many(
            uow.session, [a for a, _ in pairs], states=[s for _, s in pairs], execute=execute_as("batch")
        )
        uow.commit()
    assert [comparable(o.record) for o in outcomes] == [comparable(r) for r in one_by_one]
    assert ran["batch"] == ran["one"]
    outcomes_seen = {o.record.outcome for o in outcomes}
    assert outcomes_seen == {"allowed", "clamped", "denied"}
    codes = {r["code"] for o in outcomes for r in o.reasons}
    assert {"target_kill_switch_active", "rate_limit_exceeded"} <= codes
    assert all(o.params["weights"]["a"] < 0.95 for o in outcomes if o.record.outcome == "clamped")
    # The counters hold every allowed action of the batch, as they hold those decided one by one.
    allowed = sum(o.allow for o in outcomes)
    assert allowed == 120
    assert counted(app, "algo:batch") == counted(app, "algo:one") == allowed
    with svc.db.unit_of_work() as uow:
        stored = uow.session.scalar(select(func.count()).select_from(Decision).where(Decision.actor_id == "algo:batch"))
        assert stored == 260


def test_a_dry_run_batch_is_recorded_and_neither_counted_nor_executed(app: Flask) -> None:
    svc = services(app)
    ran: list[Any] = []
    with svc.db.unit_of_work() as uow:
        pairs = [allocation("algo:dry", 0) for _ in range(3)]
        outcomes = svc.gateway.decide_many(
            uow.session,
            [a for a, _ in pairs],
            states=[s for _, s in pairs],
            dry_run=True,
            execute=lambda _s, p: ran.append(p),
        )
        uow.commit()
    assert [o.allow for o in outcomes] == [True] * 3 and not ran
    assert all(o.record.dry_run and not o.record.executed for o in outcomes)
    assert counted(app, "algo:dry") == 0


def test_each_treasury_payout_is_judged_on_the_approvals_before_it(app: Flask, stripe_proxy: StripeProxy) -> None:
    fund(app, 10_000_000)
    for affiliate_id, owed in (("aff_a", 6_000), ("aff_b", 9_000), ("aff_c", 5_000)):
        add_affiliate(app, affiliate_id)
        owe(app, affiliate_id, owed)
    now = datetime.now(UTC)
    with services(app).db.unit_of_work() as uow:  # 120.00 left under today's cap
        uow.session.add(TreasuryDay(currency="EUR", day=now.date(), committed_minor=DAILY_CAP - 12_000, payouts=0))
        uow.commit()

    report = run_treasury_with(services(app).db.session, payment_services(app).payments, now, workers=2)

    assert (report.approved, report.denied) == (2, 1), report
    with services(app).db.unit_of_work() as uow:
        payouts = {p.affiliate_id: p for p in uow.session.scalars(select(Payout))}
        assert payouts["aff_a"].state == payouts["aff_c"].state == "submitted"
        assert payouts["aff_b"].state == "voided"
        assert [r["code"] for r in payouts["aff_b"].reasons] == ["daily_cap_exceeded"]
        # aff_c was judged after aff_a's approval and aff_b's refusal, not on a guess.
        judged = {}
        for affiliate_id, payout in payouts.items():
            decision = uow.session.get(Decision, payout.decision_id)
            assert decision is not None and decision.action_type == "payout.create"
            judged[affiliate_id] = decision.input["state"]["treasury"]["committed_today"]
        assert judged == {"aff_a": DAILY_CAP - 12_000, "aff_b": DAILY_CAP - 6_000, "aff_c": DAILY_CAP - 6_000}
        day = uow.session.get(TreasuryDay, ("EUR", now.date()))
        assert day is not None and day.committed_minor == DAILY_CAP - 1_000
    assert counted(app, "system:treasury") == 2
    assert len(stripe_proxy.state.transfer_creations()) == 2
    assert balance(app, accounts.affiliate_payable("aff_b", "EUR").code) == (0, 9_000, 0, 0)  # nothing reserved
    assert_ledger_ok(app)


def test_opa_down_denies_every_payout_of_the_batch(app: Flask, stripe_proxy: StripeProxy) -> None:
    fund(app, 10_000_000)
    for i in range(5):
        add_affiliate(app, f"aff_{i}")
        owe(app, f"aff_{i}", 7_000 + i)
    dead = OpaClient(f"http://127.0.0.1:{free_port()}")
    payments = dataclasses.replace(payment_services(app).payments, gateway=Gateway(dead, mode="test"))

    report = run_treasury_with(services(app).db.session, payments, datetime.now(UTC), workers=2)

    assert (report.candidates, report.approved, report.denied) == (5, 0, 5)
    with services(app).db.unit_of_work() as uow:
        payouts = list(uow.session.scalars(select(Payout)))
        assert {p.state for p in payouts} == {"voided"}
        assert {r["code"] for p in payouts for r in p.reasons} == {"opa_unavailable"}
        decisions = list(uow.session.scalars(select(Decision)))
        assert len(decisions) == 5
        assert {(d.allow, d.outcome, d.error_code) for d in decisions} == {(False, "error", "opa_unavailable")}
    assert counted(app, "system:treasury") == 0
    assert stripe_proxy.state.transfer_creations() == {}
    assert balance(app, accounts.affiliate_payable("aff_0", "EUR").code) == (0, 7_000, 0, 0)
    assert_ledger_ok(app)


class BrokenBatchOpa(BaseHTTPRequestHandler):
    """A sidecar answering the batch query badly (a project-owned fake of OPA's Data API)."""

    behaviour = "mixed"

    def do_POST(self) -> None:  # noqa: N802
        inputs = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))["input"]["inputs"]
        allowed = {"allow": True, "reasons": [], "obligations": {}}
        targets = [doc["action"]["target"]["id"] for doc in inputs]
        answers: dict[str, Any] = {
            # by target: a decision of the wrong shape, a decision missing from the answer
            "mixed": {
                "result": {
                    str(i): {"allow": "true"} if target == "bad_shape" else allowed
                    for i, target in enumerate(targets)
                    if target != "missing"
                }
            },
            "undefined": {},
            "list": {"result": [allowed] * len(inputs)},
            "slow": {"result": {str(i): allowed for i in range(len(inputs))}},
        }
        if self.behaviour == "slow":
            time.sleep(1.0)
        body = json.dumps(answers[self.behaviour]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        return  # the slow answer is written after the client gave up: a broken pipe is expected


@pytest.fixture
def broken_opa() -> Iterator[ThreadingHTTPServer]:
    server = QuietServer(("127.0.0.1", 0), BrokenBatchOpa)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    "behaviour, codes",
    [
        ("mixed", [None, "opa_malformed", "opa_undefined", None]),
        ("undefined", ["opa_undefined"] * 4),
        ("list", ["opa_malformed"] * 4),
        ("slow", ["opa_timeout"] * 4),
    ],
)
def test_bad_batch_answers_deny_each_item_with_its_own_code(
    app: Flask, broken_opa: ThreadingHTTPServer, behaviour: str, codes: list[str | None]
) -> None:
    handler = type("Handler", (BrokenBatchOpa,), {"behaviour": behaviour})
    broken_opa.RequestHandlerClass = handler
    client = OpaClient(f"http://127.0.0.1:{broken_opa.server_port}")
    gateway = Gateway(client, mode="test", clock=lambda: NOW)
    gateway.batch_timeout = 0.3
    pairs = [allocation("algo:fake", 0) for _ in range(4)]
    pairs[1] = (dataclasses.replace(pairs[1][0], target=Target("link", "bad_shape")), pairs[1][1])
    pairs[2] = (dataclasses.replace(pairs[2][0], target=Target("link", "missing")), pairs[2][1])
    with services(app).db.unit_of_work() as uow:
        ran: list[Any] = []
        outcomes = gateway.decide_many(
            uow.session, [a for a, _ in pairs], states=[s for _, s in pairs], execute=lambda _s, p: ran.append(p)
        )
        uow.commit()
    assert [o.record.error_code for o in outcomes] == codes
    assert [o.allow for o in outcomes] == [code is None for code in codes]
    assert len(ran) == codes.count(None)
    assert all(o.reasons[0]["code"] == code for o, code in zip(outcomes, codes, strict=True) if code)
    assert counted(app, "algo:fake") == codes.count(None)
    client.close()
