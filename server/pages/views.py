"""Admin pages: a dashboard and a filterable table of recent decisions."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, render_template, request
from marshmallow import ValidationError
from sqlalchemy import func, select

from server.db import utcnow
from server.extensions import services
from server.governance import services as governance
from server.governance.api import DecisionQuerySchema
from server.governance.models import Decision

pages = Blueprint("pages", __name__)


@pages.get("/")
def index() -> str:
    svc = services()
    since = utcnow() - timedelta(hours=24)
    with svc.db.unit_of_work() as uow:
        counts = dict(
            uow.session.execute(
                select(Decision.outcome, func.count()).where(Decision.created_at >= since).group_by(Decision.outcome)
            ).all()
        )
        kill = governance.kill_switch_state(uow.session)
        recent, _ = governance.list_decisions(uow.session, governance.DecisionFilter(limit=10))
        opa_ok, opa_detail = svc.opa.health(bundles=True)
        return render_template(
            "index.html",
            counts=counts,
            total=sum(counts.values()),
            kill=kill,
            recent=recent,
            opa_ok=opa_ok,
            opa_detail=opa_detail,
            revision=svc.public_endpoints.revision or svc.opa.fallback_revision,
            mode=svc.settings.mode,
        )


@pages.get("/decisions")
def decisions() -> tuple[str, int] | str:
    raw = {k: v for k, v in request.args.to_dict().items() if v != ""}
    errors = None
    try:
        args = DecisionQuerySchema().load(raw)
    except ValidationError as exc:
        errors = exc.messages
        args = DecisionQuerySchema().load({})
    with services().db.unit_of_work() as uow:
        rows, cursor = governance.list_decisions(uow.session, governance.DecisionFilter(**args))
        action_types = list(uow.session.scalars(select(Decision.action_type).distinct().order_by(Decision.action_type)))
        page = render_template(
            "decisions.html", rows=rows, next_cursor=cursor, filters=raw, errors=errors, action_types=action_types
        )
    return (page, 400) if errors else page


@pages.get("/decisions/<decision_id>")
def decision_detail(decision_id: str) -> str:
    with services().db.unit_of_work() as uow:
        decision = governance.get_decision(uow.session, decision_id)
        return render_template("decision_detail.html", d=decision)
