"""The double-entry ledger on a SQLAlchemy session: accounts, entries with idempotency keys,
two-phase (pending, then posted or voided) entries, reversals, balances and verification.

Every function writes in the caller's transaction; the caller commits. The entry row, its postings
and the balance updates of its accounts are one transaction, so they commit together or not at
all. A `LedgerError` leaves partial writes in the transaction: roll it (or the savepoint) back.

Concurrency: the idempotency key is claimed first (INSERT ... ON CONFLICT DO NOTHING, so a
concurrent duplicate waits for the first and then sees it), balances are updated in account-id
order (no lock cycles), and the account flags are checked on the updated row."""

from __future__ import annotations

import functools
import uuid
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Table, bindparam, func, insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from billing.accounts import AccountSpec
from billing.models import JournalEntry, LedgerAccount, Posting
from billing.rules import (
    PHASE_OF_KIND,
    AccountType,
    Balance,
    BalanceLimitExceeded,
    EntryKind,
    EntryRequest,
    IdempotencyConflict,
    InvalidEntry,
    Line,
    PendingStateError,
    UnknownAccount,
    check_currencies,
    check_key,
    content_hash,
    limit_violation,
    reversal_lines,
    validate_lines,
)
from server.db import utcnow


def new_entry_id() -> str:
    return f"ent_{uuid.uuid4().hex}"


@dataclass(frozen=True)
class EntryResult:
    entry_id: str
    kind: str
    replayed: bool  # True when the idempotency key had been used with the same content


def rowcount(result: Any) -> int:
    """Rows an UPDATE or DELETE touched (a CursorResult's rowcount, typed)."""
    return int(cast(CursorResult[Any], result).rowcount)


def _dialect_insert(session: Session, table: Any) -> Any:
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database {name}")


# -- accounts ---------------------------------------------------------------------------------------
def ensure_account(session: Session, spec: AccountSpec) -> str:
    """The id of the account with `spec.code`, created when missing (safe under concurrency)."""
    found = session.execute(select(LedgerAccount.id).where(LedgerAccount.code == spec.code)).scalar()
    if found is not None:
        return str(found)
    stmt = (
        _dialect_insert(session, LedgerAccount)
        .values(
            id=f"acc_{uuid.uuid4().hex}",
            code=spec.code,
            name=spec.name,
            type=spec.type.value,
            currency=spec.currency,
            owner_kind=spec.owner_kind,
            owner_id=spec.owner_id,
            debits_must_not_exceed_credits=spec.debits_must_not_exceed_credits,
            credits_must_not_exceed_debits=spec.credits_must_not_exceed_debits,
            debits_posted=0,
            credits_posted=0,
            debits_pending=0,
            credits_pending=0,
            created_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=["code"])
    )
    session.execute(stmt)
    return str(session.execute(select(LedgerAccount.id).where(LedgerAccount.code == spec.code)).scalar_one())


def create_account(session: Session, spec: AccountSpec) -> tuple[LedgerAccount, bool]:
    """Create an account; the same code with the same attributes returns the existing one
    (created=False), with other attributes it is a conflict."""
    existing = session.scalars(select(LedgerAccount).where(LedgerAccount.code == spec.code)).first()
    if existing is None:
        account_id = ensure_account(session, spec)
        account = session.get(LedgerAccount, account_id)
        assert account is not None
        return account, True
    same = (
        existing.type == spec.type.value
        and existing.currency == spec.currency
        and existing.debits_must_not_exceed_credits == spec.debits_must_not_exceed_credits
        and existing.credits_must_not_exceed_debits == spec.credits_must_not_exceed_debits
    )
    if not same:
        raise IdempotencyConflict(f"account {spec.code} exists with a different type, currency or flags")
    return existing, False


def balance_of(account: LedgerAccount) -> Balance:
    return Balance(account.debits_posted, account.credits_posted, account.debits_pending, account.credits_pending)


