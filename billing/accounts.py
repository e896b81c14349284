"""The chart of accounts: the codes and attributes of the accounts the platform books to.

Codes are stable, readable names; an account is created the first time an entry needs it."""

from __future__ import annotations

from dataclasses import dataclass

from billing.rules import AccountType


@dataclass(frozen=True)
class AccountSpec:
    code: str
    name: str
    type: AccountType
    currency: str
    owner_kind: str | None = None
    owner_id: str | None = None
    debits_must_not_exceed_credits: bool = False
    credits_must_not_exceed_debits: bool = False


def affiliate_payable(affiliate_id: str, currency: str) -> AccountSpec:
    """What the platform owes an affiliate; can never be paid below zero (pending debits count)."""
    return AccountSpec(
        f"affiliate:{affiliate_id}:payable:{currency}",
        f"Commission payable to {affiliate_id} ({currency})",
        AccountType.LIABILITY,
        currency,
        "affiliate",
        affiliate_id,
        debits_must_not_exceed_credits=True,
    )


def advertiser_receivable(advertiser_id: str, currency: str) -> AccountSpec:
    return AccountSpec(
        f"advertiser:{advertiser_id}:receivable:{currency}",
        f"Receivable from {advertiser_id} ({currency})",
        AccountType.ASSET,
        currency,
        "advertiser",
        advertiser_id,
    )


def revenue(currency: str) -> AccountSpec:
    return AccountSpec(
        f"platform:revenue:{currency}",
        f"Conversion revenue ({currency})",
        AccountType.REVENUE,
        currency,
        "platform",
        "platform",
    )


def commission_expense(currency: str) -> AccountSpec:
    return AccountSpec(
        f"platform:commission_expense:{currency}",
        f"Affiliate commissions ({currency})",
        AccountType.EXPENSE,
        currency,
        "platform",
        "platform",
    )


def cash(currency: str) -> AccountSpec:
    """Money the platform holds at its payment providers; it cannot go negative."""
    return AccountSpec(
        f"platform:cash:{currency}",
        f"Cash ({currency})",
        AccountType.ASSET,
        currency,
        "platform",
        "platform",
        credits_must_not_exceed_debits=True,
    )


def cash_in_transit(currency: str) -> AccountSpec:
    """Payouts on their way. A payout's pending entry runs payable -> cash in transit -> cash, so
    while it is in flight this account shows the amount on both pending sides; it nets to zero
    once the payout is posted (paid) or voided (failed). No flag: it is a clearing account."""
    return AccountSpec(
        f"platform:cash_in_transit:{currency}",
        f"Payouts in transit ({currency})",
        AccountType.LIABILITY,
        currency,
        "platform",
        "platform",
    )
