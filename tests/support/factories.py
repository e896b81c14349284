"""Rows for tests, made directly with the models (the CRUD API is not under test here), and an
allocation approved the real way (through the gateway and OPA)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from flask import Flask
from sqlalchemy.orm import Session

from server.extensions import services
from server.governance.gateway import Actor
from server.links.allocations import approve_allocation
from server.links.models import Advertiser, Affiliate, LinkArm, Offer, SmartLink

_ids = itertools.count(1)
TEMPLATE = "https://offers.example/{offer}?cid={click_id}&link={link}&s1={sub1}&c={country}&d={device}"
SEEDER = Actor(id="test:seeder", kind="system")


def advertiser(session: Session, id: str | None = None) -> Advertiser:
    row = session.get(Advertiser, id) if id else None
    if row is None:
        row = Advertiser(id=id or f"adv_{next(_ids)}", name="Advertiser")
        session.add(row)
        session.flush()
    return row


def affiliate(session: Session, id: str | None = None) -> Affiliate:
    row = session.get(Affiliate, id) if id else None
    if row is None:
        row = Affiliate(id=id or f"aff_{next(_ids)}", name="Affiliate")
        session.add(row)
        session.flush()
    return row


def offer(
    session: Session,
    id: str | None = None,
    *,
    template: str = TEMPLATE,
    payout: str | Decimal = "10.00",
    currency: str = "USD",
    daily_cap: int | None = None,
    countries: Sequence[str] = (),
    devices: Sequence[str] = (),
    status: str = "active",
) -> Offer:
    row = Offer(
        id=id or f"off_{next(_ids)}",
        advertiser_id=advertiser(session, "adv_test").id,
        name=f"Offer {id}",
        url_template=template,
        payout=Decimal(payout),
        currency=currency,
        daily_cap=daily_cap,
        countries=list(countries),
        devices=list(devices),
        status=status,
    )
    session.add(row)
    session.flush()
    return row


def link(
    session: Session,
    offers: Sequence[str],
    *,
    id: str | None = None,
    slug: str | None = None,
    algorithm: str = "thompson_sampling",
    params: Mapping[str, Any] | None = None,
    fallback: str | None = None,
    status: str = "active",
) -> SmartLink:
    n = next(_ids)
    row = SmartLink(
        id=id or f"lnk_{n}",
        slug=slug or f"s{n}",
        name=f"Link {n}",
        affiliate_id=affiliate(session, "aff_test").id,
        algorithm=algorithm,
        algorithm_params=dict(params or {}),
        fallback_offer_id=fallback,
        status=status,
    )
    session.add(row)
    session.flush()
    for offer_id in offers:
        session.add(LinkArm(link_id=row.id, offer_id=offer_id))
    session.flush()
    return row


def approve(app: Flask, link_id: str, weights: Mapping[str, float]) -> int:
    """Make `weights` the link's current allocation through the gateway (must be allowed)."""
    svc = services(app)
    with svc.db.unit_of_work() as uow:
        row = uow.session.get(SmartLink, link_id)
        assert row is not None
        outcome, allocation = approve_allocation(uow.session, svc.gateway, row, weights, actor=SEEDER)
        assert allocation is not None, outcome.reasons
        uow.commit()
        return allocation.id


def seed_link(
    app: Flask,
    weights: Mapping[str, float],
    *,
    offer_options: Mapping[str, Mapping[str, Any]] | None = None,
    approve_weights: bool = True,
    **link_options: Any,
) -> str:
    """Offers named by `weights`' keys, a link over them, and `weights` approved. Returns the link id."""
    with services(app).db.unit_of_work() as uow:
        for offer_id in weights:
            offer(uow.session, offer_id, **dict((offer_options or {}).get(offer_id, {})))
        fallback = link_options.get("fallback")
        if fallback and fallback not in weights:
            offer(uow.session, fallback, **dict((offer_options or {}).get(fallback, {})))
        row = link(uow.session, list(weights), **link_options)
        uow.commit()
        link_id = row.id
    if approve_weights:
        approve(app, link_id, weights)
    return link_id