def account_by_code(session: Session, code: str) -> LedgerAccount | None:
    return session.scalars(select(LedgerAccount).where(LedgerAccount.code == code)).first()


# -- entries ----------------------------------------------------------------------------------------
_ACCOUNT_ROWS = text(
    "SELECT id, code, currency, debits_must_not_exceed_credits, credits_must_not_exceed_debits "
    "FROM ledger_accounts WHERE code IN :codes"
).bindparams(bindparam("codes", expanding=True))

# Core tables for the bulk inserts of the hot path (no ORM unit of work involved).
_POSTINGS = cast(Table, Posting.__table__)
_ENTRIES = cast(Table, JournalEntry.__table__)

_LOCK_ACCOUNTS = text("SELECT id FROM ledger_accounts WHERE id IN :ids ORDER BY id FOR NO KEY UPDATE").bindparams(
    bindparam("ids", expanding=True)
)


@dataclass(frozen=True)
class _Accounts:
    ids: dict[str, str]  # code -> id
    limits: dict[str, tuple[bool, bool]]  # code -> (debits_must_not_exceed_credits, credits_must_not_exceed_debits)

    def can_break_limits(self, lines: Sequence[Line], phase: str) -> bool:
        """Whether these postings could violate an account flag: a debit to an account whose debits
        may not exceed its credits, or a credit to one whose credits may not exceed its debits.
        Settling or releasing a pending entry never can (it only moves or removes amounts)."""
        if phase not in ("posted", "pending"):
            return False
        for line in lines:
            no_debit_excess, no_credit_excess = self.limits[line.account]
            if (line.amount > 0 and no_debit_excess) or (line.amount < 0 and no_credit_excess):
                return True
        return False


# An account's id, code, currency and flags never change once it exists (nothing updates them and
# nothing deletes an account), so each engine remembers the ones it has seen; balances are always
# read from the database.
_KNOWN_ACCOUNTS: weakref.WeakKeyDictionary[Any, dict[str, tuple[str, str, bool, bool]]] = weakref.WeakKeyDictionary()


def _resolve_accounts(session: Session, lines: Sequence[Line]) -> _Accounts:
    codes = sorted({line.account for line in lines})
    known = _KNOWN_ACCOUNTS.setdefault(session.get_bind(), {})
    unseen = [code for code in codes if code not in known]
    if unseen:
        for row in session.execute(_ACCOUNT_ROWS, {"codes": unseen}).all():
            known[str(row[1])] = (str(row[0]), str(row[2]), bool(row[3]), bool(row[4]))
    missing = [code for code in codes if code not in known]
    if missing:
        raise UnknownAccount(
            f"unknown account{'s' if len(missing) > 1 else ''}: {', '.join(missing)}",
            errors={"postings": [f"unknown account {code}" for code in missing]},
        )
    check_currencies(lines, {code: known[code][1] for code in codes})
    return _Accounts({code: known[code][0] for code in codes}, {code: known[code][2:] for code in codes})


def _write_entry(
    session: Session,
    claim: Callable[[], EntryResult | None],
    entry_id: str,
    lines: Sequence[Line],
    found: _Accounts,
    phase: str,
) -> EntryResult | None:
    """Claim the key, write the postings and move the balances. When a flag could refuse the
    entry, all of it runs in a savepoint, so a refusal leaves nothing behind in the caller's
    transaction; otherwise (most entries) no savepoint is needed, as nothing can fail after the
    key is claimed."""
    if not found.can_break_limits(lines, phase):
        earlier = claim()
        if earlier is None:
            _write_postings(session, entry_id, lines, found.ids)
            _move_balances(session, lines, found.ids, phase)
        return earlier
    savepoint = session.begin_nested()
    try:
        earlier = claim()
        if earlier is None:
            _write_postings(session, entry_id, lines, found.ids)
            _move_balances(session, lines, found.ids, phase)
    except BaseException:
        savepoint.rollback()
        raise
    savepoint.commit()
    return earlier


