"""Seeding for the financial documents tests: affiliates with an email address, and payouts that
are already paid (the receipts' input), written directly as the payout engine leaves them."""

from __future__ import annotations

import random

from flask import Flask

from billing.models import Payout, PayoutEvent
from server.extensions import services
from server.links.models import Affiliate


def add_affiliate(app: Flask, affiliate_id: str, email: str | None = None) -> None:
    with services(app).db.unit_of_work() as uow:
        uow.session.add(Affiliate(id=affiliate_id, name=f"Publisher {affiliate_id}", email=email))
        uow.commit()


def paid_payout(app: Flask, affiliate_id: str, minor: int, *, currency: str = "EUR", ref: str | None = None) -> str:
    payout_id = f"po_{affiliate_id}_{minor}_{random.randrange(10**9)}"  # noqa: S311
    with services(app).db.unit_of_work() as uow:
        uow.session.add(
            Payout(
                id=payout_id,
                affiliate_id=affiliate_id,
                provider="stripe",
                currency=currency,
                amount_minor=minor,
                state="paid",
                requested_by="system:treasury",
                reasons=[],
                idempotency_key=f"key_{payout_id}",
                provider_ref=ref or f"tr_{payout_id}",
            )
        )
        uow.session.flush()
        uow.session.add(PayoutEvent(payout_id=payout_id, from_state="submitted", to_state="paid", actor="t", data={}))
        uow.commit()
    return payout_id
