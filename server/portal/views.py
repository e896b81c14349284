"""Portal pages (`/portal`, for the signed-in affiliate or advertiser user, scoped to its entity),
the public invitation page that onboards a portal user, and the staff pages that invite portal
users and show their terms acceptances (`/affiliates/<id>`, `/advertisers/<id>`).

A portal page first resolves the portal user (server/portal/access.py); until the current terms
are accepted, every portal page sends the user to the terms page."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from server.auth.authz import current_subject
from server.auth.csrf import csrf_ok
from server.errors import Problem
from server.extensions import services
from server.finance import queries as finance_queries
from server.portal import queries
from server.portal import services as onboarding
from server.portal.access import PortalUser, TermsRequired, base_url, client_facts, portal_user

portal = Blueprint("portal", __name__, url_prefix="/portal")
onboarding_pages = Blueprint("onboarding_pages", __name__)

PageResult = Response | str | tuple[str, int]
F = TypeVar("F", bound=Callable[..., PageResult])


def terms_gate(view: F) -> F:
    """Send a portal user who has not accepted the current terms to the terms page."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> PageResult:
        try:
            return view(*args, **kwargs)
        except TermsRequired:
            return redirect(url_for("portal.terms", next=request.full_path.rstrip("?")))

    return cast(F, wrapper)


def documents_for(kind: str, entity_id: str) -> list[dict[str, Any]] | None:
    """The financial documents (receipts, invoices, credit notes) of the entity, from
    server.finance.documents when that capability is installed; None hides the section."""
    if importlib.util.find_spec("server.finance.documents") is None:
        return None
    from server.finance import documents

    with services().db.unit_of_work() as uow:
        if kind == "affiliate":
            found = documents.documents_for(uow.session, affiliate_id=entity_id)
        else:
            found = documents.documents_for(uow.session, advertiser_id=entity_id)
        return [
            {"id": d.id, "number": d.number, "kind": d.kind, "issued_at": d.issued_at.isoformat()[:10]} for d in found
        ]


def _render(who: PortalUser, template: str, **context: Any) -> str:
    return render_template(template, who=who, **context)


# -- portal pages -------------------------------------------------------------------------------------
@portal.get("/")
@terms_gate
def home() -> PageResult:
    svc = services()
    with svc.db.unit_of_work() as uow:
        who = portal_user(uow.session, svc.settings)
        entity = onboarding.get_entity(uow.session, who.kind, who.entity_id)
        if who.kind == "affiliate":
            board = queries.affiliate_dashboard(uow.session, who.entity_id, base_url(svc.settings))
            recent = queries.affiliate_conversions(uow.session, who.entity_id, limit=10)
            template = "portal/affiliate_dashboard.html"
        else:
            board = queries.advertiser_dashboard(uow.session, who.entity_id)
            recent = queries.advertiser_conversions(uow.session, who.entity_id)
            template = "portal/advertiser_dashboard.html"
    return _render(
        who, template, entity=entity, board=board, recent=recent, documents=documents_for(who.kind, who.entity_id)
    )


@portal.get("/terms")
def terms() -> PageResult:
    svc = services()
    with svc.db.unit_of_work() as uow:
        who = portal_user(uow.session, svc.settings, require_terms=False)
        accepted = onboarding.has_accepted(uow.session, who.user, who.terms)
    return _render(
        who, "portal/terms.html", terms=who.terms, accepted=accepted, next=request.args.get("next", ""), error=None
    )


@portal.post("/terms")
def accept_terms() -> PageResult:
    svc = services()
    with svc.db.unit_of_work() as uow:
        who = portal_user(uow.session, svc.settings, require_terms=False)
        next_url = _local(request.form.get("next", ""))
        if request.form.get("accept") != "yes" or request.form.get("version") != who.terms.version:
            error = "Tick the box to accept the terms, or reload the page if they changed meanwhile."
            return _render(who, "portal/terms.html", terms=who.terms, accepted=False, next=next_url, error=error), 400
        onboarding.record_acceptance(uow.session, svc.settings, who.user, who.terms, client_facts(svc.settings))
        uow.commit()
    flash("Thank you: the terms are accepted.")
    return redirect(next_url or url_for("portal.home"), 303)


def _local(target: str) -> str:
    """Only portal paths are followed after accepting the terms (no open redirect)."""
    return target if target.startswith("/portal") and "//" not in target and "\\" not in target else ""


