"""Tables of the money capability: ledger accounts, entries and postings (append-only), payout
profiles (destinations encrypted at rest), payouts and their state history, the treasury's daily
counters, processed webhook events, alerts and their deliveries, reconciliation reports, and the
financial documents (receipts, invoices, credit notes: immutable once issued, numbered without
gaps) with their email deliveries.

Amounts are integer minor units (BigInteger) with an ISO 4217 currency."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    event,
    false,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from server.db import Base, utcnow

APPEND_ONLY_TABLES = ("ledger_entries", "ledger_postings")


class LedgerAccount(Base):
    """An account with its four running totals, kept in the transaction of every entry."""

    __tablename__ = "ledger_accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    code: Mapped[str] = mapped_column(String(200), unique=True)  # e.g. affiliate:aff_1:payable:EUR
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(16))  # asset | liability | revenue | expense
    currency: Mapped[str] = mapped_column(String(3))
    owner_kind: Mapped[str | None] = mapped_column(String(32))
    owner_id: Mapped[str | None] = mapped_column(String(64))
    debits_must_not_exceed_credits: Mapped[bool] = mapped_column(Boolean, default=False)
    credits_must_not_exceed_debits: Mapped[bool] = mapped_column(Boolean, default=False)
    debits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_posted: Mapped[int] = mapped_column(BigInteger, default=0)
    debits_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_pending: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_ledger_accounts_owner", "owner_kind", "owner_id"),)


class JournalEntry(Base):
    """One journal entry. Never updated or deleted: a mistake is corrected by a reversing entry,
    a pending entry is settled or released by a new entry that names it."""

    __tablename__ = "ledger_entries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    content_hash: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # posted | pending | post_pending | void_pending
    pending_entry_id: Mapped[str | None] = mapped_column(ForeignKey("ledger_entries.id"), unique=True)
    reverses_entry_id: Mapped[str | None] = mapped_column(ForeignKey("ledger_entries.id"), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    meta: Mapped[dict[str, Any]]
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Posting(Base):
    """One line of an entry: a signed amount (debit positive) in the account's currency."""

    __tablename__ = "ledger_postings"

    entry_id: Mapped[str] = mapped_column(ForeignKey("ledger_entries.id"), primary_key=True)
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("ledger_accounts.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))


class PayoutProfile(Base):
    """How and when an affiliate is paid. Destinations are Fernet tokens; pages show the hint."""

    __tablename__ = "payout_profiles"

    affiliate_id: Mapped[str] = mapped_column(ForeignKey("affiliates.id"), primary_key=True)
    method: Mapped[str] = mapped_column(String(16), default="none")  # none | stripe | paypal
    destination_enc: Mapped[str | None] = mapped_column(Text)  # Stripe account id or PayPal email
    destination_hint: Mapped[str | None] = mapped_column(String(64))  # masked, safe to show
    threshold_minor: Mapped[int | None] = mapped_column(BigInteger)  # None: the global default
    threshold_currency: Mapped[str | None] = mapped_column(String(3))  # the currency threshold_minor is in
    on_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    hold_reason: Mapped[str | None] = mapped_column(Text)
    # The last change of method or destination: when, by whom, and whether the affiliate made it
    # through the portal (the payouts policy holds such a destination for a while).
    destination_changed_at: Mapped[datetime | None]
    destination_changed_by: Mapped[str | None] = mapped_column(String(128))
    destination_self_service: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Payout(Base):
    """A payout and where it stands. State changes are compare-and-set updates on `state` and
    each is recorded in payout_events; the provider idempotency key is stored before any call."""

    __tablename__ = "payouts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    affiliate_id: Mapped[str] = mapped_column(String(40), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), index=True)
    approval: Mapped[str] = mapped_column(String(16), default="none")  # none | required | approved | rejected
    manual: Mapped[bool] = mapped_column(Boolean, default=False)
    requested_by: Mapped[str] = mapped_column(String(128))
    approved_by: Mapped[str | None] = mapped_column(String(128))
    decision_id: Mapped[str | None] = mapped_column(String(40))
    reasons: Mapped[list[Any]]
    idempotency_key: Mapped[str] = mapped_column(String(80), unique=True)  # sent to the provider
    pending_entry_id: Mapped[str | None] = mapped_column(String(40))
    provider_ref: Mapped[str | None] = mapped_column(String(128), index=True)
    provider_status: Mapped[str | None] = mapped_column(String(40))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None]
    run_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    version: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_payouts_affiliate_state", "affiliate_id", "currency", "state"),)


class PayoutEvent(Base):
    """One transition of a payout (its state history)."""

    __tablename__ = "payout_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    payout_id: Mapped[str] = mapped_column(ForeignKey("payouts.id"), index=True)
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TreasuryDay(Base):
    """Money committed to payouts per currency and UTC day: the daily cap's counter, and the row
    every payout approval locks so that approvals of one currency are serialised."""

    __tablename__ = "treasury_days"

    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    committed_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    payouts: Mapped[int] = mapped_column(Integer, default=0)


class WebhookEvent(Base):
    """A provider event, processed once by (provider, event id); rejected deliveries are kept."""

    __tablename__ = "webhook_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(80))
    status: Mapped[str] = mapped_column(String(16))  # processed | ignored | rejected
    payout_id: Mapped[str | None] = mapped_column(String(40))
    detail: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    deliveries: Mapped[int] = mapped_column(Integer, default=1)

    __table_args__ = (UniqueConstraint("provider", "event_id", name="uq_webhook_events_provider_event"),)


class Alert(Base):
    """A payment incident. One row per incident (dedupe key); a repeat only counts."""

    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    severity: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(String(300))
    detail: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | acknowledged
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    acknowledged_by: Mapped[str | None] = mapped_column(String(128))


