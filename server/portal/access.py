"""Who is using the portal: the signed-in portal user, its entity, and whether it accepted the
current terms. Every portal view starts here, so scoping cannot be forgotten by a view."""

from __future__ import annotations

from dataclasses import dataclass

from flask import request
from sqlalchemy.orm import Session

from server.auth.authz import current_subject
from server.auth.models import User
from server.clicks.traffic import client_address, environ_key
from server.config import Settings
from server.errors import Problem
from server.portal.services import ClientFacts, current_terms, entity_of, has_accepted
from server.portal.terms import TermsDocument, TermsMissing


class TermsRequired(Problem):
    """The portal user has not accepted the current version of its terms."""

    def __init__(self, terms: TermsDocument) -> None:
        super().__init__(
            403,
            "Terms not accepted",
            f"accept the {terms.title}, version {terms.version}, before using the portal",
            type_="terms-not-accepted",
            extra={"document": terms.document, "version": terms.version},
        )


@dataclass(frozen=True)
class PortalUser:
    user: User
    kind: str  # affiliate | advertiser
    entity_id: str
    terms: TermsDocument

    @property
    def affiliate_id(self) -> str:
        if self.kind != "affiliate":
            raise Problem(403, "Forbidden", "this part of the portal is for affiliates", type_="not-an-affiliate")
        return self.entity_id

    @property
    def advertiser_id(self) -> str:
        if self.kind != "advertiser":
            raise Problem(403, "Forbidden", "this part of the portal is for advertisers", type_="not-an-advertiser")
        return self.entity_id


def portal_user(session: Session, settings: Settings, *, require_terms: bool = True) -> PortalUser:
    """The signed-in portal user. 403 for API tokens and staff (the portal shows one entity's
    data, which only a portal user has), TermsRequired until the current terms are accepted."""
    subject = current_subject()
    if subject.kind != "user" or not subject.id.startswith("user:"):
        raise Problem(403, "Forbidden", "the portal needs a signed-in portal user", type_="portal-user-required")
    user = session.get(User, int(subject.id.removeprefix("user:")))
    entity = entity_of(user) if user is not None and user.active else None
    if user is None or entity is None:
        raise Problem(
            403, "Forbidden", "the portal is for affiliate and advertiser accounts", type_="portal-user-required"
        )
    try:
        terms = current_terms(settings, entity[0])
    except TermsMissing as exc:
        raise Problem(503, "Terms unavailable", str(exc), type_="terms-unavailable") from exc
    if require_terms and not has_accepted(session, user, terms):
        raise TermsRequired(terms)
    return PortalUser(user, entity[0], entity[1], terms)


def client_facts(settings: Settings) -> ClientFacts:
    header = environ_key(settings.client_ip_header) if settings.client_ip_header else None
    return ClientFacts(client_address(request.environ, header), request.headers.get("User-Agent", "")[:512])


def base_url(settings: Settings) -> str:
    """Where tracking and invitation links point: PORTAL_BASE_URL, else this request's host."""
    return settings.portal_base_url or request.host_url.rstrip("/")
