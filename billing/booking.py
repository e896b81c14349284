"""Booking conversions: an approved conversion books the advertiser's receivable against revenue
and the affiliate's commission as an expense against what the platform owes the affiliate.

The entry's idempotency key is the conversion id, so a conversion is booked once however often
it is asked for. The ledger never converts currencies: everything is in the conversion's."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from billing import accounts
from billing.ledger import EntryResult, ensure_account, record_entry
from billing.money import MoneyError, share, to_minor
from billing.rules import EntryRequest, InvalidEntry, LedgerError, Line
from server.links.models import Conversion, Offer, SmartLink

log = logging.getLogger(__name__)


def conversion_key(conversion_id: int) -> str:
    return f"conversion:{conversion_id}"


def book_conversion(session: Session, conversion_id: int, *, created_by: str = "system:booking") -> EntryResult:
    """Book one approved conversion (in the caller's transaction)."""
    conversion = session.get(Conversion, conversion_id)
    if conversion is None:
        raise InvalidEntry(f"no conversion {conversion_id}")
    if conversion.status != "approved":
        raise InvalidEntry(f"conversion {conversion_id} is {conversion.status}: only approved conversions are booked")
    offer = session.get(Offer, conversion.offer_id)
    link = session.get(SmartLink, conversion.link_id)
    if offer is None or link is None:
        raise InvalidEntry(f"conversion {conversion_id} names an unknown offer or link")
    currency = conversion.currency
    try:
        amount = to_minor(Decimal(conversion.amount), currency)
    except MoneyError as exc:
        raise InvalidEntry(f"conversion {conversion_id}: {exc}") from exc
    if amount <= 0:
        raise InvalidEntry(f"conversion {conversion_id} has a non-positive amount {conversion.amount}")
    commission = share(amount, Decimal(link.commission_rate))
    if not 0 <= commission <= amount:
        raise InvalidEntry(f"link {link.id} has commission rate {link.commission_rate} outside [0, 1]")
    receivable = accounts.advertiser_receivable(offer.advertiser_id, currency)
    revenue = accounts.revenue(currency)
    lines = [Line.debit(receivable.code, amount, currency), Line.credit(revenue.code, amount, currency)]
    specs = [receivable, revenue]
    if commission:
        expense = accounts.commission_expense(currency)
        payable = accounts.affiliate_payable(link.affiliate_id, currency)
        lines += [Line.debit(expense.code, commission, currency), Line.credit(payable.code, commission, currency)]
        specs += [expense, payable]
    for spec in specs:
        ensure_account(session, spec)
    result = record_entry(
        session,
        EntryRequest(
            idempotency_key=conversion_key(conversion_id),
            lines=tuple(lines),
            description=f"conversion {conversion_id} on link {link.id}, offer {offer.id}",
            metadata={
                "conversion_id": conversion_id,
                "link_id": link.id,
                "offer_id": offer.id,
                "affiliate_id": link.affiliate_id,
                "advertiser_id": offer.advertiser_id,
                "txid": conversion.txid,
                "commission_rate": str(link.commission_rate),
            },
        ),
        created_by=created_by,
    )
    if conversion.booked_entry_id != result.entry_id:
        session.execute(
            update(Conversion).where(Conversion.id == conversion_id).values(booked_entry_id=result.entry_id)
        )
        conversion.booked_entry_id = result.entry_id
    return result


@dataclass
class BookingRun:
    booked: int = 0
    failed: int = 0
    errors: dict[int, str] | None = None


def book_approved_conversions(
    session: Session,
    *,
    limit: int = 1000,
    on_failure: Callable[[Session, int, str], None] | None = None,
) -> BookingRun:
    """Book approved conversions that have no entry yet, each in its own savepoint: one that the
    ledger refuses (say 12.345 EUR) is reported and skipped, the others are booked."""
    run = BookingRun(errors={})
    ids = list(
        session.scalars(
            select(Conversion.id)
            .where(Conversion.status == "approved", Conversion.booked_entry_id.is_(None))
            .order_by(Conversion.id)
            .limit(limit)
        )
    )
    for conversion_id in ids:
        savepoint = session.begin_nested()
        try:
            book_conversion(session, conversion_id)
            savepoint.commit()
            run.booked += 1
        except LedgerError as exc:
            savepoint.rollback()
            run.failed += 1
            assert run.errors is not None
            run.errors[conversion_id] = str(exc)
            log.warning("conversion %s not booked: %s", conversion_id, exc)
            if on_failure is not None:
                on_failure(session, conversion_id, str(exc))
    return run
