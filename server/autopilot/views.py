"""The autopilot status page (`/autopilot`): the latest cycles and their outcomes and denial
reasons per link, who holds the scheduler lease, and the global kill switch with a confirmed
form to flip it (itself a governed action)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response as WerkzeugResponse

from server.autopilot.lease import leases
from server.autopilot.models import AutopilotRun
from server.autopilot.scheduler import LEASE_NAME
from server.db import utcnow
from server.extensions import services
from server.governance import services as governance
from server.governance.api import caller_actor
from server.links.models import Allocation, SmartLink

autopilot_pages = Blueprint("autopilot_pages", __name__)

RECENT = 50


def _links(session: Session) -> list[dict[str, Any]]:
    latest = (
        select(AutopilotRun.scope, func.max(AutopilotRun.id).label("run_id"))
        .where(AutopilotRun.kind == "allocation")
        .group_by(AutopilotRun.scope)
        .subquery()
    )
    runs = {
        run.scope: run for run in session.scalars(select(AutopilotRun).join(latest, AutopilotRun.id == latest.c.run_id))
    }
    weights: dict[str, dict[str, Any]] = dict(
        session.execute(
            select(SmartLink.id, Allocation.weights).join(Allocation, Allocation.id == SmartLink.current_allocation_id)
        ).all()
    )
    return [
        {"link": link, "run": runs.get(link.id), "weights": weights.get(link.id) or {}}
        for link in session.scalars(select(SmartLink).order_by(SmartLink.id))
    ]


def _render(status: int = 200, error: str | None = None, reasons: list[Any] | None = None) -> tuple[str, int]:
    svc = services()
    with svc.db.unit_of_work() as uow:
        page = render_template(
            "autopilot/status.html",
            kill=governance.kill_switch_state(uow.session),
            links=_links(uow.session),
            runs=list(uow.session.scalars(select(AutopilotRun).order_by(AutopilotRun.id.desc()).limit(RECENT))),
            leases=[lease for lease in leases(uow.session) if lease.name == LEASE_NAME],
            now=utcnow(),
            settings=svc.settings,
            error=error,
            reasons=reasons or [],
        )
    return page, status


@autopilot_pages.get("/autopilot")
def status() -> tuple[str, int]:
    return _render()


@autopilot_pages.post("/autopilot/kill-switch")
def kill_switch() -> WerkzeugResponse | tuple[str, int]:
    enabled = request.form.get("enabled")
    if enabled not in ("on", "off"):
        return _render(400, "choose to turn the kill switch on or off")
    if request.form.get("confirm") != "yes":
        return _render(400, "tick the confirmation box: the kill switch stops every automated change")
    reason = (request.form.get("reason") or "").strip()[:500] or None
    svc = services()
    with svc.db.unit_of_work() as uow:
        outcome = governance.set_kill_switch(
            uow.session, svc.gateway, caller_actor(), enabled=enabled == "on", scope="global", reason=reason
        )
        uow.commit()
    if not outcome.allow:
        return _render(403, "the policy refused to flip the kill switch", outcome.reasons)
    return redirect(url_for("autopilot_pages.status"), code=303)
