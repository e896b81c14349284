"""Concurrent writers (threads with their own connections) on the same accounts: retries with the
same idempotency key, racing settlements of one pending entry, and payouts reserving the same
balance. Each key is recorded once, each pending entry resolved once, no flagged account goes
negative, and the ledger verifies afterwards. On PostgreSQL the writers really overlap."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

from flask import Flask
from sqlalchemy import func, select

from billing import accounts
from billing.ledger import ensure_account, post_pending, record_entry, verify, void_pending
from billing.models import JournalEntry
from billing.rules import BalanceLimitExceeded, EntryKind, EntryRequest, LedgerError, Line
from server.extensions import services

WRITERS = 8


def in_threads(work: Callable[[int], None], n: int = WRITERS) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def run(i: int) -> None:
        start.wait()
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


def test_concurrent_writers_retries_and_races_keep_the_ledger_exact(app: Flask) -> None:
    db = services(app).db
    cur = "EUR"
    specs = [accounts.revenue(cur), accounts.commission_expense(cur), accounts.cash(cur)]
    specs += [accounts.advertiser_receivable(f"adv_{i}", cur) for i in range(3)]
    specs += [accounts.affiliate_payable(f"aff_{i}", cur) for i in range(4)]
    with db.unit_of_work() as uow:
        for spec in specs:
            ensure_account(uow.session, spec)
        uow.commit()

    def book(i: int) -> None:
        rng = random.Random(i)
        for n in range(40):
            rng.random()
            key = f"conv:{n % 30}:{i % 2}"  # writers 0/2/4/6 and 1/3/5/7 retry the same 30 keys
            k = n % 30
            adv, aff = f"adv_{k % 3}", f"aff_{k % 4}"
            amount = 1_000 + k  # the same key always carries the same content
            commission = 700
            lines = (
                Line.debit(accounts.advertiser_receivable(adv, cur).code, amount, cur),
                Line.credit(accounts.revenue(cur).code, amount, cur),
                Line.debit(accounts.commission_expense(cur).code, commission, cur),
                Line.credit(accounts.affiliate_payable(aff, cur).code, commission, cur),
            )
            with db.unit_of_work() as uow:
                record_entry(uow.session, EntryRequest(key, lines))
                uow.commit()

    assert in_threads(book) == []
    with db.unit_of_work() as uow:
        assert uow.session.scalar(select(func.count()).select_from(JournalEntry)) == 60

    # Fund cash, then eight writers try to reserve the same payable for payouts at once.
    with db.unit_of_work() as uow:
        record_entry(
            uow.session,
            EntryRequest(
                "fund",
                (
                    Line.debit(accounts.cash(cur).code, 10**7, cur),
                    Line.credit(accounts.advertiser_receivable("adv_0", cur).code, 10**7, cur),
                ),
            ),
        )
        uow.commit()
    payable = accounts.affiliate_payable("aff_0", cur).code
    reserved: list[str] = []
    refused: list[int] = []

    def reserve(i: int) -> None:
        lines = (Line.debit(payable, 4_000, cur), Line.credit(accounts.cash(cur).code, 4_000, cur))
        with db.unit_of_work() as uow:
            try:
                result = record_entry(uow.session, EntryRequest(f"payout-{i}", lines, kind=EntryKind.PENDING))
            except BalanceLimitExceeded:
                refused.append(i)
                return
            uow.commit()
            reserved.append(result.entry_id)

    assert in_threads(reserve) == []
    # aff_0 is owed 16 x 7.00 = 112.00 (keys 0, 4, ..., 28, twice): two 40.00 reservations fit, a third not.
    assert (len(reserved), len(refused)) == (2, 6)

    # Racing settlement and voiding of the same pending entries: exactly one wins each.
    outcomes: list[str] = []

    def resolve(i: int) -> None:
        target = reserved[i % 2]
        operation = post_pending if i % 4 < 2 else void_pending
        with db.unit_of_work() as uow:
            try:
                operation(uow.session, target, f"{target}:{operation.__name__}:{i}")
                uow.commit()
                outcomes.append(target)
            except LedgerError:
                uow.rollback()

    assert in_threads(resolve) == []
    assert sorted(outcomes) == sorted(reserved)
    with db.unit_of_work() as uow:
        report = verify(uow.session)
        assert report.ok, report.violations
