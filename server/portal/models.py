"""Portal invitations (single-use, expiring, stored as SHA-256 digests) and terms acceptances
(append-only: the ORM refuses updates and deletes, PostgreSQL also has a trigger)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, String, UniqueConstraint, event
from sqlalchemy.orm import Mapped, Session, mapped_column

from server.db import Base, utcnow

ONE_ENTITY = "(affiliate_id IS NULL) <> (advertiser_id IS NULL)"


class PortalInvitation(Base):
    __tablename__ = "portal_invitations"
    __table_args__ = (CheckConstraint(ONE_ENTITY, name="one_entity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(254), index=True)
    role: Mapped[str] = mapped_column(String(32))  # affiliate | advertiser
    affiliate_id: Mapped[str | None] = mapped_column(ForeignKey("affiliates.id"), index=True)
    advertiser_id: Mapped[str | None] = mapped_column(ForeignKey("advertisers.id"), index=True)
    created_by: Mapped[str] = mapped_column(String(128))  # subject id of the inviting staff member
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # the account it created


class TermsAcceptance(Base):
    __tablename__ = "terms_acceptances"
    __table_args__ = (
        CheckConstraint(ONE_ENTITY, name="one_entity"),
        UniqueConstraint("user_id", "document", "version", name="uq_terms_acceptances_user_document_version"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    affiliate_id: Mapped[str | None] = mapped_column(ForeignKey("affiliates.id"), index=True)
    advertiser_id: Mapped[str | None] = mapped_column(ForeignKey("advertisers.id"), index=True)
    document: Mapped[str] = mapped_column(String(40))  # affiliate-terms (CGU) | advertiser-terms (CGV)
    version: Mapped[str] = mapped_column(String(20))
    text_sha256: Mapped[str] = mapped_column(String(64))
    accepted_at: Mapped[datetime] = mapped_column(default=utcnow)
    client_hash: Mapped[str] = mapped_column(String(64))  # salted SHA-256 of the client address
    user_agent: Mapped[str] = mapped_column(String(512))


class AppendOnlyViolation(RuntimeError):
    """Something tried to change or remove a terms acceptance."""


def _refuse(_mapper: Any, _connection: Any, target: Any) -> None:
    raise AppendOnlyViolation("terms acceptances are append-only")


event.listen(TermsAcceptance, "before_update", _refuse)
event.listen(TermsAcceptance, "before_delete", _refuse)


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk_changes(state: Any) -> None:
    if (state.is_update or state.is_delete) and any(m.class_ is TermsAcceptance for m in state.all_mappers):
        raise AppendOnlyViolation("terms acceptances are append-only")
