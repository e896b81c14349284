"""Amounts as integer minor units, with one table of currency exponents.

Money never passes through a float: a decimal string or `Decimal` is converted to minor units
only when it has no more decimals than its currency allows (12.345 EUR is refused, not rounded)."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

# ISO 4217 minor-unit exponents of the currencies the ledger accepts.
CURRENCY_EXPONENTS: dict[str, int] = {
    "AUD": 2,
    "BHD": 3,
    "BRL": 2,
    "CAD": 2,
    "CHF": 2,
    "CNY": 2,
    "CZK": 2,
    "DKK": 2,
    "EUR": 2,
    "GBP": 2,
    "HKD": 2,
    "HUF": 2,
    "INR": 2,
    "JOD": 3,
    "JPY": 0,
    "KRW": 0,
    "KWD": 3,
    "MXN": 2,
    "NOK": 2,
    "NZD": 2,
    "OMR": 3,
    "PLN": 2,
    "SEK": 2,
    "SGD": 2,
    "TND": 3,
    "USD": 2,
    "VND": 0,
    "ZAR": 2,
}

# The largest amount a single posting may carry (fits a signed 64-bit balance many times over).
MAX_MINOR = 10**15


class MoneyError(ValueError):
    """An amount or currency the ledger cannot accept; the message says why."""


def exponent(currency: str) -> int:
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise MoneyError(f"unknown currency {currency!r}") from None


def check_currency(currency: object) -> str:
    if not isinstance(currency, str) or currency not in CURRENCY_EXPONENTS:
        raise MoneyError(f"unknown currency {currency!r}")
    return currency


def to_minor(amount: Decimal | str | int, currency: str) -> int:
    """`amount` in major units (a Decimal, a decimal string or an int) as minor units.

    Refuses floats, non-finite values, and more decimals than the currency has."""
    if isinstance(amount, bool) or isinstance(amount, float):
        raise MoneyError("amounts are decimal strings or integers, never floats")
    exp = exponent(currency)
    try:
        value = amount if isinstance(amount, Decimal) else Decimal(str(amount).strip())
    except InvalidOperation:
        raise MoneyError(f"{amount!r} is not a decimal amount") from None
    if not value.is_finite():
        raise MoneyError(f"{amount!r} is not a finite amount")
    scaled = value.scaleb(exp)
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{currency} allows {exp} decimal{'s' if exp != 1 else ''}, {amount} has more")
    minor = int(scaled)
    if abs(minor) > MAX_MINOR:
        raise MoneyError(f"{amount} {currency} is above the largest amount the ledger accepts")
    return minor


def to_decimal(minor: int, currency: str) -> Decimal:
    return Decimal(minor).scaleb(-exponent(currency))


def format_minor(minor: int, currency: str) -> str:
    """'12.34' for 1234 EUR, '1234' for 1234 JPY."""
    exp = exponent(currency)
    return f"{to_decimal(minor, currency):.{exp}f}"


def share(minor: int, rate: Decimal) -> int:
    """`rate` of `minor` units, rounded half to even to a whole minor unit."""
    return int((Decimal(minor) * rate).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
