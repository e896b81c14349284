"""The AI supervisor's JSON API (`/v1/ai/...`): status and switches, the proposal feed, approving,
rejecting and undoing, cycles with their prompt and response, and the performance metrics."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request
from marshmallow import Schema, fields, validate, validates_schema
from marshmallow import ValidationError as MarshmallowValidationError

from server.ai import metrics, queries
from server.ai import services as ai_services
from server.ai.models import MODES, PROPOSAL_STATUSES
from server.ai.state import set_controls
from server.db import utcnow
from server.extensions import services
from server.governance.api import caller_actor, json_body, raise_if_denied
from server.governance.services import outcome_body

ai_api = Blueprint("ai_api", __name__, url_prefix="/v1/ai")


class ControlsSchema(Schema):
    enabled = fields.Boolean(load_default=None)
    forced_degraded = fields.Boolean(load_default=None)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))

    @validates_schema
    def _something(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("enabled") is None and data.get("forced_degraded") is None:
            raise MarshmallowValidationError("set enabled, forced_degraded or both", "enabled")


class ProposalQuerySchema(Schema):
    status = fields.String(load_default=None, validate=validate.OneOf(PROPOSAL_STATUSES))
    mode = fields.String(load_default=None, validate=validate.OneOf(MODES))
    action_type = fields.String(load_default=None, validate=validate.Length(max=64))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))
    cursor = fields.String(load_default=None, validate=validate.Length(max=200))


class ReviewSchema(Schema):
    reason = fields.String(load_default=None, validate=validate.Length(max=1000))


class RejectSchema(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))


class CycleQuerySchema(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class MetricsQuerySchema(Schema):
    days = fields.Integer(load_default=14, validate=validate.Range(min=1, max=90))


@ai_api.get("/status")
def status() -> Response:
    svc = services()
    with svc.db.unit_of_work() as uow:
        return jsonify(queries.status(uow.session, svc.settings, utcnow()))


@ai_api.post("/controls", endpoint="set_controls")
def set_controls_view() -> Response:
    payload = ControlsSchema().load(json_body())
    svc = services()
    with svc.db.unit_of_work() as uow:
        set_controls(
            uow.session,
            by=caller_actor().id,
            now=utcnow(),
            enabled=payload["enabled"],
            forced_degraded=payload["forced_degraded"],
            reason=payload["reason"],
        )
        uow.commit()
        return jsonify(queries.status(uow.session, svc.settings, utcnow()))


@ai_api.get("/proposals")
def list_proposals() -> Response:
    args = ProposalQuerySchema().load(request.args.to_dict())
    with services().db.unit_of_work() as uow:
        rows, cursor = queries.list_proposals(uow.session, queries.ProposalFilter(**args))
        return jsonify({"items": [queries.proposal_body(r) for r in rows], "next_cursor": cursor})


@ai_api.get("/proposals/<proposal_id>")
def get_proposal(proposal_id: str) -> Response:
    with services().db.unit_of_work() as uow:
        return jsonify(queries.proposal_body(ai_services.get_proposal(uow.session, proposal_id)))


@ai_api.post("/proposals/<proposal_id>/approve")
def approve_proposal(proposal_id: str) -> Response:
    payload = ReviewSchema().load(json_body())
    svc = services()
    with svc.db.unit_of_work() as uow:
        row, outcome = ai_services.approve_proposal(
            uow.session, svc.gateway, proposal_id, caller_actor(), payload["reason"]
        )
        uow.commit()
        body = {"proposal": queries.proposal_body(row), "decision": outcome_body(outcome)}
    raise_if_denied(outcome.allow, outcome.record.error_code, body["decision"])
    return jsonify(body)


@ai_api.post("/proposals/<proposal_id>/reject")
def reject_proposal(proposal_id: str) -> Response:
    payload = RejectSchema().load(json_body())
    with services().db.unit_of_work() as uow:
        row = ai_services.reject_proposal(uow.session, proposal_id, caller_actor(), payload["reason"])
        uow.commit()
        return jsonify({"proposal": queries.proposal_body(row)})


@ai_api.post("/proposals/<proposal_id>/undo")
def undo_proposal(proposal_id: str) -> Response:
    payload = ReviewSchema().load(json_body())
    svc = services()
    with svc.db.unit_of_work() as uow:
        row, outcome = ai_services.undo_proposal(
            uow.session, svc.gateway, proposal_id, caller_actor(), payload["reason"]
        )
        uow.commit()
        body = {"proposal": queries.proposal_body(row), "decision": outcome_body(outcome)}
    raise_if_denied(outcome.allow, outcome.record.error_code, body["decision"])
    return jsonify(body)


@ai_api.get("/cycles")
def list_cycles() -> Response:
    args = CycleQuerySchema().load(request.args.to_dict())
    with services().db.unit_of_work() as uow:
        return jsonify({"items": [queries.cycle_body(c) for c in queries.list_cycles(uow.session, args["limit"])]})


@ai_api.get("/cycles/<int:cycle_id>")
def get_cycle(cycle_id: int) -> Response:
    with services().db.unit_of_work() as uow:
        return jsonify(queries.cycle_detail(uow.session, queries.get_cycle(uow.session, cycle_id)))


@ai_api.get("/metrics", endpoint="metrics")
def metrics_view() -> Response:
    args = MetricsQuerySchema().load(request.args.to_dict())
    with services().db.unit_of_work() as uow:
        return jsonify(metrics.compute(uow.session, utcnow(), args["days"]).as_dict())
