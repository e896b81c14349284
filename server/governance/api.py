"""Decision API for services (`/v1/decisions`) and the runtime controls API (`/v1/controls`)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from marshmallow import Schema, ValidationError, fields, validate

from server.auth.authz import authorize_now, current_subject, gate_authz
from server.auth.services import Subject
from server.errors import Problem
from server.extensions import services
from server.governance import services as governance
from server.governance.actions import DecisionRequestSchema, KillSwitchSchema
from server.governance.gateway import Actor, AuthzDenied, AuthzRequest
from server.policy.opa_client import OPA_ERROR, OPA_MALFORMED, OPA_TIMEOUT, OPA_UNAVAILABLE, OPA_UNDEFINED

decisions_api = Blueprint("decisions_api", __name__, url_prefix="/v1/decisions")
controls_api = Blueprint("controls_api", __name__, url_prefix="/v1/controls")

DECISION_REQUEST = DecisionRequestSchema()
FAILED_CLOSED = frozenset({OPA_UNAVAILABLE, OPA_TIMEOUT, OPA_ERROR, OPA_UNDEFINED, OPA_MALFORMED})


def json_body() -> dict[str, Any]:
    """The request's JSON object, or a 400/415 problem naming what is wrong with it."""
    if not request.is_json:
        raise Problem(415, "Unsupported Media Type", "send the body as application/json")
    body = request.get_json(silent=True)
    if body is None:
        raise Problem(400, "Malformed JSON", "the request body is not valid JSON")
    if not isinstance(body, dict):
        raise Problem(400, "Validation failed", "the request body must be a JSON object")
    return body


def subject_actor(subject: Subject) -> Actor:
    """The authenticated subject as the gateway's caller (a token acts as a service)."""
    return Actor(id=subject.id, kind="service" if subject.kind == "token" else subject.kind, roles=subject.roles)


def caller_actor() -> Actor:
    return subject_actor(current_subject())


@decisions_api.post("")
@gate_authz
def create_decision() -> tuple[Response, int]:
    try:
        payload = DECISION_REQUEST.load(json_body())
    except (Problem, ValidationError):
        # A bad request from someone who may not call this endpoint is a 401/403, not a 400.
        authorize_now(current_subject(), request.endpoint or "")
        raise
    svc = services()
    endpoint = request.endpoint or ""
    with svc.db.unit_of_work() as uow:
        try:
            outcome = governance.decide_for_caller(
                uow.session,
                svc.gateway,
                payload,
                caller_actor(),
                AuthzRequest(
                    method=request.method, endpoint=endpoint, path=request.path, subject=current_subject().as_input()
                ),
            )
        except AuthzDenied as exc:
            codes = sorted({str(r.get("code")) for r in exc.reasons if r.get("code")})
            if exc.status == 401:
                raise Problem(
                    401, "Authentication required", "log in or send an API token", extra={"reasons": codes}
                ) from exc
            raise Problem(403, "Forbidden", "your role does not allow this", extra={"reasons": codes}) from exc
        uow.commit()
    status = 503 if outcome.record.error_code in FAILED_CLOSED else 200
    return jsonify(governance.outcome_body(outcome)), status


class DecisionQuerySchema(Schema):
    allowed = fields.Boolean(load_default=None)
    action_type = fields.String(load_default=None, validate=validate.Length(max=64))
    actor = fields.String(load_default=None, validate=validate.Length(max=128))
    outcome = fields.String(
        load_default=None,
        validate=validate.OneOf(["allowed", "clamped", "denied", "error", "failed", "shadow", "pending_approval"]),
    )
    since = fields.AwareDateTime(load_default=None, default_timezone=None)
    until = fields.AwareDateTime(load_default=None, default_timezone=None)
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    cursor = fields.String(load_default=None, validate=validate.Length(max=200))


@decisions_api.get("")
def list_decisions() -> Response:
    args = DecisionQuerySchema().load(request.args.to_dict())
    with services().db.unit_of_work() as uow:
        rows, cursor = governance.list_decisions(uow.session, governance.DecisionFilter(**args))
        return jsonify({"items": [r.to_dict() for r in rows], "next_cursor": cursor})


@decisions_api.get("/<decision_id>")
def get_decision(decision_id: str) -> Response:
    with services().db.unit_of_work() as uow:
        return jsonify(governance.get_decision(uow.session, decision_id).to_dict(with_input=True))


@controls_api.get("")
def get_controls() -> Response:
    with services().db.unit_of_work() as uow:
        return jsonify({"mode": services().settings.mode, "kill_switch": governance.kill_switch_state(uow.session)})


class KillSwitchRequestSchema(KillSwitchSchema):
    target_id = fields.String(load_default=None, validate=validate.Length(min=1, max=128))


@controls_api.post("/kill-switch")
def set_kill_switch() -> tuple[Response, int]:
    payload = KillSwitchRequestSchema().load(json_body())
    svc = services()
    with svc.db.unit_of_work() as uow:
        outcome = governance.set_kill_switch(
            uow.session,
            svc.gateway,
            caller_actor(),
            enabled=payload["enabled"],
            scope=payload["scope"],
            target_id=payload["target_id"],
            reason=payload["reason"],
        )
        uow.commit()
    body = governance.outcome_body(outcome)
    raise_if_denied(outcome.allow, outcome.record.error_code, body)
    return jsonify(body), 200


def raise_if_denied(allow: bool, error_code: str | None, body: dict[str, Any]) -> None:
    """An action endpoint answers a deny as a problem that carries the decision."""
    if allow:
        return
    if error_code in FAILED_CLOSED:
        raise Problem(
            503,
            "Policy engine unavailable",
            "the action was denied because OPA could not decide",
            type_="opa-unavailable",
            extra=body,
        )
    raise Problem(
        403,
        "Denied by policy",
        "; ".join(str(r.get("message", r.get("code"))) for r in body["reasons"]),
        type_="denied-by-policy",
        extra=body,
    )
