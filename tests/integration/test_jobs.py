"""The housekeeping jobs of the scheduler (server/jobs.py) against a real OPA sidecar and real
databases: each finance job runs on an empty deployment without failing, the decision-log
retention drops only old sidecar events, and a failing job is logged without stopping the others."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from flask import Flask
from sqlalchemy import func, select

from server.autopilot.scheduler import AutopilotScheduler, Job
from server.db import utcnow
from server.extensions import services
from server.jobs import housekeeping_jobs
from server.policies.models import OpaDecisionLog
from server.policies.services import prune_decision_logs, store_decision_logs


def event(decision_id: str, days_ago: float) -> dict[str, object]:
    stamp = (utcnow() - timedelta(days=days_ago)).isoformat()
    return {"decision_id": decision_id, "path": "smartlinks/decision", "timestamp": stamp, "result": {}}


def log_ids(app: Flask) -> set[str]:
    with services(app).db.unit_of_work() as uow:
        return set(uow.session.scalars(select(OpaDecisionLog.decision_id)))


def test_every_housekeeping_job_runs_on_a_fresh_deployment(app: Flask) -> None:
    svc = services(app)
    jobs = {job.name: job for job in housekeeping_jobs(svc.settings, svc.db, svc.gateway)}
    assert set(jobs) == {
        "finance.alerts",
        "finance.book_conversions",
        "finance.payouts_resume",
        "finance.treasury",
        "finance.ledger_verify",
        "finance.reconcile",
        "finance.documents",
        "finance.invoices",
        "policy.decision_log_retention",
    }
    assert jobs["finance.treasury"].seconds == svc.settings.treasury_interval_seconds
    scheduler = AutopilotScheduler(svc.db, svc.gateway, jobs=list(jobs.values()), owner="test-jobs")
    for job in jobs.values():
        assert scheduler.run_job(job) is not None or job.name == "finance.alerts", job.name
    assert scheduler.job_runs == dict.fromkeys(jobs, 1)
    assert scheduler.run_job(jobs["finance.ledger_verify"]).ok  # type: ignore[union-attr]
    assert scheduler.run_job(jobs["finance.reconcile"]) == []  # no provider configured
    assert scheduler.run_job(jobs["finance.treasury"])["approved"] == 0  # type: ignore[index]


def test_switches_leave_jobs_out(app: Flask) -> None:
    svc = services(app)
    settings = svc.settings.with_overrides({"finance_jobs_enabled": False, "opa_decision_log_retention_days": 0})
    assert housekeeping_jobs(settings, svc.db, svc.gateway) == []


@pytest.mark.parametrize("batch", [2, 5000])
def test_retention_drops_only_old_sidecar_events(app: Flask, batch: int) -> None:
    db = services(app).db
    with db.unit_of_work() as uow:
        events = [event(f"old-{i}", 40 + i) for i in range(5)] + [event(f"new-{i}", 1) for i in range(3)]
        assert store_decision_logs(uow.session, "primary", events) == 8
        uow.commit()
    assert prune_decision_logs(db, utcnow() - timedelta(days=30), batch=batch) == 5
    assert log_ids(app) == {"new-0", "new-1", "new-2"}
    assert prune_decision_logs(db, utcnow() - timedelta(days=30), batch=batch) == 0


def test_the_retention_job_uses_the_configured_days(app: Flask) -> None:
    svc = services(app)
    with svc.db.unit_of_work() as uow:
        store_decision_logs(uow.session, "primary", [event("a", 10), event("b", 3)])
        uow.commit()
    settings = svc.settings.with_overrides({"finance_jobs_enabled": False, "opa_decision_log_retention_days": 7})
    (job,) = housekeeping_jobs(settings, svc.db, svc.gateway)
    assert job.name == "policy.decision_log_retention" and job.seconds == 86_400 and job.first_run_now
    assert job.run() == 1 and log_ids(app) == {"b"}
    with svc.db.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(OpaDecisionLog)) == 1


def test_a_failing_job_is_logged_and_runs_again(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    svc = services(app)
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("provider down")
        return "ok"

    job = Job("test.flaky", 60, flaky)
    scheduler = AutopilotScheduler(svc.db, svc.gateway, jobs=[job], owner="test-flaky")
    with caplog.at_level(logging.ERROR, logger="server.autopilot.scheduler"):
        assert scheduler.run_job(job) is None
    assert "scheduled job test.flaky failed" in caplog.text and "provider down" in caplog.text
    assert scheduler.run_job(job) == "ok" and scheduler.job_runs == {"test.flaky": 1}


def test_only_the_lease_holder_runs_jobs(app: Flask) -> None:
    svc = services(app)
    ran: list[str] = []
    job = Job("test.once", 60, lambda: ran.append("x"))
    holder = AutopilotScheduler(svc.db, svc.gateway, jobs=[job], owner="holder")
    other = AutopilotScheduler(svc.db, svc.gateway, jobs=[job], owner="other")
    holder.run_job(job)
    assert other.run_job(job) is None
    assert ran == ["x"]
    holder.lease.release()