def _claim_key(
    session: Session,
    entry_id: str,
    key: str,
    digest: str,
    kind: EntryKind,
    *,
    description: str,
    metadata: Mapping[str, Any],
    created_by: str | None,
    pending_entry_id: str | None = None,
    reverses_entry_id: str | None = None,
    now: datetime | None = None,
) -> EntryResult | None:
    """Insert the entry row. None when inserted; the earlier result when the key was used with
    the same content; IdempotencyConflict when used with other content."""
    stmt = (
        _dialect_insert(session, JournalEntry)
        .values(
            id=entry_id,
            idempotency_key=key,
            content_hash=digest,
            kind=kind.value,
            pending_entry_id=pending_entry_id,
            reverses_entry_id=reverses_entry_id,
            description=description,
            meta=dict(metadata),
            created_by=created_by,
            created_at=now or utcnow(),
        )
        .on_conflict_do_nothing()
        .returning(JournalEntry.id)
    )
    if session.execute(stmt).scalar() is not None:
        return None
    existing = session.execute(
        select(JournalEntry.id, JournalEntry.content_hash, JournalEntry.kind).where(JournalEntry.idempotency_key == key)
    ).first()
    if existing is None:
        # Not our key: another unique constraint (a pending entry already settled or voided, an
        # entry already reversed).
        if pending_entry_id is not None:
            raise PendingStateError(f"pending entry {pending_entry_id} was already posted or voided")
        raise PendingStateError(f"entry {reverses_entry_id} was already reversed")
    if existing.content_hash != digest:
        raise IdempotencyConflict(f"idempotency key {key!r} was used for entry {existing.id} with different content")
    return EntryResult(str(existing.id), str(existing.kind), replayed=True)


def _write_postings(session: Session, entry_id: str, lines: Sequence[Line], ids: Mapping[str, str]) -> None:
    session.execute(
        insert(_POSTINGS),
        [
            {
                "entry_id": entry_id,
                "line": n,
                "account_id": ids[line.account],
                "amount": line.amount,
                "currency": line.currency,
            }
            for n, line in enumerate(lines, start=1)
        ],
    )


def _move_balances(session: Session, lines: Sequence[Line], ids: Mapping[str, str], phase: str) -> None:
    deltas: dict[str, Balance] = defaultdict(Balance)
    for line in lines:
        deltas[ids[line.account]].apply(line.amount, phase)
    _update_balances(session, deltas)


@functools.lru_cache(maxsize=64)
def _balance_update(accounts: int, postgres: bool) -> Any:
    """UPDATE ... FROM (VALUES ...) for `accounts` rows: only bind placeholders are interpolated."""
    values = ", ".join(f"(:id{i}, :dp{i}, :cp{i}, :dq{i}, :cq{i})" for i in range(accounts))
    cast = "::bigint" if postgres else ""
    sql = f"""
        UPDATE ledger_accounts
           SET debits_posted = debits_posted + d.dp{cast}, credits_posted = credits_posted + d.cp{cast},
               debits_pending = debits_pending + d.dq{cast}, credits_pending = credits_pending + d.cq{cast}
          FROM (SELECT column1 AS id, column2 AS dp, column3 AS cp, column4 AS dq, column5 AS cq
                  FROM (VALUES {values}) AS v) AS d
         WHERE ledger_accounts.id = d.id
        RETURNING ledger_accounts.debits_posted, ledger_accounts.credits_posted, ledger_accounts.debits_pending,
                  ledger_accounts.credits_pending, ledger_accounts.debits_must_not_exceed_credits,
                  ledger_accounts.credits_must_not_exceed_debits, ledger_accounts.code
    """  # noqa: S608 - only numbered bind placeholders are formatted in
    return text(sql)


