"""The housekeeping jobs that `smartlinks serve` (and `smartlinks autopilot run`) run on the
autopilot scheduler, under its lease, so that one process in a deployment runs each of them:

| job | every | does |
| --- | --- | --- |
| `finance.alerts` | 60 s | delivers alerts not delivered yet (webhook, email) |
| `finance.book_conversions` | 5 min | books approved conversions into the ledger |
| `finance.payouts_resume` | 5 min | resubmits approved payouts with their key, polls submitted ones |
| `finance.documents` | 5 min | receipts for newly paid payouts, then emails the documents that are due |
| `finance.invoices` | 24 h | last month's advertiser invoices (issued on the 1st, or the first run after) |
| `finance.treasury` | `TREASURY_INTERVAL_SECONDS` | proposes, decides and sends the payouts that are due |
| `finance.ledger_verify` | 24 h | checks every ledger invariant (critical alert on a violation) |
| `finance.reconcile` | 24 h | each configured provider against payouts and ledger, last 7 days |
| `policy.decision_log_retention` | 24 h | drops sidecar decision-log events older than the retention |

`FINANCE_JOBS_ENABLED=false` leaves the finance jobs to cron and the `smartlinks` commands (the
same functions); `OPA_DECISION_LOG_RETENTION_DAYS=0` keeps the decision logs forever."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from server.autopilot.scheduler import Job
from server.config import Settings
from server.db import Database, utcnow
from server.governance.gateway import Gateway

log = logging.getLogger(__name__)

MINUTE = 60.0
DAY = 86_400.0


def housekeeping_jobs(settings: Settings, db: Database, gateway: Gateway) -> list[Job]:
    jobs: list[Job] = []
    if settings.finance_jobs_enabled:
        jobs += finance_jobs(settings, db, gateway)
    if settings.opa_decision_log_retention_days > 0:
        days = settings.opa_decision_log_retention_days

        def retention() -> int:
            from server.policies.services import prune_decision_logs

            removed = prune_decision_logs(db, utcnow() - timedelta(days=days))
            if removed:
                log.info("dropped %d sidecar decision-log event(s) older than %d days", removed, days)
            return removed

        jobs.append(Job("policy.decision_log_retention", DAY, retention, first_run_now=True))
    return jobs


def finance_jobs(settings: Settings, db: Database, gateway: Gateway) -> list[Job]:
    from server.finance import services as finance

    def alerts() -> int:
        return finance.dispatch_alerts(db.session, finance.make_channels(settings))

    def book() -> Any:
        run = finance.book_conversions(db, finance.make_channels(settings))
        if run.booked or run.failed:
            log.info("booked %d conversion(s), %d refused", run.booked, run.failed)
        return run

    def with_payments(work: Any) -> Any:
        payments = finance.build(settings, gateway)
        try:
            return work(payments)
        finally:
            payments.close()

    def resume() -> Any:
        return with_payments(lambda payments: finance.resume_unfinished_payouts(db, payments))

    def treasury() -> dict[str, Any]:
        report = finance.treasury_job(settings, db.session, gateway)
        log.info("treasury run: %s", {k: v for k, v in report.items() if isinstance(v, int)})
        return report

    def verify() -> Any:
        report = finance.verify_ledger(db, finance.make_channels(settings))
        if not report.ok:
            log.error("ledger verification found %d violation(s)", len(report.violations))
        return report

    def reconcile() -> Any:
        return with_payments(lambda payments: finance.reconcile_providers(db, payments))

    def documents() -> Any:
        run = finance.generate_receipts(db, settings)
        if run.receipts or run.errors:
            log.info("issued %d receipt(s), %d refused", len(run.receipts), len(run.errors))
        delivery = finance.deliver_pending_documents(db, settings)
        if delivery is not None and (delivery.sent or delivery.failed):
            log.info("emailed %d document(s), %d failed for good", delivery.sent, delivery.failed)
        return run

    def invoices() -> Any:
        run = finance.generate_invoices(db, settings)
        if run.invoices or run.credit_notes:
            log.info("issued %d invoice(s), %d credit note(s) for reversals", len(run.invoices), len(run.credit_notes))
        return run

    return [
        Job("finance.alerts", MINUTE, alerts),
        Job("finance.book_conversions", 5 * MINUTE, book),
        Job("finance.payouts_resume", 5 * MINUTE, resume),
        Job("finance.treasury", settings.treasury_interval_seconds, treasury),
        Job("finance.ledger_verify", DAY, verify),
        Job("finance.reconcile", DAY, reconcile),
        Job("finance.documents", 5 * MINUTE, documents),
        Job("finance.invoices", DAY, invoices, first_run_now=True),  # idempotent: a restart never skips the 1st
    ]