class AlertDelivery(Base):
    """One alert sent (or to be sent) through one channel."""

    __tablename__ = "alert_deliveries"

    alert_id: Mapped[str] = mapped_column(ForeignKey("alerts.id"), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16), primary_key=True)  # webhook | email
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sent | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]


class ReconciliationReport(Base):
    """Provider records compared with payouts and the ledger; `differences` lists each mismatch."""

    __tablename__ = "reconciliation_reports"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    window_start: Mapped[datetime]
    checked: Mapped[int] = mapped_column(Integer, default=0)
    matched: Mapped[int] = mapped_column(Integer, default=0)
    matched_minor: Mapped[dict[str, Any]]  # currency -> minor units matched
    differences: Mapped[list[Any]]
    status: Mapped[str] = mapped_column(String(16))  # clean | mismatch | error


class AppendOnlyViolation(RuntimeError):
    """Something tried to change or remove a journal entry or posting."""


def _refuse(_mapper: Any, _connection: Any, target: Any) -> None:
    raise AppendOnlyViolation(f"{type(target).__name__} rows are append-only: correct an entry with a reversing entry")


for _model in (JournalEntry, Posting):
    event.listen(_model, "before_update", _refuse)
    event.listen(_model, "before_delete", _refuse)


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk_changes(state: Any) -> None:
    """ORM-level bulk UPDATE/DELETE on the journal is refused too (PostgreSQL also has triggers)."""
    if not (state.is_update or state.is_delete):
        return
    for mapper in state.all_mappers:
        if mapper.class_ in (JournalEntry, Posting):
            raise AppendOnlyViolation(f"{mapper.class_.__name__} rows are append-only")


# -- financial documents (billing/documents.py) ---------------------------------------------------
IMMUTABLE_DOCUMENT_TABLES = ("financial_documents",)


class DocumentSequence(Base):
    """The last number issued in one series and year. The row is updated in the transaction that
    creates the document, so its lock serialises issuers and a rollback gives the number back."""

    __tablename__ = "document_sequences"

    series: Mapped[str] = mapped_column(String(8), primary_key=True)  # RCP | INV | CRN
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last_number: Mapped[int] = mapped_column(Integer, default=0)


class FinancialDocument(Base):
    """An issued receipt, invoice or credit note. Never updated or deleted once issued: a mistake
    is corrected by a credit note that names the original (`credits_document_id`)."""

    __tablename__ = "financial_documents"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)  # e.g. RCP-2026-000001
    kind: Mapped[str] = mapped_column(String(16), index=True)  # receipt | invoice | credit_note
    series: Mapped[str] = mapped_column(String(8))
    year: Mapped[int] = mapped_column(Integer)
    sequence: Mapped[int] = mapped_column(Integer)
    source_key: Mapped[str] = mapped_column(String(200), unique=True)  # what it is for: one document each
    affiliate_id: Mapped[str | None] = mapped_column(String(40), index=True)
    advertiser_id: Mapped[str | None] = mapped_column(String(40), index=True)
    payout_id: Mapped[str | None] = mapped_column(String(40))
    credits_document_id: Mapped[str | None] = mapped_column(ForeignKey("financial_documents.id"))
    period_start: Mapped[date | None] = mapped_column(Date)
    period_end: Mapped[date | None] = mapped_column(Date)
    recipient_name: Mapped[str] = mapped_column(String(200))
    recipient_email: Mapped[str | None] = mapped_column(String(254))
    totals: Mapped[dict[str, Any]]  # currency -> minor units
    content: Mapped[dict[str, Any]]  # everything the document shows (issuer, lines, references)
    html: Mapped[str] = mapped_column(Text)
    html_sha256: Mapped[str] = mapped_column(String(64))
    pdf: Mapped[bytes] = mapped_column(LargeBinary)
    pdf_sha256: Mapped[str] = mapped_column(String(64))
    issued_by: Mapped[str] = mapped_column(String(128))
    issued_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)

    __table_args__ = (UniqueConstraint("series", "year", "sequence", name="uq_financial_documents_series_number"),)


class DocumentDelivery(Base):
    """One emailing of a document: the first one, then one per explicit resend (`generation`).

    pending -> sending (attempt id recorded and committed before SMTP) -> sent, or back to
    pending with a backoff, or failed for good (an alert). A `sending` row left by a crash is
    retried with the same Message-ID after a grace period: at least once, at most one extra copy
    per crash, recognisable as the same message."""

    __tablename__ = "document_deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    document_id: Mapped[str] = mapped_column(ForeignKey("financial_documents.id"), index=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    recipient: Mapped[str | None] = mapped_column(String(254))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)  # pending|sending|sent|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    attempt_id: Mapped[str | None] = mapped_column(String(40))
    message_id: Mapped[str] = mapped_column(String(200))
    next_attempt_at: Mapped[datetime | None]
    claimed_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None]
    requested_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("document_id", "generation", name="uq_document_deliveries_generation"),)


class ImmutableDocument(RuntimeError):
    """Something tried to change or remove an issued document."""


def _refuse_document_change(_mapper: Any, _connection: Any, target: Any) -> None:
    raise ImmutableDocument(f"document {target.number} is issued and immutable: correct it with a credit note")


event.listen(FinancialDocument, "before_update", _refuse_document_change)
event.listen(FinancialDocument, "before_delete", _refuse_document_change)


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk_document_changes(state: Any) -> None:
    if not (state.is_update or state.is_delete):
        return
    for mapper in state.all_mappers:
        if mapper.class_ is FinancialDocument:
            raise ImmutableDocument("issued documents are immutable: correct one with a credit note")
