"""The payout engine: every payout is a governed action and a persisted state machine.

    proposed ──allow──► approved ──provider accepted──► submitted ──confirmed──► paid
        │                  │                                │                     │
        │ deny / reject    │ provider refused               │ provider failed     │ reversed
        ▼                  ▼                                ▼                     ▼
      voided             failed ◄───────────────────────────┘◄────────────────────┘

* `proposed → approved` happens inside the gateway's transaction: the decision record, the
  state change, the pending ledger entry (payable → cash in transit → cash, all pending) and the
  treasury's daily counter commit together. The provider idempotency key was stored with the
  payout when it was proposed, before any call.
* The provider is called only after that commit, with that key. A crash before, during or after
  the call leaves the payout `approved`; `resume_payouts` calls again with the same key, and the
  provider returns the first transfer instead of making a second one (Stripe Idempotency-Key,
  PayPal sender_batch_id).
* Every state change is a compare-and-set on `state` (plus a payout_events row), so a webhook, a
  poll and a resumed worker racing on one payout change it once.
* `paid` posts the pending entry; `failed` voids it (or, after `paid`, reverses the settlement)."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, select, text, update
from sqlalchemy.orm import Session

from billing import accounts
from billing.alerts import raise_alert
from billing.ledger import (
    _dialect_insert,
    account_by_code,
    balance_of,
    ensure_account,
    open_pending_of,
    post_pending,
    post_pendings,
    record_entry,
    reverse_entry,
    rowcount,
    void_pending,
)
from billing.models import JournalEntry, Payout, PayoutEvent, PayoutProfile, TreasuryDay
from billing.money import format_minor
from billing.providers.base import PayoutProvider, ProviderError, ProviderStatus, SubmitResult, TransferRequest
from billing.rules import AccountType, EntryKind, EntryRequest, Line
from billing.vault import Vault, VaultError
from server.db import json_safe, utcnow
from server.governance.gateway import Action, Actor, Gateway, Outcome, Target
from server.links.models import Affiliate

log = logging.getLogger(__name__)

SYSTEM_TREASURY = Actor(id="system:treasury", kind="system", roles=())
RETRY_BACKOFF = (30, 120, 600, 1800, 3600)  # seconds before the next attempt, by attempt number


class PayoutState(StrEnum):
    PROPOSED = "proposed"
    APPROVED = "approved"
    SUBMITTED = "submitted"
    PAID = "paid"
    FAILED = "failed"
    VOIDED = "voided"


TRANSITIONS: dict[PayoutState, frozenset[PayoutState]] = {
    PayoutState.PROPOSED: frozenset({PayoutState.APPROVED, PayoutState.VOIDED}),
    PayoutState.APPROVED: frozenset({PayoutState.SUBMITTED, PayoutState.PAID, PayoutState.FAILED}),
    PayoutState.SUBMITTED: frozenset({PayoutState.PAID, PayoutState.FAILED}),
    PayoutState.PAID: frozenset({PayoutState.FAILED}),  # a transfer reversed after it was paid
    PayoutState.FAILED: frozenset(),
    PayoutState.VOIDED: frozenset(),
}
OPEN_STATES = (PayoutState.PROPOSED, PayoutState.APPROVED, PayoutState.SUBMITTED)


class PayoutError(Exception):
    """A payout request that cannot be made; `status` is the HTTP status an API would answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Payments:
    """What the payout engine needs besides a session: providers, the destination vault, the
    payments mode and the default threshold, and the governance gateway."""

    gateway: Gateway
    providers: Mapping[str, PayoutProvider]
    vault: Vault
    payments_mode: str = "test"
    default_threshold: Callable[[str], int] = field(default=lambda currency: 0)
    clock: Callable[[], datetime] = field(default=utcnow)


# -- state changes ------------------------------------------------------------------------------------
def transition(
    session: Session,
    payout: Payout,
    to: PayoutState,
    *,
    actor: str,
    reason: str | None = None,
    data: Mapping[str, Any] | None = None,
    values: Mapping[str, Any] | None = None,
) -> bool:
    """Move `payout` to `to` if it is still in the state we read (compare-and-set). False when
    someone else moved it first; raises on a transition the machine does not have."""
    current = PayoutState(payout.state)
    if to not in TRANSITIONS[current]:
        raise PayoutError(f"payout {payout.id} cannot go from {current} to {to}", 409)
    now = utcnow()
    changed = rowcount(
        session.execute(
            update(Payout)
            .where(Payout.id == payout.id, Payout.state == current.value, Payout.version == payout.version)
            .values(state=to.value, updated_at=now, version=Payout.version + 1, **dict(values or {}))
            .execution_options(synchronize_session=False)
        )
    )
    if changed != 1:
        session.expire(payout)
        return False
    session.add(
        PayoutEvent(
            payout_id=payout.id,
            from_state=current.value,
            to_state=to.value,
            actor=actor,
            reason=reason,
            data=json_safe(dict(data or {})),
            created_at=now,
        )
    )
    session.flush()
    session.expire(payout)
    return True


