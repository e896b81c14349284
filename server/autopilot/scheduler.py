"""The autopilot scheduler: an APScheduler `BackgroundScheduler` that runs a cycle for every
active link every `AUTOPILOT_INTERVAL_SECONDS` (60 s) and budget arbitrage every
`BUDGET_INTERVAL_SECONDS` (1 h).

It is started only by the CLI: in the `smartlinks serve` supervisor process (never in gunicorn
workers, which would run it once per worker) or in a `smartlinks autopilot run` worker. Any number
of these may share a database: the jobs run only in the process holding the `autopilot` lease
(see `server.autopilot.lease`), which a heartbeat job renews every `ttl / 3` seconds; every other
process keeps trying and takes over within `ttl` (30 s) of the holder's death.

Housekeeping jobs (`server.jobs.housekeeping_jobs`: the treasury, booking conversions, resuming
payouts, delivering alerts, reconciliation, ledger verification, decision-log retention) run on
the same scheduler under the same lease, each at its own interval; one failing is logged and
tried again at its next run, never stopping the others. Every run of a job by the lease holder is
counted and timed by job name (smartlinks_job_* metrics: runs, failures, seconds, last success)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from apscheduler.schedulers.background import BackgroundScheduler

from server.autopilot.lease import Lease, default_owner
from server.autopilot.services import CycleResult, run_budget_arbitrage, run_links_cycle
from server.db import Database
from server.governance.gateway import Gateway
from server.observability.metrics import metrics

log = logging.getLogger(__name__)

LEASE_NAME = "autopilot"
LEASE_TTL = 30.0


@dataclass(frozen=True)
class Job:
    """A periodic job run by the lease holder: `run()` every `seconds`."""

    name: str
    seconds: float
    run: Callable[[], object]
    first_run_now: bool = False


class AutopilotScheduler:
    def __init__(
        self,
        db: Database,
        gateway: Gateway,
        *,
        interval: float = 60.0,
        budget_interval: float = 3600.0,
        owner: str | None = None,
        lease_ttl: float = LEASE_TTL,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        ai_cycle: Callable[[], object] | None = None,
        ai_interval: float = 0.0,
        jobs: Sequence[Job] = (),
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.on_stop = on_stop  # releases what the jobs used (connections, the shadow evaluator)
        self.jobs = tuple(jobs)
        self.job_runs: dict[str, int] = {}
        self.ai_cycle = ai_cycle  # the AI supervisor's cycle (server.ai.jobs), run under the same lease
        self.ai_interval = ai_interval
        self.gateway = gateway
        self.interval = interval
        self.budget_interval = budget_interval
        self.owner = owner or default_owner()
        self.clock = clock
        self.lease = Lease(db, LEASE_NAME, self.owner, ttl=lease_ttl, clock=clock)
        self.rng = np.random.default_rng()
        self.cycles = 0
        self.budget_cycles = 0
        self._scheduler: Any = None
        self._lock = threading.Lock()

    # -- jobs -----------------------------------------------------------------------------------
    def holds_lease(self) -> bool:
        try:
            return self.lease.acquire()
        except Exception:
            log.exception("autopilot lease could not be checked; not running")
            return False

    def run_links(self) -> list[CycleResult] | None:
        """One cycle over every active link, if this process holds the lease."""
        if not self.holds_lease():
            return None
        with self.lease.exclusive() as alone:
            if not alone:
                return None
            with metrics().job_run("autopilot.links"):
                results = run_links_cycle(
                    self.db, self.gateway, rng=self.rng, clock=self.clock, trigger="schedule", owner=self.owner
                )
            with self._lock:
                self.cycles += 1
            outcomes: dict[str, int] = {}
            for r in results:
                outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
            log.info("autopilot cycle over %d links: %s", len(results), outcomes)
            return results

    def run_budgets(self) -> list[CycleResult] | None:
        if not self.holds_lease():
            return None
        with self.lease.exclusive() as alone:
            if not alone:
                return None
            with metrics().job_run("autopilot.budget"), self.db.unit_of_work() as uow:
                results = run_budget_arbitrage(
                    uow.session, self.gateway, now=self.clock(), trigger="schedule", owner=self.owner
                )
                uow.commit()
            with self._lock:
                self.budget_cycles += 1
            return results

    def run_ai_supervisor(self) -> object | None:
        """One AI supervisor cycle, if this process holds the lease (its own job: a slow model
        never delays the allocation cycles)."""
        if self.ai_cycle is None or not self.holds_lease():
            return None
        with metrics().job_run("ai.supervisor"):
            return self.ai_cycle()

    def run_job(self, job: Job) -> object | None:
        """Run a housekeeping job if this process holds the lease; its failure is logged."""
        if not self.holds_lease():
            return None
        try:
            with metrics().job_run(job.name):
                result = job.run()
        except Exception:
            log.exception("scheduled job %s failed; it runs again in %.0f s", job.name, job.seconds)
            return None
        with self._lock:
            self.job_runs[job.name] = self.job_runs.get(job.name, 0) + 1
        return result

    def heartbeat(self) -> None:
        self.holds_lease()

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        scheduler = BackgroundScheduler(timezone=UTC, job_defaults={"coalesce": True, "max_instances": 1})
        scheduler.add_job(
            self.run_links, "interval", seconds=self.interval, id="autopilot.links", next_run_time=datetime.now(UTC)
        )
        scheduler.add_job(self.run_budgets, "interval", seconds=self.budget_interval, id="autopilot.budget")
        if self.ai_cycle is not None and self.ai_interval > 0:
            scheduler.add_job(self.run_ai_supervisor, "interval", seconds=self.ai_interval, id="ai.supervisor")
        for job in self.jobs:
            scheduler.add_job(
                self.run_job,
                "interval",
                args=(job,),
                seconds=job.seconds,
                id=job.name,
                **({"next_run_time": datetime.now(UTC)} if job.first_run_now else {}),
            )
        scheduler.add_job(self.heartbeat, "interval", seconds=max(self.lease.ttl / 3, 1.0), id="autopilot.heartbeat")
        scheduler.start()
        self._scheduler = scheduler
        log.info(
            "autopilot scheduler started as %s (every %.0f s, budgets every %.0f s)",
            self.owner,
            self.interval,
            self.budget_interval,
        )

    def stop(self) -> None:
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=True)
        try:
            self.lease.release()
        except Exception:
            log.exception("autopilot lease could not be released; it expires by itself")
        if self.on_stop is not None:
            self.on_stop()
