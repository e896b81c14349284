"""Admin pages for policies: versions, diff, impact report, activation and rollback (each with a
confirmation page), shadow report, playground, and the decision explorer with the sidecars'
decision-log events. Forms post, call one service and redirect (303) with a flashed message."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app, flash, make_response, redirect, render_template, request, url_for
from marshmallow import Schema, ValidationError, fields, validate
from sqlalchemy import and_, exists, select
from werkzeug.wrappers import Response as WerkzeugResponse

from server.errors import Problem
from server.extensions import services
from server.governance.api import caller_actor
from server.governance.gateway import Outcome
from server.governance.models import Decision
from server.policies import playground
from server.policies import services as policies
from server.policies import shadow as shadow_reports
from server.policies.api import toolchain
from server.policies.bundle_server import bundle_watch
from server.policies.models import ACTIVE, SHADOW, ImpactReport, OpaDecisionLog

policies_pages = Blueprint("policies_pages", __name__, url_prefix="/policies")

OUTCOMES = ["allowed", "clamped", "denied", "error", "failed", "shadow", "pending_approval"]


def _governed(outcome: Outcome, done: str) -> None:
    if outcome.allow:
        bundle_watch(current_app).notify()
        flash(done, "ok")
        return
    reasons = "; ".join(str(r.get("message") or r.get("code")) for r in outcome.reasons)
    flash(f"Refused by policy: {reasons}", "error")


def _attempt(action: Callable[[], Outcome], done: str) -> bool:
    try:
        outcome = action()
    except Problem as exc:
        flash(f"{exc.title}: {exc.detail or ''}".strip(": "), "error")
        return False
    _governed(outcome, done)
    return outcome.allow


@policies_pages.get("")
def index() -> str:
    with services().db.unit_of_work() as uow:
        state = policies.overview(uow.session)
        versions = policies.list_versions(uow.session)
        uow.commit()
        return render_template("policies/index.html", state=state, versions=versions)


@policies_pages.get("/versions/<revision>")
def version_detail(revision: str) -> str:
    with services().db.unit_of_work() as uow:
        version = policies.get_version(uow.session, revision)
        active = policies.current(uow.session, ACTIVE)
        reports = uow.session.scalars(
            select(ImpactReport)
            .where(ImpactReport.candidate_revision == revision)
            .order_by(ImpactReport.id.desc())
            .limit(5)
        ).all()
        return render_template(
            "policies/version.html",
            v=version,
            active=active,
            reports=reports,
            intact=policies.is_intact(version),
        )


@policies_pages.get("/diff")
def diff() -> str:
    with services().db.unit_of_work() as uow:
        versions = policies.list_versions(uow.session)
        active = policies.current(uow.session, ACTIVE)
        old_rev = request.args.get("from") or (active.revision if active else None)
        new_rev = request.args.get("to") or (versions[0].revision if versions else None)
        files = []
        if old_rev and new_rev:
            old = policies.get_version(uow.session, old_rev)
            new = policies.get_version(uow.session, new_rev)
            files = [d for d in policies.diff_versions(old, new) if d.change != "unchanged"]
        return render_template("policies/diff.html", versions=versions, old_rev=old_rev, new_rev=new_rev, files=files)


class ImpactFormSchema(Schema):
    sample = fields.Integer(load_default=None, validate=validate.Range(min=1, max=100_000))
    csrf_token = fields.String(load_default=None)


@policies_pages.post("/versions/<revision>/impact")
def run_impact(revision: str) -> WerkzeugResponse:
    raw = {k: v for k, v in request.form.to_dict().items() if v != ""}
    try:
        args = ImpactFormSchema().load(raw)
    except ValidationError as exc:
        flash(f"Invalid sample size: {exc.messages}", "error")
        return redirect(url_for("policies_pages.version_detail", revision=revision), 303)
    try:
        report = policies.run_impact(services().db, toolchain(), revision, caller_actor().id, sample=args["sample"])
    except Problem as exc:
        flash(f"{exc.title}: {exc.detail}", "error")
        return redirect(url_for("policies_pages.version_detail", revision=revision), 303)
    return redirect(url_for("policies_pages.impact_report", report_id=report.id), 303)


@policies_pages.get("/impact/<int:report_id>")
def impact_report(report_id: int) -> str:
    with services().db.unit_of_work() as uow:
        report = uow.session.get(ImpactReport, report_id)
        if report is None:
            raise Problem(404, "Not Found", f"no impact report {report_id}")
        threshold = _reason_threshold()
        return render_template("policies/impact.html", r=report, threshold=threshold)


def _reason_threshold() -> float | None:
    """The share above which activation needs a reason, as the running policy says."""
    try:
        answer = services().opa.query("config/policy_lifecycle/reason_required_above_share", {})
    except Exception:
        return None
    return float(answer.result) if isinstance(answer.result, int | float) else None


@policies_pages.route("/versions/<revision>/activate", methods=["GET", "POST"])
def activate(revision: str) -> str | WerkzeugResponse:
    svc = services()
    if request.method == "POST":
        if request.form.get("confirm") != "yes":
            flash("Activation not confirmed: tick the confirmation box", "error")
            return redirect(url_for("policies_pages.activate", revision=revision), 303)
        reason = request.form.get("reason") or None
        ok = _attempt(
            lambda: policies.activate_version(
                svc.db, svc.gateway, toolchain(), caller_actor(), revision, reason=reason
            ),
            f"Version {revision} activated; the sidecars load it within seconds",
        )
        if ok:
            return redirect(url_for("policies_pages.index"), 303)
        return redirect(url_for("policies_pages.activate", revision=revision), 303)
    with svc.db.unit_of_work() as uow:
        version = policies.get_version(uow.session, revision)
        active = policies.current(uow.session, ACTIVE)
        report = policies.latest_impact(uow.session, revision, active.revision) if active else None
        return render_template(
            "policies/confirm.html",
            kind="activate",
            v=version,
            active=active,
            report=report,
            threshold=_reason_threshold(),
        )


@policies_pages.route("/rollback", methods=["GET", "POST"])
def rollback() -> str | WerkzeugResponse:
    svc = services()
    if request.method == "POST":
        if request.form.get("confirm") != "yes":
            flash("Rollback not confirmed: tick the confirmation box", "error")
            return redirect(url_for("policies_pages.rollback"), 303)
        reason = request.form.get("reason") or None
        ok = _attempt(
            lambda: policies.rollback_version(svc.db, svc.gateway, toolchain(), caller_actor(), reason=reason),
            "Rolled back; the previous version is enforced within seconds",
        )
        return redirect(url_for("policies_pages.index" if ok else "policies_pages.rollback"), 303)
    with svc.db.unit_of_work() as uow:
        active = policies.current(uow.session, ACTIVE)
        target = policies.rollback_target(uow.session)
        version = policies.find_version(uow.session, target) if target else None
        return render_template(
            "policies/confirm.html", kind="rollback", v=version, active=active, report=None, threshold=None
        )


@policies_pages.post("/versions/<revision>/shadow")
def start_shadow(revision: str) -> WerkzeugResponse:
    svc = services()
    _attempt(
        lambda: policies.start_shadow_version(svc.db, svc.gateway, toolchain(), caller_actor(), revision),
        f"Version {revision} runs in shadow: live decisions are evaluated by it too, never enforced",
    )
    return redirect(url_for("policies_pages.shadow"), 303)


@policies_pages.post("/shadow/stop")
def stop_shadow() -> WerkzeugResponse:
    svc = services()
    _attempt(
        lambda: policies.stop_shadow_version(svc.db, svc.gateway, toolchain(), caller_actor()),
        "Shadow evaluation stopped",
    )
    return redirect(url_for("policies_pages.shadow"), 303)


@policies_pages.get("/shadow")
def shadow() -> WerkzeugResponse:
    with services().db.unit_of_work() as uow:
        version = policies.current(uow.session, SHADOW)
        revision = request.args.get("revision") or (version.revision if version else None)
        report = shadow_reports.report(uow.session, revision)
        response = make_response(render_template("policies/shadow.html", version=version, report=report))
    if version is not None:
        response.headers["Refresh"] = "5"  # disagreements as they happen, without a script
    return response


SAMPLE_INPUT = {
    "action": {
        "type": "allocation.update",
        "actor": {"id": "algo:thompson_sampling", "kind": "algorithm", "roles": []},
        "target": {"kind": "link", "id": "lnk_42"},
        "params": {"algorithm": "thompson_sampling", "weights": {"offer_1": 0.7, "offer_2": 0.3}},
    },
    "state": {
        "current_weights": {"offer_1": 0.5, "offer_2": 0.5},
        "arms": ["offer_1", "offer_2"],
        "evidence": {
            "offer_1": {"clicks": 1200, "conversions": 40, "revenue": 400.0},
            "offer_2": {"clicks": 1100, "conversions": 20, "revenue": 200.0},
        },
    },
    "controls": {"kill_switch": False, "target_kill_switch": False},
    "context": {"actor_action_counts": {"60": 0, "3600": 3, "86400": 40}},
    "caller": {"id": "tok_1", "kind": "token", "roles": ["service"]},
    "mode": "test",
    "now": "2026-11-25T10:00:00Z",
}


@policies_pages.route("/playground", methods=["GET", "POST"], endpoint="playground")
def playground_page() -> tuple[str, int] | str:
    svc = services()
    with svc.db.unit_of_work() as uow:
        versions = [{"revision": v.revision, "status": v.status} for v in policies.list_versions(uow.session)]
        active = policies.current(uow.session, ACTIVE)
        active_revision = active.revision if active else None
    source = request.form if request.method == "POST" else request.args
    revision = source.get("revision") or active_revision or (versions[0]["revision"] if versions else "")
    path = source.get("path") or "smartlinks/decision"
    text = source.get("input") or json.dumps(SAMPLE_INPUT, indent=2)
    decision_id = request.args.get("decision")
    if decision_id and request.method == "GET":
        with svc.db.unit_of_work() as uow:
            record = uow.session.get(Decision, decision_id)
            if record is not None:
                text = json.dumps(record.input, indent=2)
    outcome: dict[str, Any] | None = None
    error: str | None = None
    if request.method == "POST":
        try:
            document = json.loads(text)
            if not isinstance(document, dict):
                raise ValueError("the input must be a JSON object")
            if path not in playground.QUERIES:
                raise ValueError(f"unknown path {path}")
            with svc.db.unit_of_work() as uow:
                version = policies.get_version(uow.session, revision)
                if not policies.is_intact(version):
                    raise ValueError(f"the stored bundle of {revision} does not match its SHA-256")
                uow.session.expunge(version)
            outcome = playground.evaluate(toolchain().opa_bin, version, path, document)
        except ValueError as exc:
            error = str(exc)
        except Problem as exc:
            error = f"{exc.title}: {exc.detail}"
    page = render_template(
        "policies/playground.html",
        versions=versions,
        revision=revision,
        path=path,
        paths=sorted(playground.QUERIES),
        text=text,
        outcome=outcome,
        error=error,
    )
    return (page, 400) if error else page


class ExplorerQuerySchema(Schema):
    action_type = fields.String(load_default=None, validate=validate.Length(max=64))
    outcome = fields.String(load_default=None, validate=validate.OneOf(OUTCOMES))
    allowed = fields.Boolean(load_default=None)
    revision = fields.String(load_default=None, validate=validate.Length(max=80))
    actor = fields.String(load_default=None, validate=validate.Length(max=128))
    audit = fields.String(load_default=None, validate=validate.OneOf(["logged", "missing", "no_id"]))
    since = fields.AwareDateTime(load_default=None, default_timezone=None)
    until = fields.AwareDateTime(load_default=None, default_timezone=None)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


@policies_pages.get("/decisions")
def decisions() -> tuple[str, int] | str:
    raw = {k: v for k, v in request.args.to_dict().items() if v != ""}
    errors = None
    try:
        args = ExplorerQuerySchema().load(raw)
    except ValidationError as exc:
        errors = exc.messages
        args = ExplorerQuerySchema().load({})
    logged = exists().where(OpaDecisionLog.decision_id == Decision.opa_decision_id)
    query = select(Decision, logged.label("logged"))
    if args["action_type"]:
        query = query.where(Decision.action_type == args["action_type"])
    if args["outcome"]:
        query = query.where(Decision.outcome == args["outcome"])
    if args["allowed"] is not None:
        query = query.where(Decision.allow.is_(args["allowed"]))
    if args["revision"]:
        query = query.where(Decision.policy_revision == args["revision"])
    if args["actor"]:
        query = query.where(Decision.actor_id == args["actor"])
    if args["since"]:
        query = query.where(Decision.created_at >= args["since"])
    if args["until"]:
        query = query.where(Decision.created_at < args["until"])
    if args["audit"] == "logged":
        query = query.where(logged)
    elif args["audit"] == "missing":
        query = query.where(and_(Decision.opa_decision_id.is_not(None), ~logged))
    elif args["audit"] == "no_id":
        query = query.where(Decision.opa_decision_id.is_(None))
    with services().db.unit_of_work() as uow:
        rows = uow.session.execute(
            query.order_by(Decision.created_at.desc(), Decision.id.desc()).limit(args["limit"])
        ).all()
        action_types = list(uow.session.scalars(select(Decision.action_type).distinct().order_by(Decision.action_type)))
        revisions = [r for r in uow.session.scalars(select(Decision.policy_revision).distinct()) if r]
        page = render_template(
            "policies/decisions.html",
            rows=rows,
            filters=raw,
            errors=errors,
            action_types=action_types,
            revisions=sorted(revisions),
            outcomes=OUTCOMES,
        )
    return (page, 400) if errors else page


@policies_pages.get("/decision-logs/<decision_id>")
def decision_log(decision_id: str) -> str:
    with services().db.unit_of_work() as uow:
        row = policies.decision_log(uow.session, decision_id)
        records = policies.records_for_log(uow.session, decision_id)
        return render_template("policies/decision_log.html", e=row, records=records)
