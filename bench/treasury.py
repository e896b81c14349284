"""Benchmark: a treasury run paying N affiliates (10,000 by default) against Stripe's stripe-mock,
then every payout confirmed, every cent reconciled and the ledger verified.

Real parts: the OPA sidecar with the project's bundle (every payout is a `payout.create` decision
of the payouts policy), PostgreSQL (a local cluster with fsync on) or SQLite, the `stripe`
library's StripeClient against stripe-mock, behind the test suite's proxy that adds Stripe's
Idempotency-Key replay and keeps the created transfers so that they can be listed back
(tests/support/stripe_mock.py). Prints the run's time, payouts a second, transfers per
idempotency key, the reconciliation and verification results and the machine's load."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from billing import accounts  # noqa: E402
from billing.ledger import ensure_account, record_entries, verify  # noqa: E402
from billing.models import Payout, PayoutProfile  # noqa: E402
from billing.payouts import resume_payouts  # noqa: E402
from billing.providers.stripe_connect import StripeProvider  # noqa: E402
from billing.reconcile import reconcile  # noqa: E402
from billing.rules import EntryRequest, Line  # noqa: E402
from billing.treasury import run_treasury_with  # noqa: E402
from billing.vault import Vault, generate_key, mask  # noqa: E402
from server.db import Database, utcnow  # noqa: E402
from server.governance.gateway import Gateway  # noqa: E402
from server.links.models import Affiliate  # noqa: E402
from server.migrate import upgrade  # noqa: E402
from server.policy.bundle import build_bundle, policy_revision  # noqa: E402
from server.policy.opa_client import OpaClient  # noqa: E402
from server.policy.sidecar import OpaSidecar  # noqa: E402
from tests.support.stripe_mock import StripeMockProcess, serve_in_child  # noqa: E402

CUR = "EUR"


def seed(db: Database, vault: Vault, n: int) -> int:
    """N affiliates with a Stripe destination, each owed 50.00 to 89.99; cash to pay them all."""
    owed_total = 0
    created = utcnow() - timedelta(days=60)
    with db.unit_of_work() as uow:
        s = uow.session
        s.add_all(Affiliate(id=f"aff_{i:05d}", name=f"Affiliate {i}", created_at=created) for i in range(n))
        s.flush()
        s.add_all(
            PayoutProfile(
                affiliate_id=f"aff_{i:05d}",
                method="stripe",
                destination_enc=vault.encrypt(f"acct_bench{i:05d}"),
                destination_hint=mask(f"acct_bench{i:05d}"),
                on_hold=False,
            )
            for i in range(n)
        )
        for spec in (
            accounts.cash(CUR),
            accounts.cash_in_transit(CUR),
            accounts.commission_expense(CUR),
            accounts.advertiser_receivable("adv_bench", CUR),
        ):
            ensure_account(s, spec)
        for i in range(n):
            ensure_account(s, accounts.affiliate_payable(f"aff_{i:05d}", CUR))
        uow.commit()
    requests = []
    for i in range(n):
        amount = 5_000 + (i * 7919) % 4_000
        owed_total += amount
        requests.append(
            EntryRequest(
                f"owed:{i}",
                (
                    Line.debit(accounts.commission_expense(CUR).code, amount, CUR),
                    Line.credit(accounts.affiliate_payable(f"aff_{i:05d}", CUR).code, amount, CUR),
                ),
            )
        )
    requests.append(
        EntryRequest(
            "funding",
            (
                Line.debit(accounts.cash(CUR).code, owed_total, CUR),
                Line.credit(accounts.advertiser_receivable("adv_bench", CUR).code, owed_total, CUR),
            ),
        )
    )
    for start in range(0, len(requests), 1_000):
        with db.unit_of_work() as uow:
            record_entries(uow.session, requests[start : start + 1_000])
            uow.commit()
    return owed_total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--affiliates", type=int, default=10_000)
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--workers", type=int, default=16, help="provider calls in flight")
    parser.add_argument("--batch-size", type=int, default=500, help="payouts decided per transaction")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}  cores: {os.cpu_count()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-treasury-"))
    bundle = build_bundle(
        ROOT / ".tools" / "bin" / "opa", ROOT / "rego", tmp / "bundle.tar.gz", policy_revision(ROOT / "rego")
    )
    sidecar = OpaSidecar(ROOT / ".tools" / "bin" / "opa", bundle.path, tmp / "opa.log")
    mock = StripeMockProcess()
    sidecar.start()
    mock.start()
    # The proxy runs in its own process, so that it does not share this one's interpreter lock.
    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    proxy_process = ctx.Process(target=serve_in_child, args=(mock.url, ports), daemon=True)
    proxy_process.start()
    proxy_url = f"http://127.0.0.1:{ports.get(timeout=30)}"
    cluster = None
    try:
        sidecar.wait_ready(30)
        if args.backend == "postgresql":
            from bench.ledger import durable_cluster
            from tests.support.postgres import create_database

            cluster = durable_cluster()
            url = create_database(cluster.__enter__(), "bench_treasury")
        else:
            url = f"sqlite:///{tmp / 'treasury.db'}"
        upgrade(url)
        db = Database()
        db.configure(url)
        vault = Vault(generate_key())
        t0 = time.perf_counter()
        owed = seed(db, vault, args.affiliates)
        print(f"seeded {args.affiliates} affiliates owed {owed / 100:.2f} {CUR} in {time.perf_counter() - t0:.1f} s")

        opa = OpaClient(sidecar.url, timeout=2.0)
        opa.fallback_revision = bundle.revision
        from billing.payouts import Payments

        provider = StripeProvider("sk_test_bench", api_base=proxy_url)
        payments = Payments(
            gateway=Gateway(opa), providers={"stripe": provider}, vault=vault, default_threshold=lambda currency: 5_000
        )
        t0 = time.perf_counter()
        report = run_treasury_with(db.session, payments, utcnow(), batch_size=args.batch_size, workers=args.workers)
        run_s = time.perf_counter() - t0
        print(json.dumps({k: v for k, v in report.as_dict().items() if k != "errors"}), f"errors: {len(report.errors)}")

        t0 = time.perf_counter()
        resume_payouts(db.session, payments, poll_after=timedelta(0))  # Stripe confirms each transfer
        confirm_s = time.perf_counter() - t0
        with db.unit_of_work() as uow:
            from sqlalchemy import func, select

            states = dict(uow.session.execute(select(Payout.state, func.count()).group_by(Payout.state)).all())
            counts = uow.session.execute(select(Payout.affiliate_id, func.count()).group_by(Payout.affiliate_id))
            per_affiliate = max((n for _, n in counts), default=0)
            t0 = time.perf_counter()
            rec = reconcile(uow.session, provider, utcnow() - timedelta(hours=1))
            uow.commit()
            rec_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            check = verify(uow.session)
            verify_s = time.perf_counter() - t0
            cash = (
                uow.session.execute(select(func.sum(Payout.amount_minor)).where(Payout.state == "paid")).scalar() or 0
            )
        creations = requests.get(f"{proxy_url}/__proxy/creations", timeout=30).json()
        result = {
            "backend": args.backend,
            "affiliates": args.affiliates,
            "treasury_run_s": round(run_s, 1),
            "payouts_per_s": round(report.submitted / run_s) if run_s else None,
            "under_60_s": run_s < 60,
            "states": states,
            "max_payouts_per_affiliate": per_affiliate,
            "transfers_created": len(creations),
            "max_requests_per_idempotency_key": max(creations.values(), default=0),
            "confirm_s": round(confirm_s, 1),
            "reconciliation": {
                "status": rec.status,
                "matched": rec.matched,
                "differences": len(rec.differences),
                "matched_minor": rec.matched_minor,
                "reconcile_s": round(rec_s, 1),
            },
            "paid_minor": int(cash),
            "owed_minor": owed,
            "every_cent_reconciled": rec.status == "clean" and rec.matched_minor.get(CUR) == owed == int(cash),
            "ledger_ok": check.ok,
            "verify_s": round(verify_s, 1),
            "load_after": [round(x, 2) for x in os.getloadavg()],
        }
        print(json.dumps(result, indent=2))
        provider.close()
        opa.close()
        db.dispose()
        return 0 if result["every_cent_reconciled"] and check.ok else 1
    finally:
        proxy_process.terminate()
        mock.stop()
        sidecar.stop()
        if cluster is not None:
            cluster.__exit__(None, None, None)


if __name__ == "__main__":
    raise SystemExit(main())
