"""`smartlinks ledger verify | book-conversions`, `smartlinks treasury run`, `smartlinks payouts
resume`, `smartlinks reconcile`, `smartlinks alerts deliver`: registered on the main group by
`server.cli`. Each command is one process doing one job against the database (and OPA: OPA_URL,
or a sidecar of its own for the duration of the command)."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from server.config import ConfigError, Settings


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _database(settings: Settings) -> Any:
    from server.db import Database

    database = Database()
    database.configure(settings.database_url)
    return database


@contextlib.contextmanager
def _gateway(settings: Settings) -> Iterator[Any]:
    """A governance gateway on OPA_URL, or on a sidecar started for this command."""
    from server.governance.gateway import Gateway
    from server.policy.opa_client import OpaClient

    sidecar = None
    url = settings.opa_url
    revision = settings.policy_revision
    if not url:
        from server.cli import build_local_bundle
        from server.policy.sidecar import OpaSidecar, free_loopback_port

        info = build_local_bundle(settings)
        sidecar = OpaSidecar(
            Path(settings.opa_bin),
            info.path,
            port=free_loopback_port(),
            log_path=Path(settings.var_dir) / "opa-finance.log",
        )
        sidecar.start()
        sidecar.wait_ready(timeout=30)
        url, revision = sidecar.url, info.revision
    opa = OpaClient(url, connect_timeout=settings.opa_connect_timeout, timeout=settings.opa_timeout)
    opa.fallback_revision = revision
    try:
        yield Gateway(opa, mode=settings.mode)
    finally:
        opa.close()
        if sidecar is not None:
            sidecar.stop()


def _deliver(settings: Settings, database: Any) -> None:
    from server.finance.services import dispatch_alerts, make_channels

    dispatch_alerts(database.session, make_channels(settings))


@click.group()
def ledger() -> None:
    """The double-entry ledger."""


@ledger.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def ledger_verify(as_json: bool) -> None:
    """Check every ledger invariant; exit 1 on any violation (and raise an alert)."""
    from billing.alerts import raise_alert
    from billing.ledger import verify
    from billing.rules import content_hash

    settings = _settings()
    database = _database(settings)
    with database.unit_of_work() as uow:
        report = verify(uow.session)
        if not report.ok:
            signature = content_hash(
                {
                    "v": sorted(
                        v["code"] + str(v.get("entry_id") or v.get("account") or v.get("currency"))
                        for v in report.violations
                    )
                }
            )
            raise_alert(
                uow.session,
                "ledger_verification",
                signature[:32],
                f"Ledger verification found {len(report.violations)} violation(s)",
                "; ".join(v["message"] for v in report.violations[:10]),
                severity="critical",
                data={"violations": report.violations[:50]},
            )
            uow.commit()
    _deliver(settings, database)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        click.echo(f"{report.entries} entries, {report.postings} postings, {report.accounts} accounts checked")
        for violation in report.violations:
            click.echo(f"VIOLATION {violation['code']}: {violation['message']}", err=True)
        click.echo(
            "ledger OK: every entry balances, balances equal their postings, the trial balance is zero"
            if report.ok
            else f"ledger NOT OK: {len(report.violations)} violation(s)"
        )
    database.dispose()
    if not report.ok:
        sys.exit(1)


@ledger.command("book-conversions")
@click.option("--limit", default=10000, show_default=True)
def ledger_book_conversions(limit: int) -> None:
    """Book approved conversions that have no ledger entry yet (idempotent by conversion id)."""
    from billing.alerts import raise_alert
    from billing.booking import book_approved_conversions

    settings = _settings()
    database = _database(settings)

    def on_failure(session: Any, conversion_id: int, message: str) -> None:
        raise_alert(
            session,
            "booking_failed",
            str(conversion_id),
            f"Conversion {conversion_id} cannot be booked",
            message,
            severity="warning",
            data={"conversion_id": conversion_id},
        )

    with database.unit_of_work() as uow:
        run = book_approved_conversions(uow.session, limit=limit, on_failure=on_failure)
        uow.commit()
    _deliver(settings, database)
    database.dispose()
    click.echo(f"booked {run.booked} conversion(s), {run.failed} refused")


@click.group()
def treasury() -> None:
    """The treasury: scheduled payouts."""


@treasury.command("run")
@click.option("--workers", default=8, show_default=True, help="Provider calls in flight at once.")
@click.option("--batch-size", default=200, show_default=True, help="Payouts decided per transaction.")
def treasury_run(workers: int, batch_size: int) -> None:
    """Propose, decide and send the payouts that are due, after finishing unfinished ones."""
    from billing.treasury import run_treasury
    from server.db import utcnow
    from server.finance.services import build

    settings = _settings()
    database = _database(settings)
    with _gateway(settings) as gateway:
        payments = build(settings, gateway)
        report = run_treasury(
            database.session,
            gateway,
            payments.payments.providers,
            utcnow(),
            vault=payments.vault,
            payments_mode=settings.payments_mode,
            default_threshold=settings.default_payout_threshold,
            batch_size=batch_size,
            workers=workers,
        )
    _deliver(settings, database)
    database.dispose()
    click.echo(json.dumps(report.as_dict(), indent=2))
    if report.errors and not (report.approved or report.resumed):
        sys.exit(2)


@click.group()
def payouts() -> None:
    """Payouts."""


@payouts.command("resume")
@click.option(
    "--poll-after",
    default=0,
    show_default=True,
    help="Ask the provider about payouts submitted this many seconds ago or more.",
)
def payouts_resume(poll_after: int) -> None:
    """Finish payouts a crash or an outage left: resubmit approved ones with their stored key,
    poll submitted ones. Never pays twice."""
    from billing.payouts import resume_payouts
    from server.finance.services import build

    settings = _settings()
    database = _database(settings)
    with _gateway(settings) as gateway:
        payments = build(settings, gateway)
        report = resume_payouts(
            database.session, payments.payments, poll_after=timedelta(seconds=poll_after), include_backoff=True
        )
    _deliver(settings, database)
    database.dispose()
    click.echo(json.dumps(report.__dict__, indent=2))


@click.command("reconcile")
@click.option("--provider", type=click.Choice(["stripe", "paypal"]), required=True)
@click.option("--days", default=7, show_default=True)
def reconcile_command(provider: str, days: int) -> None:
    """Compare a provider's records with the payouts and the ledger; exit 1 on differences."""
    from billing.reconcile import reconcile
    from server.db import utcnow
    from server.finance.services import make_providers

    settings = _settings()
    found = make_providers(settings).get(provider)
    if found is None:
        raise click.ClickException(f"{provider} has no credentials configured")
    database = _database(settings)
    with database.unit_of_work() as uow:
        report = reconcile(uow.session, found, utcnow() - timedelta(days=days))
        uow.commit()
        status, differences = report.status, list(report.differences)
        click.echo(f"{report.id}: {status}, {report.checked} checked, {report.matched} matched")
    for difference in differences:
        click.echo(
            f"  {difference['kind']}: {difference.get('payout_id') or difference.get('reference')}: "
            f"{difference['detail']}"
        )
    _deliver(settings, database)
    database.dispose()
    if status != "clean":
        sys.exit(1)


@click.group()
def alerts() -> None:
    """Payment incident alerts."""


@alerts.command("deliver")
def alerts_deliver() -> None:
    """Send undelivered alerts through the configured channels (webhook, email)."""
    from server.finance.services import dispatch_alerts, make_channels

    settings = _settings()
    database = _database(settings)
    sent = dispatch_alerts(database.session, make_channels(settings))
    database.dispose()
    click.echo(f"{sent} alert delivery(ies) sent")


def register(main: click.Group) -> None:
    for command in (ledger, treasury, payouts, reconcile_command, alerts):
        main.add_command(command)
