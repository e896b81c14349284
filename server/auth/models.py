"""Users (argon2-hashed passwords) and API tokens (stored as SHA-256 digests, shown once)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, utcnow

ROLES = (
    "admin",
    "policy_author",
    "finance",
    "operator",
    "auditor",
    "service",
    "affiliate",
    "advertiser",
)
PORTAL_ROLES = ("affiliate", "advertiser")
# A portal user belongs to exactly one business entity of its kind; staff belong to none.
PORTAL_ENTITY_RULE = (
    "(role = 'affiliate' AND affiliate_id IS NOT NULL AND advertiser_id IS NULL)"
    " OR (role = 'advertiser' AND advertiser_id IS NOT NULL AND affiliate_id IS NULL)"
    " OR (role NOT IN ('affiliate', 'advertiser') AND affiliate_id IS NULL AND advertiser_id IS NULL)"
)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (CheckConstraint(PORTAL_ENTITY_RULE, name="portal_entity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(32))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    # the business entity a portal user (role affiliate / advertiser) acts for; None for staff
    affiliate_id: Mapped[str | None] = mapped_column(ForeignKey("affiliates.id"), index=True)
    advertiser_id: Mapped[str | None] = mapped_column(ForeignKey("advertisers.id"), index=True)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(32))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
