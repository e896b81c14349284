"""JSON API of the portal (`/v1/portal/...`, for the signed-in portal user, scoped to its entity)
and of onboarding (`/v1/affiliates/<id>/invitations`, `/v1/affiliates/<id>/terms-acceptances`
and the same for advertisers, for staff)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from marshmallow import Schema, fields, validate

from server.auth.authz import current_subject
from server.errors import Problem
from server.extensions import services
from server.finance import queries as finance_queries
from server.governance.api import json_body
from server.portal import queries
from server.portal import services as onboarding
from server.portal.access import base_url, client_facts, portal_user

portal_api = Blueprint("portal_api", __name__, url_prefix="/v1/portal")
onboarding_api = Blueprint("onboarding_api", __name__, url_prefix="/v1")


class InvitationSchema(Schema):
    email = fields.String(required=True, validate=validate.Length(min=3, max=254))


class TermsAcceptanceSchema(Schema):
    version = fields.String(required=True, validate=validate.Length(min=1, max=20))


class PortalPayoutProfileSchema(Schema):
    method = fields.String(required=True, validate=validate.OneOf(list(finance_queries.METHODS)))
    destination = fields.String(load_default=None, validate=validate.Length(min=3, max=254))


# -- onboarding (staff) -------------------------------------------------------------------------------
def _invite(kind: str, entity_id: str) -> tuple[Response, int]:
    data = InvitationSchema().load(json_body())
    svc = services()
    with svc.db.unit_of_work() as uow:
        invitation, token = onboarding.invite(
            uow.session,
            svc.settings,
            kind=kind,
            entity_id=entity_id,
            email=data["email"],
            created_by=current_subject().id,
        )
        entity = onboarding.get_entity(uow.session, kind, entity_id)
        uow.commit()
        body = onboarding.invitation_body(invitation)
        expires_at = invitation.expires_at
    url = f"{base_url(svc.settings)}/portal/invitations/{token}"
    emailed = onboarding.send_invitation_email(
        svc.settings, to=body["email"], entity=entity, link=url, expires_at=expires_at
    )
    return jsonify(body | {"token": token, "url": url, "email_delivery": emailed}), 201


def _invitations(kind: str, entity_id: str) -> Response:
    with services().db.unit_of_work() as uow:
        onboarding.get_entity(uow.session, kind, entity_id)
        items = [onboarding.invitation_body(i) for i in onboarding.list_invitations(uow.session, kind, entity_id)]
    return jsonify({"items": items})


def _acceptances(kind: str, entity_id: str) -> Response:
    with services().db.unit_of_work() as uow:
        onboarding.get_entity(uow.session, kind, entity_id)
        rows = onboarding.acceptances(uow.session, kind, entity_id)
        return jsonify({"items": [onboarding.acceptance_body(a, email) for a, email in rows]})


@onboarding_api.post("/affiliates/<affiliate_id>/invitations")
def invite_affiliate(affiliate_id: str) -> tuple[Response, int]:
    return _invite("affiliate", affiliate_id)


@onboarding_api.post("/invitations/<int:invitation_id>/revoke")
def revoke_invitation(invitation_id: int) -> Response:
    with services().db.unit_of_work() as uow:
        invitation = onboarding.revoke_invitation(uow.session, invitation_id, revoked_by=current_subject().id)
        body = onboarding.invitation_body(invitation)
        uow.commit()
    return jsonify(body)


@onboarding_api.get("/affiliates/<affiliate_id>/invitations")
def list_affiliate_invitations(affiliate_id: str) -> Response:
    return _invitations("affiliate", affiliate_id)


@onboarding_api.get("/affiliates/<affiliate_id>/terms-acceptances")
def affiliate_acceptances(affiliate_id: str) -> Response:
    return _acceptances("affiliate", affiliate_id)


@onboarding_api.post("/advertisers/<advertiser_id>/invitations")
def invite_advertiser(advertiser_id: str) -> tuple[Response, int]:
    return _invite("advertiser", advertiser_id)


@onboarding_api.get("/advertisers/<advertiser_id>/invitations")
def list_advertiser_invitations(advertiser_id: str) -> Response:
    return _invitations("advertiser", advertiser_id)


@onboarding_api.get("/advertisers/<advertiser_id>/terms-acceptances")
def advertiser_acceptances(advertiser_id: str) -> Response:
    return _acceptances("advertiser", advertiser_id)


# -- the portal (portal users) ------------------------------------------------------------------------
def _terms_body(document: Any, accepted: bool) -> dict[str, Any]:
    return {
        "document": document.document,
        "title": document.title,
        "version": document.version,
        "sha256": document.sha256,
        "text": document.text,
        "accepted": accepted,
    }


@portal_api.get("/me")
def me() -> Response:
    svc = services()
    with svc.db.unit_of_work() as uow:
        who = portal_user(uow.session, svc.settings, require_terms=False)
        entity = onboarding.get_entity(uow.session, who.kind, who.entity_id)
        accepted = onboarding.has_accepted(uow.session, who.user, who.terms)
        return jsonify(
            {
                "email": who.user.email,
                "role": who.user.role,
                "entity": {"kind": entity.kind, "id": entity.id, "name": entity.name},
                "terms": {"document": who.terms.document, "version": who.terms.version, "accepted": accepted},
            }
        )


@portal_api.get("/terms")
def get_terms() -> Response:
    svc = services()
    with svc.db.unit_of_work() as uow:
        who = portal_user(uow.session, svc.settings, require_terms=False)
        return jsonify(_terms_body(who.terms, onboarding.has_accepted(uow.session, who.user, who.terms)))


@portal_api.post("/terms/acceptances")
def accept_terms() -> tuple[Response, int]:
    svc = services()
    with svc.db.unit_of_work() as uow:
        who = portal_user(uow.session, svc.settings, require_terms=False)
        data = TermsAcceptanceSchema().load(json_body())
        if data["version"] != who.terms.version:
            raise Problem(
                409,
                "Terms version mismatch",
                f"the current version of {who.terms.document} is {who.terms.version}",
                type_="terms-version-mismatch",
            )
        acceptance = onboarding.record_acceptance(
            uow.session, svc.settings, who.user, who.terms, client_facts(svc.settings)
        )
        uow.commit()
        return jsonify(onboarding.acceptance_body(acceptance, who.user.email)), 201


@portal_api.get("/dashboard")
def dashboard() -> Response:
    svc = services()
    with svc.db.unit_of_work() as uow:
        who = portal_user(uow.session, svc.settings)
        if who.kind == "affiliate":
            return jsonify(queries.affiliate_dashboard(uow.session, who.entity_id, base_url(svc.settings)))
        return jsonify(queries.advertiser_dashboard(uow.session, who.entity_id))


@portal_api.get("/links")
def list_links() -> Response:
    svc = services()
    with svc.db.unit_of_work() as uow:
        affiliate_id = portal_user(uow.session, svc.settings).affiliate_id
        board = queries.affiliate_dashboard(uow.session, affiliate_id, base_url(svc.settings))
        return jsonify({"items": board["links"]})


@portal_api.get("/links/<link_id>")
def get_link(link_id: str) -> Response:
    svc = services()
    with svc.db.unit_of_work() as uow:
        affiliate_id = portal_user(uow.session, svc.settings).affiliate_id
        link = queries.affiliate_link(uow.session, affiliate_id, link_id)
        stats = queries.link_stats(uow.session, [link.id], queries.windows()["last_30_days"])
        return jsonify(queries.link_body(link, stats, base_url(svc.settings)))


@portal_api.get("/balances")
def balances() -> Response:
    svc = services()
    with svc.db.unit_of_work() as uow:
        affiliate_id = portal_user(uow.session, svc.settings).affiliate_id
        return jsonify({"items": queries.balances(uow.session, affiliate_id)})


@portal_api.get("/payouts")
def list_payouts() -> Response:
    svc = services()
    with svc.db.unit_of_work() as uow:
        affiliate_id = portal_user(uow.session, svc.settings).affiliate_id
        return jsonify(
            {"items": [queries.payout_body(p) for p in queries.affiliate_payouts(uow.session, affiliate_id)]}
        )


def _profile_body(affiliate_id: str, profile: Any) -> dict[str, Any]:
    body = finance_queries.profile_body(affiliate_id, profile)
    keys = (
        "affiliate_id",
        "method",
        "destination",
        "threshold",
        "on_hold",
        "updated_at",
        "destination_changed_at",
        "destination_self_service",
    )
    return {k: body.get(k) for k in keys}


@portal_api.get("/payout-profile")
def get_payout_profile() -> Response:
    svc = services()
    with svc.db.unit_of_work() as uow:
        affiliate_id = portal_user(uow.session, svc.settings).affiliate_id
        return jsonify(_profile_body(affiliate_id, queries.profile_of(uow.session, affiliate_id)))


@portal_api.put("/payout-profile")
def put_payout_profile() -> Response:
    svc = services()
    with svc.db.unit_of_work() as uow:
        who = portal_user(uow.session, svc.settings)
        affiliate_id = who.affiliate_id
        data = PortalPayoutProfileSchema().load(json_body())
        changes = {"method": data["method"]} | ({"destination": data["destination"]} if data["destination"] else {})
        profile, changed = onboarding.save_own_payout_profile(uow.session, who, changes)
        body = _profile_body(affiliate_id, profile)
        uow.commit()
    if changed:
        onboarding.notify_destination_change(svc.settings, who.user.email, profile)
    return jsonify(body)


@portal_api.get("/offers")
def list_offers() -> Response:
    svc = services()
    with svc.db.unit_of_work() as uow:
        advertiser_id = portal_user(uow.session, svc.settings).advertiser_id
        return jsonify({"items": queries.advertiser_dashboard(uow.session, advertiser_id)["offers"]})


@portal_api.get("/conversions")
def list_conversions() -> Response:
    svc = services()
    with svc.db.unit_of_work() as uow:
        who = portal_user(uow.session, svc.settings)
        if who.kind == "affiliate":
            return jsonify({"items": queries.affiliate_conversions(uow.session, who.entity_id)})
        return jsonify({"items": queries.advertiser_conversions(uow.session, who.entity_id)})
