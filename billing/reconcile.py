"""Reconciliation: what each provider says it did, compared with the payouts and the ledger.

Differences reported: a payout the provider has no record of, a provider record no payout
explains, amounts or currencies that differ, states that disagree (paid here, failed there), and a
payout whose ledger entries do not match its state. Each report is stored; a report with
differences raises an alert."""

from __future__ import annotations

import uuid
from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from billing.alerts import raise_alert
from billing.models import JournalEntry, Payout, ReconciliationReport
from billing.payouts import PayoutState
from billing.providers.base import PayoutProvider, ProviderError, ProviderRecord, ProviderStatus
from billing.rules import content_hash
from server.db import utcnow

CHECKED_STATES = (PayoutState.APPROVED, PayoutState.SUBMITTED, PayoutState.PAID, PayoutState.FAILED)


def _ledger_problem(session: Session, payout: Payout) -> str | None:
    if not payout.pending_entry_id:
        return "no pending ledger entry"
    resolution = session.execute(
        select(JournalEntry.kind).where(JournalEntry.pending_entry_id == payout.pending_entry_id)
    ).scalar()
    expected = {PayoutState.PAID: "post_pending", PayoutState.FAILED: "void_pending"}.get(PayoutState(payout.state))
    if payout.state == PayoutState.FAILED and resolution == "post_pending":
        reversed_ = session.execute(
            select(JournalEntry.id).where(JournalEntry.idempotency_key == f"payout:{payout.id}:reversal")
        ).scalar()
        return None if reversed_ else "failed after payment but the settlement was not reversed"
    if expected is None:
        return None if resolution is None else f"still {payout.state} but its pending entry is {resolution}"
    return None if resolution == expected else f"{payout.state} but its pending entry is {resolution or 'open'}"


def reconcile(session: Session, provider: PayoutProvider, since: datetime) -> ReconciliationReport:
    """Compare `provider`'s records since `since` with payouts and the ledger; store the report."""
    payouts = list(
        session.scalars(
            select(Payout).where(
                Payout.provider == provider.name,
                Payout.created_at >= since,
                Payout.state.in_([s.value for s in CHECKED_STATES]),
            )
        )
    )
    differences: list[dict[str, Any]] = []
    matched_minor: dict[str, int] = defaultdict(int)
    matched = 0
    report = ReconciliationReport(
        id=f"rec_{uuid.uuid4().hex[:20]}",
        provider=provider.name,
        started_at=utcnow(),
        window_start=since,
        checked=len(payouts),
        matched=0,
        matched_minor={},
        differences=[],
        status="clean",
    )
    try:
        records = provider.records(since, sorted({p.provider_ref for p in payouts if p.provider_ref}))
    except ProviderError as exc:
        report.status = "error"
        report.differences = [{"kind": "provider_error", "detail": exc.message}]
        session.add(report)
        raise_alert(
            session,
            "provider_error",
            f"{provider.name}:reconciliation",
            f"Reconciliation with {provider.name} could not read its records",
            exc.message,
            severity="warning",
            data={"provider": provider.name},
        )
        return report
    by_payout: dict[str, ProviderRecord] = {}
    by_reference: dict[str, ProviderRecord] = {}
    for record in records:
        if record.payout_id:
            by_payout.setdefault(record.payout_id, record)
        by_reference.setdefault(record.reference, record)
    explained: set[str] = set()
    for payout in payouts:
        found = by_payout.get(payout.id) or (by_reference.get(payout.provider_ref) if payout.provider_ref else None)
        problem = _ledger_problem(session, payout)
        if problem:
            differences.append({"kind": "ledger_mismatch", "payout_id": payout.id, "detail": problem})
        if found is None:
            if payout.state in (PayoutState.SUBMITTED, PayoutState.PAID):
                differences.append(
                    {
                        "kind": "missing_at_provider",
                        "payout_id": payout.id,
                        "detail": f"{payout.state} here, no {provider.name} record",
                        "amount_minor": payout.amount_minor,
                        "currency": payout.currency,
                    }
                )
            continue
        record = found
        explained.add(record.reference)
        if record.currency != payout.currency or record.amount_minor != payout.amount_minor:
            if not (record.status is ProviderStatus.FAILED and payout.state == PayoutState.FAILED):
                differences.append(
                    {
                        "kind": "amount_mismatch",
                        "payout_id": payout.id,
                        "reference": record.reference,
                        "detail": f"{provider.name} has {record.amount_minor} {record.currency}, the payout is "
                        f"{payout.amount_minor} {payout.currency}",
                    }
                )
                continue
        if record.status is ProviderStatus.PAID and payout.state == PayoutState.FAILED:
            differences.append(
                {
                    "kind": "state_mismatch",
                    "payout_id": payout.id,
                    "reference": record.reference,
                    "detail": f"failed here, paid at {provider.name}",
                }
            )
            continue
        if record.status is ProviderStatus.FAILED and payout.state == PayoutState.PAID:
            differences.append(
                {
                    "kind": "state_mismatch",
                    "payout_id": payout.id,
                    "reference": record.reference,
                    "detail": f"paid here, failed or reversed at {provider.name}",
                }
            )
            continue
        if payout.state == PayoutState.PAID:
            matched_minor[payout.currency] += payout.amount_minor
        matched += 1
    for record in records:
        if record.reference not in explained and record.status is ProviderStatus.PAID:
            differences.append(
                {
                    "kind": "unknown_to_ledger",
                    "reference": record.reference,
                    "payout_id": record.payout_id,
                    "detail": f"{provider.name} record with no payout here",
                    "amount_minor": record.amount_minor,
                    "currency": record.currency,
                }
            )
    report.matched = matched
    report.matched_minor = dict(matched_minor)
    report.differences = differences
    report.status = "mismatch" if differences else "clean"
    session.add(report)
    session.flush()
    if differences:
        # The same unresolved differences found again are the same incident: one alert, counted.
        signature = sorted(f"{d['kind']}:{d.get('payout_id')}:{d.get('reference')}" for d in differences)
        raise_alert(
            session,
            "reconciliation_mismatch",
            f"{provider.name}:{content_hash({'differences': signature})[:32]}",
            f"Reconciliation with {provider.name}: {len(differences)} difference(s)",
            "; ".join(str(d.get("detail")) for d in differences[:10]),
            data={"report_id": report.id, "provider": provider.name, "differences": len(differences)},
        )
    return report
