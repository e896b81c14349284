"""Onboarding of portal users and their terms acceptances.

Staff invite a person for one affiliate or advertiser. The invitation token is shown once (and
emailed); only its SHA-256 is stored. It is single-use (a compare-and-set on `accepted_at`),
expires, and a new invitation for the same email revokes the open ones. Accepting it creates the
portal user, linked to the entity, and records the acceptance of the current terms in the same
unit of work: either the account exists with its acceptance, or nothing was written."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from billing.models import PayoutProfile
from server.auth.models import User
from server.auth.services import EMAIL_RE, AuthError, create_user
from server.config import Settings
from server.db import utcnow
from server.errors import Problem
from server.links.models import Advertiser, Affiliate
from server.mail import send_mail
from server.portal.models import PortalInvitation, TermsAcceptance
from server.portal.terms import TermsDocument, client_hash, terms_for

log = logging.getLogger(__name__)

INVITATION_STATES = ("pending", "accepted", "expired", "revoked")


@dataclass(frozen=True)
class Entity:
    """The business entity a portal user acts for."""

    kind: str  # affiliate | advertiser
    id: str
    name: str
    email: str | None


def get_entity(session: Session, kind: str, entity_id: str) -> Entity:
    row: Affiliate | Advertiser | None = (
        session.get(Affiliate, entity_id) if kind == "affiliate" else session.get(Advertiser, entity_id)
    )
    if row is None:
        raise Problem(404, "Not Found", f"no {kind} {entity_id}")
    return Entity(kind, row.id, row.name, row.email)


def entity_of(user: User) -> tuple[str, str] | None:
    if user.role == "affiliate" and user.affiliate_id:
        return "affiliate", user.affiliate_id
    if user.role == "advertiser" and user.advertiser_id:
        return "advertiser", user.advertiser_id
    return None


def hash_invitation_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def invitation_state(invitation: PortalInvitation, now: datetime | None = None) -> str:
    if invitation.accepted_at is not None:
        return "accepted"
    if invitation.revoked_at is not None:
        return "revoked"
    if invitation.expires_at <= (now or utcnow()):
        return "expired"
    return "pending"


# -- invitations --------------------------------------------------------------------------------------
def invite(
    session: Session, settings: Settings, *, kind: str, entity_id: str, email: str, created_by: str
) -> tuple[PortalInvitation, str]:
    """Invite `email` to the portal for an affiliate or advertiser; returns the invitation and its
    token (shown once). Open invitations for the same email are revoked."""
    entity = get_entity(session, kind, entity_id)
    email = email.strip().lower()
    if not EMAIL_RE.match(email) or len(email) > 254:
        raise Problem(400, "Validation failed", "not an email address", errors={"email": ["not an email address"]})
    if session.scalar(select(User.id).where(User.email == email)) is not None:
        raise Problem(409, "Conflict", f"{email} already has an account", type_="user-exists")
    now = utcnow()
    session.execute(
        update(PortalInvitation)
        .where(
            PortalInvitation.email == email,
            PortalInvitation.accepted_at.is_(None),
            PortalInvitation.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    token = secrets.token_urlsafe(32)
    invitation = PortalInvitation(
        token_hash=hash_invitation_token(token),
        email=email,
        role=kind,
        affiliate_id=entity.id if kind == "affiliate" else None,
        advertiser_id=entity.id if kind == "advertiser" else None,
        created_by=created_by,
        created_at=now,
        expires_at=now + timedelta(days=settings.portal_invitation_days),
    )
    session.add(invitation)
    session.flush()
    log.info("portal invitation %s for %s %s created by %s", invitation.id, kind, entity.id, created_by)
    return invitation, token


def revoke_invitation(session: Session, invitation_id: int, *, revoked_by: str) -> PortalInvitation:
    """Revoke a pending invitation (its link stops working at once). 404 unknown, 409 when it is
    no longer pending (accepted: deactivate the user instead; expired or revoked already)."""
    invitation = session.get(PortalInvitation, invitation_id)
    if invitation is None:
        raise Problem(404, "Not Found", f"no invitation {invitation_id}")
    state = invitation_state(invitation)
    if state != "pending":
        raise Problem(409, "Conflict", f"the invitation is {state}, not pending: nothing to revoke")
    invitation.revoked_at = utcnow()
    session.flush()
    log.info("portal invitation %s revoked by %s", invitation.id, revoked_by)
    return invitation


def find_invitation(session: Session, token: str) -> PortalInvitation | None:
    if not token or len(token) > 200:
        return None
    return session.scalar(select(PortalInvitation).where(PortalInvitation.token_hash == hash_invitation_token(token)))


def list_invitations(session: Session, kind: str, entity_id: str) -> list[PortalInvitation]:
    column = PortalInvitation.affiliate_id if kind == "affiliate" else PortalInvitation.advertiser_id
    query = select(PortalInvitation).where(column == entity_id)
    return list(session.scalars(query.order_by(PortalInvitation.created_at.desc(), PortalInvitation.id.desc())))


def portal_users(session: Session, kind: str, entity_id: str) -> list[User]:
    column = User.affiliate_id if kind == "affiliate" else User.advertiser_id
    return list(session.scalars(select(User).where(column == entity_id).order_by(User.email)))


@dataclass(frozen=True)
class ClientFacts:
    """Where an acceptance came from (the address is only kept as a salted hash)."""

    address: str
    user_agent: str


def accept_invitation(
    session: Session,
    settings: Settings,
    token: str,
    *,
    password: str,
    password_confirmation: str,
    terms_version: str | None,
    client: ClientFacts,
) -> User:
    """Redeem an invitation: create the portal user and record its acceptance of the current
    terms. Raises Problem (400 bad input, 404 unknown token, 410 expired, used or revoked)."""
    invitation = find_invitation(session, token)
    if invitation is None:
        raise Problem(404, "Invitation not found", "this invitation link is not valid", type_="invitation-invalid")
    state = invitation_state(invitation)
    if state != "pending":
        raise Problem(410, f"Invitation {state}", _STATE_TEXT[state], type_=f"invitation-{state}")
    errors: dict[str, list[str]] = {}
    if password != password_confirmation:
        errors["password_confirmation"] = ["the two passwords differ"]
    terms = terms_for(invitation.role, _current_version(settings, invitation.role))
    if terms_version != terms.version:
        errors["terms"] = [f"accept the {terms.title}, version {terms.version}, to continue"]
    if errors:
        raise Problem(400, "Validation failed", "please correct the form", errors=errors)
    now = utcnow()
    claimed = session.execute(
        update(PortalInvitation)
        .where(
            PortalInvitation.id == invitation.id,
            PortalInvitation.accepted_at.is_(None),
            PortalInvitation.revoked_at.is_(None),
        )
        .values(accepted_at=now)
        .execution_options(synchronize_session=False)
    )
    if getattr(claimed, "rowcount", 0) != 1:
        raise Problem(410, "Invitation accepted", _STATE_TEXT["accepted"], type_="invitation-accepted")
    try:
        user = create_user(
            session,
            invitation.email,
            password,
            invitation.role,
            affiliate_id=invitation.affiliate_id,
            advertiser_id=invitation.advertiser_id,
        )
    except AuthError as exc:
        field = "password" if "password" in str(exc) else "email"
        raise Problem(400, "Validation failed", str(exc), errors={field: [str(exc)]}) from exc
    session.execute(
        update(PortalInvitation)
        .where(PortalInvitation.id == invitation.id)
        .values(user_id=user.id)
        .execution_options(synchronize_session=False)
    )
    record_acceptance(session, settings, user, terms, client)
    user.last_login_at = now
    log.info("portal invitation %s accepted: user %s", invitation.id, user.id)
    return user


_STATE_TEXT = {
    "accepted": "this invitation was used already; log in with your email and password",
    "expired": "this invitation has expired; ask your account manager for a new one",
    "revoked": "this invitation was replaced by a newer one; use the latest email you received",
}


def state_text(state: str) -> str:
    return _STATE_TEXT.get(state, "this invitation link is not valid")


# -- terms --------------------------------------------------------------------------------------------
def _current_version(settings: Settings, role: str) -> str:
    return str(getattr(settings, f"{role}_terms_version"))


def current_terms(settings: Settings, role: str) -> TermsDocument:
    return terms_for(role, _current_version(settings, role))


def has_accepted(session: Session, user: User, terms: TermsDocument) -> bool:
    found = session.scalar(
        select(TermsAcceptance.id).where(
            TermsAcceptance.user_id == user.id,
            TermsAcceptance.document == terms.document,
            TermsAcceptance.version == terms.version,
        )
    )
    return found is not None


def record_acceptance(
    session: Session, settings: Settings, user: User, terms: TermsDocument, client: ClientFacts
) -> TermsAcceptance:
    """Append the acceptance of `terms` by `user` (idempotent for the same version)."""
    existing = session.scalar(
        select(TermsAcceptance).where(
            TermsAcceptance.user_id == user.id,
            TermsAcceptance.document == terms.document,
            TermsAcceptance.version == terms.version,
        )
    )
    if existing is not None:
        return existing
    acceptance = TermsAcceptance(
        user_id=user.id,
        affiliate_id=user.affiliate_id,
        advertiser_id=user.advertiser_id,
        document=terms.document,
        version=terms.version,
        text_sha256=terms.sha256,
        accepted_at=utcnow(),
        client_hash=client_hash(settings.secret_key, client.address),
        user_agent=client.user_agent[:512],
    )
    try:
        with session.begin_nested():
            session.add(acceptance)
            session.flush()
    except IntegrityError:  # the same user accepted in a concurrent request
        found = session.scalar(
            select(TermsAcceptance).where(
                TermsAcceptance.user_id == user.id,
                TermsAcceptance.document == terms.document,
                TermsAcceptance.version == terms.version,
            )
        )
        if found is None:
            raise
        return found
    return acceptance


def acceptances(session: Session, kind: str, entity_id: str) -> list[tuple[TermsAcceptance, str]]:
    column = TermsAcceptance.affiliate_id if kind == "affiliate" else TermsAcceptance.advertiser_id
    rows = session.execute(
        select(TermsAcceptance, User.email)
        .join(User, User.id == TermsAcceptance.user_id)
        .where(column == entity_id)
        .order_by(TermsAcceptance.accepted_at.desc(), TermsAcceptance.id.desc())
    )
    return [(a, str(email)) for a, email in rows]


# -- bodies -------------------------------------------------------------------------------------------
def invitation_body(invitation: PortalInvitation) -> dict[str, Any]:
    return {
        "id": invitation.id,
        "email": invitation.email,
        "role": invitation.role,
        "affiliate_id": invitation.affiliate_id,
        "advertiser_id": invitation.advertiser_id,
        "state": invitation_state(invitation),
        "created_by": invitation.created_by,
        "created_at": invitation.created_at.isoformat(),
        "expires_at": invitation.expires_at.isoformat(),
        "accepted_at": invitation.accepted_at.isoformat() if invitation.accepted_at else None,
        "revoked_at": invitation.revoked_at.isoformat() if invitation.revoked_at else None,
    }


def acceptance_body(acceptance: TermsAcceptance, email: str) -> dict[str, Any]:
    return {
        "id": acceptance.id,
        "user_id": acceptance.user_id,
        "email": email,
        "affiliate_id": acceptance.affiliate_id,
        "advertiser_id": acceptance.advertiser_id,
        "document": acceptance.document,
        "version": acceptance.version,
        "text_sha256": acceptance.text_sha256,
        "accepted_at": acceptance.accepted_at.isoformat(),
        "client_hash": acceptance.client_hash,
        "user_agent": acceptance.user_agent,
    }


# -- email --------------------------------------------------------------------------------------------
def send_invitation_email(settings: Settings, *, to: str, entity: Entity, link: str, expires_at: datetime) -> str:
    """Email the invitation link through the SMTP settings. Returns what happened, for the staff
    member: "sent", "not configured" or "failed: <reason>" (the invitation stands either way; its
    link is shown to the staff member once). The link is never logged."""
    return send_mail(
        settings,
        to=to,
        subject=f"Your SmartLinks {entity.kind} portal invitation ({entity.name})",
        body=(
            f"Hello,\n\nyou are invited to the SmartLinks {entity.kind} portal for {entity.name}.\n\n"
            f"Open this link to choose your password and accept the terms:\n\n{link}\n\n"
            f"The link works once and expires on {expires_at.strftime('%Y-%m-%d %H:%M UTC')}.\n"
            "If you did not expect this email, ignore it.\n"
        ),
        what=f"invitation email to the {entity.kind} {entity.id}",
    )


# -- the affiliate's own payout profile ------------------------------------------------------------------
def save_own_payout_profile(session: Session, who: Any, changes: dict[str, Any]) -> tuple[PayoutProfile, bool]:
    """The affiliate changes their payout method or destination through the portal: recorded as a
    self-service change, which the payouts policy holds for `destination_change_hold_hours` before
    paying to it. Returns the profile and whether the method or destination changed."""
    from server.finance.queries import save_profile
    from server.finance.services import payment_services

    before = session.get(PayoutProfile, who.affiliate_id)
    changed_at = before.destination_changed_at if before is not None else None
    profile = save_profile(
        session,
        payment_services().vault,
        who.affiliate_id,
        changes,
        changed_by=f"user:{who.user.id}",
        self_service=True,
    )
    return profile, profile.destination_changed_at != changed_at


def notify_destination_change(settings: Settings, to: str, profile: PayoutProfile) -> str:
    """Tell the affiliate their payout destination changed (a stolen login is noticed early)."""
    return send_mail(
        settings,
        to=to,
        subject="Your SmartLinks payout destination was changed",
        body=(
            "Hello,\n\nthe payout destination of your SmartLinks affiliate account was changed to "
            f"{profile.method} {profile.destination_hint or ''} on "
            f"{(profile.destination_changed_at or utcnow()).strftime('%Y-%m-%d %H:%M UTC')}.\n\n"
            "Payouts to a new destination start after a holding period. If you did not make this "
            "change, contact us at once: your account may be compromised.\n"
        ),
        what=f"destination change notice to the affiliate {profile.affiliate_id}",
    )
