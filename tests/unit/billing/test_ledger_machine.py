"""A hypothesis state machine drives the ledger (the real one, on an in-memory SQLite database)
through random sequences of accounts, posted and pending entries, settlements, voids, reversals,
retries with reused idempotency keys and entries that must be refused, and checks after every
step that the ledger's invariants hold and its balances match an independent model."""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, precondition, rule
from sqlalchemy.orm import Session, sessionmaker

import server.models  # noqa: F401 - every table on Base.metadata
from billing import ledger
from billing.accounts import AccountSpec
from billing.rules import (
    AccountType,
    BalanceLimitExceeded,
    EntryKind,
    EntryRequest,
    IdempotencyConflict,
    LedgerError,
    Line,
    PendingStateError,
    UnbalancedEntry,
    UnknownAccount,
)
from server.db import Base, make_engine

CURRENCIES = ("EUR", "JPY")


@dataclass
class ModelAccount:
    code: str
    currency: str
    no_debit_excess: bool
    no_credit_excess: bool
    dp: int = 0
    cp: int = 0
    dq: int = 0
    cq: int = 0

    def violates(self) -> bool:
        return (self.no_debit_excess and self.dp + self.dq > self.cp) or (
            self.no_credit_excess and self.cp + self.cq > self.dp
        )


@dataclass
class ModelEntry:
    entry_id: str
    kind: str
    lines: tuple[Line, ...]
    request: EntryRequest | None = None
    resolved: bool = False
    reversed: bool = False


@dataclass
class Model:
    accounts: dict[str, ModelAccount] = field(default_factory=dict)
    keys: dict[str, EntryRequest] = field(default_factory=dict)


def move(accounts: dict[str, ModelAccount], lines: tuple[Line, ...], phase: str) -> dict[str, ModelAccount]:
    """The accounts after `lines` in `phase`, as copies (the caller keeps them only if allowed)."""
    out = {code: ModelAccount(**vars(a)) for code, a in accounts.items()}
    for line in lines:
        a = out[line.account]
        debit, credit = (line.amount, 0) if line.amount > 0 else (0, -line.amount)
        if phase == "posted":
            a.dp, a.cp = a.dp + debit, a.cp + credit
        elif phase == "pending":
            a.dq, a.cq = a.dq + debit, a.cq + credit
        elif phase == "settle":
            a.dq, a.cq, a.dp, a.cp = a.dq - debit, a.cq - credit, a.dp + debit, a.cp + credit
        else:
            a.dq, a.cq = a.dq - debit, a.cq - credit
    return out