@portal.get("/links/<link_id>")
@terms_gate
def link_detail(link_id: str) -> PageResult:
    svc = services()
    with svc.db.unit_of_work() as uow:
        who = portal_user(uow.session, svc.settings)
        link = queries.affiliate_link(uow.session, who.affiliate_id, link_id)
        w = queries.windows()
        month = queries.link_stats(uow.session, [link.id], w["last_30_days"])
        today = queries.link_stats(uow.session, [link.id], w["today"])
        body = queries.link_body(link, month, base_url(svc.settings))
    return _render(who, "portal/link_detail.html", link=body, today=today[link.id])


@portal.get("/payouts")
@terms_gate
def payouts() -> PageResult:
    svc = services()
    with svc.db.unit_of_work() as uow:
        who = portal_user(uow.session, svc.settings)
        rows = [queries.payout_body(p) for p in queries.affiliate_payouts(uow.session, who.affiliate_id)]
        balances = queries.balances(uow.session, who.affiliate_id)
    return _render(who, "portal/payouts.html", payouts=rows, balances=balances)


def _profile_page(who: PortalUser, profile: Any, *, error: str | None = None, status: int = 200) -> PageResult:
    body = finance_queries.profile_body(who.entity_id, profile)
    page = _render(who, "portal/payout_profile.html", profile=body, methods=finance_queries.METHODS, error=error)
    return (page, status) if status != 200 else page


@portal.get("/payout-profile")
@terms_gate
def payout_profile() -> PageResult:
    svc = services()
    with svc.db.unit_of_work() as uow:
        who = portal_user(uow.session, svc.settings)
        return _profile_page(who, queries.profile_of(uow.session, who.affiliate_id))


@portal.post("/payout-profile")
@terms_gate
def update_payout_profile() -> PageResult:
    svc = services()
    method = request.form.get("method", "")
    destination = request.form.get("destination", "").strip()
    with svc.db.unit_of_work() as uow:
        who = portal_user(uow.session, svc.settings)
        affiliate_id = who.affiliate_id
        if method not in finance_queries.METHODS:
            return _profile_page(
                who, queries.profile_of(uow.session, affiliate_id), error="Choose a payout method.", status=400
            )
        if destination and not 3 <= len(destination) <= 254:
            error = "The destination must have 3 to 254 characters."
            return _profile_page(who, queries.profile_of(uow.session, affiliate_id), error=error, status=400)
        changes = {"method": method} | ({"destination": destination} if destination else {})
        try:
            profile, changed = onboarding.save_own_payout_profile(uow.session, who, changes)
        except Problem as exc:
            uow.rollback()
            return _profile_page(
                who, queries.profile_of(uow.session, affiliate_id), error=exc.detail or exc.title, status=exc.status
            )
        uow.commit()
    if changed:
        onboarding.notify_destination_change(svc.settings, who.user.email, profile)
        flash("Your payout profile is saved. Payouts to a new destination start after a holding period.")
        return redirect(url_for("portal.payout_profile"), 303)
    flash("Your payout profile is saved.")
    return redirect(url_for("portal.payout_profile"), 303)


@portal.get("/conversions")
@terms_gate
def conversions() -> PageResult:
    svc = services()
    with svc.db.unit_of_work() as uow:
        who = portal_user(uow.session, svc.settings)
        if who.kind == "affiliate":
            rows = queries.affiliate_conversions(uow.session, who.entity_id)
        else:
            rows = queries.advertiser_conversions(uow.session, who.entity_id)
    return _render(who, "portal/conversions.html", conversions=rows)


# -- the invitation (public) --------------------------------------------------------------------------
def _invitation_page(token: str, *, errors: dict[str, list[str]] | None = None, status: int = 200) -> PageResult:
    svc = services()
    with svc.db.unit_of_work() as uow:
        invitation = onboarding.find_invitation(uow.session, token)
        if invitation is None:
            page = render_template(
                "portal/invitation_invalid.html", title="Invitation not valid", detail=onboarding.state_text("invalid")
            )
            return page, 404
        state = onboarding.invitation_state(invitation)
        if state != "pending":
            page = render_template(
                "portal/invitation_invalid.html", title=f"Invitation {state}", detail=onboarding.state_text(state)
            )
            return page, 410
        entity = onboarding.get_entity(
            uow.session, invitation.role, invitation.affiliate_id or invitation.advertiser_id or ""
        )
        terms = onboarding.current_terms(svc.settings, invitation.role)
        page = render_template(
            "portal/invitation.html",
            token=token,
            invitation=invitation,
            entity=entity,
            terms=terms,
            errors=errors or {},
        )
    return (page, status) if status != 200 else page


@portal.get("/invitations/<token>")
def invitation(token: str) -> PageResult:
    return _invitation_page(token)