def _update_balances(session: Session, deltas: Mapping[str, Balance]) -> None:
    """Add the deltas to the accounts' running totals in one statement, then check the flags on
    the new totals. On PostgreSQL the rows are first locked in account-id order (one global order,
    so concurrent entries never wait on each other in a cycle), with the same lock strength as the
    UPDATE (FOR NO KEY UPDATE: the postings' foreign keys hold KEY SHARE locks on these rows)."""
    ordered = sorted(deltas)
    if session.get_bind().dialect.name == "postgresql" and len(ordered) > 1:
        session.execute(_LOCK_ACCOUNTS, {"ids": ordered})
    params: dict[str, Any] = {}
    for i, account_id in enumerate(ordered):
        d = deltas[account_id]
        params.update(
            {
                f"id{i}": account_id,
                f"dp{i}": d.debits_posted,
                f"cp{i}": d.credits_posted,
                f"dq{i}": d.debits_pending,
                f"cq{i}": d.credits_pending,
            }
        )
    postgres = session.get_bind().dialect.name == "postgresql"
    rows = session.execute(_balance_update(len(ordered), postgres), params).all()
    if len(rows) != len(ordered):
        raise UnknownAccount("an account of this entry no longer exists")
    for row in rows:
        if row[4] or row[5]:
            problem = limit_violation(
                Balance(int(row[0]), int(row[1]), int(row[2]), int(row[3])),
                debits_must_not_exceed_credits=bool(row[4]),
                credits_must_not_exceed_debits=bool(row[5]),
            )
            if problem:
                raise BalanceLimitExceeded(f"account {row[6]} may not go negative: {problem}")


def record_entry(
    session: Session, request: EntryRequest, *, created_by: str | None = None, now: datetime | None = None
) -> EntryResult:
    """Record a posted or pending entry (see the module docstring for the transaction rules)."""
    check_key(request.idempotency_key)
    if request.kind not in (EntryKind.POSTED, EntryKind.PENDING):
        raise InvalidEntry("new entries are posted or pending; settle or void a pending entry by its id")
    lines = request.lines
    validate_lines(lines)
    found = _resolve_accounts(session, lines)
    entry_id = new_entry_id()
    earlier = _write_entry(
        session,
        lambda: _claim_key(
            session,
            entry_id,
            request.idempotency_key,
            request.content_hash(),
            request.kind,
            description=request.description,
            metadata=request.metadata,
            created_by=created_by,
            now=now,
        ),
        entry_id,
        lines,
        found,
        PHASE_OF_KIND[request.kind],
    )
    return earlier or EntryResult(entry_id, request.kind.value, replayed=False)


