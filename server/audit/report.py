"""What happened in a period, from the records the product keeps anyway: every decision (with its
outcome, reasons and policy revision), every policy activation and rollback, every kill switch
change, the payouts by state, the ledger's entries and reversals, and the financial documents."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing.models import FinancialDocument, JournalEntry, LedgerAccount, Payout, Posting
from server.errors import Problem
from server.governance.models import Decision
from server.policies.models import PolicyActivation

MAX_PERIOD = timedelta(days=366)
STREAM_BATCH = 1000


@dataclass(frozen=True)
class Period:
    since: datetime
    until: datetime

    def as_dict(self) -> dict[str, str]:
        return {"since": self.since.isoformat(), "until": self.until.isoformat()}


def _instant(value: str, name: str, *, end_of_day: bool) -> datetime:
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
            return moment + timedelta(days=1) if end_of_day else moment
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise Problem(
            400, "Validation failed", f"{name} is not a date", errors={name: ["YYYY-MM-DD or an ISO 8601 instant"]}
        ) from exc
    if moment.tzinfo is None:
        raise Problem(400, "Validation failed", f"{name} needs a time zone", errors={name: ["add Z or +00:00"]})
    return moment.astimezone(UTC)


def period_from(args: dict[str, str], now: datetime) -> Period:
    """`since` and `until` (dates are whole UTC days, `until` included; instants as given);
    the last 30 days by default; at most 366 days."""
    until = _instant(args["until"], "until", end_of_day=True) if args.get("until") else now
    since = _instant(args["since"], "since", end_of_day=False) if args.get("since") else until - timedelta(days=30)
    if since >= until:
        raise Problem(400, "Validation failed", "since must be before until", errors={"since": ["after until"]})
    if until - since > MAX_PERIOD:
        raise Problem(400, "Validation failed", "a period is at most 366 days", errors={"until": ["too far"]})
    return Period(since, until)


def _in(column: Any, period: Period) -> Any:
    return (column >= period.since) & (column < period.until)


def _switch(decision: Decision) -> dict[str, Any]:
    params = (decision.input or {}).get("action", {}).get("params") or {}
    return {
        "at": decision.created_at.isoformat(),
        "actor": decision.actor_id,
        "outcome": decision.outcome,
        "enabled": params.get("enabled"),
        "scope": params.get("scope"),
        "reason": params.get("reason"),
        "target": decision.target_id,
        "decision_id": decision.id,
    }


def _text_key(item: tuple[Any, Any]) -> str:
    return str(item[0])


def compliance_report(session: Session, period: Period) -> dict[str, Any]:
    in_period = _in(Decision.created_at, period)
    outcomes = dict(
        session.execute(select(Decision.outcome, func.count()).where(in_period).group_by(Decision.outcome)).all()
    )
    by_type = session.execute(
        select(Decision.action_type, Decision.outcome, func.count())
        .where(in_period)
        .group_by(Decision.action_type, Decision.outcome)
        .order_by(Decision.action_type, Decision.outcome)
    ).all()
    actions: dict[str, dict[str, int]] = {}
    for action_type, outcome, count in by_type:
        actions.setdefault(str(action_type), {})[str(outcome)] = int(count)
    reasons: Counter[str] = Counter()
    refused = (
        select(Decision.reasons)
        .where(in_period, Decision.outcome.in_(("denied", "error")))
        .execution_options(yield_per=STREAM_BATCH)
    )
    for (items,) in session.execute(refused):
        for reason in items or []:
            if isinstance(reason, dict):
                reasons[str(reason.get("code") or "unknown")] += 1
    revisions = dict(
        session.execute(
            select(Decision.policy_revision, func.count()).where(in_period).group_by(Decision.policy_revision)
        ).all()
    )
    by_people = session.scalar(select(func.count()).where(in_period, Decision.actor_kind == "user")) or 0
    active_at_start = session.scalar(
        select(PolicyActivation.revision)
        .where(PolicyActivation.created_at < period.since)
        .order_by(PolicyActivation.created_at.desc(), PolicyActivation.id.desc())
        .limit(1)
    )
    activations = session.scalars(
        select(PolicyActivation).where(_in(PolicyActivation.created_at, period)).order_by(PolicyActivation.created_at)
    ).all()
    switches = session.scalars(
        select(Decision)
        .where(in_period, Decision.action_type == "controls.kill_switch")
        .order_by(Decision.created_at)
        .limit(500)
    ).all()
    payouts = session.execute(
        select(Payout.state, Payout.currency, func.count(), func.coalesce(func.sum(Payout.amount_minor), 0))
        .where(_in(Payout.created_at, period))
        .group_by(Payout.state, Payout.currency)
        .order_by(Payout.state, Payout.currency)
    ).all()
    manual = session.scalar(select(func.count()).where(_in(Payout.created_at, period), Payout.manual.is_(True))) or 0
    entries = session.scalar(select(func.count()).select_from(JournalEntry).where(_in(JournalEntry.created_at, period)))
    reversals = session.scalar(
        select(func.count())
        .select_from(JournalEntry)
        .where(_in(JournalEntry.created_at, period), JournalEntry.reverses_entry_id.is_not(None))
    )
    documents = dict(
        session.execute(
            select(FinancialDocument.kind, func.count())
            .where(_in(FinancialDocument.issued_at, period))
            .group_by(FinancialDocument.kind)
        ).all()
    )
    return {
        "period": period.as_dict(),
        "decisions": {
            "total": sum(int(v) for v in outcomes.values()),
            "by_outcome": {str(k): int(v) for k, v in sorted(outcomes.items())},
            "by_action_type": actions,
            "denial_reasons": dict(reasons.most_common()),
            "by_policy_revision": {
                str(k or "none"): int(v) for k, v in sorted(revisions.items(), key=lambda kv: str(kv[0]))
            },
            "by_people": int(by_people),
        },
        "policy": {
            "active_at_start": active_at_start,
            "changes": [
                {
                    "at": a.created_at.isoformat(),
                    "kind": a.kind,
                    "revision": a.revision,
                    "previous_revision": a.previous_revision,
                    "actor": a.actor_id,
                    "reason": a.reason,
                    "decision_id": a.decision_id,
                }
                for a in activations
            ],
        },
        "kill_switches": [_switch(d) for d in switches],
        "payouts": {
            "by_state": [
                {"state": str(state), "currency": str(currency), "count": int(count), "amount_minor": int(total)}
                for state, currency, count, total in payouts
            ],
            "manual": int(manual),
        },
        "ledger": {"entries": int(entries or 0), "reversals": int(reversals or 0)},
        "documents": {str(k): int(v) for k, v in sorted(documents.items())},
    }


# -- exports ------------------------------------------------------------------------------------------
DECISION_COLUMNS = (
    "decision_id",
    "created_at",
    "action_type",
    "actor_id",
    "actor_kind",
    "caller_id",
    "target_kind",
    "target_id",
    "outcome",
    "allow",
    "executed",
    "dry_run",
    "mode",
    "reason_codes",
    "reasons",
    "policy_revision",
    "error_code",
    "latency_ms",
)
LEDGER_COLUMNS = (
    "entry_id",
    "created_at",
    "kind",
    "description",
    "created_by",
    "reverses_entry_id",
    "line",
    "account_code",
    "account_type",
    "owner_kind",
    "owner_id",
    "debit_minor",
    "credit_minor",
    "currency",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    """A CSV cell that a spreadsheet will not run as a formula (OWASP CSV injection)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return text
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_stream(header: tuple[str, ...], rows: Iterator[tuple[Any, ...]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    count = 0
    for row in rows:
        writer.writerow([_cell(v) for v in row])
        count += 1
        if count % STREAM_BATCH == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def decision_rows(session: Session, period: Period) -> Iterator[tuple[Any, ...]]:
    query = (
        select(Decision)
        .where(_in(Decision.created_at, period))
        .order_by(Decision.created_at, Decision.id)
        .execution_options(yield_per=STREAM_BATCH)
    )
    for d in session.scalars(query):
        reasons = [r for r in d.reasons or [] if isinstance(r, dict)]
        yield (
            d.id,
            d.created_at,
            d.action_type,
            d.actor_id,
            d.actor_kind,
            d.caller_id,
            d.target_kind,
            d.target_id,
            d.outcome,
            d.allow,
            d.executed,
            d.dry_run,
            d.mode,
            ";".join(str(r.get("code", "")) for r in reasons),
            " | ".join(str(r.get("message", "")) for r in reasons),
            d.policy_revision,
            d.error_code,
            round(d.latency_ms, 3),
        )


def ledger_rows(session: Session, period: Period) -> Iterator[tuple[Any, ...]]:
    query = (
        select(JournalEntry, Posting, LedgerAccount)
        .join(Posting, Posting.entry_id == JournalEntry.id)
        .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
        .where(_in(JournalEntry.created_at, period))
        .order_by(JournalEntry.created_at, JournalEntry.id, Posting.line)
        .execution_options(yield_per=STREAM_BATCH)
    )
    for entry, posting, account in session.execute(query):
        yield (
            entry.id,
            entry.created_at,
            entry.kind,
            entry.description,
            entry.created_by,
            entry.reverses_entry_id,
            posting.line,
            account.code,
            account.type,
            account.owner_kind,
            account.owner_id,
            posting.amount if posting.amount > 0 else 0,
            -posting.amount if posting.amount < 0 else 0,
            posting.currency,
        )


def decisions_csv(session: Session, period: Period) -> Iterator[str]:
    return _csv_stream(DECISION_COLUMNS, decision_rows(session, period))


def ledger_csv(session: Session, period: Period) -> Iterator[str]:
    return _csv_stream(LEDGER_COLUMNS, ledger_rows(session, period))
