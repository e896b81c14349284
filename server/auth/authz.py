"""Every request is authorised by the `authz` policy in the OPA sidecar, deny by default.

Public endpoints (click redirect, postback, signed webhooks, login, health, metrics) are named in
the policy's data; the server caches that list per bundle revision so that the click path makes
no OPA call. Liveness, readiness and metrics (which checks its own bearer token) answer even when
OPA is down, so they are public in code too."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast
from urllib.parse import quote

from flask import current_app, g, redirect, request, session, url_for
from werkzeug.wrappers import Response as WerkzeugResponse

from server.auth.csrf import csrf_ok
from server.auth.services import ANONYMOUS, Subject, user_subject
from server.errors import Problem, wants_api
from server.policy.opa_client import OpaClient, OpaError

log = logging.getLogger(__name__)

AUTHZ_PATH = "smartlinks/authz/result"
PUBLIC_PATH = "config/authz/public_endpoints"
# The OPA sidecars' own endpoints are public in code too: they authenticate with OPA's bearer token
# (server/policies/bundle_server.py), and a sidecar must fetch its first bundle before the policy
# that lists public endpoints exists.
ALWAYS_PUBLIC = frozenset(
    {
        "health.healthz",
        "health.readyz",
        "observability.metrics",  # checks METRICS_TOKEN itself; scrapes must work while OPA is down
        "static",
        "api_meta.openapi",
        "opa_bundles.bundle",
        "opa_bundles.status",
        "opa_bundles.decision_logs",
    }
)
F = TypeVar("F", bound=Callable[..., Any])


class PublicEndpoints:
    """The policy's list of public endpoints, refreshed at most every `ttl` seconds. When OPA
    cannot be asked, the last list stays in force (clicks keep flowing), never a wider one."""

    def __init__(self, opa: OpaClient, ttl: float = 5.0) -> None:
        self.opa = opa
        self.ttl = ttl
        self.revision: str | None = None
        self._endpoints: frozenset[str] = ALWAYS_PUBLIC
        self._expires = 0.0
        self._lock = threading.Lock()

    def get(self) -> frozenset[str]:
        now = time.monotonic()
        if now < self._expires:
            return self._endpoints
        with self._lock:
            if now < self._expires:
                return self._endpoints
            try:
                answer = self.opa.query(PUBLIC_PATH, {})
            except OpaError as exc:
                log.warning("public endpoint list not refreshed (%s); keeping the last one", exc.code)
                self._expires = now + min(self.ttl, 1.0)
                return self._endpoints
            if isinstance(answer.result, list) and all(isinstance(e, str) for e in answer.result):
                self._endpoints = ALWAYS_PUBLIC | frozenset(answer.result)
                self.revision = answer.revision
            else:
                log.error("config.authz.public_endpoints is not a list of strings; keeping the last list")
            self._expires = now + self.ttl
            return self._endpoints


def gate_authz(view: F) -> F:
    """Mark a view that authorises itself in the same OPA query as its action (`data.smartlinks.gate`)."""
    cast(Any, view).authz_in_gate = True
    return view


def current_subject() -> Subject:
    subject = g.get("subject")
    return subject if isinstance(subject, Subject) else ANONYMOUS


def _load_subject() -> Subject:
    from server.auth.models import User
    from server.extensions import services

    svc = services()
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(401, "Invalid token", "the Authorization header must be 'Bearer <token>'")
        subject = svc.tokens.resolve(svc.db.session, token.strip())
        if subject is None:
            raise Problem(401, "Invalid token", "the API token is unknown or revoked")
        return subject
    user_id = session.get("user_id")
    if isinstance(user_id, int):
        with svc.db.session() as db_session:
            user = db_session.get(User, user_id)
            if user is not None and user.active:
                return user_subject(user)
        session.clear()
    return ANONYMOUS


def authorize_request() -> WerkzeugResponse | None:
    """before_request hook: resolve the caller and ask the authz policy; deny by default."""
    from server.extensions import services

    endpoint = request.endpoint
    if endpoint is None:  # no route: let the 404/405 handlers answer
        return None
    svc = services()
    if endpoint in svc.public_endpoints.get():
        g.subject = ANONYMOUS
        return None
    subject = _load_subject()
    g.subject = subject
    if subject.kind == "user" and not csrf_ok():
        raise Problem(403, "CSRF check failed", "the form is stale or was not sent by this site; reload and retry")
    view = current_app.view_functions.get(endpoint)
    if getattr(view, "authz_in_gate", False) and subject.kind != "anonymous":
        return None  # the view authorises in the same OPA query as its action
    return authorize_now(subject, endpoint)


def authorize_now(subject: Subject, endpoint: str) -> WerkzeugResponse | None:
    """Ask the authz policy about this request; None when allowed, else a 401/403 (or a raise)."""
    from server.extensions import services

    try:
        answer = services().opa.query(
            AUTHZ_PATH,
            {
                "subject": subject.as_input(),
                "request": {"method": request.method, "endpoint": endpoint, "path": request.path},
            },
        )
    except OpaError as exc:
        raise Problem(
            503,
            "Policy engine unavailable",
            f"authorisation could not be decided ({exc.code})",
            extra={"reason": exc.code},
        ) from exc
    result = answer.result
    if isinstance(result, dict) and result.get("allow") is True:
        return None
    reasons = result.get("reasons", []) if isinstance(result, dict) else []
    codes = {r.get("code") for r in reasons if isinstance(r, dict)} if isinstance(reasons, list) else set()
    return deny(401 if "authentication_required" in codes else 403, sorted(c for c in codes if c))


def deny(status: int, codes: list[str]) -> WerkzeugResponse:
    if status == 401 and not wants_api():
        return redirect(url_for("auth.login", next=quote(request.full_path.rstrip("?"))))
    if status == 401:
        raise Problem(401, "Authentication required", "log in or send an API token", extra={"reasons": codes})
    raise Problem(403, "Forbidden", "your role does not allow this", extra={"reasons": codes})
