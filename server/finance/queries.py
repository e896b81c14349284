"""Use cases behind the finance API and pages: payout profiles, listings, and the JSON shapes of
accounts, entries, payouts, alerts and reconciliation reports. Views call these."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from billing.ledger import balance_of
from billing.models import (
    Alert,
    AlertDelivery,
    JournalEntry,
    LedgerAccount,
    Payout,
    PayoutEvent,
    PayoutProfile,
    Posting,
    ReconciliationReport,
)
from billing.money import MoneyError, format_minor, to_minor
from billing.rules import AccountType
from billing.vault import Vault, mask
from server.db import utcnow
from server.errors import Problem
from server.links.models import Affiliate

METHODS = ("none", "stripe", "paypal")


def money(minor: int, currency: str) -> dict[str, Any]:
    return {"minor": minor, "amount": format_minor(minor, currency), "currency": currency}


# -- accounts -----------------------------------------------------------------------------------------
def account_body(account: LedgerAccount) -> dict[str, Any]:
    balance = balance_of(account)
    kind = AccountType(account.type)
    return {
        "id": account.id,
        "code": account.code,
        "name": account.name,
        "type": account.type,
        "currency": account.currency,
        "owner": {"kind": account.owner_kind, "id": account.owner_id},
        "flags": {
            "debits_must_not_exceed_credits": account.debits_must_not_exceed_credits,
            "credits_must_not_exceed_debits": account.credits_must_not_exceed_debits,
        },
        "debits_posted": account.debits_posted,
        "credits_posted": account.credits_posted,
        "debits_pending": account.debits_pending,
        "credits_pending": account.credits_pending,
        "balance": money(balance.net(kind), account.currency),
        "available": money(balance.available(kind), account.currency),
        "created_at": account.created_at.isoformat(),
    }


def list_accounts(
    session: Session, *, owner_kind: str | None = None, currency: str | None = None, limit: int = 500
) -> list[LedgerAccount]:
    query = select(LedgerAccount)
    if owner_kind:
        query = query.where(LedgerAccount.owner_kind == owner_kind)
    if currency:
        query = query.where(LedgerAccount.currency == currency)
    return list(session.scalars(query.order_by(LedgerAccount.code).limit(limit)))


def get_account(session: Session, account_id: str) -> LedgerAccount:
    account = (
        session.get(LedgerAccount, account_id)
        or session.scalars(select(LedgerAccount).where(LedgerAccount.code == account_id)).first()
    )
    if account is None:
        raise Problem(404, "Not Found", f"no ledger account {account_id}")
    return account


# -- entries ------------------------------------------------------------------------------------------
def entry_body(session: Session, entry: JournalEntry) -> dict[str, Any]:
    rows = session.execute(
        select(Posting.line, Posting.amount, Posting.currency, LedgerAccount.code)
        .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
        .where(Posting.entry_id == entry.id)
        .order_by(Posting.line)
    ).all()
    resolved_by = session.execute(
        select(JournalEntry.id, JournalEntry.kind).where(JournalEntry.pending_entry_id == entry.id)
    ).first()
    return {
        "id": entry.id,
        "idempotency_key": entry.idempotency_key,
        "kind": entry.kind,
        "pending_entry_id": entry.pending_entry_id,
        "reverses_entry_id": entry.reverses_entry_id,
        "resolved_by": {"id": resolved_by[0], "kind": resolved_by[1]} if resolved_by else None,
        "description": entry.description,
        "metadata": entry.meta,
        "created_by": entry.created_by,
        "created_at": entry.created_at.isoformat(),
        "postings": [
            {
                "line": line,
                "account": code,
                "direction": "debit" if amount > 0 else "credit",
                "amount": format_minor(abs(amount), currency),
                "minor": abs(amount),
                "currency": currency,
            }
            for line, amount, currency, code in rows
        ],
    }


def list_entries(
    session: Session,
    *,
    account_id: str | None = None,
    kind: str | None = None,
    limit: int = 100,
    before: str | None = None,
) -> list[JournalEntry]:
    query = select(JournalEntry)
    if account_id:
        query = query.where(JournalEntry.id.in_(select(Posting.entry_id).where(Posting.account_id == account_id)))
    if kind:
        query = query.where(JournalEntry.kind == kind)
    if before:
        anchor = session.get(JournalEntry, before)
        if anchor is None:
            raise Problem(400, "Invalid cursor", "the cursor is not one this API returned")
        query = query.where(
            (JournalEntry.created_at < anchor.created_at)
            | ((JournalEntry.created_at == anchor.created_at) & (JournalEntry.id < anchor.id))
        )
    return list(session.scalars(query.order_by(JournalEntry.created_at.desc(), JournalEntry.id.desc()).limit(limit)))


def get_entry(session: Session, entry_id: str) -> JournalEntry:
    entry = session.get(JournalEntry, entry_id)
    if entry is None:
        raise Problem(404, "Not Found", f"no ledger entry {entry_id}")
    return entry


# -- payouts ------------------------------------------------------------------------------------------
def payout_body(session: Session, payout: Payout, *, with_events: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": payout.id,
        "affiliate_id": payout.affiliate_id,
        "provider": payout.provider,
        "amount": money(payout.amount_minor, payout.currency),
        "state": payout.state,
        "approval": payout.approval,
        "manual": payout.manual,
        "requested_by": payout.requested_by,
        "approved_by": payout.approved_by,
        "decision_id": payout.decision_id,
        "reasons": payout.reasons,
        "idempotency_key": payout.idempotency_key,
        "pending_entry_id": payout.pending_entry_id,
        "provider_ref": payout.provider_ref,
        "provider_status": payout.provider_status,
        "attempts": payout.attempts,
        "last_error": payout.last_error,
        "created_at": payout.created_at.isoformat(),
        "updated_at": payout.updated_at.isoformat(),
    }
    if with_events:
        body["history"] = [
            {
                "from": e.from_state,
                "to": e.to_state,
                "actor": e.actor,
                "reason": e.reason,
                "at": e.created_at.isoformat(),
                "data": e.data,
            }
            for e in payout_history(session, payout.id)
        ]
    return body


def payout_history(session: Session, payout_id: str) -> Sequence[PayoutEvent]:
    return session.scalars(select(PayoutEvent).where(PayoutEvent.payout_id == payout_id).order_by(PayoutEvent.id)).all()


def list_payouts(
    session: Session,
    *,
    state: str | None = None,
    affiliate_id: str | None = None,
    awaiting_approval: bool = False,
    limit: int = 100,
) -> list[Payout]:
    query = select(Payout)
    if state:
        query = query.where(Payout.state == state)
    if affiliate_id:
        query = query.where(Payout.affiliate_id == affiliate_id)
    if awaiting_approval:
        query = query.where(Payout.state == "proposed", Payout.approval == "required")
    return list(session.scalars(query.order_by(Payout.created_at.desc(), Payout.id.desc()).limit(limit)))


def get_payout(session: Session, payout_id: str) -> Payout:
    payout = session.get(Payout, payout_id)
    if payout is None:
        raise Problem(404, "Not Found", f"no payout {payout_id}")
    return payout


def payout_counts(session: Session) -> dict[str, int]:
    return {str(s): int(n) for s, n in session.execute(select(Payout.state, func.count()).group_by(Payout.state))}


# -- payout profiles ----------------------------------------------------------------------------------
def profile_body(affiliate_id: str, profile: PayoutProfile | None) -> dict[str, Any]:
    if profile is None:
        return {
            "affiliate_id": affiliate_id,
            "method": "none",
            "destination": None,
            "threshold": None,
            "on_hold": False,
            "hold_reason": None,
        }
    threshold = (
        money(profile.threshold_minor, profile.threshold_currency)
        if profile.threshold_minor is not None and profile.threshold_currency
        else None
    )
    return {
        "affiliate_id": affiliate_id,
        "method": profile.method,
        "destination": profile.destination_hint,  # masked: the full destination is never shown
        "threshold": threshold,
        "on_hold": profile.on_hold,
        "hold_reason": profile.hold_reason,
        "updated_at": profile.updated_at.isoformat(),
        "destination_changed_at": (
            profile.destination_changed_at.isoformat() if profile.destination_changed_at else None
        ),
        "destination_self_service": profile.destination_self_service,
    }


def save_profile(
    session: Session,
    vault: Vault,
    affiliate_id: str,
    data: dict[str, Any],
    *,
    changed_by: str | None = None,
    self_service: bool = False,
) -> PayoutProfile:
    """Create or change an affiliate's payout profile. A change of method or destination records
    when, by whom (`changed_by`) and whether the affiliate made it through the portal
    (`self_service`): the payouts policy holds a self-service destination for a while."""
    if session.get(Affiliate, affiliate_id) is None:
        raise Problem(404, "Not Found", f"no affiliate {affiliate_id}")
    profile = session.get(PayoutProfile, affiliate_id)
    if profile is None:
        profile = PayoutProfile(affiliate_id=affiliate_id, method="none", on_hold=False)
        session.add(profile)
    destination = data.get("destination")
    if ("method" in data and data["method"] != profile.method) or destination:
        profile.destination_changed_at = utcnow()
        profile.destination_changed_by = changed_by
        profile.destination_self_service = self_service
    if "method" in data:
        profile.method = data["method"]
    if destination:
        if not vault.ready:
            raise Problem(
                503,
                "Encryption key missing",
                "set PAYOUT_ENCRYPTION_KEY before storing payout destinations",
                type_="vault-not-configured",
            )
        profile.destination_enc = vault.encrypt(destination)
        profile.destination_hint = mask(destination)
    if "threshold" in data:
        if data["threshold"] is None:
            profile.threshold_minor, profile.threshold_currency = None, None
        else:
            currency = data.get("threshold_currency") or "EUR"
            try:
                profile.threshold_minor = to_minor(Decimal(data["threshold"]), currency)
            except MoneyError as exc:
                raise Problem(400, "Validation failed", str(exc), errors={"threshold": [str(exc)]}) from exc
            profile.threshold_currency = currency
    if "on_hold" in data:
        profile.on_hold = bool(data["on_hold"])
        profile.hold_reason = data.get("hold_reason")
    if profile.method != "none" and not profile.destination_enc:
        raise Problem(
            400,
            "Validation failed",
            "a payout method needs a destination",
            errors={"destination": [f"required for method {profile.method}"]},
        )
    profile.updated_at = utcnow()
    session.flush()
    return profile


# -- alerts and reconciliation --------------------------------------------------------------------------
def alert_body(session: Session, alert: Alert) -> dict[str, Any]:
    deliveries = session.scalars(select(AlertDelivery).where(AlertDelivery.alert_id == alert.id)).all()
    return {
        "id": alert.id,
        "kind": alert.kind,
        "severity": alert.severity,
        "title": alert.title,
        "detail": alert.detail,
        "data": alert.data,
        "status": alert.status,
        "occurrences": alert.occurrences,
        "first_seen_at": alert.first_seen_at.isoformat(),
        "last_seen_at": alert.last_seen_at.isoformat(),
        "acknowledged_by": alert.acknowledged_by,
        "deliveries": [
            {
                "channel": d.channel,
                "status": d.status,
                "attempts": d.attempts,
                "sent_at": d.sent_at.isoformat() if d.sent_at else None,
            }
            for d in deliveries
        ],
    }


def list_alerts(session: Session, *, status: str | None = None, limit: int = 100) -> list[Alert]:
    query = select(Alert)
    if status:
        query = query.where(Alert.status == status)
    return list(session.scalars(query.order_by(Alert.last_seen_at.desc()).limit(limit)))


def acknowledge_alert(session: Session, alert_id: str, actor: str) -> Alert:
    alert = session.get(Alert, alert_id)
    if alert is None:
        raise Problem(404, "Not Found", f"no alert {alert_id}")
    session.execute(update(Alert).where(Alert.id == alert_id).values(status="acknowledged", acknowledged_by=actor))
    session.refresh(alert)
    return alert


def report_body(report: ReconciliationReport) -> dict[str, Any]:
    return {
        "id": report.id,
        "provider": report.provider,
        "started_at": report.started_at.isoformat(),
        "window_start": report.window_start.isoformat(),
        "status": report.status,
        "checked": report.checked,
        "matched": report.matched,
        "matched_amounts": {cur: format_minor(int(v), cur) for cur, v in sorted(report.matched_minor.items())},
        "differences": report.differences,
    }


def list_reports(session: Session, limit: int = 50) -> list[ReconciliationReport]:
    return list(
        session.scalars(select(ReconciliationReport).order_by(ReconciliationReport.started_at.desc()).limit(limit))
    )


def balances_by_currency(session: Session) -> dict[str, dict[str, int]]:
    """Per currency and account type, the sum of posted balances (normal side): the pages' summary."""
    out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for account in session.scalars(select(LedgerAccount)):
        out[account.currency][account.type] += balance_of(account).net(AccountType(account.type))
    return {cur: dict(types) for cur, types in sorted(out.items())}


def parse_since(value: str | None, default: datetime) -> datetime:
    if not value:
        return default
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise Problem(
            400, "Validation failed", "since must be an ISO 8601 time", errors={"since": ["invalid"]}
        ) from exc
    if parsed.tzinfo is None:
        raise Problem(400, "Validation failed", "since needs a time zone", errors={"since": ["naive time"]})
    return parsed
