"""SmartLinks Autopilot server: the Flask app factory.

`create_app` only registers things: it reads settings, binds extensions and blueprints, and
returns. It never migrates, calls the network or starts threads; the CLI does those."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from flask import Flask

import server.ai.actions  # noqa: F401 - registers the AI supervisor's action types
from server.config import Settings


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    if isinstance(config, Settings):
        settings = config
    else:
        settings = Settings.from_env()
        if config:
            settings = settings.with_overrides(config)
            settings.check()

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        SESSION_COOKIE_NAME="smartlinks_session",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
    )
    logging.getLogger("server").setLevel(settings.log_level)

    from server.ai.api import ai_api
    from server.ai.views import ai_pages
    from server.audit.views import audit_api, audit_pages
    from server.auth.admin_views import admin_pages
    from server.auth.api import api_meta, tokens_api, users_api
    from server.auth.authz import authorize_request, current_subject
    from server.auth.csrf import csrf_token
    from server.auth.views import auth
    from server.autopilot.api import autopilot_api
    from server.autopilot.views import autopilot_pages
    from server.clicks.views import clicks
    from server.errors import register_error_handlers
    from server.extensions import init_extensions
    from server.finance.api import documents_api, ledger_api, payouts_api
    from server.finance.documents import documents
    from server.finance.views import finance
    from server.finance.webhooks import webhooks
    from server.governance.api import controls_api, decisions_api
    from server.governance.direct import install as install_decision_path
    from server.health import health
    from server.links.api import links_api
    from server.links.views import links_pages
    from server.observability.web import observability, register_request_observability
    from server.pages.views import pages
    from server.policies.api import policies_api
    from server.policies.bundle_server import opa_bundles
    from server.policies.views import policies_pages
    from server.portal.api import onboarding_api, portal_api
    from server.portal.views import onboarding_pages, portal

    init_extensions(app, settings)
    register_error_handlers(app)
    register_request_observability(app)
    app.before_request(authorize_request)
    for blueprint in (
        health,
        observability,
        auth,
        pages,
        decisions_api,
        controls_api,
        tokens_api,
        users_api,
        admin_pages,
        audit_api,
        audit_pages,
        api_meta,
        links_api,
        links_pages,
        clicks,
        autopilot_api,
        autopilot_pages,
        ledger_api,
        payouts_api,
        documents_api,
        finance,
        documents,
        webhooks,
        policies_api,
        policies_pages,
        opa_bundles,
        ai_api,
        ai_pages,
        portal,
        portal_api,
        onboarding_api,
        onboarding_pages,
    ):
        app.register_blueprint(blueprint)
    # POST /v1/decisions from services: answered before Flask (server/governance/direct.py).
    if settings.decision_direct_path:
        install_decision_path(app)

    app.jinja_env.globals["csrf_token"] = csrf_token

    @app.context_processor
    def _subject() -> dict[str, Any]:
        return {"subject": current_subject()}

    @app.after_request
    def _security_headers(response: Any) -> Any:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.mimetype == "text/html":
            response.headers.setdefault(
                "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'",
            )
        return response

    return app
