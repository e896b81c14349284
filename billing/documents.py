"""Financial documents: a receipt (remittance advice) for every paid payout, a monthly invoice for
every advertiser with approved conversions booked in the month, and credit notes that correct an
issued document.

Numbers run per series and year without gaps (RCP-2026-000001, INV-2026-000001, CRN-...): the
sequence row is incremented in the transaction that inserts the document, so its row lock (and
SQLite's single writer) serialises issuers, and a rollback gives the number back. Each document
has a unique source key (the payout, the advertiser and month, the credit note's idempotency
key), so issuing twice yields one document. An issued document is immutable (the ORM refuses
changes; on PostgreSQL a trigger does too) and stores its rendered HTML and PDF with their
SHA-256. Amounts are integer minor units in the document's currencies; nothing is converted.

Every function writes in the caller's transaction; the caller commits."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from enum import StrEnum
from typing import Any

from sqlalchemy import String, cast, exists, func, literal, select, update
from sqlalchemy.orm import Session, aliased

from billing.document_render import render_html, render_pdf
from billing.ledger import _dialect_insert, rowcount
from billing.models import (
    DocumentDelivery,
    DocumentSequence,
    FinancialDocument,
    JournalEntry,
    LedgerAccount,
    Payout,
    PayoutEvent,
    Posting,
)
from billing.money import MoneyError, check_currency, format_minor
from server.db import json_safe, utcnow
from server.links.models import Advertiser, Affiliate, Conversion, Offer


class DocumentKind(StrEnum):
    RECEIPT = "receipt"
    INVOICE = "invoice"
    CREDIT_NOTE = "credit_note"


SERIES = {DocumentKind.RECEIPT: "RCP", DocumentKind.INVOICE: "INV", DocumentKind.CREDIT_NOTE: "CRN"}
TITLES = {
    DocumentKind.RECEIPT: "Payout receipt (remittance advice)",
    DocumentKind.INVOICE: "Invoice",
    DocumentKind.CREDIT_NOTE: "Credit note",
}


class DocumentError(Exception):
    """A document that cannot be issued; `status` is the HTTP status an API would answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Issuer:
    """Who issues the documents (printed on each): DOCUMENT_ISSUER_* settings."""

    name: str
    address: str = ""
    vat: str = ""
    email: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"name": self.name, "address": self.address, "vat": self.vat, "email": self.email}


def source_key_receipt(payout_id: str) -> str:
    return f"receipt:payout:{payout_id}"


def source_key_invoice(advertiser_id: str, month: date) -> str:
    return f"invoice:{advertiser_id}:{month:%Y-%m}"


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(month: date) -> date:
    return date(month.year + (month.month == 12), month.month % 12 + 1, 1)


def previous_month(day: date) -> date:
    first = month_start(day)
    return date(first.year - (first.month == 1), (first.month - 2) % 12 + 1, 1)


def _at_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


