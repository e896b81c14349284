"""The payment services of one app (or one CLI run), built from settings on first use: the
providers, the destination vault, the alert channels and the payout engine's `Payments`; and the
finance jobs (treasury, booking, resuming payouts, reconciliation, ledger verification, financial
documents and their emailing), which `smartlinks ...` commands run by hand and the scheduler of
`smartlinks serve` runs on its own (`server.jobs`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app
from sqlalchemy.orm import Session

from billing.alerts import Channel, EmailChannel, WebhookChannel, deliver_alerts
from billing.money import to_minor
from billing.payouts import Payments
from billing.providers.base import PayoutProvider
from billing.vault import Vault
from server.config import Settings
from server.governance.gateway import Gateway

if TYPE_CHECKING:
    from billing.booking import BookingRun
    from billing.document_mail import DeliveryRun, DocumentMailer
    from billing.documents import Issuer
    from billing.ledger import Verification
    from billing.models import ReconciliationReport
    from billing.payouts import ResumeReport
    from server.db import Database

KEY = "smartlinks.payments"


def make_providers(settings: Settings) -> dict[str, PayoutProvider]:
    providers: dict[str, PayoutProvider] = {}
    if settings.stripe_api_key:
        from billing.providers.stripe_connect import StripeProvider

        providers["stripe"] = StripeProvider(settings.stripe_api_key, api_base=settings.stripe_api_base)
    if settings.paypal_client_id and settings.paypal_client_secret:
        from billing.providers.paypal import PayPalProvider

        providers["paypal"] = PayPalProvider(
            settings.paypal_client_id, settings.paypal_client_secret, api_base=settings.paypal_api_base
        )
    return providers


def make_channels(settings: Settings) -> list[Channel]:
    channels: list[Channel] = []
    if settings.alert_webhook_url:
        channels.append(WebhookChannel(settings.alert_webhook_url))
    if settings.smtp_host and settings.alert_email_to:
        channels.append(
            EmailChannel(
                host=settings.smtp_host,
                port=settings.smtp_port,
                sender=settings.smtp_from,
                recipients=[r.strip() for r in settings.alert_email_to.split(",") if r.strip()],
                username=settings.smtp_user,
                password=settings.smtp_password,
                starttls=settings.smtp_starttls,
            )
        )
    return channels


def default_threshold(settings: Settings) -> Callable[[str], int]:
    amount = Decimal(settings.default_payout_threshold)

    def minor(currency: str) -> int:
        return to_minor(amount, currency)

    return minor


@dataclass
class PaymentServices:
    settings: Settings
    payments: Payments
    channels: list[Channel]

    @property
    def vault(self) -> Vault:
        return self.payments.vault

    def close(self) -> None:
        for provider in self.payments.providers.values():
            provider.close()


def build(settings: Settings, gateway: Gateway) -> PaymentServices:
    payments = Payments(
        gateway=gateway,
        providers=make_providers(settings),
        vault=Vault(settings.payout_encryption_key),
        payments_mode=settings.payments_mode,
        default_threshold=default_threshold(settings),
    )
    return PaymentServices(settings=settings, payments=payments, channels=make_channels(settings))


def payment_services(app: Flask | None = None) -> PaymentServices:
    """This app's payment services, built on first use (no network: clients connect lazily)."""
    from server.extensions import services

    target: Any = app or current_app
    found = target.extensions.get(KEY)
    if found is None:
        svc = services(target)
        found = build(svc.settings, svc.gateway)
        target.extensions[KEY] = found
    assert isinstance(found, PaymentServices)
    return found


def close_payment_services(app: Flask) -> None:
    """Release the providers' connections of an app (its payment services, if built)."""
    found = app.extensions.pop(KEY, None)
    if isinstance(found, PaymentServices):
        found.close()


def dispatch_alerts(session_factory: Callable[[], Session], channels: list[Channel]) -> int:
    """Deliver pending alerts now; a channel failure is logged and retried on the next dispatch."""
    if not channels:
        return 0
    return deliver_alerts(session_factory, channels)


def treasury_job(settings: Settings, session_factory: Callable[[], Session], gateway: Gateway) -> dict[str, Any]:
    """One scheduled treasury run with this deployment's payment settings (the scheduler's job;
    `smartlinks treasury run` does the same by hand). Returns the run's report."""
    from billing.treasury import run_treasury
    from server.db import utcnow

    services = build(settings, gateway)
    try:
        report = run_treasury(
            session_factory,
            gateway,
            services.payments.providers,
            utcnow(),
            vault=services.vault,
            payments_mode=settings.payments_mode,
            default_threshold=settings.default_payout_threshold,
        )
        dispatch_alerts(session_factory, services.channels)
        return report.as_dict()
    finally:
        services.close()


# -- finance jobs (one unit of work each; alerts delivered after the commit) ---------------------
def verify_ledger(db: Database, channels: list[Channel]) -> Verification:
    """Check every ledger invariant; a violation raises one critical alert per distinct set of
    violations (the same broken state found again is the same incident, not a new alert)."""
    from billing.alerts import raise_alert
    from billing.ledger import verify
    from billing.rules import content_hash

    with db.unit_of_work() as uow:
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
    dispatch_alerts(db.session, channels)
    return report


