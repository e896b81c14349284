"""The ledger's rules, free of any database: account types and their normal side, posting lines,
what makes an entry valid, the content hash behind idempotency keys, and how a posting moves an
account's four balances (TigerBeetle's debits/credits x pending/posted).

Sign convention: a posting's signed amount is positive for a debit and negative for a credit, so
an entry is balanced when its signed amounts sum to zero in each currency."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from billing.money import MAX_MINOR, MoneyError, check_currency, to_minor


class LedgerError(Exception):
    """A request the ledger refuses; `code` is stable, the message is for people."""

    code = "ledger_error"
    status = 400

    def __init__(self, message: str, *, errors: Any = None) -> None:
        super().__init__(message)
        self.errors = errors


class InvalidEntry(LedgerError):
    code = "invalid_entry"


class UnbalancedEntry(InvalidEntry):
    code = "unbalanced_entry"


class UnknownAccount(InvalidEntry):
    code = "unknown_account"
    status = 422


class CurrencyMismatch(InvalidEntry):
    code = "currency_mismatch"


class IdempotencyConflict(LedgerError):
    code = "idempotency_conflict"
    status = 409


class BalanceLimitExceeded(LedgerError):
    code = "balance_limit_exceeded"
    status = 422


class PendingStateError(LedgerError):
    code = "pending_not_open"
    status = 409


class AccountType(StrEnum):
    ASSET = "asset"
    LIABILITY = "liability"
    REVENUE = "revenue"
    EXPENSE = "expense"

    @property
    def debit_normal(self) -> bool:
        return self in (AccountType.ASSET, AccountType.EXPENSE)


class EntryKind(StrEnum):
    POSTED = "posted"  # moves posted balances now
    PENDING = "pending"  # reserves: moves pending balances until posted or voided
    POST_PENDING = "post_pending"  # settles a pending entry: pending -> posted
    VOID_PENDING = "void_pending"  # cancels a pending entry: pending released


class Direction(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"


@dataclass(frozen=True)
class Line:
    """One posting of a request: an account (by code), a signed amount in minor units, a currency."""

    account: str
    amount: int
    currency: str

    @classmethod
    def debit(cls, account: str, amount: int, currency: str) -> Line:
        return cls(account, amount, currency)

    @classmethod
    def credit(cls, account: str, amount: int, currency: str) -> Line:
        return cls(account, -amount, currency)

    @property
    def direction(self) -> Direction:
        return Direction.DEBIT if self.amount > 0 else Direction.CREDIT


@dataclass(frozen=True)
class EntryRequest:
    """What a caller asks the ledger to record. The idempotency key names it: asking again with
    the same key and the same content returns the first result; other content is a conflict."""

    idempotency_key: str
    lines: tuple[Line, ...]
    kind: EntryKind = EntryKind.POSTED
    description: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def content_hash(self) -> str:
        return content_hash(
            {
                "kind": self.kind.value,
                "lines": [[line.account, line.amount, line.currency] for line in self.lines],
                "description": self.description,
                "metadata": dict(self.metadata),
            }
        )


def content_hash(content: Mapping[str, Any]) -> str:
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: object) -> str:
    if not isinstance(key, str) or not key.strip() or len(key) > 200:
        raise InvalidEntry("an idempotency key is a non-empty string of at most 200 characters")
    return key


def parse_line(raw: Mapping[str, Any]) -> Line:
    """A line from its API form {account, direction, amount (decimal string), currency}."""
    try:
        currency = check_currency(raw.get("currency"))
        amount = to_minor(raw.get("amount", ""), currency)
    except MoneyError as exc:
        raise InvalidEntry(str(exc)) from exc
    if amount <= 0:
        raise InvalidEntry(f"posting amounts must be positive, got {raw.get('amount')}")
    direction = raw.get("direction")
    if direction not in (Direction.DEBIT, Direction.CREDIT):
        raise InvalidEntry("a posting's direction is debit or credit")
    account = raw.get("account")
    if not isinstance(account, str) or not account:
        raise InvalidEntry("a posting names its account")
    return Line(account, amount if direction == Direction.DEBIT else -amount, currency)


def validate_lines(lines: Sequence[Line]) -> None:
    """An entry has at least two postings, each non-zero and bounded, summing to zero per currency."""
    if len(lines) < 2:
        raise InvalidEntry("an entry needs at least two postings")
    if len(lines) > 200:
        raise InvalidEntry("an entry has at most 200 postings")
    sums: dict[str, int] = defaultdict(int)
    for line in lines:
        if isinstance(line.amount, bool) or not isinstance(line.amount, int):
            raise InvalidEntry("posting amounts are integers of minor units")
        if line.amount == 0:
            raise InvalidEntry(f"a posting to {line.account} has a zero amount")
        if abs(line.amount) > MAX_MINOR:
            raise InvalidEntry(f"a posting to {line.account} is above the largest amount the ledger accepts")
        try:
            check_currency(line.currency)
        except MoneyError as exc:
            raise InvalidEntry(str(exc)) from exc
        sums[line.currency] += line.amount
    unbalanced = {cur: total for cur, total in sums.items() if total != 0}
    if unbalanced:
        detail = ", ".join(
            f"{cur} debits exceed credits by {total}" if total > 0 else f"{cur} credits exceed debits by {-total}"
            for cur, total in sorted(unbalanced.items())
        )
        raise UnbalancedEntry(
            f"the postings do not sum to zero per currency ({detail} minor units)", errors={"postings": [detail]}
        )


def check_currencies(lines: Iterable[Line], currency_of: Mapping[str, str]) -> None:
    """Every line's currency is its account's: the ledger never converts currencies."""
    for line in lines:
        expected = currency_of[line.account]
        if line.currency != expected:
            raise CurrencyMismatch(
                f"account {line.account} holds {expected}; a {line.currency} posting cannot go to it "
                "(the ledger never converts currencies)"
            )


@dataclass
class Balance:
    """An account's four running totals, each a non-negative count of minor units."""

    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    def apply(self, amount: int, phase: str) -> None:
        """Move the totals by one signed posting amount in `phase` ('posted', 'pending', 'settle'
        (pending to posted) or 'release' (pending voided))."""
        debit, credit = (amount, 0) if amount > 0 else (0, -amount)
        if phase == "posted":
            self.debits_posted += debit
            self.credits_posted += credit
        elif phase == "pending":
            self.debits_pending += debit
            self.credits_pending += credit
        elif phase == "settle":
            self.debits_pending -= debit
            self.credits_pending -= credit
            self.debits_posted += debit
            self.credits_posted += credit
        elif phase == "release":
            self.debits_pending -= debit
            self.credits_pending -= credit
        else:
            raise ValueError(f"unknown phase {phase!r}")

    def net(self, account_type: AccountType) -> int:
        """The posted balance on the account's normal side (positive when it holds value)."""
        raw = self.debits_posted - self.credits_posted
        return raw if account_type.debit_normal else -raw

    def available(self, account_type: AccountType) -> int:
        """The posted balance less what pending entries would take away from it."""
        if account_type.debit_normal:
            return self.debits_posted - self.credits_posted - self.credits_pending
        return self.credits_posted - self.debits_posted - self.debits_pending


PHASE_OF_KIND = {
    EntryKind.POSTED: "posted",
    EntryKind.PENDING: "pending",
    EntryKind.POST_PENDING: "settle",
    EntryKind.VOID_PENDING: "release",
}


def limit_violation(
    balance: Balance, *, debits_must_not_exceed_credits: bool, credits_must_not_exceed_debits: bool
) -> str | None:
    """TigerBeetle's account flags: pending debits count against the limit (so money reserved for
    a payout cannot be paid out twice). Returns a message when a flag is violated."""
    if debits_must_not_exceed_credits and balance.debits_posted + balance.debits_pending > balance.credits_posted:
        return "debits would exceed credits"
    if credits_must_not_exceed_debits and balance.credits_posted + balance.credits_pending > balance.debits_posted:
        return "credits would exceed debits"
    return None


def reversal_lines(lines: Iterable[Line]) -> tuple[Line, ...]:
    """The postings that undo `lines` (a correcting entry: the original stays)."""
    return tuple(Line(line.account, -line.amount, line.currency) for line in lines)
