"""`smartlinks ai ...`: run one supervisor cycle, read its state, and the incident switches
(disable / enable the supervisor, force or lift degraded mode). Registered on the main group by
`server.cli`. The switches write the database directly: they work while OPA is down, and every
process sees them on its next cycle."""

from __future__ import annotations

import getpass

import click
from sqlalchemy import func, select

from server.config import ConfigError, Settings
from server.db import Database, utcnow


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _database(settings: Settings) -> Database:
    database = Database()
    database.configure(settings.database_url)
    return database


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


@click.group("ai")
def ai() -> None:
    """The AI supervisor: run a cycle, read its state, switch it off or to degraded mode."""


@ai.command("run-once")
def run_once() -> None:
    """Run one supervisor cycle now and print its proposals and their decisions."""
    from server.ai.jobs import cycle_runner
    from server.autopilot.cli import opa_for, runtime

    settings = _settings()
    with opa_for(settings) as (url, revision):
        rt = runtime(settings, url, revision)
        try:
            report = cycle_runner(settings, rt.db, rt.gateway, trigger="cli")()
        finally:
            rt.close()
    if report.cycle_id is None:
        click.echo("the AI supervisor is disabled: nothing ran (smartlinks ai enable)")
        return
    mode = report.mode + (f" ({report.degraded_reason})" if report.degraded_reason else "")
    click.echo(f"cycle {report.cycle_id}: mode {mode}, status {report.status}")
    if report.error:
        click.echo(f"  error: {report.error}")
    for p in report.proposals:
        target = f"{p.target_kind}:{p.target_id}" if p.target_kind else "-"
        codes = ", ".join(str(r.get("code")) for r in p.reasons) or "-"
        click.echo(f"  {p.id}\t{p.proposed_type}\t{target}\t{p.status}\t{p.decision_id}\t{codes}")
    if not report.proposals:
        click.echo("  no proposal")


def _switch(*, enabled: bool | None = None, forced: bool | None = None, reason: str | None) -> None:
    from server.ai.state import set_controls

    database = _database(_settings())
    try:
        with database.unit_of_work() as uow:
            set_controls(uow.session, by=_who(), now=utcnow(), enabled=enabled, forced_degraded=forced, reason=reason)
            uow.commit()
    finally:
        database.dispose()


@ai.command("disable")
@click.option("--reason", required=True, help="Why (recorded with your name).")
def disable(reason: str) -> None:
    """Stop the supervisor: no cycle runs (neither model nor rules) until `smartlinks ai enable`."""
    _switch(enabled=False, reason=reason)
    click.echo("AI supervisor disabled: no cycle runs until `smartlinks ai enable`")


@ai.command("enable")
@click.option("--reason", default=None, help="Why (recorded with your name).")
def enable(reason: str | None) -> None:
    """Let the supervisor run again on its next cycle."""
    _switch(enabled=True, reason=reason)
    click.echo("AI supervisor enabled: it runs on its next cycle")


@ai.command("degrade")
@click.option("--off", "lift", is_flag=True, help="Lift the forced degraded mode.")
@click.option("--reason", default=None, help="Why (recorded with your name).")
def degrade(lift: bool, reason: str | None) -> None:
    """Force degraded mode (rule-based supervisor, no model call), or lift it with --off."""
    _switch(forced=not lift, reason=reason)
    click.echo("forced degraded mode lifted" if lift else "degraded mode forced: the model is not called")


@ai.command("status")
def status() -> None:
    """Print the switches, the mode in force, the circuit, the last cycle and the queue."""
    from server.ai.models import AiCycle, AiProposal
    from server.ai.monitor import tokens_today
    from server.ai.state import current_period, load_state

    settings = _settings()
    database = _database(settings)
    now = utcnow()
    try:
        with database.unit_of_work() as uow:
            s = uow.session
            state = load_state(s)
            period = current_period(s)
            last = s.scalars(select(AiCycle).order_by(AiCycle.id.desc()).limit(1)).first()
            waiting = s.scalar(
                select(func.count()).select_from(AiProposal).where(AiProposal.status == "pending_approval")
            )
            spent = tokens_today(s, now)
            uow.commit()
    finally:
        database.dispose()
    click.echo(f"supervisor:  {'enabled' if state.enabled else 'DISABLED'}" + _control(state))
    click.echo(f"forced degraded mode: {'yes' if state.forced_degraded else 'no'}")
    if period is not None:
        click.echo(f"mode in force: {period.mode} ({period.reason}) since {period.started_at.isoformat()}")
    else:
        click.echo("mode in force: none yet (no cycle has run)")
    breaker = f"{state.circuit_state}, {state.consecutive_failures} consecutive failures"
    if state.circuit_opened_at is not None:
        breaker += f", opened {state.circuit_opened_at.isoformat()}"
    click.echo(f"circuit:     {breaker}")
    if state.last_error:
        click.echo(f"last error:  {state.last_error[:200]}")
    model = settings.openai_model if settings.openai_api_key else "no OPENAI_API_KEY: degraded mode"
    click.echo(f"model:       {model} at {settings.openai_base_url or 'https://api.openai.com/v1'}")
    if last is not None:
        click.echo(
            f"last cycle:  {last.id} at {last.started_at.isoformat()}, {last.mode}, {last.status}, "
            f"{last.proposals} proposals"
        )
    click.echo(f"waiting for approval: {waiting or 0}")
    click.echo(f"tokens today: {spent} of {settings.ai_daily_token_budget}")


def _control(state: object) -> str:
    by = getattr(state, "control_by", None)
    if not by:
        return ""
    at = getattr(state, "control_at", None)
    reason = getattr(state, "control_reason", None)
    return f" (last switched by {by}{' at ' + at.isoformat() if at else ''}{': ' + reason if reason else ''})"


def register(main: click.Group) -> None:
    main.add_command(ai)
