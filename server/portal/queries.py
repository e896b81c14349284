"""What a portal user sees, always scoped by the entity of the signed-in user: every query here
takes the affiliate or advertiser id from the user record, never from the request.

Clicks exclude the ones classified as bots; conversions and earnings count approved conversions;
earnings are the net credits of the affiliate's payable accounts by bookings (and their
reversals) in the window, from the ledger, so they agree with the balance."""

from __future__ import annotations

from datetime import datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing.models import JournalEntry, LedgerAccount, Payout, PayoutProfile, Posting
from billing.money import format_minor
from server.db import utcnow
from server.errors import Problem
from server.links.models import Click, Conversion, Offer, SmartLink

RECENT_LIMIT = 50


def money(minor: int, currency: str) -> dict[str, Any]:
    return {"minor": minor, "amount": format_minor(minor, currency), "currency": currency}


def windows(now: datetime | None = None) -> dict[str, datetime]:
    now = now or utcnow()
    midnight = datetime.combine(now.date(), time(0), tzinfo=now.tzinfo)
    return {"today": midnight, "last_30_days": now - timedelta(days=30)}


def _count_by(session: Session, column: Any, ids: list[str], since: datetime, *filters: Any) -> dict[str, int]:
    if not ids:
        return {}
    table = column.class_
    rows = session.execute(
        select(column, func.count()).where(column.in_(ids), table.created_at >= since, *filters).group_by(column)
    )
    return {str(key): int(n) for key, n in rows}


# -- affiliate ----------------------------------------------------------------------------------------
def affiliate_links(session: Session, affiliate_id: str) -> list[SmartLink]:
    query = select(SmartLink).where(SmartLink.affiliate_id == affiliate_id).order_by(SmartLink.created_at.desc())
    return list(session.scalars(query))


def affiliate_link(session: Session, affiliate_id: str, link_id: str) -> SmartLink:
    link = session.get(SmartLink, link_id)
    if link is None or link.affiliate_id != affiliate_id:  # another affiliate's link does not exist here
        raise Problem(404, "Not Found", f"no link {link_id}")
    return link


def link_stats(session: Session, link_ids: list[str], since: datetime) -> dict[str, dict[str, int]]:
    clicks = _count_by(session, Click.link_id, link_ids, since, Click.is_bot.is_(False))
    conversions = _count_by(session, Conversion.link_id, link_ids, since, Conversion.status == "approved")
    return {i: {"clicks": clicks.get(i, 0), "conversions": conversions.get(i, 0)} for i in link_ids}


def earnings(session: Session, affiliate_id: str, since: datetime) -> list[dict[str, Any]]:
    rows = session.execute(
        select(LedgerAccount.currency, func.coalesce(func.sum(Posting.amount), 0))
        .join(Posting, Posting.account_id == LedgerAccount.id)
        .join(JournalEntry, JournalEntry.id == Posting.entry_id)
        .where(
            LedgerAccount.owner_kind == "affiliate",
            LedgerAccount.owner_id == affiliate_id,
            LedgerAccount.code.like(f"affiliate:{affiliate_id}:payable:%"),
            JournalEntry.kind == "posted",
            JournalEntry.created_at >= since,
        )
        .group_by(LedgerAccount.currency)
        .order_by(LedgerAccount.currency)
    )
    # a liability grows by credits, which are negative postings
    return [money(-int(total), str(currency)) for currency, total in rows]


def balances(session: Session, affiliate_id: str) -> list[dict[str, Any]]:
    accounts = session.scalars(
        select(LedgerAccount)
        .where(
            LedgerAccount.owner_kind == "affiliate",
            LedgerAccount.owner_id == affiliate_id,
            LedgerAccount.code.like(f"affiliate:{affiliate_id}:payable:%"),
        )
        .order_by(LedgerAccount.currency)
    )
    out = []
    for account in accounts:
        balance = account.credits_posted - account.debits_posted
        in_payment = account.debits_pending
        out.append(
            {
                "currency": account.currency,
                "balance": money(balance, account.currency),
                "in_payment": money(in_payment, account.currency),
                "available": money(balance - in_payment, account.currency),
            }
        )
    return out


def affiliate_payouts(session: Session, affiliate_id: str, limit: int = 100) -> list[Payout]:
    query = select(Payout).where(Payout.affiliate_id == affiliate_id)
    return list(session.scalars(query.order_by(Payout.created_at.desc(), Payout.id.desc()).limit(limit)))


def payout_body(payout: Payout) -> dict[str, Any]:
    """A payout as its affiliate sees it: no internal decision data or provider errors."""
    return {
        "id": payout.id,
        "amount": money(payout.amount_minor, payout.currency),
        "provider": payout.provider,
        "state": payout.state,
        "created_at": payout.created_at.isoformat(),
        "updated_at": payout.updated_at.isoformat(),
    }


