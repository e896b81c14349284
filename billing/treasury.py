"""The treasury run: find affiliates whose payable balance reached their threshold and who can be
paid (a payout method and destination on file, not on hold, active), propose a payout for each
through the governance gateway, then submit the approved ones to their providers.

Decisions are made in batches, one transaction per batch (each payout's ledger write in its own
savepoint); provider calls happen after the batch commits, several at a time. A run first resumes
whatever an earlier run left unfinished. One run at a time: a lease in job_leases."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, case, delete, insert, select, update
from sqlalchemy.orm import Session

from billing import accounts
from billing.ledger import _dialect_insert, ensure_account, record_entries, rowcount
from billing.models import LedgerAccount, Payout, PayoutEvent, PayoutProfile, TreasuryDay
from billing.money import to_minor
from billing.payouts import (
    OPEN_STATES,
    SYSTEM_TREASURY,
    Payments,
    PayoutError,
    PayoutState,
    action_params,
    affiliate_facts,
    decide_payout,
    lock_treasury_day,
    new_payout,
    pending_lines,
    resume_payouts,
    submit_payouts,
    treasury_available,
)
from billing.providers.base import PayoutProvider
from billing.rules import EntryKind, EntryRequest, LedgerError
from billing.vault import Vault
from server.db import json_safe
from server.governance.gateway import Action, Gateway, Target
from server.links.models import Affiliate, JobLease

log = logging.getLogger(__name__)

LEASE = "treasury"
_PAYOUTS = cast(Table, Payout.__table__)
_EVENTS = cast(Table, PayoutEvent.__table__)


@dataclass(frozen=True)
class Candidate:
    affiliate_id: str
    currency: str
    available: int


@dataclass
class TreasuryReport:
    run_id: str
    candidates: int = 0
    approved: int = 0
    awaiting_approval: int = 0
    denied: int = 0
    submitted: int = 0
    paid: int = 0
    failed: int = 0
    resumed: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def threshold_in(default_threshold: str | Decimal) -> Callable[[str], int]:
    """The default threshold (major units) in each currency's minor units."""

    def minor(currency: str) -> int:
        return to_minor(Decimal(default_threshold), currency)

    return minor


def find_candidates(session: Session, default_threshold: Callable[[str], int]) -> list[Candidate]:
    """Affiliates owed at least their threshold (their own, or the default), payable now."""
    currencies = session.scalars(
        select(LedgerAccount.currency).where(LedgerAccount.owner_kind == "affiliate").distinct()
    ).all()
    found: list[Candidate] = []
    for currency in sorted(currencies):
        found += _candidates_in(session, currency, default_threshold(currency))
    return found


def _candidates_in(session: Session, currency: str, default_threshold: int) -> list[Candidate]:
    available = LedgerAccount.credits_posted - LedgerAccount.debits_posted - LedgerAccount.debits_pending
    open_payout = (
        select(Payout.id)
        .where(
            Payout.affiliate_id == LedgerAccount.owner_id,
            Payout.currency == LedgerAccount.currency,
            Payout.state.in_([s.value for s in OPEN_STATES]),
        )
        .exists()
    )
    query = (
        select(LedgerAccount.owner_id, LedgerAccount.currency, available)
        .join(PayoutProfile, PayoutProfile.affiliate_id == LedgerAccount.owner_id)
        .join(Affiliate, Affiliate.id == LedgerAccount.owner_id)
        .where(
            LedgerAccount.owner_kind == "affiliate",
            LedgerAccount.currency == currency,
            LedgerAccount.code.like("affiliate:%:payable:%"),
            PayoutProfile.method != "none",
            PayoutProfile.destination_enc.is_not(None),
            PayoutProfile.on_hold.is_(False),
            Affiliate.status == "active",
            available
            >= case(
                (
                    and_(PayoutProfile.threshold_currency == currency, PayoutProfile.threshold_minor.is_not(None)),
                    PayoutProfile.threshold_minor,
                ),
                else_=default_threshold,
            ),
            available > 0,
            ~open_payout,
        )
        .order_by(LedgerAccount.owner_id)
    )
    return [Candidate(str(a), str(c), int(v)) for a, c, v in session.execute(query)]