def book_conversions(db: Database, channels: list[Channel], *, limit: int = 10_000) -> BookingRun:
    """Book approved conversions that have no ledger entry yet (idempotent by conversion id); one
    that cannot be booked raises a warning alert."""
    from billing.alerts import raise_alert
    from billing.booking import book_approved_conversions

    def on_failure(session: Session, conversion_id: int, message: str) -> None:
        raise_alert(
            session,
            "booking_failed",
            str(conversion_id),
            f"Conversion {conversion_id} cannot be booked",
            message,
            severity="warning",
            data={"conversion_id": conversion_id},
        )

    with db.unit_of_work() as uow:
        run = book_approved_conversions(uow.session, limit=limit, on_failure=on_failure)
        uow.commit()
    dispatch_alerts(db.session, channels)
    return run


def resume_unfinished_payouts(db: Database, services: PaymentServices, *, poll_after: float = 0) -> ResumeReport:
    """Resubmit approved payouts with their stored idempotency key and poll submitted ones."""
    from billing.payouts import resume_payouts

    report = resume_payouts(
        db.session, services.payments, poll_after=timedelta(seconds=poll_after), include_backoff=True
    )
    dispatch_alerts(db.session, services.channels)
    return report


def reconcile_providers(db: Database, services: PaymentServices, *, days: int = 7) -> list[ReconciliationReport]:
    """Reconcile every configured provider's records of the last `days` days with the payouts
    and the ledger (a difference raises an alert inside `reconcile`)."""
    from billing.reconcile import reconcile
    from server.db import utcnow

    reports = []
    for provider in services.payments.providers.values():
        with db.unit_of_work() as uow:
            reports.append(reconcile(uow.session, provider, utcnow() - timedelta(days=days)))
            uow.commit()
    dispatch_alerts(db.session, services.channels)
    return reports


# -- financial documents (billing/documents.py, billing/document_mail.py) -------------------------
def document_issuer(settings: Settings) -> Issuer:
    from billing.documents import Issuer

    return Issuer(
        name=settings.document_issuer_name,
        address=settings.document_issuer_address,
        vat=settings.document_issuer_vat,
        email=settings.document_issuer_email,
    )


def make_mailer(settings: Settings) -> DocumentMailer | None:
    """The SMTP mailer of financial documents; None without SMTP_HOST (documents stay pending)."""
    from billing.document_mail import DocumentMailer

    if not settings.smtp_host:
        return None
    return DocumentMailer(
        host=settings.smtp_host,
        port=settings.smtp_port,
        sender=settings.smtp_from,
        username=settings.smtp_user,
        password=settings.smtp_password,
        starttls=settings.smtp_starttls,
    )


@dataclass
class DocumentRun:
    receipts: list[str]
    invoices: list[str]
    errors: list[str]
    credit_notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "receipts": self.receipts,
            "invoices": self.invoices,
            "credit_notes": self.credit_notes,
            "errors": self.errors,
        }


def generate_receipts(db: Database, settings: Settings, *, limit: int = 500) -> DocumentRun:
    """A receipt for every paid payout that has none yet, each in its own unit of work (a payout
    that cannot be documented is reported and does not hold the others back)."""
    from billing.documents import DocumentError, issue_payout_receipt, paid_payouts_without_receipt

    run = DocumentRun([], [], [])
    issuer = document_issuer(settings)
    with db.reading() as session:
        payout_ids = paid_payouts_without_receipt(session, limit)
    for payout_id in payout_ids:
        with db.unit_of_work() as uow:
            try:
                document, created = issue_payout_receipt(uow.session, payout_id, issuer)
            except DocumentError as exc:
                run.errors.append(f"{payout_id}: {exc}")
                continue
            uow.commit()
            if created:
                run.receipts.append(document.number)
    return run


def generate_invoices(db: Database, settings: Settings, month: date | None = None) -> DocumentRun:
    """The invoices of `month` (by default the month before this one) for every advertiser with
    approved conversions booked in it and not reversed; one unit of work per advertiser,
    idempotent. Then a credit note for every invoiced conversion reversed after its invoice
    (any month), one unit of work each."""
    from billing.documents import (
        DocumentError,
        advertisers_to_invoice,
        credit_reversed_conversion,
        issue_advertiser_invoice,
        previous_month,
        reversed_after_invoicing,
    )
    from server.db import utcnow

    run = DocumentRun([], [], [])
    issuer = document_issuer(settings)
    month = month or previous_month(utcnow().date())
    with db.reading() as session:
        advertiser_ids = advertisers_to_invoice(session, month)
    for advertiser_id in advertiser_ids:
        with db.unit_of_work() as uow:
            try:
                document, created = issue_advertiser_invoice(uow.session, advertiser_id, month, issuer)
            except DocumentError as exc:
                run.errors.append(f"{advertiser_id}: {exc}")
                continue
            uow.commit()
            if created and document is not None:
                run.invoices.append(document.number)
    with db.reading() as session:
        reversed_items = reversed_after_invoicing(session)
    for item in reversed_items:
        with db.unit_of_work() as uow:
            try:
                note, created = credit_reversed_conversion(uow.session, item, issuer)
            except DocumentError as exc:  # e.g. the invoice is already credited in full by hand
                run.errors.append(f"conversion {item.conversion_id} ({item.invoice_number}): {exc}")
                continue
            uow.commit()
            if created:
                run.credit_notes.append(note.number)
    return run


def deliver_pending_documents(db: Database, settings: Settings) -> DeliveryRun | None:
    """Email the documents that are due (None, and nothing sent, without SMTP settings); an
    address that fails for good raises an alert, delivered through the alert channels."""
    from billing.document_mail import deliver_documents

    mailer = make_mailer(settings)
    if mailer is None:
        return None
    run = deliver_documents(db.session, mailer)
    if run.failed:
        dispatch_alerts(db.session, make_channels(settings))
    return run