# -- numbering ------------------------------------------------------------------------------------
def allocate_number(session: Session, series: str, year: int) -> int:
    """The next number of `series` in `year`, in the caller's transaction (see the module
    docstring: the UPDATE's row lock serialises concurrent issuers until they commit)."""
    session.execute(
        _dialect_insert(session, DocumentSequence)
        .values(series=series, year=year, last_number=0)
        .on_conflict_do_nothing(index_elements=["series", "year"])
    )
    number = session.execute(
        update(DocumentSequence)
        .where(DocumentSequence.series == series, DocumentSequence.year == year)
        .values(last_number=DocumentSequence.last_number + 1)
        .returning(DocumentSequence.last_number)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    return int(number)


def message_id_for(document: FinancialDocument, generation: int, domain: str = "smartlinks.documents") -> str:
    """The Message-ID of one emailing of a document: the same for every retry of it (a copy sent
    again after a crash is recognisably the same message), new for an explicit resend."""
    return f"<{document.number}.{generation}.{document.pdf_sha256[:12]}@{domain}>"


def _issue(
    session: Session,
    kind: DocumentKind,
    source_key: str,
    *,
    content: dict[str, Any],
    totals: Mapping[str, int],
    recipient_name: str,
    recipient_email: str | None,
    issued_by: str,
    now: datetime,
    affiliate_id: str | None = None,
    advertiser_id: str | None = None,
    payout_id: str | None = None,
    credits_document_id: str | None = None,
    period: tuple[date | None, date | None] = (None, None),
) -> tuple[FinancialDocument, bool]:
    """Number, render and insert a document with its first delivery; (existing, False) when the
    source key was issued already (also when a concurrent issuer got there first)."""
    existing = document_by_source(session, source_key)
    if existing is not None:
        return existing, False
    series = SERIES[kind]
    savepoint = session.begin_nested()
    try:
        sequence = allocate_number(session, series, now.year)
        number = f"{series}-{now.year}-{sequence:06d}"
        content = json_safe(
            {**content, "number": number, "kind": kind.value, "title": TITLES[kind], "issued_at": now.isoformat()}
        )
        html = render_html(content)
        pdf = render_pdf(content, now)
        document_id = f"doc_{uuid.uuid4().hex}"
        inserted = session.execute(
            _dialect_insert(session, FinancialDocument)
            .values(
                id=document_id,
                number=number,
                kind=kind.value,
                series=series,
                year=now.year,
                sequence=sequence,
                source_key=source_key,
                affiliate_id=affiliate_id,
                advertiser_id=advertiser_id,
                payout_id=payout_id,
                credits_document_id=credits_document_id,
                period_start=period[0],
                period_end=period[1],
                recipient_name=recipient_name,
                recipient_email=recipient_email,
                totals=dict(totals),
                content=content,
                html=html,
                html_sha256=hashlib.sha256(html.encode("utf-8")).hexdigest(),
                pdf=pdf,
                pdf_sha256=hashlib.sha256(pdf).hexdigest(),
                issued_by=issued_by,
                issued_at=now,
            )
            .on_conflict_do_nothing(index_elements=["source_key"])
            .returning(FinancialDocument.id)
        ).scalar()
        if inserted is None:  # a concurrent issuer committed this source first: give the number back
            savepoint.rollback()
            found = document_by_source(session, source_key)
            assert found is not None
            return found, False
        document = session.get(FinancialDocument, document_id)
        assert document is not None
        session.add(
            DocumentDelivery(
                document_id=document_id,
                generation=0,
                recipient=recipient_email,
                status="pending",
                attempts=0,
                message_id=message_id_for(document, 0),
                requested_by=issued_by,
                created_at=now,
            )
        )
        session.flush()
    except BaseException:
        if savepoint.is_active:
            savepoint.rollback()
        raise
    savepoint.commit()
    return document, True


def document_by_source(session: Session, source_key: str) -> FinancialDocument | None:
    return session.scalars(select(FinancialDocument).where(FinancialDocument.source_key == source_key)).first()


# -- receipts -------------------------------------------------------------------------------------
def _paid_at(session: Session, payout: Payout) -> datetime:
    found = session.scalar(
        select(func.max(PayoutEvent.created_at)).where(
            PayoutEvent.payout_id == payout.id, PayoutEvent.to_state == "paid"
        )
    )
    return found or payout.updated_at


def issue_payout_receipt(
    session: Session,
    payout_id: str,
    issuer: Issuer,
    *,
    now: datetime | None = None,
    issued_by: str = "system:documents",
) -> tuple[FinancialDocument, bool]:
    """The receipt of a paid payout (created once; (document, created))."""
    existing = document_by_source(session, source_key_receipt(payout_id))
    if existing is not None:
        return existing, False
    payout = session.get(Payout, payout_id)
    if payout is None:
        raise DocumentError(f"no payout {payout_id}", 404)
    if payout.state != "paid":
        raise DocumentError(f"payout {payout_id} is {payout.state}: receipts are issued for paid payouts", 409)
    affiliate = session.get(Affiliate, payout.affiliate_id)
    paid_at = _paid_at(session, payout)
    # The commissions it covers: booked since the affiliate's previous paid payout in this currency.
    previous = session.scalar(
        select(func.max(Payout.created_at)).where(
            Payout.affiliate_id == payout.affiliate_id,
            Payout.currency == payout.currency,
            Payout.state == "paid",
            Payout.created_at < payout.created_at,
        )
    )
    period_start = previous.date() if previous else None
    period_end = payout.created_at.date()
    amount = format_minor(payout.amount_minor, payout.currency)
    content: dict[str, Any] = {
        "issuer": issuer.as_dict(),
        "recipient": {
            "id": payout.affiliate_id,
            "name": affiliate.name if affiliate else payout.affiliate_id,
            "email": affiliate.email if affiliate else None,
            "role": "Affiliate",
        },
        "reference": {
            "payout": payout.id,
            "provider": payout.provider,
            "provider_ref": payout.provider_ref or "",
            "paid_at": paid_at.isoformat(),
        },
        "period": {"start": period_start.isoformat() if period_start else None, "end": period_end.isoformat()},
        "lines": [
            {
                "description": f"Commission payout {payout.id}",
                "quantity": 1,
                "unit": amount,
                "amount": amount,
                "currency": payout.currency,
            }
        ],
        "totals": [{"currency": payout.currency, "amount": amount, "minor": payout.amount_minor}],
        "note": "Remittance advice: this amount was paid to you. No action is needed.",
    }
    return _issue(
        session,
        DocumentKind.RECEIPT,
        source_key_receipt(payout_id),
        content=content,
        totals={payout.currency: payout.amount_minor},
        recipient_name=content["recipient"]["name"],
        recipient_email=affiliate.email if affiliate else None,
        issued_by=issued_by,
        now=now or utcnow(),
        affiliate_id=payout.affiliate_id,
        payout_id=payout.id,
        period=(period_start, period_end),
    )


def paid_payouts_without_receipt(session: Session, limit: int = 500) -> list[str]:
    keys = select(FinancialDocument.payout_id).where(
        FinancialDocument.kind == DocumentKind.RECEIPT.value, FinancialDocument.payout_id.is_not(None)
    )
    return list(
        session.scalars(
            select(Payout.id)
            .where(Payout.state == "paid", Payout.id.not_in(keys))
            .order_by(Payout.updated_at, Payout.id)
            .limit(limit)
        )
    )


# -- invoices -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InvoiceLine:
    offer_id: str
    offer_name: str
    currency: str
    conversions: int
    unit_minor: int

    @property
    def amount_minor(self) -> int:
        return self.conversions * self.unit_minor


_Reversal = aliased(JournalEntry)


def _not_reversed() -> Any:
    """The booked entry (JournalEntry) has no reversal: a conversion whose booking finance
    reversed before the invoice is not invoiced (one reversed after it gets a credit note)."""
    return ~exists(select(_Reversal.id).where(_Reversal.reverses_entry_id == JournalEntry.id))


def invoice_lines(session: Session, advertiser_id: str, month: date) -> list[InvoiceLine]:
    """Approved conversions of the advertiser's offers booked in `month` and not reversed, from
    the ledger: the receivable debit of each conversion's entry, grouped per offer, currency and
    unit amount."""
    start, end = _at_midnight(month_start(month)), _at_midnight(next_month(month_start(month)))
    rows = session.execute(
        select(Conversion.offer_id, Offer.name, Posting.currency, Posting.amount, func.count())
        .join(Offer, Offer.id == Conversion.offer_id)
        .join(JournalEntry, JournalEntry.id == Conversion.booked_entry_id)
        .join(Posting, Posting.entry_id == JournalEntry.id)
        .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
        .where(
            Offer.advertiser_id == advertiser_id,
            Conversion.status == "approved",
            JournalEntry.created_at >= start,
            JournalEntry.created_at < end,
            _not_reversed(),
            LedgerAccount.owner_kind == "advertiser",
            LedgerAccount.owner_id == advertiser_id,
            Posting.amount > 0,
        )
        .group_by(Conversion.offer_id, Offer.name, Posting.currency, Posting.amount)
        .order_by(Posting.currency, Conversion.offer_id, Posting.amount)
    ).all()
    return [InvoiceLine(str(r[0]), str(r[1]), str(r[2]), int(r[4]), int(r[3])) for r in rows]


def advertisers_to_invoice(session: Session, month: date) -> list[str]:
    start, end = _at_midnight(month_start(month)), _at_midnight(next_month(month_start(month)))
    return list(
        session.scalars(
            select(Offer.advertiser_id)
            .join(Conversion, Conversion.offer_id == Offer.id)
            .join(JournalEntry, JournalEntry.id == Conversion.booked_entry_id)
            .where(
                Conversion.status == "approved",
                JournalEntry.created_at >= start,
                JournalEntry.created_at < end,
                _not_reversed(),
            )
            .distinct()
            .order_by(Offer.advertiser_id)
        )
    )


def invoice_totals(lines: Sequence[InvoiceLine]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for line in lines:
        totals[line.currency] = totals.get(line.currency, 0) + line.amount_minor
    return dict(sorted(totals.items()))


def issue_advertiser_invoice(
    session: Session,
    advertiser_id: str,
    month: date,
    issuer: Issuer,
    *,
    now: datetime | None = None,
    issued_by: str = "system:documents",
) -> tuple[FinancialDocument | None, bool]:
    """The advertiser's invoice for `month` (None when nothing was booked; created once)."""
    month = month_start(month)
    key = source_key_invoice(advertiser_id, month)
    existing = document_by_source(session, key)
    if existing is not None:
        return existing, False
    now = now or utcnow()
    if next_month(month) > now.date():
        raise DocumentError(f"{month:%Y-%m} is not over yet: invoice a month after it ends", 409)
    lines = invoice_lines(session, advertiser_id, month)
    if not lines:
        return None, False
    advertiser = session.get(Advertiser, advertiser_id)
    totals = invoice_totals(lines)
    last_day = date.fromordinal(next_month(month).toordinal() - 1)
    content: dict[str, Any] = {
        "issuer": issuer.as_dict(),
        "recipient": {
            "id": advertiser_id,
            "name": advertiser.name if advertiser else advertiser_id,
            "email": advertiser.email if advertiser else None,
            "role": "Advertiser",
        },
        "reference": {"month": f"{month:%Y-%m}"},
        "period": {"start": month.isoformat(), "end": last_day.isoformat()},
        "lines": [
            {
                "description": f"{line.offer_name} ({line.offer_id}): approved conversions",
                "quantity": line.conversions,
                "unit": format_minor(line.unit_minor, line.currency),
                "amount": format_minor(line.amount_minor, line.currency),
                "currency": line.currency,
            }
            for line in lines
        ],
        "totals": [
            {"currency": currency, "amount": format_minor(minor, currency), "minor": minor}
            for currency, minor in totals.items()
        ],
        "note": "Approved conversions booked in the period, per offer. Amounts are per currency, not converted.",
    }
    return _issue(
        session,
        DocumentKind.INVOICE,
        key,
        content=content,
        totals=totals,
        recipient_name=content["recipient"]["name"],
        recipient_email=advertiser.email if advertiser else None,
        issued_by=issued_by,
        now=now,
        advertiser_id=advertiser_id,
        period=(month, last_day),
    )


# -- credit notes ---------------------------------------------------------------------------------
def credited_so_far(session: Session, document_id: str) -> dict[str, int]:
    credited: dict[str, int] = {}
    for totals in session.scalars(
        select(FinancialDocument.totals).where(FinancialDocument.credits_document_id == document_id)
    ):
        for currency, minor in totals.items():
            credited[currency] = credited.get(currency, 0) + int(minor)
    return credited


def issue_credit_note(
    session: Session,
    original_id: str,
    *,
    amount_minor: int,
    currency: str,
    reason: str,
    idempotency_key: str,
    issuer: Issuer,
    issued_by: str,
    now: datetime | None = None,
) -> tuple[FinancialDocument, bool]:
    """A credit note of `amount_minor` `currency` against an issued receipt or invoice; all the
    credit notes of a document never exceed its total in that currency."""
    key = f"credit_note:{idempotency_key}"
    existing = document_by_source(session, key)
    if existing is not None:
        return existing, False
    original = session.get(FinancialDocument, original_id)
    if original is None:
        raise DocumentError(f"no document {original_id}", 404)
    if original.kind == DocumentKind.CREDIT_NOTE.value:
        raise DocumentError("a credit note corrects a receipt or an invoice, not another credit note", 409)
    if not reason.strip():
        raise DocumentError("a credit note gives its reason")
    try:
        check_currency(currency)
    except MoneyError as exc:
        raise DocumentError(str(exc)) from exc
    total = int(original.totals.get(currency, 0))
    left = total - credited_so_far(session, original_id).get(currency, 0)
    if amount_minor <= 0 or amount_minor > left:
        raise DocumentError(
            f"a credit note on {original.number} is between 0 and {format_minor(max(left, 0), currency)} {currency}",
            409,
        )
    amount = format_minor(amount_minor, currency)
    content: dict[str, Any] = {
        "issuer": issuer.as_dict(),
        "recipient": dict(original.content.get("recipient", {})),
        "reference": {"credits": original.number, "reason": reason.strip()},
        "period": dict(original.content.get("period", {})),
        "lines": [
            {
                "description": f"Correction of {original.number}: {reason.strip()}",
                "quantity": 1,
                "unit": amount,
                "amount": amount,
                "currency": currency,
            }
        ],
        "totals": [{"currency": currency, "amount": amount, "minor": amount_minor}],
        "note": f"This credit note corrects {original.number}, which stays as issued.",
    }
    return _issue(
        session,
        DocumentKind.CREDIT_NOTE,
        key,
        content=content,
        totals={currency: amount_minor},
        recipient_name=original.recipient_name,
        recipient_email=original.recipient_email,
        issued_by=issued_by,
        now=now or utcnow(),
        affiliate_id=original.affiliate_id,
        advertiser_id=original.advertiser_id,
        credits_document_id=original.id,
        period=(original.period_start, original.period_end),
    )


REVERSAL_CREDIT = "conversion-reversal:"


def source_key_reversal_credit(conversion_id: int) -> str:
    """The idempotency key of the credit note for a conversion reversed after its invoice."""
    return f"{REVERSAL_CREDIT}{conversion_id}"


@dataclass(frozen=True)
class ReversedConversion:
    conversion_id: int
    invoice_id: str
    invoice_number: str
    amount_minor: int
    currency: str
    reversal_entry_id: str


def reversed_after_invoicing(session: Session, limit: int = 500) -> list[ReversedConversion]:
    """Invoiced conversions whose booking was reversed after their invoice was issued and that
    have no credit note for it yet: what `credit_reversed_conversion` corrects."""
    rows = session.execute(
        select(
            Conversion.id,
            Offer.advertiser_id,
            JournalEntry.created_at,
            Posting.amount,
            Posting.currency,
            _Reversal.id,
            _Reversal.created_at,
        )
        .join(Offer, Offer.id == Conversion.offer_id)
        .join(JournalEntry, JournalEntry.id == Conversion.booked_entry_id)
        .join(_Reversal, _Reversal.reverses_entry_id == JournalEntry.id)
        .join(Posting, Posting.entry_id == JournalEntry.id)
        .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
        .where(
            Conversion.status == "approved",
            LedgerAccount.owner_kind == "advertiser",
            LedgerAccount.owner_id == Offer.advertiser_id,
            Posting.amount > 0,
            ~exists(
                select(FinancialDocument.id).where(
                    FinancialDocument.source_key
                    == literal(f"credit_note:{REVERSAL_CREDIT}") + cast(Conversion.id, String)
                )
            ),
        )
        .order_by(_Reversal.created_at, Conversion.id)
    ).all()
    found: list[ReversedConversion] = []
    for conversion_id, advertiser_id, booked_at, amount, currency, reversal_id, reversed_at in rows:
        key = source_key_invoice(str(advertiser_id), month_start(booked_at.date()))
        invoice = session.execute(
            select(FinancialDocument.id, FinancialDocument.number, FinancialDocument.issued_at).where(
                FinancialDocument.source_key == key
            )
        ).first()
        if invoice is None or invoice[2] > reversed_at:  # not invoiced yet, or left out of it
            continue
        found.append(
            ReversedConversion(
                int(conversion_id), str(invoice[0]), str(invoice[1]), int(amount), str(currency), str(reversal_id)
            )
        )
        if len(found) >= limit:
            break
    return found


def credit_reversed_conversion(
    session: Session, item: ReversedConversion, issuer: Issuer, *, now: datetime | None = None
) -> tuple[FinancialDocument, bool]:
    """The credit note, against the invoice that billed it, of a conversion reversed after that
    invoice was issued (once per conversion: the idempotency key is the conversion's)."""
    return issue_credit_note(
        session,
        item.invoice_id,
        amount_minor=item.amount_minor,
        currency=item.currency,
        reason=f"conversion {item.conversion_id} reversed in the ledger (entry {item.reversal_entry_id})",
        idempotency_key=source_key_reversal_credit(item.conversion_id),
        issuer=issuer,
        issued_by="system:documents",
        now=now,
    )


# -- reading --------------------------------------------------------------------------------------
def documents_for(
    session: Session, *, affiliate_id: str | None = None, advertiser_id: str | None = None, limit: int = 200
) -> list[FinancialDocument]:
    """One affiliate's or advertiser's documents, newest first (for the self-service portal)."""
    if (affiliate_id is None) == (advertiser_id is None):
        raise ValueError("name exactly one of affiliate_id and advertiser_id")
    where = (
        FinancialDocument.affiliate_id == affiliate_id
        if affiliate_id is not None
        else FinancialDocument.advertiser_id == advertiser_id
    )
    return list(
        session.scalars(
            select(FinancialDocument)
            .where(where)
            .order_by(FinancialDocument.issued_at.desc(), FinancialDocument.number.desc())
            .limit(limit)
        )
    )


def latest_delivery(session: Session, document_id: str) -> DocumentDelivery | None:
    return session.scalars(
        select(DocumentDelivery)
        .where(DocumentDelivery.document_id == document_id)
        .order_by(DocumentDelivery.generation.desc())
        .limit(1)
    ).first()


def request_resend(session: Session, document_id: str, *, requested_by: str) -> DocumentDelivery:
    """Email the document again (a new delivery with its own Message-ID). Refused while the last
    one is still on its way, so a double click never sends two."""
    document = session.get(FinancialDocument, document_id)
    if document is None:
        raise DocumentError(f"no document {document_id}", 404)
    last = latest_delivery(session, document_id)
    if last is not None and last.status in ("pending", "sending"):
        raise DocumentError(f"{document.number} is already waiting to be emailed", 409)
    generation = (last.generation + 1) if last is not None else 0
    delivery = DocumentDelivery(
        document_id=document_id,
        generation=generation,
        recipient=document.recipient_email,
        status="pending",
        attempts=0,
        message_id=message_id_for(document, generation),
        requested_by=requested_by,
        created_at=utcnow(),
    )
    session.add(delivery)
    try:
        session.flush()
    except Exception as exc:  # a concurrent resend took this generation
        raise DocumentError(f"{document.number} is already waiting to be emailed", 409) from exc
    return delivery


def claim_delivery(session: Session, delivery: DocumentDelivery, attempt_id: str, now: datetime) -> bool:
    """Compare-and-set a delivery to `sending` with this attempt's id (committed before SMTP)."""
    return (
        rowcount(
            session.execute(
                update(DocumentDelivery)
                .where(
                    DocumentDelivery.id == delivery.id,
                    DocumentDelivery.status == delivery.status,
                    DocumentDelivery.attempts == delivery.attempts,
                )
                .values(status="sending", attempt_id=attempt_id, attempts=delivery.attempts + 1, claimed_at=now)
                .execution_options(synchronize_session=False)
            )
        )
        == 1
    )