def acquire_lease(session_factory: Callable[[], Session], owner: str, now: datetime, ttl: timedelta) -> bool:
    with session_factory() as session:
        session.execute(
            _dialect_insert(session, JobLease)
            .values(name=LEASE, owner=owner, expires_at=now + ttl, heartbeat_at=now)
            .on_conflict_do_nothing()
        )
        taken = rowcount(
            session.execute(
                update(JobLease)
                .where(JobLease.name == LEASE, (JobLease.owner == owner) | (JobLease.expires_at < now))
                .values(owner=owner, expires_at=now + ttl, heartbeat_at=now)
            )
        )
        session.commit()
        return taken == 1


def release_lease(session_factory: Callable[[], Session], owner: str) -> None:
    with session_factory() as session:
        session.execute(delete(JobLease).where(and_(JobLease.name == LEASE, JobLease.owner == owner)))
        session.commit()


def run_treasury(
    session_factory: Callable[[], Session],
    gateway: Gateway,
    providers: Mapping[str, PayoutProvider],
    now: datetime,
    *,
    vault: Vault,
    payments_mode: str = "test",
    default_threshold: str | Decimal = "50.00",
    batch_size: int = 200,
    workers: int = 8,
    lease_ttl: timedelta = timedelta(minutes=10),
) -> TreasuryReport:
    """One treasury run (the scheduler's entry point, and `smartlinks treasury run`)."""
    payments = Payments(
        gateway=gateway,
        providers=providers,
        vault=vault,
        payments_mode=payments_mode,
        default_threshold=threshold_in(default_threshold),
        clock=lambda: now,
    )
    return run_treasury_with(
        session_factory, payments, now, batch_size=batch_size, workers=workers, lease_ttl=lease_ttl
    )


def run_treasury_with(
    session_factory: Callable[[], Session],
    payments: Payments,
    now: datetime,
    *,
    batch_size: int = 200,
    workers: int = 8,
    lease_ttl: timedelta = timedelta(minutes=10),
) -> TreasuryReport:
    run_id = f"trun_{uuid.uuid4().hex[:16]}"
    report = TreasuryReport(run_id=run_id)
    if not acquire_lease(session_factory, run_id, now, lease_ttl):
        report.errors.append("another treasury run holds the lease")
        return report
    try:
        resumed = resume_payouts(session_factory, payments, now=now, poll_after=timedelta(minutes=10))
        report.resumed = resumed.submitted + resumed.polled
        with session_factory() as session:
            candidates = find_candidates(session, payments.default_threshold)
        report.candidates = len(candidates)
        # Provider calls run in `pool`; each decided batch is sent and recorded by the recorder
        # thread while the next batch is being decided.
        with (
            ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="payout") as pool,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="payout-recorder") as recorder,
        ):
            sent = []
            for start in range(0, len(candidates), batch_size):
                approved = _decide_batch(
                    session_factory, payments, candidates[start : start + batch_size], run_id, now, report
                )
                sent.append(recorder.submit(submit_payouts, session_factory, payments, approved, pool=pool))
                acquire_lease(session_factory, run_id, payments.clock(), lease_ttl)  # heartbeat
            for batch_reports in sent:
                for result in batch_reports.result():
                    if result.error:
                        report.errors.append(f"{result.payout_id}: {result.error}")
                    report.submitted += result.state == PayoutState.SUBMITTED
                    report.paid += result.state == PayoutState.PAID
                    report.failed += result.state == PayoutState.FAILED
    finally:
        release_lease(session_factory, run_id)
    log.info("treasury run %s: %s", run_id, report.as_dict())
    return report


def _decide_batch(
    session_factory: Callable[[], Session],
    payments: Payments,
    batch: list[Candidate],
    run_id: str,
    now: datetime,
    report: TreasuryReport,
) -> list[str]:
    """Decide a batch in one transaction, the fast way; if anything in it fails (a balance that
    moved under us, say), decide the batch again payout by payout."""
    by_currency: dict[str, list[Candidate]] = {}
    for candidate in batch:
        by_currency.setdefault(candidate.currency, []).append(candidate)
    approved: list[str] = []
    for currency, group in by_currency.items():
        counts = TreasuryReport(run_id)
        try:
            with session_factory() as session:
                approved += _decide_group(session, payments, currency, group, run_id, now, counts)
                session.commit()
        except (LedgerError, PayoutError) as exc:
            log.warning("treasury batch decided again one by one: %s", exc)
            counts = TreasuryReport(run_id)
            approved += _decide_one_by_one(session_factory, payments, group, run_id, now, counts)
        report.approved += counts.approved
        report.awaiting_approval += counts.awaiting_approval
        report.denied += counts.denied
        report.errors += counts.errors
    return approved


