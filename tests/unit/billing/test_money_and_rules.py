"""The pure ledger rules: money in minor units, what makes an entry valid, how postings move the
four balances, the account flags, and masking and encrypting payout destinations."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.money import MoneyError, format_minor, share, to_minor
from billing.rules import (
    AccountType,
    Balance,
    EntryKind,
    EntryRequest,
    InvalidEntry,
    Line,
    UnbalancedEntry,
    limit_violation,
    parse_line,
    reversal_lines,
    validate_lines,
)
from billing.vault import Vault, VaultError, generate_key, mask, redact


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("12.34", "EUR", 1234),
        ("12.3", "EUR", 1230),
        ("12", "EUR", 1200),
        ("1234", "JPY", 1234),
        ("0.001", "BHD", 1),
        (Decimal("7.50"), "USD", 750),
        (5, "GBP", 500),
        ("-3.10", "EUR", -310),
    ],
)
def test_amounts_become_minor_units(amount: object, currency: str, minor: int) -> None:
    assert to_minor(amount, currency) == minor  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("12.345", "EUR", "allows 2 decimals"),
        ("1.5", "JPY", "allows 0 decimals"),
        (1.5, "EUR", "never floats"),
        ("abc", "EUR", "not a decimal"),
        ("NaN", "EUR", "finite"),
        ("1", "XXX", "unknown currency"),
        ("1e20", "EUR", "largest amount"),
    ],
)
def test_amounts_the_ledger_refuses(amount: object, currency: str, message: str) -> None:
    with pytest.raises(MoneyError, match=message):
        to_minor(amount, currency)  # type: ignore[arg-type]


def test_formatting_and_shares() -> None:
    assert format_minor(1234, "EUR") == "12.34" and format_minor(5, "JPY") == "5" and format_minor(7, "KWD") == "0.007"
    assert share(1235, Decimal("0.7")) == 864  # 864.5 rounds half to even
    assert share(1225, Decimal("0.7")) == 858  # 857.5 rounds half to even
    assert share(100, Decimal("0")) == 0


def test_an_entry_balances_per_currency_with_at_least_two_nonzero_postings() -> None:
    validate_lines([Line.debit("a", 100, "EUR"), Line.credit("b", 60, "EUR"), Line.credit("c", 40, "EUR")])
    with pytest.raises(UnbalancedEntry, match="EUR debits exceed credits by 1"):
        validate_lines([Line.debit("a", 101, "EUR"), Line.credit("b", 100, "EUR")])
    with pytest.raises(UnbalancedEntry):  # balanced in total, not per currency
        validate_lines([Line.debit("a", 100, "EUR"), Line.credit("b", 100, "USD")])
    with pytest.raises(InvalidEntry, match="at least two"):
        validate_lines([Line.debit("a", 100, "EUR")])
    with pytest.raises(InvalidEntry, match="zero amount"):
        validate_lines([Line("a", 0, "EUR"), Line("b", 0, "EUR")])
    with pytest.raises(InvalidEntry, match="unknown currency"):
        validate_lines([Line.debit("a", 1, "EUX"), Line.credit("b", 1, "EUX")])


def test_lines_from_the_api_form() -> None:
    assert parse_line({"account": "a", "direction": "credit", "amount": "1.50", "currency": "EUR"}) == Line(
        "a", -150, "EUR"
    )
    for bad in (
        {"account": "a", "direction": "debit", "amount": "0", "currency": "EUR"},
        {"account": "a", "direction": "debit", "amount": "-1", "currency": "EUR"},
        {"account": "a", "direction": "sideways", "amount": "1", "currency": "EUR"},
        {"account": "", "direction": "debit", "amount": "1", "currency": "EUR"},
        {"account": "a", "direction": "debit", "amount": "1.001", "currency": "EUR"},
    ):
        with pytest.raises(InvalidEntry):
            parse_line(bad)


def test_the_content_hash_names_what_the_entry_does() -> None:
    base = EntryRequest("k", (Line.debit("a", 1, "EUR"), Line.credit("b", 1, "EUR")))
    assert base.content_hash() == EntryRequest("k", base.lines).content_hash()
    assert base.content_hash() != EntryRequest("k", base.lines, kind=EntryKind.PENDING).content_hash()
    assert base.content_hash() != EntryRequest("k", reversal_lines(base.lines)).content_hash()


def test_two_phase_postings_move_pending_then_posted_or_back() -> None:
    b = Balance()
    b.apply(-500, "pending")
    assert (b.credits_pending, b.available(AccountType.ASSET)) == (500, -500)
    b.apply(-500, "settle")
    assert (b.credits_pending, b.credits_posted) == (0, 500)
    b.apply(200, "pending")
    b.apply(200, "release")
    assert b == Balance(0, 500, 0, 0)
    assert b.net(AccountType.ASSET) == -500 and b.net(AccountType.REVENUE) == 500
    with pytest.raises(ValueError, match="unknown phase"):
        b.apply(1, "later")


def test_account_flags_count_pending_amounts() -> None:
    owed = Balance(credits_posted=1000, debits_pending=600)
    assert limit_violation(owed, debits_must_not_exceed_credits=True, credits_must_not_exceed_debits=False) is None
    owed.debits_pending += 500
    assert limit_violation(owed, debits_must_not_exceed_credits=True, credits_must_not_exceed_debits=False)
    cash = Balance(debits_posted=100, credits_pending=101)
    assert limit_violation(cash, debits_must_not_exceed_credits=False, credits_must_not_exceed_debits=True)


def test_destinations_are_encrypted_and_masked() -> None:
    vault = Vault(generate_key())
    token = vault.encrypt("acct_1Nv0FGQ9RKHgCVdK")
    assert "acct_" not in token and vault.decrypt(token) == "acct_1Nv0FGQ9RKHgCVdK"
    with pytest.raises(VaultError, match="another key"):
        Vault(generate_key()).decrypt(token)
    with pytest.raises(VaultError, match="PAYOUT_ENCRYPTION_KEY"):
        Vault(None).encrypt("x")
    with pytest.raises(VaultError, match="not a Fernet key"):
        Vault("short")
    assert mask("acct_1Nv0FGQ9RKHgCVdK") == "acct_…CVdK"
    assert mask("jane.doe@example.com") == "j…@example.com"
    assert redact("No such destination: 'acct_1Nv0FGQ9RKHgCVdK' (jane.doe@example.com)") == (
        "No such destination: 'acct_…CVdK' (j…@example.com)"
    )