def affiliate_conversions(session: Session, affiliate_id: str, limit: int = RECENT_LIMIT) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Conversion, SmartLink.slug)
        .join(SmartLink, SmartLink.id == Conversion.link_id)
        .where(SmartLink.affiliate_id == affiliate_id)
        .order_by(Conversion.created_at.desc(), Conversion.id.desc())
        .limit(limit)
    )
    return [
        {
            "id": c.id,
            "link_id": c.link_id,
            "link_slug": slug,
            "status": c.status,
            "created_at": c.created_at.isoformat(),
        }
        for c, slug in rows
    ]


def link_body(link: SmartLink, stats: dict[str, dict[str, int]], base_url: str) -> dict[str, Any]:
    return {
        "id": link.id,
        "slug": link.slug,
        "name": link.name,
        "status": link.status,
        "tracking_url": f"{base_url}/r/{link.slug}",
        "commission_rate": str(link.commission_rate),
        "clicks_30d": stats.get(link.id, {}).get("clicks", 0),
        "conversions_30d": stats.get(link.id, {}).get("conversions", 0),
    }


def affiliate_dashboard(session: Session, affiliate_id: str, base_url: str) -> dict[str, Any]:
    w = windows()
    links = affiliate_links(session, affiliate_id)
    ids = [link.id for link in links]
    month = link_stats(session, ids, w["last_30_days"])
    today = link_stats(session, ids, w["today"])
    return {
        "affiliate_id": affiliate_id,
        "links": [link_body(link, month, base_url) for link in links],
        "totals": {
            name: {
                "clicks": sum(s["clicks"] for s in stats.values()),
                "conversions": sum(s["conversions"] for s in stats.values()),
                "earnings": earnings(session, affiliate_id, w[name]),
            }
            for name, stats in (("today", today), ("last_30_days", month))
        },
        "balances": balances(session, affiliate_id),
    }


def profile_of(session: Session, affiliate_id: str) -> PayoutProfile | None:
    return session.get(PayoutProfile, affiliate_id)


# -- advertiser ---------------------------------------------------------------------------------------
def advertiser_offers(session: Session, advertiser_id: str) -> list[Offer]:
    query = select(Offer).where(Offer.advertiser_id == advertiser_id).order_by(Offer.created_at.desc())
    return list(session.scalars(query))


def offer_spend(session: Session, offer_ids: list[str], since: datetime) -> dict[str, list[dict[str, Any]]]:
    if not offer_ids:
        return {}
    rows = session.execute(
        select(Conversion.offer_id, Conversion.currency, func.sum(Conversion.amount))
        .where(Conversion.offer_id.in_(offer_ids), Conversion.status == "approved", Conversion.created_at >= since)
        .group_by(Conversion.offer_id, Conversion.currency)
        .order_by(Conversion.currency)
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for offer_id, currency, total in rows:
        amount = Decimal(total or 0).quantize(Decimal("0.01"))
        out.setdefault(str(offer_id), []).append({"amount": str(amount), "currency": str(currency)})
    return out


def advertiser_dashboard(session: Session, advertiser_id: str) -> dict[str, Any]:
    w = windows()
    offers = advertiser_offers(session, advertiser_id)
    ids = [o.id for o in offers]
    since = w["last_30_days"]
    clicks = _count_by(session, Click.offer_id, ids, since, Click.is_bot.is_(False))
    conversions = _count_by(session, Conversion.offer_id, ids, since, Conversion.status == "approved")
    spend = offer_spend(session, ids, since)
    return {
        "advertiser_id": advertiser_id,
        "offers": [
            {
                "id": o.id,
                "name": o.name,
                "status": o.status,
                "payout": {"amount": str(o.payout), "currency": o.currency},
                "daily_cap": o.daily_cap,
                "clicks_30d": clicks.get(o.id, 0),
                "conversions_30d": conversions.get(o.id, 0),
                "spend_30d": spend.get(o.id, []),
            }
            for o in offers
        ],
    }


def advertiser_conversions(session: Session, advertiser_id: str, limit: int = RECENT_LIMIT) -> list[dict[str, Any]]:
    rows = session.execute(
        select(Conversion, Offer.name)
        .join(Offer, Offer.id == Conversion.offer_id)
        .where(Offer.advertiser_id == advertiser_id)
        .order_by(Conversion.created_at.desc(), Conversion.id.desc())
        .limit(limit)
    )
    return [
        {
            "id": c.id,
            "offer_id": c.offer_id,
            "offer_name": name,
            "txid": c.txid,
            "amount": str(Decimal(c.amount).quantize(Decimal("0.01"))),
            "currency": c.currency,
            "status": c.status,
            "created_at": c.created_at.isoformat(),
        }
        for c, name in rows
    ]
