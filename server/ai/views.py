"""The AI supervisor's admin pages: the live feed (`/ai`, refreshed by static/ai-feed.js), one
proposal with its cycle, prompt and response, the approval queue, the performance dashboard, the
undo button and the switches. Forms post back here with the session's CSRF token, call the same
services as the API and redirect (303)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from server.ai import charts, metrics, queries
from server.ai import services as ai_services
from server.ai.metrics import BUCKETS
from server.ai.models import AiCycle, AiPrompt, AiProposal
from server.ai.state import set_controls
from server.db import utcnow
from server.errors import Problem
from server.extensions import services
from server.governance.api import caller_actor
from server.governance.gateway import Outcome

ai_pages = Blueprint("ai_pages", __name__, url_prefix="/ai")

FEED_SIZE = 50
BUCKET_COLORS = {
    "allowed": "#0a7b3e",
    "approved": "#2753d9",
    "waiting or rejected": "#a15c00",
    "denied": "#b42318",
    "invalid": "#5b6475",
}


def _reasons(outcome: Outcome) -> str:
    return "; ".join(str(r.get("message", r.get("code"))) for r in outcome.reasons) or outcome.record.outcome


def _refresh_ms() -> int:
    try:
        return max(1000, min(60_000, int(request.args.get("refresh", "5000"))))
    except ValueError:
        return 5000


def _render_feed(template: str, **extra: Any) -> str:
    svc = services()
    with svc.db.unit_of_work() as uow:  # rendered inside: the rows are read while the session is open
        rows, _ = queries.list_proposals(uow.session, queries.ProposalFilter(limit=FEED_SIZE))
        return render_template(
            template,
            status=queries.status(uow.session, svc.settings, utcnow()),
            proposals=rows,
            cycles=queries.list_cycles(uow.session, 10),
            **extra,
        )


@ai_pages.get("")
def feed() -> str:
    return _render_feed("ai/feed.html", refresh_ms=_refresh_ms())


@ai_pages.get("/feed")
def feed_rows() -> str:
    """The parts of the feed page the script refreshes (status and rows), as an HTML fragment."""
    return _render_feed("ai/_feed_fragment.html")


@ai_pages.get("/proposals/<proposal_id>")
def proposal_detail(proposal_id: str) -> str:
    with services().db.unit_of_work() as uow:
        row = ai_services.get_proposal(uow.session, proposal_id)
        cycle = uow.session.get(AiCycle, row.cycle_id)
        prompt = uow.session.get(AiPrompt, cycle.prompt_sha256) if cycle and cycle.prompt_sha256 else None
        return render_template("ai/proposal.html", p=row, cycle=cycle, prompt=prompt)


@ai_pages.get("/approvals")
def approvals() -> str:
    with services().db.unit_of_work() as uow:
        rows, _ = queries.list_proposals(uow.session, queries.ProposalFilter(status="pending_approval", limit=200))
        reviewed = list(
            uow.session.scalars(
                select(AiProposal)
                .where(AiProposal.reviewed_at.is_not(None))
                .order_by(AiProposal.reviewed_at.desc())
                .limit(20)
            )
        )
        return render_template("ai/approvals.html", proposals=rows, reviewed=reviewed)


@ai_pages.post("/approvals/<proposal_id>")
def decide(proposal_id: str) -> Response:
    verdict = request.form.get("verdict")
    reason = (request.form.get("reason") or "").strip()[:1000] or None
    svc = services()
    try:
        with svc.db.unit_of_work() as uow:
            if verdict == "approve":
                row, outcome = ai_services.approve_proposal(
                    uow.session, svc.gateway, proposal_id, caller_actor(), reason
                )
                uow.commit()
                if row.status == "approved":
                    flash(f"Proposal {proposal_id} approved by policy and executed.", "ok")
                elif outcome.allow:
                    flash(f"Proposal {proposal_id}: {row.status} ({_reasons(outcome)}).", "error")
                else:
                    flash(f"The policy refused your approval of {proposal_id}: {_reasons(outcome)}", "error")
            elif verdict == "reject":
                ai_services.reject_proposal(uow.session, proposal_id, caller_actor(), reason or "")
                uow.commit()
                flash(f"Proposal {proposal_id} rejected.", "ok")
            else:
                flash("Choose approve or reject.", "error")
    except Problem as exc:
        flash(f"{exc.title}: {exc.detail or ''}".strip(), "error")
    return redirect(url_for("ai_pages.approvals"), code=303)


@ai_pages.post("/proposals/<proposal_id>/undo")
def undo(proposal_id: str) -> Response:
    reason = (request.form.get("reason") or "").strip()[:500] or None
    svc = services()
    try:
        with svc.db.unit_of_work() as uow:
            row, outcome = ai_services.undo_proposal(uow.session, svc.gateway, proposal_id, caller_actor(), reason)
            uow.commit()
        if row.status == "undone":
            flash(f"Proposal {proposal_id} undone.", "ok")
        else:
            flash(f"Undo of {proposal_id} refused: {_reasons(outcome)}", "error")
    except Problem as exc:
        flash(f"{exc.title}: {exc.detail or ''}".strip(), "error")
    back = request.form.get("next") or ""
    if not back.startswith("/") or back.startswith("//"):  # only back to a page of this site
        back = url_for("ai_pages.proposal_detail", proposal_id=proposal_id)
    return redirect(back, code=303)


@ai_pages.get("/dashboard")
def dashboard() -> str:
    try:
        days = max(1, min(90, int(request.args.get("days", "14"))))
    except ValueError:
        days = 14
    svc = services()
    with svc.db.unit_of_work() as uow:
        m = metrics.compute(uow.session, utcnow(), days)
        status = queries.status(uow.session, svc.settings, utcnow())
        labels = [d.day.strftime("%m-%d") for d in m.days]
        return _render_dashboard(m, status, days, labels)


def _render_dashboard(m: metrics.Metrics, status: dict[str, Any], days: int, labels: list[str]) -> str:
    return render_template(
        "ai/dashboard.html",
        m=m,
        status=status,
        days=days,
        buckets=list(BUCKETS),
        proposals_chart=charts.stacked_bars(
            labels, {b: [d.buckets[b] for d in m.days] for b in BUCKETS}, colors=BUCKET_COLORS
        ),
        tokens_chart=charts.stacked_bars(labels, {"tokens": [d.tokens for d in m.days]}),
        latency_chart=charts.lines(labels, {"p50 latency (ms)": [metrics.percentile(d.latencies, 50) for d in m.days]}),
        degraded_chart=charts.stacked_bars(
            labels, {"hours degraded": [d.degraded_hours for d in m.days]}, colors={"hours degraded": "#b42318"}
        ),
    )


@ai_pages.post("/controls")
def controls() -> Response:
    action = request.form.get("action")
    reason = (request.form.get("reason") or "").strip()[:1000]
    changes: dict[str, dict[str, bool]] = {
        "disable": {"enabled": False},
        "enable": {"enabled": True},
        "degrade": {"forced_degraded": True},
        "undegrade": {"forced_degraded": False},
    }
    if action not in changes:
        flash("Choose what to switch.", "error")
    elif not reason:
        flash("Say why (it is recorded with your name).", "error")
    else:
        with services().db.unit_of_work() as uow:
            set_controls(uow.session, by=caller_actor().id, now=utcnow(), reason=reason, **changes[action])
            uow.commit()
        flash(f"AI supervisor: {action} recorded.", "ok")
    return redirect(url_for("ai_pages.feed"), code=303)
