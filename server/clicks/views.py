"""The `clicks` blueprint: the click redirect (normally answered by the WSGI dispatch in front of
Flask, see `server.clicks.redirect`) and the advertisers' postback. Both are public endpoints
(named in `authz.public_endpoints`)."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState

from server.clicks.conversions import check_secret, parse_postback, record_conversion
from server.clicks.redirect import click_handler, install
from server.db import utcnow
from server.extensions import services

clicks = Blueprint("clicks", __name__)


@clicks.record_once
def _install_click_path(state: BlueprintSetupState) -> None:
    app = cast(Flask, state.app)
    svc = services(app)
    install(app, svc.settings, svc.db)


@clicks.get("/r/<slug>")
def redirect(slug: str) -> Response:
    status, headers, body = click_handler(current_app).handle(request.environ)
    return Response(body, status=status, headers=headers)


@clicks.route("/postback", methods=["GET", "POST"])
def postback() -> Response:
    svc = services()
    values = request.values.to_dict()
    if request.is_json:
        body = request.get_json(silent=True)
        if isinstance(body, dict):
            values.update({str(k): str(v) for k, v in body.items() if v is not None})
    check_secret(svc.settings.postback_secret, values.get("secret"))
    data = parse_postback(values)
    handler = click_handler(current_app)
    with svc.db.unit_of_work() as uow:
        recorded = record_conversion(
            uow.session,
            data,
            now=utcnow(),
            attribution_window=timedelta(days=svc.settings.attribution_window_days),
            flush_pending_clicks=handler.writer.flush,
        )
        uow.commit()
        return jsonify(recorded.as_dict())