def record_entries(
    session: Session,
    requests: Sequence[EntryRequest],
    *,
    created_by: str | None = None,
    now: datetime | None = None,
) -> list[EntryResult]:
    """Record many posted or pending entries at once, in the caller's transaction: the same rules
    and idempotency as `record_entry`, with one insert for the entries, one for the postings and
    one balance update per account for the whole batch (in account-id order, so concurrent
    batches never lock in a cycle). A refusal refuses the whole batch and leaves nothing behind."""
    if not requests:
        return []
    for request in requests:
        check_key(request.idempotency_key)
        if request.kind not in (EntryKind.POSTED, EntryKind.PENDING):
            raise InvalidEntry("new entries are posted or pending; settle or void a pending entry by its id")
        validate_lines(request.lines)
    keys = [r.idempotency_key for r in requests]
    if len(set(keys)) != len(keys):
        raise InvalidEntry("a batch names each idempotency key once")
    found = _resolve_accounts(session, [line for r in requests for line in r.lines])
    stamp = now or utcnow()
    ids = {r.idempotency_key: new_entry_id() for r in requests}
    digests = {r.idempotency_key: r.content_hash() for r in requests}
    savepoint = session.begin_nested()
    try:
        inserted = set(
            session.scalars(
                _dialect_insert(session, _ENTRIES).on_conflict_do_nothing().returning(_ENTRIES.c.idempotency_key),
                [
                    {
                        "id": ids[r.idempotency_key],
                        "idempotency_key": r.idempotency_key,
                        "content_hash": digests[r.idempotency_key],
                        "kind": r.kind.value,
                        "pending_entry_id": None,
                        "reverses_entry_id": None,
                        "description": r.description,
                        "meta": dict(r.metadata),
                        "created_by": created_by,
                        "created_at": stamp,
                    }
                    for r in requests
                ],
            )
        )
        results: dict[str, EntryResult] = {}
        missing = [k for k in keys if k not in inserted]
        if missing:
            for entry_id, key, digest, kind in session.execute(
                select(
                    JournalEntry.id, JournalEntry.idempotency_key, JournalEntry.content_hash, JournalEntry.kind
                ).where(JournalEntry.idempotency_key.in_(missing))
            ):
                if digest != digests[key]:
                    raise IdempotencyConflict(
                        f"idempotency key {key!r} was used for entry {entry_id} with different content"
                    )
                results[key] = EntryResult(str(entry_id), str(kind), replayed=True)
        fresh = [r for r in requests if r.idempotency_key in inserted]
        if fresh:
            session.execute(
                insert(_POSTINGS),
                [
                    {
                        "entry_id": ids[r.idempotency_key],
                        "line": n,
                        "account_id": found.ids[line.account],
                        "amount": line.amount,
                        "currency": line.currency,
                    }
                    for r in fresh
                    for n, line in enumerate(r.lines, start=1)
                ],
            )
            deltas: dict[str, Balance] = defaultdict(Balance)
            for r in fresh:
                for line in r.lines:
                    deltas[found.ids[line.account]].apply(line.amount, PHASE_OF_KIND[r.kind])
            _update_balances(session, deltas)
    except BaseException:
        savepoint.rollback()
        raise
    savepoint.commit()
    return [
        results.get(r.idempotency_key) or EntryResult(ids[r.idempotency_key], r.kind.value, replayed=False)
        for r in requests
    ]


def entry_lines(session: Session, entry_id: str) -> list[Line]:
    rows = session.execute(
        select(LedgerAccount.code, Posting.amount, Posting.currency)
        .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
        .where(Posting.entry_id == entry_id)
        .order_by(Posting.line)
    ).all()
    return [Line(str(code), int(amount), str(currency)) for code, amount, currency in rows]


def _resolve_pending(
    session: Session, pending_id: str, key: str, kind: EntryKind, description: str, created_by: str | None
) -> EntryResult:
    check_key(key)
    digest = content_hash({"kind": kind.value, "pending": pending_id})
    pending = session.get(JournalEntry, pending_id)
    if pending is None:
        raise InvalidEntry(f"no entry {pending_id}")
    if pending.kind != EntryKind.PENDING:
        raise PendingStateError(f"entry {pending_id} is {pending.kind}, not pending")
    lines = entry_lines(session, pending_id)
    found = _resolve_accounts(session, lines)
    entry_id = new_entry_id()
    earlier = _write_entry(
        session,
        lambda: _claim_key(
            session,
            entry_id,
            key,
            digest,
            kind,
            description=description or f"{kind.value} {pending_id}",
            metadata={},
            created_by=created_by,
            pending_entry_id=pending_id,
        ),
        entry_id,
        lines,
        found,
        PHASE_OF_KIND[kind],
    )
    return earlier or EntryResult(entry_id, kind.value, replayed=False)


