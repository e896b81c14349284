"""Policy lifecycle API (`/v1/policies`): versions, diff, impact, activate, rollback, shadow,
playground, sidecars and the sidecars' decision logs. Permissions per endpoint are in
rego/config/data.json (policies:read, policies:write, policies:activate, decisions:read); every
change is also a governed `policy.*` action decided by the policy_lifecycle package."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from server.errors import Problem
from server.extensions import services
from server.governance.api import caller_actor, json_body, raise_if_denied
from server.governance.gateway import Outcome
from server.governance.services import outcome_body
from server.policies import actions as _actions  # noqa: F401 - registers the policy.* action types
from server.policies import playground
from server.policies import services as policies
from server.policies import shadow as shadow_reports
from server.policies.bundle_server import bundle_watch
from server.policies.models import ACTIVE, SHADOW, ImpactReport, OpaDecisionLog
from server.policies.pipeline import PipelineError, build_uploaded

policies_api = Blueprint("policies_api", __name__, url_prefix="/v1/policies")


@policies_api.record_once
def _attach_shadow(state: Any) -> None:
    shadow_reports.attach(state.app)


REVISION = validate.Length(min=1, max=80)


class PublishRequestSchema(Schema):
    files = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=300)), values=fields.String(), required=True
    )
    message = fields.String(load_default=None, validate=validate.Length(max=2000))
    revision = fields.String(load_default=None, validate=REVISION)
    git_commit = fields.String(load_default=None, validate=validate.Regexp(r"^[0-9a-f]{7,40}$"))


class ReasonSchema(Schema):
    reason = fields.String(load_default=None, validate=validate.Length(max=2000))


class ImpactRequestSchema(Schema):
    sample = fields.Integer(load_default=None, validate=validate.Range(min=1, max=100_000))


class PlaygroundRequestSchema(Schema):
    revision = fields.String(load_default=None, validate=REVISION)
    path = fields.String(load_default="smartlinks/decision", validate=validate.OneOf(sorted(playground.QUERIES)))
    input = fields.Dict(required=True)


class DiffQuerySchema(Schema):
    from_ = fields.String(required=True, data_key="from", validate=REVISION)
    to = fields.String(required=True, validate=REVISION)


class DecisionLogQuerySchema(Schema):
    path = fields.String(load_default=None, validate=validate.Length(max=200))
    revision = fields.String(load_default=None, validate=REVISION)
    sidecar = fields.String(load_default=None, validate=validate.Length(max=64))
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


def toolchain() -> policies.Toolchain:
    return policies.Toolchain.from_settings(services().settings)


def governed(outcome: Outcome, status: int = 200, **extra: Any) -> tuple[Response, int]:
    """The decision of a policy action; a deny is a problem that carries it (403 or 503)."""
    body = outcome_body(outcome)
    raise_if_denied(outcome.allow, outcome.record.error_code, body)
    bundle_watch(current_app).notify()
    return jsonify(body | extra), status


def pipeline_problem(exc: PipelineError) -> Problem:
    return Problem(422, exc.title, exc.message, type_="policy-refused")


@policies_api.get("")
def overview() -> Response:
    with services().db.unit_of_work() as uow:
        body = policies.overview(uow.session)
        uow.commit()
    return jsonify(body)


@policies_api.get("/versions")
def list_versions() -> Response:
    with services().db.unit_of_work() as uow:
        return jsonify({"items": [v.to_dict() for v in policies.list_versions(uow.session)]})


@policies_api.post("/versions")
def publish_version() -> tuple[Response, int]:
    payload = PublishRequestSchema().load(json_body())
    svc, tools = services(), toolchain()
    try:
        candidate = build_uploaded(
            tools.opa_bin,
            payload["files"],
            signing_key=tools.signing_key,
            coverage_threshold=tools.coverage_threshold,
            revision=payload["revision"],
            git_commit=payload["git_commit"],
        )
    except PipelineError as exc:
        raise pipeline_problem(exc) from exc
    outcome, version = policies.publish_candidate(
        svc.db, svc.gateway, tools, caller_actor(), candidate, message=payload["message"], source="upload"
    )
    body = outcome_body(outcome)
    raise_if_denied(outcome.allow, outcome.record.error_code, body)
    assert version is not None
    return jsonify(body | {"version": version.to_dict(), "activatable": version.validated}), 201


@policies_api.get("/versions/<revision>")
def get_version(revision: str) -> Response:
    with services().db.unit_of_work() as uow:
        version = policies.get_version(uow.session, revision)
        body = version.to_dict(with_sources=request.args.get("sources") in ("1", "true"))
        body["intact"] = policies.is_intact(version)
        return jsonify(body)


@policies_api.get("/diff")
def diff_versions() -> Response:
    args = DiffQuerySchema().load(request.args.to_dict())
    with services().db.unit_of_work() as uow:
        old = policies.get_version(uow.session, args["from_"])
        new = policies.get_version(uow.session, args["to"])
        files = [d.to_dict() for d in policies.diff_versions(old, new) if d.change != "unchanged"]
        return jsonify({"from": old.revision, "to": new.revision, "files": files})


@policies_api.post("/versions/<revision>/impact")
def run_impact(revision: str) -> tuple[Response, int]:
    payload = ImpactRequestSchema().load(json_body() if request.get_data() else {})
    report = policies.run_impact(services().db, toolchain(), revision, caller_actor().id, sample=payload["sample"])
    return jsonify(report.to_dict()), 201


@policies_api.get("/impact/<int:report_id>")
def get_impact(report_id: int) -> Response:
    with services().db.unit_of_work() as uow:
        report = uow.session.get(ImpactReport, report_id)
        if report is None:
            raise Problem(404, "Not Found", f"no impact report {report_id}")
        return jsonify(report.to_dict())


@policies_api.post("/versions/<revision>/activate")
def activate_version(revision: str) -> tuple[Response, int]:
    payload = ReasonSchema().load(json_body() if request.get_data() else {})
    svc = services()
    outcome = policies.activate_version(
        svc.db, svc.gateway, toolchain(), caller_actor(), revision, reason=payload["reason"]
    )
    return governed(outcome, revision=revision)


@policies_api.post("/rollback")
def rollback() -> tuple[Response, int]:
    payload = ReasonSchema().load(json_body() if request.get_data() else {})
    svc = services()
    outcome = policies.rollback_version(svc.db, svc.gateway, toolchain(), caller_actor(), reason=payload["reason"])
    return governed(outcome, revision=outcome.params.get("revision"))


@policies_api.post("/versions/<revision>/shadow")
def start_shadow(revision: str) -> tuple[Response, int]:
    svc = services()
    outcome = policies.start_shadow_version(svc.db, svc.gateway, toolchain(), caller_actor(), revision)
    return governed(outcome, shadow_revision=revision)


@policies_api.delete("/shadow")
def stop_shadow() -> tuple[Response, int]:
    svc = services()
    outcome = policies.stop_shadow_version(svc.db, svc.gateway, toolchain(), caller_actor())
    return governed(outcome, stopped=outcome.params.get("revision"))


@policies_api.get("/shadow")
def shadow_report() -> Response:
    with services().db.unit_of_work() as uow:
        version = policies.current(uow.session, SHADOW)
        revision = request.args.get("revision") or (version.revision if version else None)
        return jsonify(shadow_reports.report(uow.session, revision))


@policies_api.post("/playground")
def evaluate() -> Response:
    payload = PlaygroundRequestSchema().load(json_body())
    with services().db.unit_of_work() as uow:
        found = (
            policies.get_version(uow.session, payload["revision"])
            if payload["revision"]
            else policies.current(uow.session, ACTIVE)
        )
        if found is None:
            raise Problem(409, "Conflict", "no version is active; name one with revision", type_="no-active-version")
        version = found
        if not policies.is_intact(version):
            raise Problem(
                409,
                "Bundle altered",
                f"the stored bundle of {version.revision} does not match its SHA-256",
                type_="bundle-altered",
            )
        uow.session.expunge(version)
    return jsonify(playground.evaluate(toolchain().opa_bin, version, payload["path"], payload["input"]))


@policies_api.get("/activations")
def list_activations() -> Response:
    with services().db.unit_of_work() as uow:
        policies.mark_enforced(uow.session)
        body = {"items": [a.to_dict() for a in policies.activation_history(uow.session, 100)]}
        uow.commit()
    return jsonify(body)


@policies_api.get("/sidecars")
def list_sidecars() -> Response:
    with services().db.unit_of_work() as uow:
        return jsonify(
            {
                "items": [r.to_dict() for r in policies.sidecar_reports(uow.session)],
                "alerts": policies.alerts(uow.session),
            }
        )


@policies_api.get("/decision-logs")
def list_decision_logs() -> Response:
    args = DecisionLogQuerySchema().load(request.args.to_dict())
    query = select(OpaDecisionLog)
    if args["path"]:
        query = query.where(OpaDecisionLog.path == args["path"])
    if args["revision"]:
        query = query.where(OpaDecisionLog.revision == args["revision"])
    if args["sidecar"]:
        query = query.where(OpaDecisionLog.sidecar == args["sidecar"])
    with services().db.unit_of_work() as uow:
        rows = uow.session.scalars(query.order_by(OpaDecisionLog.timestamp.desc()).limit(args["limit"]))
        return jsonify({"items": [r.to_dict() for r in rows]})


@policies_api.get("/decision-logs/<decision_id>")
def get_decision_log(decision_id: str) -> Response:
    with services().db.unit_of_work() as uow:
        row = policies.decision_log(uow.session, decision_id)
        records = policies.records_for_log(uow.session, decision_id)
        return jsonify(
            row.to_dict()
            | {
                "server_decision_id": records[0].id if records else None,
                "server_decision_ids": [r.id for r in records],
            }
        )
