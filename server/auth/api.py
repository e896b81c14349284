"""API tokens for services (created by admins, shown once), user administration (admins) and
`/v1/me`."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, send_file
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy import select

from server.auth import services as auth_services
from server.auth.authz import current_subject
from server.auth.models import ROLES, ApiToken, User
from server.auth.services import AuthError
from server.errors import Problem
from server.extensions import services
from server.governance.api import json_body

tokens_api = Blueprint("tokens_api", __name__, url_prefix="/v1/tokens")
api_meta = Blueprint("api_meta", __name__, url_prefix="/v1")


class TokenCreateSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=120))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


def _token_dict(token: ApiToken) -> dict[str, object]:
    return {
        "id": token.id,
        "name": token.name,
        "role": token.role,
        "prefix": token.prefix,
        "created_at": token.created_at.isoformat(),
        "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
        "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
    }


def caller_user_id() -> int | None:
    """The signed-in user's id (None for an API token)."""
    subject = current_subject()
    return int(subject.id.split(":", 1)[1]) if subject.kind == "user" else None


@tokens_api.post("")
def create_token() -> tuple[Response, int]:
    payload = TokenCreateSchema().load(json_body())
    with services().db.unit_of_work() as uow:
        try:
            token, plain = auth_services.create_token(
                uow.session, payload["name"], payload["role"], created_by=caller_user_id()
            )
        except AuthError as exc:
            raise Problem(400, "Validation failed", str(exc)) from exc
        body = _token_dict(token) | {"token": plain}
        uow.commit()
    return jsonify(body), 201


@tokens_api.get("")
def list_tokens() -> Response:
    with services().db.unit_of_work() as uow:
        tokens = uow.session.scalars(select(ApiToken).order_by(ApiToken.id)).all()
        return jsonify({"items": [_token_dict(t) for t in tokens]})


@tokens_api.delete("/<int:token_id>")
def revoke_token(token_id: int) -> Response:
    with services().db.unit_of_work() as uow:
        try:
            token = auth_services.revoke_token(uow.session, token_id)
        except AuthError as exc:
            raise Problem(404, "Not Found", str(exc)) from exc
        body = _token_dict(token)
        uow.commit()
    services().tokens.clear()
    return jsonify(body)


@api_meta.get("/me")
def whoami() -> Response:
    subject = current_subject()
    return jsonify({"id": subject.id, "kind": subject.kind, "roles": list(subject.roles), "name": subject.name})


@api_meta.get("/openapi.yaml")
def openapi() -> Response:
    return send_file(current_app.root_path + "/openapi.yaml", mimetype="application/yaml")


# -- users (admin) --------------------------------------------------------------------------------------
users_api = Blueprint("users_api", __name__, url_prefix="/v1/users")


class UserUpdateSchema(Schema):
    active = fields.Boolean()
    role = fields.String(validate=validate.OneOf(auth_services.STAFF_ROLES))

    @validates_schema
    def _something(self, data: dict[str, object], **_: object) -> None:
        if not data:
            raise ValidationError("send active and/or role", "_schema")


def user_dict(user: User) -> dict[str, object]:
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role,
        "active": user.active,
        "affiliate_id": user.affiliate_id,
        "advertiser_id": user.advertiser_id,
        "created_at": user.created_at.isoformat(),
        "last_login_at": user.last_login_at.isoformat() if user.last_login_at else None,
    }


@users_api.get("")
def list_users() -> Response:
    with services().db.unit_of_work() as uow:
        return jsonify({"items": [user_dict(u) for u in auth_services.list_users(uow.session)]})


@users_api.patch("/<int:user_id>")
def update_user(user_id: int) -> Response:
    from server.governance.api import caller_actor, raise_if_denied
    from server.governance.services import outcome_body

    payload = UserUpdateSchema().load(json_body())
    svc = services()
    with svc.db.unit_of_work() as uow:
        try:
            user, outcome = auth_services.update_user(
                uow.session,
                svc.gateway,
                caller_actor(),
                user_id,
                active=payload.get("active"),
                role=payload.get("role"),
            )
        except auth_services.AdminRefused as exc:
            raise Problem(409, "Conflict", str(exc)) from exc
        except AuthError as exc:
            raise Problem(404, "Not Found", str(exc)) from exc
        body = user_dict(user)
        uow.commit()
    if outcome is None:
        return jsonify(body | {"decision": None})
    decision = outcome_body(outcome)
    raise_if_denied(outcome.allow, outcome.record.error_code, decision)
    return jsonify(body | {"decision": decision})
