"""Admin pages for people and service access: users (activate, deactivate, change a staff role)
and API tokens (create, shown once; revoke). Admins only (`users:manage`, `tokens:manage` in the
authz data)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from server.auth import services as auth_services
from server.auth.api import caller_user_id, user_dict
from server.auth.models import ROLES, ApiToken
from server.auth.services import AdminRefused, AuthError
from server.extensions import services

admin_pages = Blueprint("admin_pages", __name__, url_prefix="/admin")

PageResult = Response | str | tuple[str, int]


def _page(*, error: str | None = None, created: dict[str, Any] | None = None, status: int = 200) -> PageResult:
    with services().db.unit_of_work() as uow:
        users = [user_dict(u) for u in auth_services.list_users(uow.session)]
        tokens = list(uow.session.query(ApiToken).order_by(ApiToken.revoked_at.is_not(None), ApiToken.id.desc()))
        page = render_template(
            "admin/users.html",
            users=users,
            tokens=tokens,
            staff_roles=auth_services.STAFF_ROLES,
            token_roles=ROLES,
            me=caller_user_id(),
            error=error,
            created=created,
        )
    return (page, status) if status != 200 else page


@admin_pages.get("/users")
def users() -> PageResult:
    return _page()


@admin_pages.post("/users/<int:user_id>")
def update_user(user_id: int) -> PageResult:
    change = request.form.get("change", "")
    kwargs: dict[str, Any]
    if change in ("activate", "deactivate"):
        kwargs = {"active": change == "activate"}
    elif change == "role":
        role = request.form.get("role", "")
        if role not in auth_services.STAFF_ROLES:
            return _page(error=f"Choose one of the staff roles: {', '.join(auth_services.STAFF_ROLES)}.", status=400)
        kwargs = {"role": role}
    else:
        return _page(error="Unknown change.", status=400)
    from server.governance.api import caller_actor
    from server.links.views import denial_message

    refusal: tuple[str, int] | None = None
    svc = services()
    with svc.db.unit_of_work() as uow:  # closed before any page is rendered (SQLite's one writer)
        try:
            user, outcome = auth_services.update_user(uow.session, svc.gateway, caller_actor(), user_id, **kwargs)
        except AdminRefused as exc:
            refusal = f"Not changed: {exc}.", 409
        except AuthError as exc:
            refusal = str(exc), 404
        else:
            denial = denial_message(outcome) if outcome is not None else None
            if denial is not None:
                refusal = f"Not changed. {denial[1]}", denial[0]
            message = f"{user.email}: {'active' if user.active else 'deactivated'}, role {user.role}."
            uow.commit()  # the decision is recorded whatever it says
    if refusal is not None:
        return _page(error=refusal[0], status=refusal[1])
    flash(message, "ok")
    return redirect(url_for("admin_pages.users"))


@admin_pages.post("/tokens")
def create_token() -> PageResult:
    name = request.form.get("name", "").strip()
    role = request.form.get("role", "")
    if not name or len(name) > 120 or role not in ROLES:
        return _page(error="A token needs a name (up to 120 characters) and a role.", status=400)
    with services().db.unit_of_work() as uow:
        token, plain = auth_services.create_token(uow.session, name, role, created_by=caller_user_id())
        created = {"name": token.name, "role": token.role, "token": plain}
        uow.commit()
    # the token is shown once, in this answer only (never flashed: the session cookie is not secret)
    return _page(created=created, status=201)


@admin_pages.post("/tokens/<int:token_id>/revoke")
def revoke_token(token_id: int) -> PageResult:
    missing: str | None = None
    with services().db.unit_of_work() as uow:
        try:
            token = auth_services.revoke_token(uow.session, token_id)
        except AuthError as exc:
            missing = str(exc)
        else:
            name = token.name
            uow.commit()
    if missing is not None:
        return _page(error=missing, status=404)
    services().tokens.clear()
    flash(f"Token {name} is revoked.", "ok")
    return redirect(url_for("admin_pages.users"))
