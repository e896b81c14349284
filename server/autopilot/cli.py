"""`smartlinks autopilot run | run-once` and `smartlinks simulate`, registered on the main group
by `server.cli`. The scheduler runs only in processes started here or by `smartlinks serve`."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from server.config import ConfigError, Settings
from server.db import Database
from server.governance.gateway import Gateway
from server.policy.opa_client import OpaClient

if TYPE_CHECKING:
    from server.policies.shadow import ShadowEvaluator


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@dataclass
class Runtime:
    """What a cycle needs outside a web request: the database and a gateway to OPA."""

    settings: Settings
    db: Database
    opa: OpaClient
    gateway: Gateway
    shadow: ShadowEvaluator | None = None

    def close(self) -> None:
        if self.shadow is not None:
            self.shadow.stop()
        self.opa.close()
        self.db.dispose()


def runtime(settings: Settings, opa_url: str, revision: str | None = None, shadow_url: str | None = None) -> Runtime:
    """The database and a gateway to OPA for cycles outside a web request. With a shadow sidecar
    (`shadow_url`, else OPA_SHADOW_URL) the gateway's decisions are evaluated again by the version
    in shadow, as the web workers' are: the autopilot's and the treasury's decisions are most of a
    shadow run's sample."""
    from server.policies.shadow import ShadowEvaluator

    db = Database()
    db.configure(settings.database_url)
    opa = OpaClient(opa_url, connect_timeout=settings.opa_connect_timeout, timeout=settings.opa_timeout)
    opa.fallback_revision = revision or settings.policy_revision
    gateway = Gateway(opa, mode=settings.mode)
    evaluator = None
    shadow_url = shadow_url or settings.opa_shadow_url
    if shadow_url:
        evaluator = ShadowEvaluator(db, shadow_url, timeout=max(settings.opa_timeout, 1.0))
        gateway.shadow = evaluator
    return Runtime(settings, db, opa, gateway, evaluator)


@contextlib.contextmanager
def opa_for(settings: Settings) -> Iterator[tuple[str, str | None]]:
    """OPA_URL when set; otherwise a sidecar of our own on a free loopback port, for as long as
    the block runs. Yields (url, policy revision)."""
    if settings.opa_url:
        yield settings.opa_url, settings.policy_revision
        return
    from server.cli import build_local_bundle
    from server.policy.sidecar import OpaSidecar, free_loopback_port

    info = build_local_bundle(settings)
    sidecar = OpaSidecar(
        Path(settings.opa_bin),
        info.path,
        port=free_loopback_port(),
        log_path=Path(settings.var_dir) / "opa-autopilot.log",
    )
    sidecar.start()
    try:
        sidecar.wait_ready(timeout=30)
        sidecar.supervise()
        yield sidecar.url, info.revision
    finally:
        sidecar.stop()


def start_scheduler(
    settings: Settings, opa_url: str, revision: str | None = None, shadow_url: str | None = None
) -> Any:
    """Start the autopilot scheduler in this process (the `smartlinks serve` supervisor), or
    return None when AUTOPILOT_ENABLED is off. Stop it with `.stop()`."""
    if not settings.autopilot_enabled:
        return None
    from server.ai.jobs import scheduled_cycle
    from server.autopilot.scheduler import AutopilotScheduler
    from server.jobs import housekeeping_jobs

    rt = runtime(settings, opa_url, revision, shadow_url)
    scheduler = AutopilotScheduler(
        rt.db,
        rt.gateway,
        interval=settings.autopilot_interval_seconds,
        budget_interval=settings.budget_interval_seconds,
        ai_cycle=scheduled_cycle(settings, rt.db, rt.gateway),
        ai_interval=settings.ai_supervisor_interval_seconds,
        jobs=housekeeping_jobs(settings, rt.db, rt.gateway),
        on_stop=rt.close,
    )
    scheduler.start()
    return scheduler


@click.group()
def autopilot() -> None:
    """The autopilot: optimisation cycles decided by the policies."""


