"""Login and logout pages (session cookies, CSRF-protected forms)."""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from flask import Blueprint, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from server.auth.csrf import csrf_ok
from server.auth.models import PORTAL_ROLES
from server.auth.services import AuthError, authenticate
from server.extensions import services

auth = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only local paths are followed after login (no open redirect)."""
    if not target:
        return url_for("pages.index")
    target = unquote(target)
    parts = urlparse(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("pages.index")
    return target


@auth.route("/login", methods=["GET", "POST"])
def login() -> Response | str | tuple[str, int]:
    if request.method == "GET":
        return render_template("login.html", next=request.args.get("next", ""), error=None)
    next_url = request.form.get("next", "")
    if not csrf_ok():
        return render_template("login.html", next=next_url, error="The form expired. Please try again."), 400
    email = request.form.get("email", "")
    password = request.form.get("password", "")
    if not email or not password:
        return render_template("login.html", next=next_url, error="Enter your email and password."), 400
    with services().db.unit_of_work() as uow:
        try:
            user = authenticate(uow.session, email, password)
        except AuthError as exc:
            return render_template("login.html", next=next_url, error=str(exc)), 401
        user_id = user.id
        portal_user = user.role in PORTAL_ROLES
        uow.commit()
    session.clear()  # a fresh session on login: no fixation
    session["user_id"] = user_id
    session.permanent = True
    if portal_user and not next_url:  # portal users have no staff dashboard
        return redirect(url_for("portal.home"))
    return redirect(_safe_next(next_url))


@auth.post("/logout")
def logout() -> Response:
    session.clear()
    return redirect(url_for("auth.login"))