class LedgerMachine(RuleBasedStateMachine):
    entries = Bundle("entries")
    pendings = Bundle("pendings")

    def __init__(self) -> None:
        super().__init__()
        self.engine = make_engine("sqlite://")
        Base.metadata.create_all(self.engine)
        self.sessions = sessionmaker(self.engine)
        self.model = Model()
        self.counter = 0

    def teardown(self) -> None:
        self.engine.dispose()

    def _session(self) -> Session:
        return self.sessions()

    def _apply(self, lines: tuple[Line, ...], phase: str, action: object) -> object:
        """Run `action` in a transaction; check it succeeded or failed as the model predicts."""
        after = move(self.model.accounts, lines, phase)
        should_fail = any(a.violates() for a in after.values())
        with self._session() as session:
            try:
                result = action(session)  # type: ignore[operator]
            except BalanceLimitExceeded:
                session.rollback()
                assert should_fail, "the ledger refused an entry the model allows"
                return None
            session.commit()
        assert not should_fail or getattr(result, "replayed", False), "the ledger let an account go negative"
        if not getattr(result, "replayed", False):
            self.model.accounts = after
        return result

    @rule(currency=st.sampled_from(CURRENCIES), kind=st.sampled_from(list(AccountType)), limited=st.booleans())
    def open_account(self, currency: str, kind: AccountType, limited: bool) -> None:
        code = f"acct:{len(self.model.accounts)}:{currency}"
        spec = AccountSpec(
            code,
            code,
            kind,
            currency,
            debits_must_not_exceed_credits=limited and not kind.debit_normal,
            credits_must_not_exceed_debits=limited and kind.debit_normal,
        )
        with self._session() as session:
            ledger.ensure_account(session, spec)
            session.commit()
        self.model.accounts[code] = ModelAccount(
            code, currency, spec.debits_must_not_exceed_credits, spec.credits_must_not_exceed_debits
        )

    def _pair(self, data: st.DataObject) -> tuple[str, str, str] | None:
        for currency in data.draw(st.permutations(CURRENCIES)):
            codes = sorted(c for c, a in self.model.accounts.items() if a.currency == currency)
            if len(codes) >= 2:
                debit, credit = data.draw(st.lists(st.sampled_from(codes), min_size=2, max_size=2, unique=True))
                return debit, credit, currency
        return None

    def _new_entry(self, data: st.DataObject, kind: EntryKind) -> ModelEntry | None:
        pair = self._pair(data)
        if pair is None:
            return None
        debit, credit, currency = pair
        amount = data.draw(st.integers(min_value=1, max_value=10_000))
        lines = (Line.debit(debit, amount, currency), Line.credit(credit, amount, currency))
        if data.draw(st.booleans()) and self.model.keys:  # a retry, or a key reused for something else
            key = data.draw(st.sampled_from(sorted(self.model.keys)))
        else:
            self.counter += 1
            key = f"key-{self.counter}"
        request = EntryRequest(key, lines, kind=kind, description="machine")
        earlier = self.model.keys.get(key)
        if earlier is not None and earlier.content_hash() != request.content_hash():
            with self._session() as session:
                try:
                    ledger.record_entry(session, request)
                except IdempotencyConflict:
                    return None
                raise AssertionError("a reused key with new content was accepted")
        if earlier is not None:  # the same request again: the first result comes back, nothing moves
            with self._session() as session:
                result = ledger.record_entry(session, request)
                session.commit()
            assert result.replayed
            return None
        result = self._apply(
            lines, "posted" if kind == EntryKind.POSTED else "pending", lambda s: ledger.record_entry(s, request)
        )
        if result is None:
            return None
        self.model.keys[key] = request
        return ModelEntry(result.entry_id, kind.value, lines, request)  # type: ignore[attr-defined]

    @rule(target=entries, data=st.data())
    def post_entry(self, data: st.DataObject) -> ModelEntry | None:
        return self._new_entry(data, EntryKind.POSTED)

    @rule(target=pendings, data=st.data())
    def pending_entry(self, data: st.DataObject) -> ModelEntry | None:
        return self._new_entry(data, EntryKind.PENDING)

    @rule(target=entries, pending=consumes(pendings), settle=st.booleans())
    def resolve(self, pending: ModelEntry | None, settle: bool) -> ModelEntry | None:
        if pending is None:
            return None
        operation = ledger.post_pending if settle else ledger.void_pending
        key = f"{pending.entry_id}:{'post' if settle else 'void'}"
        result = self._apply(
            pending.lines, "settle" if settle else "release", lambda s: operation(s, pending.entry_id, key)
        )
        assert result is not None  # settling or voiding never breaks an account limit
        with self._session() as session:  # a second resolution is refused, whichever kind
            try:
                other = ledger.void_pending if settle else ledger.post_pending
                other(session, pending.entry_id, key + ":again")
            except PendingStateError:
                pass
            else:
                raise AssertionError("a pending entry was resolved twice")
        return (
            ModelEntry(
                result.entry_id,
                "post_pending" if settle else "void_pending",  # type: ignore[attr-defined]
                pending.lines,
            )
            if settle
            else None
        )

    @rule(entry=consumes(entries))
    def reverse(self, entry: ModelEntry | None) -> None:
        if entry is None:
            return
        reversed_lines = tuple(Line(x.account, -x.amount, x.currency) for x in entry.lines)
        self._apply(
            reversed_lines, "posted", lambda s: ledger.reverse_entry(s, entry.entry_id, f"rev:{entry.entry_id}")
        )

    @precondition(lambda self: len(self.model.accounts) >= 2)
    @rule(data=st.data())
    def refused_entries_change_nothing(self, data: st.DataObject) -> None:
        codes = sorted(self.model.accounts)
        a, b = data.draw(st.lists(st.sampled_from(codes), min_size=2, max_size=2, unique=True))
        cur = self.model.accounts[a].currency
        bad = data.draw(
            st.sampled_from(
                [
                    ((Line.debit(a, 10, cur), Line.credit(b, 9, cur)), (UnbalancedEntry, LedgerError)),
                    ((Line.debit(a, 10, cur), Line.credit("acct:missing:EUR", 10, cur)), (UnknownAccount,)),
                ]
            )
        )
        with self._session() as session:
            try:
                ledger.record_entry(session, EntryRequest(f"bad-{self.counter}", bad[0]))
            except bad[1]:
                session.rollback()
            else:
                raise AssertionError("a bad entry was accepted")

    @invariant()
    def ledger_verifies_and_matches_the_model(self) -> None:
        with self._session() as session:
            report = ledger.verify(session)
            assert report.ok, report.violations
            rows = session.execute(
                sa.text(
                    "SELECT code, debits_posted, credits_posted, debits_pending, credits_pending FROM ledger_accounts"
                )
            ).all()
        stored = {code: (dp, cp, dq, cq) for code, dp, cp, dq, cq in rows}
        expected = {c: (a.dp, a.cp, a.dq, a.cq) for c, a in self.model.accounts.items()}
        assert stored == expected


LedgerMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestLedgerMachine = LedgerMachine.TestCase