def record_created(session: Session, payout: Payout, actor: str, reason: str | None) -> None:
    session.add(
        PayoutEvent(
            payout_id=payout.id,
            from_state=None,
            to_state=PayoutState.PROPOSED.value,
            actor=actor,
            reason=reason,
            data={},
            created_at=payout.created_at,
        )
    )


# -- what the policy sees ---------------------------------------------------------------------------
def lock_treasury_day(session: Session, currency: str, day: date, lock: bool) -> TreasuryDay:
    session.execute(
        _dialect_insert(session, TreasuryDay)
        .values(currency=currency, day=day, committed_minor=0, payouts=0)
        .on_conflict_do_nothing()
    )
    query = select(TreasuryDay).where(TreasuryDay.currency == currency, TreasuryDay.day == day)
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    row = session.scalars(query.execution_options(populate_existing=True)).one()
    return row


def payable_available(session: Session, affiliate_id: str, currency: str) -> int:
    account = account_by_code(session, accounts.affiliate_payable(affiliate_id, currency).code)
    return balance_of(account).available(AccountType.LIABILITY) if account else 0


def treasury_available(session: Session, currency: str) -> int:
    account = account_by_code(session, accounts.cash(currency).code)
    return balance_of(account).available(AccountType.ASSET) if account else 0


def affiliate_facts(
    affiliate_id: str, affiliate: Affiliate | None, profile: PayoutProfile | None, now: datetime
) -> dict[str, Any]:
    """What the payouts policy knows of the affiliate (`state.affiliate`), from its row and its
    payout profile: status, age, hold, method, and the last change of method or destination (the
    policy holds a destination the affiliate changed themselves through the portal)."""
    since = affiliate.created_at if affiliate is not None else now
    changed_at = profile.destination_changed_at if profile is not None else None
    return {
        "id": affiliate_id,
        "exists": affiliate is not None,
        "status": affiliate.status if affiliate else None,
        "age_days": max(0.0, (now - since).total_seconds() / 86400.0),
        "on_hold": bool(profile.on_hold) if profile else False,
        "payout_method": profile.method if profile else "none",
        "has_destination": bool(profile and profile.destination_enc),
        "destination": {
            "self_service": bool(profile and profile.destination_self_service),
            "changed_hours_ago": (
                max(0.0, (now - changed_at).total_seconds() / 3600.0) if changed_at is not None else None
            ),
        },
    }


def policy_state(session: Session, payout: Payout, now: datetime, *, lock: bool = True) -> dict[str, Any]:
    """The facts the payouts policy judges a payout on (read in the deciding transaction; the
    treasury day row is locked on PostgreSQL so approvals of one currency are serialised)."""
    affiliate = session.get(Affiliate, payout.affiliate_id)
    profile = session.get(PayoutProfile, payout.affiliate_id)
    treasury = lock_treasury_day(session, payout.currency, now.date(), lock)
    return {
        "affiliate": affiliate_facts(payout.affiliate_id, affiliate, profile, now),
        "payable": {"available": payable_available(session, payout.affiliate_id, payout.currency)},
        "treasury": {
            "available": treasury_available(session, payout.currency),
            "committed_today": int(treasury.committed_minor),
        },
        "payout": {
            "id": payout.id,
            "requested_by": payout.requested_by,
            "approval": payout.approval,
            "state": payout.state,
            "manual": payout.manual,
        },
    }


def action_params(payout: Payout, payments_mode: str, **extra: Any) -> dict[str, Any]:
    return {
        "payout_id": payout.id,
        "affiliate_id": payout.affiliate_id,
        "amount": payout.amount_minor,
        "currency": payout.currency,
        "provider": payout.provider,
        "manual": payout.manual,
        "payments_mode": payments_mode,
        **extra,
    }


# -- approval: the ledger write ------------------------------------------------------------------
def pending_lines(payout: Payout) -> tuple[Line, ...]:
    """Payable → cash in transit → cash, all pending: the affiliate's balance and the treasury's
    cash are reserved now, and move for good only when the provider confirms."""
    amount, cur = payout.amount_minor, payout.currency
    payable = accounts.affiliate_payable(payout.affiliate_id, cur).code
    transit = accounts.cash_in_transit(cur).code
    cash = accounts.cash(cur).code
    return (
        Line.debit(payable, amount, cur),
        Line.credit(transit, amount, cur),
        Line.debit(transit, amount, cur),
        Line.credit(cash, amount, cur),
    )


