"""`smartlinks ledger verify | book-conversions`, `smartlinks treasury run`, `smartlinks payouts
resume`, `smartlinks reconcile`, `smartlinks alerts deliver`, `smartlinks documents generate |
deliver`: registered on the main group by `server.cli`. Each command is one process doing one
job against the database (and OPA: OPA_URL, or a sidecar of its own for the duration of the
command)."""

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
    from server.finance.services import make_channels, verify_ledger

    settings = _settings()
    database = _database(settings)
    report = verify_ledger(database, make_channels(settings))
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
    from server.finance.services import book_conversions, make_channels

    settings = _settings()
    database = _database(settings)
    run = book_conversions(database, make_channels(settings), limit=limit)
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
    from server.finance.services import build, resume_unfinished_payouts

    settings = _settings()
    database = _database(settings)
    with _gateway(settings) as gateway:
        payments = build(settings, gateway)
        try:
            report = resume_unfinished_payouts(database, payments, poll_after=poll_after)
        finally:
            payments.close()
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


@click.group()
def documents() -> None:
    """Financial documents: payout receipts, advertiser invoices, and emailing them."""


@documents.command("generate")
@click.option("--receipts/--no-receipts", default=True, show_default=True, help="Receipts for paid payouts.")
@click.option("--invoices/--no-invoices", default=True, show_default=True, help="Advertiser invoices of a month.")
@click.option("--month", default=None, help="The month to invoice, YYYY-MM (default: last month).")
def documents_generate(receipts: bool, invoices: bool, month: str | None) -> None:
    """Issue the receipts of newly paid payouts and a month's invoices (idempotent: a document
    already issued is not issued again)."""
    from datetime import datetime

    from server.finance.services import generate_invoices, generate_receipts

    invoice_month = None
    if month:
        try:
            invoice_month = datetime.strptime(month, "%Y-%m").date()
        except ValueError as exc:
            raise click.ClickException(f"--month is YYYY-MM, got {month!r}") from exc
    settings = _settings()
    database = _database(settings)
    report: dict[str, Any] = {"receipts": [], "invoices": [], "credit_notes": [], "errors": []}
    try:
        if receipts:
            run = generate_receipts(database, settings)
            report["receipts"], report["errors"] = run.receipts, report["errors"] + run.errors
        if invoices:
            run = generate_invoices(database, settings, invoice_month)
            report["invoices"], report["errors"] = run.invoices, report["errors"] + run.errors
            report["credit_notes"] = run.credit_notes
    finally:
        database.dispose()
    click.echo(json.dumps(report, indent=2))


@documents.command("deliver")
def documents_deliver() -> None:
    """Email the documents that are due through SMTP_HOST (retries with backoff; a document is
    never sent twice on purpose). Without SMTP settings documents stay pending."""
    from server.finance.services import deliver_pending_documents

    settings = _settings()
    database = _database(settings)
    try:
        run = deliver_pending_documents(database, settings)
    finally:
        database.dispose()
    if run is None:
        raise click.ClickException("SMTP_HOST is not set: documents stay pending until it is")
    click.echo(f"{run.sent} sent, {run.retried} to retry, {run.failed} failed for good")
    for error in run.errors:
        click.echo(f"  {error}", err=True)


def register(main: click.Group) -> None:
    for command in (ledger, treasury, payouts, reconcile_command, alerts, documents):
        main.add_command(command)