def post_pendings(
    session: Session, items: Sequence[tuple[str, str]], *, created_by: str | None = None
) -> list[EntryResult]:
    """Settle many pending entries at once ((pending id, idempotency key) pairs): the same result
    as `post_pending` for each, with bulk inserts and one balance update per account. Any entry
    that cannot be settled (not pending, already resolved) refuses the whole batch."""
    if not items:
        return []
    kind = EntryKind.POST_PENDING
    pending_ids = [pid for pid, _ in items]
    rows = session.execute(
        select(Posting.entry_id, LedgerAccount.code, Posting.amount, Posting.currency, JournalEntry.kind)
        .join(LedgerAccount, LedgerAccount.id == Posting.account_id)
        .join(JournalEntry, JournalEntry.id == Posting.entry_id)
        .where(Posting.entry_id.in_(pending_ids))
        .order_by(Posting.entry_id, Posting.line)
    ).all()
    lines: dict[str, list[Line]] = defaultdict(list)
    for entry_id, code, amount, currency, entry_kind in rows:
        if entry_kind != EntryKind.PENDING:
            raise PendingStateError(f"entry {entry_id} is {entry_kind}, not pending")
        lines[str(entry_id)].append(Line(str(code), int(amount), str(currency)))
    if len(lines) != len(set(pending_ids)):
        raise InvalidEntry("some of these entries do not exist")
    found = _resolve_accounts(session, [line for group in lines.values() for line in group])
    new_ids = {pid: new_entry_id() for pid in pending_ids}
    stamp = utcnow()
    savepoint = session.begin_nested()
    try:
        inserted = {
            str(pid)
            for pid in session.scalars(
                _dialect_insert(session, _ENTRIES).on_conflict_do_nothing().returning(_ENTRIES.c.pending_entry_id),
                [
                    {
                        "id": new_ids[pid],
                        "idempotency_key": key,
                        "content_hash": content_hash({"kind": kind.value, "pending": pid}),
                        "kind": kind.value,
                        "pending_entry_id": pid,
                        "reverses_entry_id": None,
                        "description": f"post_pending {pid}",
                        "meta": {},
                        "created_by": created_by,
                        "created_at": stamp,
                    }
                    for pid, key in items
                ],
            )
        }
        if len(inserted) != len(items):
            raise PendingStateError("some of these pending entries were already posted or voided")
        session.execute(
            insert(_POSTINGS),
            [
                {
                    "entry_id": new_ids[pid],
                    "line": n,
                    "account_id": found.ids[line.account],
                    "amount": line.amount,
                    "currency": line.currency,
                }
                for pid in pending_ids
                for n, line in enumerate(lines[pid], start=1)
            ],
        )
        deltas: dict[str, Balance] = defaultdict(Balance)
        for pid in pending_ids:
            for line in lines[pid]:
                deltas[found.ids[line.account]].apply(line.amount, PHASE_OF_KIND[kind])
        _update_balances(session, deltas)
    except BaseException:
        savepoint.rollback()
        raise
    savepoint.commit()
    return [EntryResult(new_ids[pid], kind.value, replayed=False) for pid in pending_ids]


def post_pending(
    session: Session, pending_id: str, key: str, *, description: str = "", created_by: str | None = None
) -> EntryResult:
    """Settle a pending entry in full: its pending amounts become posted."""
    return _resolve_pending(session, pending_id, key, EntryKind.POST_PENDING, description, created_by)


def void_pending(
    session: Session, pending_id: str, key: str, *, description: str = "", created_by: str | None = None
) -> EntryResult:
    """Cancel a pending entry: its pending amounts are released."""
    return _resolve_pending(session, pending_id, key, EntryKind.VOID_PENDING, description, created_by)


def reverse_entry(
    session: Session,
    entry_id: str,
    key: str,
    *,
    description: str = "",
    created_by: str | None = None,
    now: datetime | None = None,
) -> EntryResult:
    """Correct a posted entry with an entry that undoes it (the original stays); `now` is the
    reversal's timestamp (the clock's, by default)."""
    check_key(key)
    original = session.get(JournalEntry, entry_id)
    if original is None:
        raise InvalidEntry(f"no entry {entry_id}")
    if original.kind not in (EntryKind.POSTED, EntryKind.POST_PENDING):
        raise PendingStateError(f"entry {entry_id} is {original.kind}: void a pending entry instead of reversing it")
    lines = reversal_lines(entry_lines(session, entry_id))
    found = _resolve_accounts(session, lines)
    digest = content_hash({"kind": "reversal", "reverses": entry_id, "description": description})
    new_id = new_entry_id()
    earlier = _write_entry(
        session,
        lambda: _claim_key(
            session,
            new_id,
            key,
            digest,
            EntryKind.POSTED,
            description=description or f"reversal of {entry_id}",
            metadata={"reverses": entry_id},
            created_by=created_by,
            reverses_entry_id=entry_id,
            now=now,
        ),
        new_id,
        lines,
        found,
        "posted",
    )
    return earlier or EntryResult(new_id, EntryKind.POSTED.value, replayed=False)


