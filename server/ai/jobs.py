"""The AI supervisor as a scheduled job (added to the autopilot scheduler, under its lease) and as
a one-off run for the CLI."""

from __future__ import annotations

from collections.abc import Callable

from server.ai.alerts import deliver_ai_alerts
from server.ai.client import AIClientFactory
from server.ai.supervisor import CycleReport, run_supervisor_cycle
from server.config import Settings
from server.db import Database, utcnow
from server.governance.gateway import Gateway


def cycle_runner(settings: Settings, db: Database, gateway: Gateway, *, trigger: str) -> Callable[[], CycleReport]:
    """A callable that runs one cycle now and delivers the alerts it raised."""
    factory = AIClientFactory(settings)

    def run() -> CycleReport:
        return run_supervisor_cycle(
            db.session,
            gateway,
            factory,
            utcnow(),
            trigger=trigger,
            deliver=lambda: deliver_ai_alerts(db.session, settings),
        )

    return run


def scheduled_cycle(settings: Settings, db: Database, gateway: Gateway) -> Callable[[], CycleReport] | None:
    """The scheduler's job, or None when AI_SUPERVISOR_INTERVAL_SECONDS is 0."""
    if settings.ai_supervisor_interval_seconds <= 0:
        return None
    return cycle_runner(settings, db, gateway, trigger="schedule")
