"""The smart-link domain. Money amounts are Decimal (Numeric(18, 4)) with an ISO 4217 currency;
ids are prefixed strings so that a log line tells what kind of thing it names."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, Date, Float, ForeignKey, Index, Integer, Numeric, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, utcnow

MONEY = Numeric(18, 4)


class Advertiser(Base):
    __tablename__ = "advertisers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | paused
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Affiliate(Base):
    __tablename__ = "affiliates"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | suspended
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Offer(Base):
    __tablename__ = "offers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    advertiser_id: Mapped[str] = mapped_column(ForeignKey("advertisers.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    url_template: Mapped[str] = mapped_column(
        Text
    )  # macros: {click_id} {link} {offer} {sub1}..{sub5} {country} {device}
    payout: Mapped[Decimal] = mapped_column(MONEY)  # paid by the advertiser per conversion
    currency: Mapped[str] = mapped_column(String(3))
    daily_cap: Mapped[int | None] = mapped_column(Integer)  # conversions a day (UTC); None = uncapped
    countries: Mapped[list[Any]]  # ISO 3166 alpha-2; [] = every country
    devices: Mapped[list[Any]]  # desktop | mobile | tablet; [] = every device
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | paused
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SmartLink(Base):
    __tablename__ = "smart_links"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    affiliate_id: Mapped[str] = mapped_column(ForeignKey("affiliates.id"), index=True)
    algorithm: Mapped[str] = mapped_column(String(40))  # a name from algorithms.registry
    algorithm_params: Mapped[dict[str, Any]]
    fallback_offer_id: Mapped[str | None] = mapped_column(ForeignKey("offers.id"))
    commission_rate: Mapped[Decimal] = mapped_column(Numeric(6, 4), default=Decimal("0.7000"))  # affiliate share
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | paused
    current_allocation_id: Mapped[int | None] = mapped_column(
        ForeignKey("allocations.id", use_alter=True, name="fk_smart_links_current_allocation")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class LinkArm(Base):
    """An offer a link may route to."""

    __tablename__ = "link_arms"

    link_id: Mapped[str] = mapped_column(ForeignKey("smart_links.id", ondelete="CASCADE"), primary_key=True)
    offer_id: Mapped[str] = mapped_column(ForeignKey("offers.id"), primary_key=True)
    added_at: Mapped[datetime] = mapped_column(default=utcnow)


class Allocation(Base):
    """An allocation OPA approved for a link: the only thing the click path ever executes."""

    __tablename__ = "allocations"

    id: Mapped[int] = mapped_column(primary_key=True)
    link_id: Mapped[str] = mapped_column(ForeignKey("smart_links.id", ondelete="CASCADE"))
    weights: Mapped[dict[str, Any]]  # offer id -> share, summing to 1
    algorithm: Mapped[str] = mapped_column(String(40))
    algorithm_version: Mapped[str | None] = mapped_column(String(20))
    evidence: Mapped[dict[str, Any]]
    decision_id: Mapped[str | None] = mapped_column(ForeignKey("decisions.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_allocations_link_time", "link_id", "created_at"),)


class Click(Base):
    __tablename__ = "clicks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex, the {click_id} macro
    link_id: Mapped[str] = mapped_column(String(40))
    offer_id: Mapped[str | None] = mapped_column(String(40))  # None: nothing eligible and no fallback
    allocation_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    probability: Mapped[float] = mapped_column(Float)  # propensity of the chosen arm, for off-policy evaluation
    is_fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    is_bot: Mapped[bool] = mapped_column(Boolean, default=False)
    bot_reason: Mapped[str | None] = mapped_column(String(32))
    country: Mapped[str | None] = mapped_column(String(2))
    device: Mapped[str | None] = mapped_column(String(16))
    ip_hash: Mapped[str | None] = mapped_column(String(64))  # salted SHA-256, never the address itself
    user_agent: Mapped[str | None] = mapped_column(String(300))
    subs: Mapped[dict[str, Any]]  # sub1..sub5 as given on the link URL

    __table_args__ = (Index("ix_clicks_link_time", "link_id", "created_at"),)


class Conversion(Base):
    __tablename__ = "conversions"

    id: Mapped[int] = mapped_column(primary_key=True)
    click_id: Mapped[str] = mapped_column(ForeignKey("clicks.id"))
    txid: Mapped[str] = mapped_column(String(128))
    link_id: Mapped[str] = mapped_column(String(40), index=True)
    offer_id: Mapped[str] = mapped_column(String(40), index=True)
    amount: Mapped[Decimal] = mapped_column(MONEY)  # revenue reported by the advertiser
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))  # approved | pending | rejected
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    booked_entry_id: Mapped[str | None] = mapped_column(String(40))  # ledger entry, once booked

    __table_args__ = (UniqueConstraint("click_id", "txid", name="uq_conversions_click_txid"),)


class ArmStat(Base):
    """Hourly counters per link arm: what the algorithms learn from (human clicks only)."""

    __tablename__ = "arm_stats"

    link_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    offer_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    hour: Mapped[int] = mapped_column(Integer, primary_key=True)  # epoch seconds at the start of the hour
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    bot_clicks: Mapped[int] = mapped_column(Integer, default=0)
    conversions: Mapped[int] = mapped_column(Integer, default=0)
    revenue: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))


class TrafficSource(Base):
    __tablename__ = "traffic_sources"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    cost_model: Mapped[str] = mapped_column(String(8))  # cpc | cpm | cpa | fixed
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Campaign(Base):
    """Paid traffic bought from a source and sent to a link, with a daily budget."""

    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    traffic_source_id: Mapped[str] = mapped_column(ForeignKey("traffic_sources.id"))
    link_id: Mapped[str | None] = mapped_column(ForeignKey("smart_links.id"))
    daily_budget: Mapped[Decimal] = mapped_column(MONEY)
    daily_cap: Mapped[Decimal] = mapped_column(MONEY)  # the budget may never exceed this
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CampaignCost(Base):
    """Cost imported from the traffic source, per campaign and day."""

    __tablename__ = "campaign_costs"

    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    amount: Mapped[Decimal] = mapped_column(MONEY)
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobLease(Base):
    """A named lease so that a scheduled job runs in one process at a time across servers."""

    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    owner: Mapped[str] = mapped_column(String(120))
    expires_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