def open_pending_of(session: Session, entry_id: str) -> bool:
    """True when `entry_id` is a pending entry nobody has posted or voided yet."""
    resolved = session.execute(select(JournalEntry.id).where(JournalEntry.pending_entry_id == entry_id)).first()
    return resolved is None


# -- verification -----------------------------------------------------------------------------------
@dataclass
class Verification:
    entries: int = 0
    postings: int = 0
    accounts: int = 0
    violations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def add(self, code: str, message: str, **where: Any) -> None:
        self.violations.append({"code": code, "message": message, **where})

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "postings": self.postings,
            "accounts": self.accounts,
            "violations": self.violations,
        }


_COMPUTED_TOTALS = text(
    """
    SELECT p.account_id,
      COALESCE(SUM(CASE WHEN e.kind IN ('posted', 'post_pending') AND p.amount > 0 THEN p.amount ELSE 0 END), 0),
      COALESCE(SUM(CASE WHEN e.kind IN ('posted', 'post_pending') AND p.amount < 0 THEN -p.amount ELSE 0 END), 0),
      COALESCE(SUM(CASE WHEN e.kind = 'pending' AND r.id IS NULL AND p.amount > 0 THEN p.amount ELSE 0 END), 0),
      COALESCE(SUM(CASE WHEN e.kind = 'pending' AND r.id IS NULL AND p.amount < 0 THEN -p.amount ELSE 0 END), 0)
      FROM ledger_postings p
      JOIN ledger_entries e ON e.id = p.entry_id
      LEFT JOIN ledger_entries r ON r.pending_entry_id = e.id
     GROUP BY p.account_id
    """
)

# Lines of a settling, voiding or reversing entry compared with the entry it refers to.
_MISMATCHED_REFERENCES = text(
    """
    WITH sums AS (
      SELECT entry_id, account_id, currency, SUM(amount) AS total FROM ledger_postings
       GROUP BY entry_id, account_id, currency
    ), refs AS (
      SELECT id, pending_entry_id AS ref, 1 AS sign FROM ledger_entries WHERE pending_entry_id IS NOT NULL
      UNION ALL
      SELECT id, reverses_entry_id, -1 FROM ledger_entries WHERE reverses_entry_id IS NOT NULL
    )
    SELECT DISTINCT refs.id FROM refs
      JOIN sums a ON a.entry_id = refs.id
      LEFT JOIN sums b ON b.entry_id = refs.ref AND b.account_id = a.account_id AND b.currency = a.currency
     WHERE b.total IS NULL OR a.total <> refs.sign * b.total
    UNION
    SELECT DISTINCT refs.id FROM refs
      JOIN sums b ON b.entry_id = refs.ref
      LEFT JOIN sums a ON a.entry_id = refs.id AND a.account_id = b.account_id AND a.currency = b.currency
     WHERE a.total IS NULL
    """
)