def _approve_in_ledger(
    session: Session,
    payout: Payout,
    actor: str,
    now: datetime,
    reason: str | None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    for spec in (
        accounts.affiliate_payable(payout.affiliate_id, payout.currency),
        accounts.cash_in_transit(payout.currency),
        accounts.cash(payout.currency),
    ):
        ensure_account(session, spec)
    entry = record_entry(
        session,
        EntryRequest(
            idempotency_key=f"payout:{payout.id}:pending",
            lines=pending_lines(payout),
            kind=EntryKind.PENDING,
            description=f"payout {payout.id} to {payout.affiliate_id} via {payout.provider}",
            metadata={"payout_id": payout.id, "affiliate_id": payout.affiliate_id},
        ),
        created_by=actor,
        now=now,
    )
    if not transition(
        session,
        payout,
        PayoutState.APPROVED,
        actor=actor,
        reason=reason,
        values={"pending_entry_id": entry.entry_id, **dict(extra or {})},
    ):
        raise PayoutError(f"payout {payout.id} changed while it was being approved", 409)
    session.execute(
        update(TreasuryDay)
        .where(TreasuryDay.currency == payout.currency, TreasuryDay.day == now.date())
        .values(committed_minor=TreasuryDay.committed_minor + payout.amount_minor, payouts=TreasuryDay.payouts + 1)
    )
    return entry.entry_id


def _release_treasury(session: Session, payout: Payout) -> None:
    row = session.execute(
        select(PayoutEvent.created_at).where(
            PayoutEvent.payout_id == payout.id, PayoutEvent.to_state == PayoutState.APPROVED.value
        )
    ).scalar()
    if row is None:
        return
    session.execute(
        update(TreasuryDay)
        .where(TreasuryDay.currency == payout.currency, TreasuryDay.day == row.date())
        .values(committed_minor=TreasuryDay.committed_minor - payout.amount_minor)
    )


# -- proposing ----------------------------------------------------------------------------------------
def new_payout(
    session: Session,
    *,
    affiliate_id: str,
    currency: str,
    amount_minor: int,
    requested_by: str,
    manual: bool,
    run_id: str | None,
    now: datetime,
    reason: str | None = None,
) -> Payout:
    profile = session.get(PayoutProfile, affiliate_id)
    payout_id = f"po_{uuid.uuid4().hex[:24]}"
    payout = Payout(
        id=payout_id,
        affiliate_id=affiliate_id,
        provider=profile.method if profile else "none",
        currency=currency,
        amount_minor=amount_minor,
        state=PayoutState.PROPOSED.value,
        approval="none",
        manual=manual,
        requested_by=requested_by,
        reasons=[],
        idempotency_key=f"payout-{payout_id}",  # stored before any provider call
        attempts=0,
        run_id=run_id,
        created_at=now,
        updated_at=now,
        version=0,
    )
    session.add(payout)
    session.flush()
    record_created(session, payout, requested_by, reason)
    return payout


def decide_payout(session: Session, payments: Payments, payout: Payout, actor: Actor, now: datetime) -> Outcome:
    """Ask the payouts policy about a proposed payout; approve it in the same transaction when
    allowed, park it for a human when approval is required, void it otherwise."""

    def approve(db: Session, _params: dict[str, Any]) -> str:
        return _approve_in_ledger(db, payout, actor.id, now, "allowed by policy")

    outcome = payments.gateway.decide(
        session,
        Action(
            type="payout.create",
            actor=actor,
            target=Target("affiliate", payout.affiliate_id),
            params=action_params(payout, payments.payments_mode),
        ),
        state=policy_state(session, payout, now),
        caller=actor,
        execute=approve,
    )
    session.expire(payout)
    if outcome.executed:
        session.execute(update(Payout).where(Payout.id == payout.id).values(decision_id=outcome.decision_id))
    elif outcome.record.outcome == "pending_approval":
        session.execute(
            update(Payout)
            .where(Payout.id == payout.id)
            .values(approval="required", decision_id=outcome.decision_id, reasons=[], version=Payout.version + 1)
        )
        session.add(
            PayoutEvent(
                payout_id=payout.id,
                from_state=PayoutState.PROPOSED.value,
                to_state=PayoutState.PROPOSED.value,
                actor=actor.id,
                reason="waiting for approval by "
                + str(outcome.obligations.get("require_approval", {}).get("role", "finance")),
                data={"decision_id": outcome.decision_id},
                created_at=now,
            )
        )
    else:
        why = (
            outcome.error
            or "; ".join(str(r.get("message", r.get("code"))) for r in outcome.reasons)
            or ("shadow mode: recorded, not executed" if outcome.record.outcome == "shadow" else "not allowed")
        )
        session.refresh(payout)
        transition(
            session,
            payout,
            PayoutState.VOIDED,
            actor=actor.id,
            reason=why,
            values={"decision_id": outcome.decision_id, "reasons": json_safe(outcome.reasons)},
        )
    session.flush()
    session.refresh(payout)
    return outcome


def propose_payout(
    session: Session,
    payments: Payments,
    *,
    affiliate_id: str,
    currency: str,
    amount_minor: int | None,
    actor: Actor,
    manual: bool,
    run_id: str | None = None,
    reason: str | None = None,
) -> tuple[Payout, Outcome]:
    """Propose a payout (the treasury's or a manual one) and decide it. `amount_minor` None pays
    the affiliate's whole available payable balance."""
    now = payments.clock()
    if amount_minor is None:
        amount_minor = payable_available(session, affiliate_id, currency)
    if amount_minor <= 0:
        raise PayoutError(f"nothing to pay: {affiliate_id} has no available {currency} payable balance")
    if session.get(Affiliate, affiliate_id) is None:
        raise PayoutError(f"no affiliate {affiliate_id}", 404)
    open_payout = session.scalar(
        select(Payout.id).where(
            Payout.affiliate_id == affiliate_id, Payout.currency == currency, Payout.state == PayoutState.PROPOSED.value
        )
    )
    if open_payout is not None:
        raise PayoutError(f"payout {open_payout} of {affiliate_id} is still waiting for a decision", 409)
    payout = new_payout(
        session,
        affiliate_id=affiliate_id,
        currency=currency,
        amount_minor=amount_minor,
        requested_by=actor.id,
        manual=manual,
        run_id=run_id,
        now=now,
        reason=reason,
    )
    outcome = decide_payout(session, payments, payout, actor, now)
    return payout, outcome


# -- the approval queue -------------------------------------------------------------------------------
def _awaiting(session: Session, payout_id: str) -> Payout:
    payout = session.get(Payout, payout_id)
    if payout is None:
        raise PayoutError(f"no payout {payout_id}", 404)
    if payout.state != PayoutState.PROPOSED or payout.approval != "required":
        raise PayoutError(f"payout {payout_id} is {payout.state}, not waiting for approval", 409)
    return payout


def approve_payout(
    session: Session, payments: Payments, payout_id: str, actor: Actor, reason: str | None
) -> tuple[Payout, Outcome]:
    """A human approves a parked payout; the policy checks it again with the human as actor."""
    payout = _awaiting(session, payout_id)
    now = payments.clock()

    def approve(db: Session, _params: dict[str, Any]) -> str:
        return _approve_in_ledger(
            db, payout, actor.id, now, reason or "approved", {"approval": "approved", "approved_by": actor.id}
        )

    outcome = payments.gateway.decide(
        session,
        Action(
            type="payout.approve",
            actor=actor,
            target=Target("affiliate", payout.affiliate_id),
            params=action_params(payout, payments.payments_mode, reason=reason),
        ),
        state=policy_state(session, payout, now),
        caller=actor,
        execute=approve,
        note=reason,
    )
    session.refresh(payout)
    if not outcome.executed:
        session.add(
            PayoutEvent(
                payout_id=payout.id,
                from_state=payout.state,
                to_state=payout.state,
                actor=actor.id,
                reason="approval refused: "
                + "; ".join(str(r.get("message", r.get("code"))) for r in outcome.reasons)[:900],
                data={"decision_id": outcome.decision_id},
                created_at=now,
            )
        )
    return payout, outcome


def reject_payout(
    session: Session, payments: Payments, payout_id: str, actor: Actor, reason: str | None
) -> tuple[Payout, Outcome]:
    payout = _awaiting(session, payout_id)

    def reject(db: Session, _params: dict[str, Any]) -> bool:
        return transition(
            db,
            payout,
            PayoutState.VOIDED,
            actor=actor.id,
            reason=f"rejected: {reason}",
            values={"approval": "rejected", "approved_by": actor.id},
        )

    outcome = payments.gateway.decide(
        session,
        Action(
            type="payout.reject",
            actor=actor,
            target=Target("affiliate", payout.affiliate_id),
            params=action_params(payout, payments.payments_mode, reason=reason),
        ),
        state=policy_state(session, payout, payments.clock(), lock=False),
        caller=actor,
        execute=reject,
        note=reason,
    )
    session.refresh(payout)
    return payout, outcome


# -- settling and failing -----------------------------------------------------------------------------
def settle_payout(
    session: Session,
    payout: Payout,
    *,
    actor: str,
    reference: str | None = None,
    reason: str = "confirmed by the provider",
) -> bool:
    """Paid: the pending entry is posted (payable and cash move for good)."""
    if payout.state == PayoutState.PAID:
        return False
    values: dict[str, Any] = {"provider_status": "paid"}
    if reference and not payout.provider_ref:
        values["provider_ref"] = reference
    if not transition(session, payout, PayoutState.PAID, actor=actor, reason=reason, values=values):
        return False
    assert payout.pending_entry_id is not None
    post_pending(
        session,
        payout.pending_entry_id,
        f"payout:{payout.id}:post",
        description=f"payout {payout.id} paid",
        created_by=actor,
    )
    return True


def settle_payouts(session: Session, confirmed: Sequence[tuple[str, str]], *, actor: str) -> set[str]:
    """Paid, for many payouts at once ((payout id, provider reference) pairs): one compare-and-set
    UPDATE, their history, and their pending entries posted in one batch. Returns the ids that
    moved (a payout already paid or failed is left alone)."""
    if not confirmed:
        return set()
    now = utcnow()
    params: dict[str, Any] = {"now": now}
    for i, (pid, ref) in enumerate(confirmed):
        params.update({f"id{i}": pid, f"ref{i}": ref})
    was = {
        str(i): str(st)
        for i, st in session.execute(
            select(Payout.id, Payout.state).where(Payout.id.in_([pid for pid, _ in confirmed]))
        )
    }
    moved = {
        str(r[0]): (str(was.get(r[0], "submitted")), str(r[1]))
        for r in session.execute(_paid_update(len(confirmed)), params)
    }
    if not moved:
        return set()
    session.execute(
        insert(PayoutEvent.__table__),  # type: ignore[arg-type]
        [
            {
                "payout_id": pid,
                "from_state": was,
                "to_state": PayoutState.PAID.value,
                "actor": actor,
                "reason": "confirmed by the provider",
                "data": {},
                "created_at": now,
            }
            for pid, (was, _) in moved.items()
        ],
    )
    post_pendings(session, [(entry, f"payout:{pid}:post") for pid, (_, entry) in moved.items()], created_by=actor)
    return set(moved)


@functools.lru_cache(maxsize=8)
def _paid_update(rows: int) -> Any:
    values = ", ".join(f"(:id{i}, :ref{i})" for i in range(rows))
    return text(
        f"""
        UPDATE payouts
           SET state = 'paid', provider_status = 'paid', provider_ref = COALESCE(payouts.provider_ref, v.ref),
               updated_at = :now, version = version + 1
          FROM (SELECT column1 AS id, column2 AS ref FROM (VALUES {values}) AS x) AS v
         WHERE payouts.id = v.id AND payouts.state IN ('approved', 'submitted')
           AND payouts.pending_entry_id IS NOT NULL
        RETURNING payouts.id, payouts.pending_entry_id
        """  # noqa: S608 - only numbered bind placeholders are formatted in
    )


def poll_payouts(
    session_factory: Callable[[], Session],
    payments: Payments,
    payout_ids: Sequence[str],
    *,
    pool: Executor,
    actor: str = "system:poll",
    chunk: int = 200,
) -> dict[str, str]:
    """Ask the providers about many submitted payouts at once; record the answers a chunk per
    transaction (the paid ones settled in bulk). Returns each payout's state afterwards."""
    with session_factory() as session:
        targets = [
            (p.id, p.provider, p.provider_ref)
            for p in session.scalars(
                select(Payout).where(Payout.id.in_(payout_ids), Payout.state == PayoutState.SUBMITTED.value)
            )
            if p.provider_ref and p.provider in payments.providers
        ]

    def ask(provider: str, reference: str, payout_id: str) -> SubmitResult | ProviderError:
        try:
            return payments.providers[provider].status(reference, payout_id)
        except ProviderError as exc:
            return exc

    calls = [(pid, pool.submit(ask, provider, ref, pid)) for pid, provider, ref in targets if ref]
    states: dict[str, str] = {}
    for start in range(0, len(calls), chunk):
        answers = [(pid, future.result()) for pid, future in calls[start : start + chunk]]
        with session_factory() as session:
            paid = [
                (pid, a.reference)
                for pid, a in answers
                if isinstance(a, SubmitResult) and a.status is ProviderStatus.PAID
            ]
            for pid in settle_payouts(session, paid, actor=actor):
                states[pid] = PayoutState.PAID.value
            for pid, answer in answers:
                if pid in states:
                    continue
                payout = session.get(Payout, pid)
                assert payout is not None
                if isinstance(answer, ProviderError):
                    _retry_later(session, payout, answer.message, code=answer.code)
                else:
                    apply_provider_result(session, payout, answer, actor=actor)
                session.flush()
                session.refresh(payout)
                states[pid] = payout.state
            session.commit()
    return states


def fail_payout(session: Session, payout: Payout, *, actor: str, reason: str) -> bool:
    """Failed: the reservation is voided (or, after paid, the settlement is reversed), the day's
    treasury counter released, and an alert raised."""
    was = PayoutState(payout.state)
    if was in (PayoutState.FAILED, PayoutState.VOIDED):
        return False
    if not transition(
        session,
        payout,
        PayoutState.FAILED,
        actor=actor,
        reason=reason,
        values={"last_error": reason[:1000], "provider_status": "failed"},
    ):
        return False
    pending_id = payout.pending_entry_id
    if pending_id and was != PayoutState.PAID and open_pending_of(session, pending_id):
        void_pending(
            session, pending_id, f"payout:{payout.id}:void", description=f"payout {payout.id} failed", created_by=actor
        )
    elif pending_id and was == PayoutState.PAID:
        settled = session.scalar(select(JournalEntry.id).where(JournalEntry.pending_entry_id == pending_id))
        if settled is not None:
            reverse_entry(
                session,
                str(settled),
                f"payout:{payout.id}:reversal",
                description=f"payout {payout.id} reversed after it was paid",
                created_by=actor,
            )
    _release_treasury(session, payout)
    raise_alert(
        session,
        "payout_failed",
        payout.id,
        f"Payout {payout.id} failed ({format_minor(payout.amount_minor, payout.currency)} {payout.currency})",
        f"Payout {payout.id} to affiliate {payout.affiliate_id} via {payout.provider} failed: {reason}. "
        "The reserved amount is back on the affiliate's payable balance.",
        data={
            "payout_id": payout.id,
            "affiliate_id": payout.affiliate_id,
            "provider": payout.provider,
            "amount_minor": payout.amount_minor,
            "currency": payout.currency,
            "was": was.value,
        },
    )
    return True


def apply_provider_result(session: Session, payout: Payout, result: SubmitResult, *, actor: str) -> None:
    """Record what the provider said about a payout (submission answer, poll or webhook)."""
    if result.status is ProviderStatus.PAID:
        settle_payout(session, payout, actor=actor, reference=result.reference)
    elif result.status is ProviderStatus.FAILED:
        fail_payout(session, payout, actor=actor, reason=f"{payout.provider} reports {result.raw_status}")
    elif payout.state == PayoutState.APPROVED:
        transition(
            session,
            payout,
            PayoutState.SUBMITTED,
            actor=actor,
            reason=f"accepted as {result.reference}",
            values={"provider_ref": result.reference, "provider_status": result.raw_status, "last_error": None},
        )


# -- submission ---------------------------------------------------------------------------------------
@dataclass
class SubmitReport:
    payout_id: str
    state: str
    error: str | None = None


def _destination(session: Session, vault: Vault, affiliate_id: str) -> str:
    profile = session.get(PayoutProfile, affiliate_id)
    if profile is None or not profile.destination_enc:
        raise PayoutError(f"{affiliate_id} has no payout destination on file")
    return vault.decrypt(profile.destination_enc)


def _prepare(session: Session, payments: Payments, payout: Payout) -> TransferRequest:
    provider = payments.providers.get(payout.provider)
    if provider is None:
        raise PayoutError(f"payout provider {payout.provider!r} is not configured")
    return TransferRequest(
        payout_id=payout.id,
        idempotency_key=payout.idempotency_key,
        amount_minor=payout.amount_minor,
        currency=payout.currency,
        destination=_destination(session, payments.vault, payout.affiliate_id),
        description=f"SmartLinks commission payout {payout.id}",
    )


def _call(payments: Payments, provider_name: str, request: TransferRequest) -> SubmitResult | ProviderError:
    """The provider call, outside any transaction; an error is returned, not raised."""
    try:
        return payments.providers[provider_name].submit(request)
    except ProviderError as exc:
        return exc


def _record(session: Session, payout: Payout, answer: SubmitResult | ProviderError, actor: str) -> None:
    session.execute(update(Payout).where(Payout.id == payout.id).values(attempts=Payout.attempts + 1))
    if isinstance(answer, ProviderError):
        if answer.retryable or answer.outcome_unknown:
            _retry_later(session, payout, answer.message, code=answer.code)
        else:
            fail_payout(session, payout, actor=actor, reason=answer.message)
    else:
        apply_provider_result(session, payout, answer, actor=actor)


def submit_payout(
    session_factory: Callable[[], Session], payments: Payments, payout_id: str, *, actor: str = "system:payouts"
) -> SubmitReport:
    """Send an approved payout to its provider with its stored idempotency key, then record the
    answer. Safe to call again at any time: the provider pays once per key (the key was stored
    when the payout was proposed, so nothing needs to be written before the call)."""
    with session_factory() as session:
        payout = session.get(Payout, payout_id)
        if payout is None or payout.state != PayoutState.APPROVED:
            return SubmitReport(payout_id, payout.state if payout else "missing")
        try:
            request = _prepare(session, payments, payout)
        except (PayoutError, VaultError) as exc:
            _retry_later(session, payout, str(exc), code="configuration")
            session.commit()
            return SubmitReport(payout_id, payout.state, str(exc))
        provider_name = payout.provider
    answer = _call(payments, provider_name, request)  # no transaction is open during the call
    with session_factory() as session:
        payout = session.get(Payout, payout_id)
        assert payout is not None
        _record(session, payout, answer, actor)
        session.commit()
        session.refresh(payout)
        return SubmitReport(payout_id, payout.state, answer.message if isinstance(answer, ProviderError) else None)


def submit_payouts(
    session_factory: Callable[[], Session],
    payments: Payments,
    payout_ids: Sequence[str],
    *,
    pool: Executor,
    actor: str = "system:payouts",
    chunk: int = 200,
) -> list[SubmitReport]:
    """Many approved payouts at once: requests prepared in one read, provider calls in `pool`,
    answers recorded `chunk` at a time (one transaction each; the common "accepted" answer with
    one compare-and-set UPDATE for the whole chunk). Same guarantees as `submit_payout`."""
    with session_factory() as session:
        payouts = {p.id: p for p in session.scalars(select(Payout).where(Payout.id.in_(payout_ids)))}
        profiles = {
            p.affiliate_id: p
            for p in session.scalars(
                select(PayoutProfile).where(PayoutProfile.affiliate_id.in_({p.affiliate_id for p in payouts.values()}))
            )
        }
        calls: list[tuple[str, Future[SubmitResult | ProviderError]]] = []
        reports: list[SubmitReport] = []
        for payout_id in payout_ids:
            payout = payouts.get(payout_id)
            if payout is None or payout.state != PayoutState.APPROVED:
                continue
            profile = profiles.get(payout.affiliate_id)
            if payout.provider not in payments.providers or profile is None or not profile.destination_enc:
                reports.append(submit_payout(session_factory, payments, payout_id, actor=actor))  # records why
                continue
            request = TransferRequest(
                payout.id,
                payout.idempotency_key,
                payout.amount_minor,
                payout.currency,
                payments.vault.decrypt(profile.destination_enc),
                f"SmartLinks commission payout {payout.id}",
            )
            calls.append((payout_id, pool.submit(_call, payments, payout.provider, request)))
    for start in range(0, len(calls), chunk):
        answers = [(pid, future.result()) for pid, future in calls[start : start + chunk]]
        with session_factory() as session:
            accepted = [
                (pid, a) for pid, a in answers if isinstance(a, SubmitResult) and a.status is ProviderStatus.SUBMITTED
            ]
            done = _record_accepted(session, accepted, actor)
            for pid, answer in answers:
                if pid in done:
                    reports.append(SubmitReport(pid, PayoutState.SUBMITTED.value))
                    continue
                payout = session.get(Payout, pid)
                assert payout is not None
                if payout.state == PayoutState.APPROVED:
                    _record(session, payout, answer, actor)
                session.flush()
                session.refresh(payout)
                reports.append(
                    SubmitReport(pid, payout.state, answer.message if isinstance(answer, ProviderError) else None)
                )
            session.commit()
    return reports


def _record_accepted(session: Session, accepted: Sequence[tuple[str, SubmitResult]], actor: str) -> set[str]:
    """approved -> submitted for every payout still approved, in one statement; the ids changed."""
    if not accepted:
        return set()
    now = utcnow()
    params: dict[str, Any] = {"now": now}
    for i, (pid, result) in enumerate(accepted):
        params.update({f"id{i}": pid, f"ref{i}": result.reference, f"st{i}": result.raw_status[:40]})
    changed = {str(row[0]) for row in session.execute(_accepted_update(len(accepted)), params)}
    if changed:
        session.execute(
            insert(PayoutEvent.__table__),  # type: ignore[arg-type]
            [
                {
                    "payout_id": pid,
                    "from_state": PayoutState.APPROVED.value,
                    "to_state": PayoutState.SUBMITTED.value,
                    "actor": actor,
                    "reason": f"accepted as {result.reference}",
                    "data": {},
                    "created_at": now,
                }
                for pid, result in accepted
                if pid in changed
            ],
        )
    return changed


@functools.lru_cache(maxsize=8)
def _accepted_update(rows: int) -> Any:
    values = ", ".join(f"(:id{i}, :ref{i}, :st{i})" for i in range(rows))
    return text(
        f"""
        UPDATE payouts
           SET state = 'submitted', provider_ref = v.ref, provider_status = v.st, attempts = attempts + 1,
               last_error = NULL, updated_at = :now, version = version + 1
          FROM (SELECT column1 AS id, column2 AS ref, column3 AS st FROM (VALUES {values}) AS x) AS v
         WHERE payouts.id = v.id AND payouts.state = 'approved'
        RETURNING payouts.id
        """  # noqa: S608 - only numbered bind placeholders are formatted in
    )


def _retry_later(session: Session, payout: Payout, message: str, *, code: str) -> None:
    delay = RETRY_BACKOFF[min(max(payout.attempts - 1, 0), len(RETRY_BACKOFF) - 1)]
    session.execute(
        update(Payout)
        .where(Payout.id == payout.id)
        .values(last_error=message[:1000], next_attempt_at=utcnow() + timedelta(seconds=delay))
    )
    raise_alert(
        session,
        "provider_error",
        f"{payout.provider}:{code}",
        f"{payout.provider} error ({code}): payouts are being retried",
        f"Submitting payout {payout.id} failed: {message}. It stays approved and is retried with the same "
        "idempotency key (no double payment).",
        severity="warning",
        data={"payout_id": payout.id, "provider": payout.provider, "code": code},
    )


# -- resuming -----------------------------------------------------------------------------------------
@dataclass
class ResumeReport:
    submitted: int = 0
    polled: int = 0
    paid: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def resume_payouts(
    session_factory: Callable[[], Session],
    payments: Payments,
    *,
    now: datetime | None = None,
    poll_after: timedelta = timedelta(minutes=10),
    include_backoff: bool = False,
) -> ResumeReport:
    """Finish what a crash or an outage left: submit approved payouts again (same key), and ask
    the provider about submitted ones that have not been confirmed for `poll_after`."""
    now = now or payments.clock()
    report = ResumeReport()
    with session_factory() as session:
        query = select(Payout.id).where(Payout.state == PayoutState.APPROVED.value)
        if not include_backoff:
            query = query.where((Payout.next_attempt_at.is_(None)) | (Payout.next_attempt_at <= now))
        approved = list(session.scalars(query.order_by(Payout.created_at)))
        stale = list(
            session.scalars(
                select(Payout.id)
                .where(Payout.state == PayoutState.SUBMITTED.value, Payout.updated_at <= now - poll_after)
                .order_by(Payout.created_at)
            )
        )
    for payout_id in approved:
        result = submit_payout(session_factory, payments, payout_id)
        report.submitted += 1
        if result.error:
            report.errors.append(f"{payout_id}: {result.error}")
    if stale:
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="payout-poll") as pool:
            states = poll_payouts(session_factory, payments, stale, pool=pool)
        report.polled += len(stale)
        report.paid += sum(state == PayoutState.PAID for state in states.values())
        report.failed += sum(state == PayoutState.FAILED for state in states.values())
    return report


def poll_payout(session_factory: Callable[[], Session], payments: Payments, payout_id: str) -> str:
    with session_factory() as session:
        payout = session.get(Payout, payout_id)
        if payout is None or payout.state != PayoutState.SUBMITTED or not payout.provider_ref:
            return payout.state if payout else "missing"
        provider = payments.providers.get(payout.provider)
        reference = payout.provider_ref
    if provider is None:
        return PayoutState.SUBMITTED.value
    try:
        result = provider.status(reference, payout_id)
    except ProviderError as exc:
        with session_factory() as session:
            payout = session.get(Payout, payout_id)
            assert payout is not None
            _retry_later(session, payout, exc.message, code=exc.code)
            session.commit()
        return PayoutState.SUBMITTED.value
    with session_factory() as session:
        payout = session.get(Payout, payout_id)
        assert payout is not None
        apply_provider_result(session, payout, result, actor="system:poll")
        session.commit()
        session.refresh(payout)
        return payout.state


def lock_payout_row(session: Session, payout_id: str) -> None:
    """Serialise webhook and poll handling of one payout on PostgreSQL (SQLite serialises writers)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT id FROM payouts WHERE id = :id FOR UPDATE"), {"id": payout_id})
