"""A worker killed in the middle of a payout (SIGKILL, between the ledger write and the provider
call, or after the provider acted but before its answer arrived) and a restarted process that
resumes it: the affiliate is paid exactly once and the ledger stays balanced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from billing import accounts
from billing.models import JournalEntry, Payout
from billing.payouts import resume_payouts
from billing.treasury import run_treasury
from server.db import utcnow
from server.extensions import services
from server.finance.services import payment_services
from tests.conftest import ROOT
from tests.support import paypal_server as pp
from tests.support.finance import (  # noqa: F401 - the *_fixture names register fixtures
    ENCRYPTION_KEY,
    STRIPE_KEY,
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

pytestmark = pytest.mark.slow
SMARTLINKS = str(Path(sys.executable).parent / "smartlinks")


def worker_env(app: Flask, **extra: str) -> dict[str, str]:
    settings = services(app).settings
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "PAYPAL_", "DATABASE_", "OPA_"))}
    env.update(
        DATABASE_URL=settings.database_url,
        OPA_URL=settings.opa_url or "",
        SMARTLINKS_POLICY_REVISION=settings.policy_revision or "",
        SMARTLINKS_VAR_DIR=settings.var_dir,
        PAYOUT_ENCRYPTION_KEY=ENCRYPTION_KEY,
        LOG_LEVEL="WARNING",
        **extra,
    )
    return env


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [SMARTLINKS, *command],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,  # noqa: S603
        stderr=subprocess.STDOUT,
    )


def run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run([SMARTLINKS, *command], env=env, cwd=ROOT, capture_output=True, timeout=120)  # noqa: S603
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, output
    return output


def the_payout(app: Flask) -> Payout:
    with services(app).db.unit_of_work() as uow:
        payout = uow.session.scalars(select(Payout)).one()
        uow.session.expunge(payout)
        return payout


def kill_when_held(process: subprocess.Popen[bytes], held: object) -> None:
    deadline = time.monotonic() + 60
    while not (reached := held.wait(0.2)) and process.poll() is None and time.monotonic() < deadline:  # type: ignore[attr-defined]
        pass
    process.send_signal(signal.SIGKILL)
    output = process.communicate(timeout=10)[0].decode()
    assert reached, f"the worker never reached the provider call:\n{output}"
    assert process.returncode == -signal.SIGKILL, output


@pytest.mark.parametrize("moment", ["before_the_provider_saw_it", "after_the_provider_acted"])
def test_a_worker_killed_mid_stripe_payout_pays_exactly_once_after_restart(
    app: Flask, stripe_proxy: StripeProxy, moment: str
) -> None:
    fund(app, 100_000)
    add_affiliate(app, "aff_k")
    owe(app, "aff_k", 420_00)
    env = worker_env(app, STRIPE_API_KEY=STRIPE_KEY, STRIPE_API_BASE=stripe_proxy.url)
    stripe_proxy.fail("hold_before" if moment == "before_the_provider_saw_it" else "hold_after")
    worker = start(["treasury", "run", "--workers", "1"], env)
    kill_when_held(worker, stripe_proxy.state.held)

    # What the crash left: the decision, the approval and the reservation are committed.
    payout = the_payout(app)
    assert payout.state == "approved" and payout.pending_entry_id
    with services(app).db.unit_of_work() as uow:
        assert uow.session.get(JournalEntry, payout.pending_entry_id).kind == "pending"  # type: ignore[union-attr]
    created_before = stripe_proxy.state.transfer_creations()
    assert created_before == ({} if moment == "before_the_provider_saw_it" else {payout.idempotency_key: 1})
    stripe_proxy.state.release.set()

    output = run(["payouts", "resume"], env)
    assert '"submitted": 1' in output
    payout = the_payout(app)
    assert payout.state == "submitted"
    assert stripe_proxy.state.transfer_creations() == {payout.idempotency_key: 1}  # one transfer, ever
    assert list(stripe_proxy.state.transfers) == [payout.provider_ref]
    # Resuming again changes nothing; the provider confirms; the killed run's lease keeps other
    # treasury runs out until it expires (resuming needs no lease).
    resume_payouts(services(app).db.session, payments(app))
    resume_payouts(services(app).db.session, payments(app), poll_after=timedelta(0))
    assert the_payout(app).state == "paid"
    svc, ps = services(app), payment_services(app)
    blocked = run_treasury(svc.db.session, svc.gateway, ps.payments.providers, utcnow(), vault=ps.vault)
    assert blocked.errors == ["another treasury run holds the lease"]
    assert stripe_proxy.state.transfer_creations() == {payout.idempotency_key: 1}
    assert balance(app, accounts.affiliate_payable("aff_k", "EUR").code) == (420_00, 420_00, 0, 0)
    assert_ledger_ok(app)


@pytest.mark.parametrize("paypal_remembers_the_request_id", [True, False])
def test_a_worker_killed_after_paypal_created_the_batch_never_creates_a_second(
    app: Flask, paypal: PayPalServer, paypal_remembers_the_request_id: bool
) -> None:
    fund(app, 100_000)
    add_affiliate(app, "aff_q", method="paypal")
    owe(app, "aff_q", 315_00)
    env = worker_env(
        app, PAYPAL_CLIENT_ID=pp.CLIENT_ID, PAYPAL_CLIENT_SECRET=pp.CLIENT_SECRET, PAYPAL_API_BASE=paypal.url
    )
    paypal.fail("/v1/payments/payouts#after", "hold_after")
    worker = start(["treasury", "run", "--workers", "1"], env)
    kill_when_held(worker, paypal.state.held)
    payout = the_payout(app)
    assert payout.state == "approved" and paypal.batches_for(payout.idempotency_key) == 1
    if not paypal_remembers_the_request_id:
        # Beyond PayPal-Request-Id's memory, the sender_batch_id still refuses a second batch and
        # links the first one, which the provider follows.
        paypal.state.by_request_id.clear()
    paypal.state.release.set()
    run(["payouts", "resume"], env)
    payout = the_payout(app)
    assert payout.state == "submitted" and payout.provider_ref in paypal.state.batches
    assert paypal.batches_for(payout.idempotency_key) == 1
    for _ in range(3):
        resume_payouts(services(app).db.session, payments(app), poll_after=timedelta(0))
    assert the_payout(app).state == "paid"
    assert paypal.batches_for(payout.idempotency_key) == 1
    assert_ledger_ok(app)
