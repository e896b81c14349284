"""A small affiliate network for the portal tests: two advertisers with one offer each, two
affiliates with one smart link each, clicks (one of them a bot), approved and pending
conversions booked to the ledger, and a payout per affiliate."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask import Flask

from billing.booking import book_conversion
from billing.models import Payout
from server.extensions import services
from server.links.models import Advertiser, Affiliate, Click, Conversion, Offer, SmartLink

NETWORK = {
    # affiliate, link, slug, offer, advertiser, conversion amounts (approved), pending amounts, clicks, bots
    "a": ("aff_a", "lnk_a", "alpha", "off_a", "adv_a", ["10.00", "10.00"], ["50.00"], 3, 1),
    "b": ("aff_b", "lnk_b", "bravo", "off_b", "adv_b", ["30.00"], [], 5, 0),
}


def seed_network(app: Flask) -> dict[str, Any]:
    with services(app).db.unit_of_work() as uow:
        s = uow.session
        for key, (aff, link, slug, offer, adv, approved, pending, clicks, bots) in NETWORK.items():
            s.add(Advertiser(id=adv, name=f"Advertiser {key.upper()}", email=f"adv-{key}@example.com"))
            s.add(Affiliate(id=aff, name=f"Affiliate {key.upper()}", email=f"aff-{key}@example.com"))
            s.flush()
            s.add(
                Offer(
                    id=offer,
                    advertiser_id=adv,
                    name=f"Offer {key.upper()}",
                    url_template="https://example.com/?c={click_id}",
                    payout=Decimal("10.00"),
                    currency="EUR",
                    countries=[],
                    devices=[],
                )
            )
            s.flush()
            s.add(
                SmartLink(
                    id=link,
                    slug=slug,
                    name=f"Link {key.upper()}",
                    affiliate_id=aff,
                    algorithm="thompson_sampling",
                    algorithm_params={},
                    commission_rate=Decimal("0.7000"),
                )
            )
            s.flush()
            for n in range(clicks + bots):
                s.add(
                    Click(
                        id=f"{key}{n:031d}",
                        link_id=link,
                        offer_id=offer,
                        probability=1.0,
                        subs={},
                        is_bot=n >= clicks,
                    )
                )
            s.flush()
            for n, (amount, status) in enumerate(
                [(a, "approved") for a in approved] + [(p, "pending") for p in pending]
            ):
                conversion = Conversion(
                    click_id=f"{key}{n:031d}",
                    txid=f"tx-{key}-{n}",
                    link_id=link,
                    offer_id=offer,
                    amount=Decimal(amount),
                    currency="EUR",
                    status=status,
                )
                s.add(conversion)
                s.flush()
                if status == "approved":
                    book_conversion(s, conversion.id)
            s.add(
                Payout(
                    id=f"pay_{key}",
                    affiliate_id=aff,
                    provider="stripe",
                    currency="EUR",
                    amount_minor=500 if key == "a" else 900,
                    state="paid",
                    requested_by="system:treasury",
                    reasons=[],
                    idempotency_key=f"idem-{key}",
                )
            )
        uow.commit()
    return {"a": NETWORK["a"], "b": NETWORK["b"]}