def verify(session: Session) -> Verification:
    """Check every invariant of the ledger; the report lists each violation found."""
    report = Verification()
    report.entries = int(session.scalar(select(func.count()).select_from(JournalEntry)) or 0)
    report.postings = int(session.scalar(select(func.count()).select_from(Posting)) or 0)
    report.accounts = int(session.scalar(select(func.count()).select_from(LedgerAccount)) or 0)

    for entry_id, currency, total in session.execute(
        text(
            "SELECT entry_id, currency, SUM(amount) FROM ledger_postings GROUP BY entry_id, currency "
            "HAVING SUM(amount) <> 0"
        )
    ):
        report.add("entry_unbalanced", f"entry {entry_id} sums to {total} in {currency}", entry_id=entry_id)
    for (entry_id,) in session.execute(
        text(
            "SELECT e.id FROM ledger_entries e LEFT JOIN ledger_postings p ON p.entry_id = e.id "
            "GROUP BY e.id HAVING COUNT(p.line) < 2"
        )
    ):
        report.add("entry_too_few_postings", f"entry {entry_id} has fewer than two postings", entry_id=entry_id)
    for entry_id, line in session.execute(
        text(
            "SELECT p.entry_id, p.line FROM ledger_postings p JOIN ledger_accounts a ON a.id = p.account_id "
            "WHERE p.currency <> a.currency OR p.amount = 0"
        )
    ):
        report.add(
            "posting_invalid", f"posting {entry_id}/{line} is zero or not in its account's currency", entry_id=entry_id
        )
    for entry_id, kind in session.execute(
        text(
            "SELECT e.id, e.kind FROM ledger_entries e LEFT JOIN ledger_entries p ON p.id = e.pending_entry_id "
            "WHERE (e.kind IN ('post_pending', 'void_pending') AND (p.id IS NULL OR p.kind <> 'pending')) "
            "OR (e.kind IN ('posted', 'pending') AND e.pending_entry_id IS NOT NULL) "
            "OR e.kind NOT IN ('posted', 'pending', 'post_pending', 'void_pending')"
        )
    ):
        report.add(
            "entry_kind_invalid",
            f"entry {entry_id} ({kind}) does not refer to an open pending entry as its kind requires",
            entry_id=entry_id,
        )
    for (entry_id,) in session.execute(_MISMATCHED_REFERENCES):
        report.add(
            "reference_mismatch",
            f"entry {entry_id} does not mirror the entry it settles, voids or reverses",
            entry_id=entry_id,
        )

    computed = {str(row[0]): tuple(int(v) for v in row[1:]) for row in session.execute(_COMPUTED_TOTALS)}
    trial: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    accounts = session.execute(
        select(
            LedgerAccount.id,
            LedgerAccount.code,
            LedgerAccount.currency,
            LedgerAccount.type,
            LedgerAccount.debits_posted,
            LedgerAccount.credits_posted,
            LedgerAccount.debits_pending,
            LedgerAccount.credits_pending,
            LedgerAccount.debits_must_not_exceed_credits,
            LedgerAccount.credits_must_not_exceed_debits,
        )
    )
    for account_id, code, currency, type_, dp, cp, dq, cq, dmnec, cmned in accounts:
        stored = (int(dp), int(cp), int(dq), int(cq))
        expected = computed.get(account_id, (0, 0, 0, 0))
        if stored != expected:
            report.add(
                "balance_mismatch",
                f"account {code} holds {stored} (debits/credits posted, pending) but its postings sum to {expected}",
                account=code,
            )
        if min(stored) < 0:
            report.add("balance_negative_total", f"account {code} has a negative running total", account=code)
        if type_ not in {t.value for t in AccountType}:
            report.add("account_type_invalid", f"account {code} has unknown type {type_}", account=code)
        problem = limit_violation(
            Balance(*stored), debits_must_not_exceed_credits=bool(dmnec), credits_must_not_exceed_debits=bool(cmned)
        )
        if problem:
            report.add("account_limit_violated", f"account {code}: {problem}", account=code)
        trial[str(currency)][0] += stored[0] - stored[1]
        trial[str(currency)][1] += stored[2] - stored[3]
    for currency, (posted, pending) in sorted(trial.items()):
        if posted or pending:
            report.add(
                "trial_balance_nonzero",
                f"{currency}: debits minus credits is {posted} posted and {pending} pending across all accounts",
                currency=currency,
            )
    return report


def iter_lines(raw_postings: Iterable[Mapping[str, Any]]) -> tuple[Line, ...]:
    from billing.rules import parse_line

    return tuple(parse_line(raw) for raw in raw_postings)