@autopilot.command("run")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=None,
    envvar="AUTOPILOT_METRICS_PORT",
    help="Serve GET /metrics (METRICS_TOKEN or METRICS_PUBLIC, as the app) on this port; 0 picks one. Default: off.",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    envvar="AUTOPILOT_METRICS_HOST",
    help="Address of the metrics listener (0.0.0.0 in a container).",
)
def autopilot_run(metrics_port: int | None, metrics_host: str) -> None:
    """Run the scheduler in the foreground (a separate worker process) until SIGTERM or Ctrl-C."""
    from server.ai.jobs import scheduled_cycle
    from server.autopilot.scheduler import AutopilotScheduler
    from server.jobs import housekeeping_jobs
    from server.observability.listener import MetricsListener

    settings = _settings()
    listener = None
    if metrics_port is not None:
        listener = MetricsListener(settings, metrics_host, metrics_port)
        try:
            bound = listener.start()
        except OSError as exc:
            raise click.ClickException(f"cannot serve metrics on {metrics_host}:{metrics_port}: {exc}") from exc
        click.echo(f"metrics on http://{metrics_host}:{bound}/metrics")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with opa_for(settings) as (url, revision):
        rt = runtime(settings, url, revision)
        scheduler = AutopilotScheduler(
            rt.db,
            rt.gateway,
            interval=settings.autopilot_interval_seconds,
            budget_interval=settings.budget_interval_seconds,
            ai_cycle=scheduled_cycle(settings, rt.db, rt.gateway),
            ai_interval=settings.ai_supervisor_interval_seconds,
            jobs=housekeeping_jobs(settings, rt.db, rt.gateway),
        )
        scheduler.start()
        click.echo(f"autopilot scheduler {scheduler.owner} running (OPA at {url}); Ctrl-C stops it")
        try:
            while not stop.wait(0.5):
                pass
        finally:
            scheduler.stop()
            rt.close()
            if listener is not None:
                listener.stop()


@autopilot.command("run-once")
@click.option("--link", "link_ids", multiple=True, help="Only this link (repeatable); default every active link.")
@click.option("--budget", is_flag=True, help="Also run one budget arbitrage cycle.")
def autopilot_run_once(link_ids: tuple[str, ...], budget: bool) -> None:
    """Run one cycle now and print each link's outcome and reasons."""
    from server.autopilot.services import run_budget_arbitrage, run_links_cycle

    settings = _settings()
    with opa_for(settings) as (url, revision):
        rt = runtime(settings, url, revision)
        try:
            results = run_links_cycle(
                rt.db,
                rt.gateway,
                rng=np.random.default_rng(),
                clock=lambda: datetime.now(UTC),
                trigger="cli",
                link_ids=list(link_ids) or None,
            )
            if budget:
                with rt.db.unit_of_work() as uow:
                    results += run_budget_arbitrage(uow.session, rt.gateway, now=datetime.now(UTC), trigger="cli")
                    uow.commit()
        finally:
            rt.close()
    if not results:
        click.echo("no active link")
    for r in results:
        weights = " ".join(f"{k}={v:.3f}" for k, v in sorted((r.approved or {}).items()))
        click.echo(f"{r.run.scope}\t{r.outcome}\t{r.decision_id or '-'}\t{weights}".rstrip())
        for reason in r.reasons:
            click.echo(f"    {reason.get('code')}: {reason.get('message')}")


@click.command("simulate")
@click.option("--url", default=None, help="Drive a running server over HTTP instead of in process.")
@click.option("--token", default=None, help="API token with links:write (with --url).")
@click.option("--hours", default=48, show_default=True, type=int, help="Simulated hours.")
@click.option("--clicks-per-hour", default=600, show_default=True, type=int)
@click.option("--cycle-minutes", default=30, show_default=True, type=int, help="Simulated minutes between cycles.")
@click.option(
    "--drift", type=click.Choice(["none", "piecewise", "random_walk"]), default="piecewise", show_default=True
)
@click.option("--algorithm", default="thompson_sampling", show_default=True)
@click.option("--seed", default=7, show_default=True, type=int)
def simulate(
    url: str | None,
    token: str | None,
    hours: int,
    clicks_per_hour: int,
    cycle_minutes: int,
    drift: str,
    algorithm: str,
    seed: int,
) -> None:
    """Simulate a market against the real service (clicks, postbacks, governed cycles); print
    profit and decisions."""
    from server.autopilot.simulation import run_cli_simulation
    from server.autopilot.simulator import default_scenario

    scenario = default_scenario(
        hours=hours,
        clicks_per_hour=clicks_per_hour,
        cycle_minutes=cycle_minutes,
        drift=drift,
        algorithm=algorithm,
        seed=seed,
    )
    if url is not None and not token:
        raise click.ClickException("--url needs --token (an API token whose role has links:write)")
    report = run_cli_simulation(_settings(), scenario, url=url, token=token, echo=click.echo)
    click.echo(report)


def register(main: click.Group) -> None:
    main.add_command(autopilot)
    main.add_command(simulate)
