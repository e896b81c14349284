"""Provider events applied to payouts, each event once (by provider and event id).

Signature checks happen before this (server/finance/webhooks.py); here an event that names a
payout moves it to paid or failed with the matching ledger postings, in one transaction with the
record that the event was processed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from billing.alerts import raise_alert
from billing.ledger import _dialect_insert
from billing.models import Payout, WebhookEvent
from billing.money import MoneyError, to_minor
from billing.payouts import PayoutState, fail_payout, lock_payout_row, settle_payout
from server.db import utcnow

STRIPE_PAID = {"transfer.created", "transfer.paid"}
STRIPE_FAILED = {"transfer.reversed", "transfer.failed"}
PAYPAL_PAID = {"PAYMENT.PAYOUTS-ITEM.SUCCEEDED"}
PAYPAL_FAILED = {
    "PAYMENT.PAYOUTS-ITEM.FAILED",
    "PAYMENT.PAYOUTS-ITEM.BLOCKED",
    "PAYMENT.PAYOUTS-ITEM.RETURNED",
    "PAYMENT.PAYOUTS-ITEM.REFUNDED",
    "PAYMENT.PAYOUTS-ITEM.REVERSED",
    "PAYMENT.PAYOUTS-ITEM.DENIED",
    "PAYMENT.PAYOUTS-ITEM.CANCELED",
    "PAYMENT.PAYOUTSBATCH.DENIED",
}


@dataclass(frozen=True)
class EventResult:
    status: str  # processed | ignored | duplicate
    payout_id: str | None = None
    detail: str | None = None


def claim_event(session: Session, provider: str, event_id: str, event_type: str) -> bool:
    """True the first time (provider, event_id) is seen; a repeat only counts the delivery."""
    inserted = session.execute(
        _dialect_insert(session, WebhookEvent)
        .values(
            provider=provider,
            event_id=event_id,
            event_type=event_type[:80],
            status="processing",
            received_at=utcnow(),
            deliveries=1,
        )
        .on_conflict_do_nothing()
        .returning(WebhookEvent.id)
    ).scalar()
    if inserted is None:
        session.execute(
            update(WebhookEvent)
            .where(WebhookEvent.provider == provider, WebhookEvent.event_id == event_id)
            .values(deliveries=WebhookEvent.deliveries + 1)
        )
        return False
    return True


def finish_event(session: Session, provider: str, event_id: str, result: EventResult) -> EventResult:
    session.execute(
        update(WebhookEvent)
        .where(WebhookEvent.provider == provider, WebhookEvent.event_id == event_id)
        .values(status=result.status, payout_id=result.payout_id, detail=(result.detail or "")[:2000])
    )
    return result


def record_rejected(session: Session, provider: str, reason: str, *, remote: str | None) -> None:
    """A delivery whose signature did not verify: kept as a record and raised as an alert."""
    raise_alert(
        session,
        "webhook_signature",
        f"{provider}:{utcnow():%Y-%m-%dT%H}",
        f"{provider} webhook signature check failed",
        f"A POST to /webhooks/{provider} was refused: {reason}. Repeated failures in the same hour are counted "
        "on this alert. Check the webhook secret, or someone is forging events.",
        severity="warning",
        data={"provider": provider, "reason": reason, "remote_addr": remote},
    )


def _payout_for(session: Session, *, reference: str | None, payout_id: str | None) -> Payout | None:
    if payout_id:
        payout = session.get(Payout, payout_id)
        if payout is not None:
            return payout
    if reference:
        return session.scalars(select(Payout).where(Payout.provider_ref == reference)).first()
    return None


def _amount_matches(session: Session, payout: Payout, amount: int | None, currency: str | None) -> str | None:
    if amount is None or currency is None:
        return None
    if currency.upper() != payout.currency or amount != payout.amount_minor:
        detail = (
            f"event says {amount} {currency.upper()}, payout {payout.id} is {payout.amount_minor} {payout.currency}"
        )
        raise_alert(
            session,
            "reconciliation_mismatch",
            f"event:{payout.id}",
            f"Provider event does not match payout {payout.id}",
            detail,
            data={"payout_id": payout.id, "amount": amount, "currency": currency},
        )
        return detail
    return None


def _apply(
    session: Session,
    provider: str,
    event_type: str,
    payout: Payout | None,
    *,
    paid: bool,
    failed: bool,
    amount: int | None,
    currency: str | None,
    reference: str | None,
) -> EventResult:
    if payout is None:
        return EventResult("ignored", None, "no payout matches this event")
    lock_payout_row(session, payout.id)
    session.refresh(payout)
    mismatch = _amount_matches(session, payout, amount, currency)
    if mismatch:
        return EventResult("ignored", payout.id, mismatch)
    actor = f"webhook:{provider}"
    if paid:
        if payout.state in (PayoutState.APPROVED, PayoutState.SUBMITTED):
            settle_payout(session, payout, actor=actor, reference=reference, reason=f"{provider} event {event_type}")
            return EventResult("processed", payout.id, "paid")
        return EventResult("ignored", payout.id, f"payout is {payout.state}")
    if failed:
        if payout.state in (PayoutState.APPROVED, PayoutState.SUBMITTED, PayoutState.PAID):
            fail_payout(session, payout, actor=actor, reason=f"{provider} event {event_type}")
            return EventResult("processed", payout.id, "failed")
        return EventResult("ignored", payout.id, f"payout is {payout.state}")
    return EventResult("ignored", payout.id, f"event type {event_type} does not change payouts")


def apply_stripe_event(session: Session, event: dict[str, Any]) -> EventResult:
    event_id, event_type = str(event.get("id", "")), str(event.get("type", ""))
    if not claim_event(session, "stripe", event_id, event_type):
        return EventResult("duplicate")
    obj = (event.get("data") or {}).get("object") or {}
    result = EventResult("ignored", None, f"event type {event_type} does not change payouts")
    if obj.get("object") == "transfer" and (event_type in STRIPE_PAID or event_type in STRIPE_FAILED):
        metadata = obj.get("metadata") or {}
        payout = _payout_for(
            session, reference=obj.get("id"), payout_id=metadata.get("payout_id") or obj.get("transfer_group")
        )
        reversed_ = bool(obj.get("reversed")) or event_type in STRIPE_FAILED
        amount = obj.get("amount") if isinstance(obj.get("amount"), int) else None
        result = _apply(
            session,
            "stripe",
            event_type,
            payout,
            paid=not reversed_,
            failed=reversed_,
            amount=amount,
            currency=obj.get("currency"),
            reference=obj.get("id"),
        )
    return finish_event(session, "stripe", event_id, result)


def apply_paypal_event(session: Session, event: dict[str, Any]) -> EventResult:
    event_id, event_type = str(event.get("id", "")), str(event.get("event_type", ""))
    if not claim_event(session, "paypal", event_id, event_type):
        return EventResult("duplicate")
    resource = event.get("resource") or {}
    result = EventResult("ignored", None, f"event type {event_type} does not change payouts")
    if event_type in PAYPAL_PAID or event_type in PAYPAL_FAILED:
        item = resource.get("payout_item") or {}
        batch_id = resource.get("payout_batch_id") or (resource.get("batch_header") or {}).get("payout_batch_id")
        payout = _payout_for(session, reference=batch_id, payout_id=item.get("sender_item_id"))
        amount: int | None = None
        currency = (item.get("amount") or {}).get("currency")
        if currency:
            try:
                amount = to_minor(str(item["amount"]["value"]), str(currency))
            except (MoneyError, KeyError):
                amount = None
        result = _apply(
            session,
            "paypal",
            event_type,
            payout,
            paid=event_type in PAYPAL_PAID,
            failed=event_type in PAYPAL_FAILED,
            amount=amount,
            currency=currency,
            reference=batch_id,
        )
    return finish_event(session, "paypal", event_id, result)