def _decide_group(
    session: Session,
    payments: Payments,
    currency: str,
    group: list[Candidate],
    run_id: str,
    now: datetime,
    report: TreasuryReport,
) -> list[str]:
    """Every payout of `group` decided by the payouts policy (one gateway decision each, with the
    same input as `decide_payout` gives, asked of OPA a batch at a time by `decide_many`), their
    rows, history and reservations written together. The facts are read once for the group and
    each payout is judged on them as moved by the approvals before it; the treasury day row stays
    locked (PostgreSQL) until the transaction ends."""
    ids = [c.affiliate_id for c in group]
    affiliates = {a.id: a for a in session.scalars(select(Affiliate).where(Affiliate.id.in_(ids)))}
    profiles = {
        p.affiliate_id: p for p in session.scalars(select(PayoutProfile).where(PayoutProfile.affiliate_id.in_(ids)))
    }
    owed = {
        str(owner): int(available)
        for owner, available in session.execute(
            select(
                LedgerAccount.owner_id,
                LedgerAccount.credits_posted - LedgerAccount.debits_posted - LedgerAccount.debits_pending,
            ).where(LedgerAccount.code.in_([accounts.affiliate_payable(a, currency).code for a in ids]))
        )
    }
    treasury = lock_treasury_day(session, currency, now.date(), lock=True)
    committed = int(treasury.committed_minor)
    cash = treasury_available(session, currency)
    payouts: list[Payout] = []
    facts: list[dict[str, Any]] = []
    for candidate in group:
        affiliate = affiliates.get(candidate.affiliate_id)
        profile = profiles.get(candidate.affiliate_id)
        payout_id = f"po_{uuid.uuid4().hex[:24]}"
        payouts.append(
            Payout(
                id=payout_id,
                affiliate_id=candidate.affiliate_id,
                provider=profile.method if profile else "none",
                currency=currency,
                amount_minor=candidate.available,
                state=PayoutState.PROPOSED.value,
                approval="none",
                manual=False,
                requested_by=SYSTEM_TREASURY.id,
                reasons=[],
                idempotency_key=f"payout-{payout_id}",
                attempts=0,
                run_id=run_id,
                created_at=now,
                updated_at=now,
                version=0,
            )
        )
        facts.append(
            {
                "affiliate": affiliate_facts(candidate.affiliate_id, affiliate, profile, now),
                "payable": {"available": owed.get(candidate.affiliate_id, 0)},
                "payout": {
                    "id": payout_id,
                    "requested_by": SYSTEM_TREASURY.id,
                    "approval": "none",
                    "state": PayoutState.PROPOSED.value,
                    "manual": False,
                },
            }
        )

    def states(approved: Sequence[bool]) -> list[dict[str, Any]]:
        """Each payout's facts as `decide_payout` reads them after the ones before it: the
        treasury's cash and today's total move with every approved payout of the group."""
        out: list[dict[str, Any]] = []
        reserved_before = 0
        for payout, fact, earlier_approved in zip(payouts, facts, approved, strict=True):
            treasury_now = {"available": cash - reserved_before, "committed_today": committed + reserved_before}
            out.append(
                {
                    "affiliate": fact["affiliate"],
                    "payable": fact["payable"],
                    "treasury": treasury_now,
                    "payout": fact["payout"],
                }
            )
            reserved_before += payout.amount_minor if earlier_approved else 0
        return out

    outcomes = payments.gateway.decide_many(
        session,
        [
            Action(
                type="payout.create",
                actor=SYSTEM_TREASURY,
                target=Target("affiliate", payout.affiliate_id),
                params=action_params(payout, payments.payments_mode),
            )
            for payout in payouts
        ],
        states=states,
        caller=SYSTEM_TREASURY,
        execute=lambda _db, _params: "reserved with the batch",
    )
    rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    reserved: list[Payout] = []
    for payout, outcome in zip(payouts, outcomes, strict=True):
        payout_id = payout.id
        row = {c.key: getattr(payout, c.key) for c in Payout.__table__.columns}
        row["decision_id"] = outcome.decision_id
        events.append(_event(payout_id, None, PayoutState.PROPOSED, f"treasury run {run_id}", now))
        if outcome.executed:
            row["state"] = PayoutState.APPROVED.value
            events.append(_event(payout_id, PayoutState.PROPOSED, PayoutState.APPROVED, "allowed by policy", now))
            reserved.append(payout)
            report.approved += 1
        elif outcome.record.outcome == "pending_approval":
            row["approval"] = "required"
            events.append(
                _event(
                    payout_id,
                    PayoutState.PROPOSED,
                    PayoutState.PROPOSED,
                    "waiting for approval",
                    now,
                    {"decision_id": outcome.decision_id},
                )
            )
            report.awaiting_approval += 1
        else:
            why = (
                outcome.error
                or "; ".join(str(r.get("message", r.get("code"))) for r in outcome.reasons)
                or ("shadow mode: recorded, not executed" if outcome.record.outcome == "shadow" else "not allowed")
            )
            row["state"] = PayoutState.VOIDED.value
            row["reasons"] = json_safe(outcome.reasons)
            events.append(_event(payout_id, PayoutState.PROPOSED, PayoutState.VOIDED, why, now))
            report.denied += 1
        rows.append(row)
    session.execute(insert(_PAYOUTS), rows)
    session.execute(insert(_EVENTS), events)
    if reserved:
        for spec in (accounts.cash_in_transit(currency), accounts.cash(currency)):
            ensure_account(session, spec)
        entries = record_entries(
            session,
            [
                EntryRequest(
                    f"payout:{p.id}:pending",
                    pending_lines(p),
                    kind=EntryKind.PENDING,
                    description=f"payout {p.id} to {p.affiliate_id} via {p.provider}",
                    metadata={"payout_id": p.id, "affiliate_id": p.affiliate_id},
                )
                for p in reserved
            ],
            created_by=SYSTEM_TREASURY.id,
            now=now,
        )
        session.execute(
            update(_PAYOUTS).where(_PAYOUTS.c.id == bindparam("pid")).values(pending_entry_id=bindparam("eid")),
            [{"pid": p.id, "eid": e.entry_id} for p, e in zip(reserved, entries, strict=True)],
        )
        session.execute(
            update(TreasuryDay)
            .where(TreasuryDay.currency == currency, TreasuryDay.day == now.date())
            .values(
                committed_minor=TreasuryDay.committed_minor + sum(p.amount_minor for p in reserved),
                payouts=TreasuryDay.payouts + len(reserved),
            )
        )
    return [p.id for p in reserved]