@portal.post("/invitations/<token>")
def accept_invitation(token: str) -> PageResult:
    if not csrf_ok():  # a public endpoint: the authz hook does not check CSRF here
        return _invitation_page(token, errors={"form": ["The form expired. Please try again."]}, status=400)
    svc = services()
    with svc.db.unit_of_work() as uow:
        try:
            user = onboarding.accept_invitation(
                uow.session,
                svc.settings,
                token,
                password=request.form.get("password", ""),
                password_confirmation=request.form.get("password_confirmation", ""),
                terms_version=request.form.get("terms_version") if request.form.get("accept") == "yes" else None,
                client=client_facts(svc.settings),
            )
        except Problem as exc:
            uow.rollback()
            if exc.status == 400:
                return _invitation_page(token, errors=exc.errors or {"form": [exc.detail or exc.title]}, status=400)
            return _invitation_page(token)
        user_id = user.id
        uow.commit()
    session.clear()  # a fresh session on login: no fixation
    session["user_id"] = user_id
    session.permanent = True
    flash("Welcome! Your account is ready.")
    return redirect(url_for("portal.home"), 303)


# -- staff pages --------------------------------------------------------------------------------------
def _entity_page(
    kind: str, entity_id: str, *, invited: dict[str, Any] | None = None, error: str | None = None, status: int = 200
) -> PageResult:
    with services().db.unit_of_work() as uow:
        entity = onboarding.get_entity(uow.session, kind, entity_id)
        page = render_template(
            "portal/entity_admin.html",
            entity=entity,
            users=onboarding.portal_users(uow.session, kind, entity_id),
            invitations=[
                onboarding.invitation_body(i) for i in onboarding.list_invitations(uow.session, kind, entity_id)
            ],
            acceptances=onboarding.acceptances(uow.session, kind, entity_id),
            invited=invited,
            error=error,
            form_email=request.form.get("email", "") if error else "",
        )
    return (page, status) if status != 200 else page


def _invite_from_form(kind: str, entity_id: str) -> PageResult:
    svc = services()
    with svc.db.unit_of_work() as uow:
        try:
            invitation, token = onboarding.invite(
                uow.session,
                svc.settings,
                kind=kind,
                entity_id=entity_id,
                email=request.form.get("email", ""),
                created_by=current_subject().id,
            )
        except Problem as exc:
            if exc.status == 404:
                raise
            uow.rollback()
            return _entity_page(kind, entity_id, error=exc.detail or exc.title, status=exc.status)
        entity = onboarding.get_entity(uow.session, kind, entity_id)
        uow.commit()
        email, expires_at = invitation.email, invitation.expires_at
    url = f"{base_url(svc.settings)}/portal/invitations/{token}"
    delivery = onboarding.send_invitation_email(svc.settings, to=email, entity=entity, link=url, expires_at=expires_at)
    # the link is shown once, in this answer only (never flashed: the session cookie is not secret)
    return _entity_page(kind, entity_id, invited={"email": email, "url": url, "delivery": delivery}, status=201)


@onboarding_pages.get("/affiliates/<affiliate_id>")
def affiliate_detail(affiliate_id: str) -> PageResult:
    return _entity_page("affiliate", affiliate_id)


@onboarding_pages.post("/affiliates/<affiliate_id>/invitations")
def invite_affiliate(affiliate_id: str) -> PageResult:
    return _invite_from_form("affiliate", affiliate_id)


@onboarding_pages.get("/advertisers/<advertiser_id>")
def advertiser_detail(advertiser_id: str) -> PageResult:
    return _entity_page("advertiser", advertiser_id)


@onboarding_pages.post("/advertisers/<advertiser_id>/invitations")
def invite_advertiser(advertiser_id: str) -> PageResult:
    return _invite_from_form("advertiser", advertiser_id)


@onboarding_pages.post("/invitations/<int:invitation_id>/revoke")
def revoke_invitation(invitation_id: int) -> PageResult:
    with services().db.unit_of_work() as uow:
        invitation = onboarding.revoke_invitation(uow.session, invitation_id, revoked_by=current_subject().id)
        kind = invitation.role
        entity_id = invitation.affiliate_id if kind == "affiliate" else invitation.advertiser_id
        email = invitation.email
        uow.commit()
    assert entity_id is not None
    flash(f"The invitation for {email} is revoked: its link no longer works.", "ok")
    values: dict[str, Any] = {f"{kind}_id": entity_id}
    return redirect(url_for(f"onboarding_pages.{kind}_detail", **values))