def _event(
    payout_id: str,
    from_state: PayoutState | None,
    to_state: PayoutState,
    reason: str,
    at: datetime,
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "payout_id": payout_id,
        "from_state": from_state.value if from_state else None,
        "to_state": to_state.value,
        "actor": SYSTEM_TREASURY.id,
        "reason": reason,
        "data": data or {},
        "created_at": at,
    }


def _decide_one_by_one(
    session_factory: Callable[[], Session],
    payments: Payments,
    batch: list[Candidate],
    run_id: str,
    now: datetime,
    report: TreasuryReport,
) -> list[str]:
    approved: list[str] = []
    with session_factory() as session:
        for candidate in batch:
            try:
                payout = new_payout(
                    session,
                    affiliate_id=candidate.affiliate_id,
                    currency=candidate.currency,
                    amount_minor=candidate.available,
                    requested_by=SYSTEM_TREASURY.id,
                    manual=False,
                    run_id=run_id,
                    now=now,
                    reason=f"treasury run {run_id}",
                )
                outcome = decide_payout(session, payments, payout, SYSTEM_TREASURY, now)
            except PayoutError as exc:
                report.errors.append(f"{candidate.affiliate_id}: {exc}")
                continue
            if outcome.executed:
                approved.append(payout.id)
                report.approved += 1
            elif outcome.record.outcome == "pending_approval":
                report.awaiting_approval += 1
            else:
                report.denied += 1
        session.commit()
    return approved
