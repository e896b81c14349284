"""`/v1/audit/*` (JSON report, CSV exports) and the `/audit` page (the same report for a period,
with the download links). Auditors, finance and admins (`audit:read`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from flask import Blueprint, Response, jsonify, render_template, request, stream_with_context
from sqlalchemy.orm import Session

from server.audit import report as audit
from server.db import utcnow
from server.errors import Problem
from server.extensions import services

audit_api = Blueprint("audit_api", __name__, url_prefix="/v1/audit")
audit_pages = Blueprint("audit_pages", __name__)


def _period() -> audit.Period:
    return audit.period_from(request.args.to_dict(), utcnow())


@audit_api.get("/report")
def report() -> Response:
    period = _period()
    with services().db.reading() as session:
        return jsonify(audit.compliance_report(session, period))


def _csv(name: str, rows: Callable[[Session, audit.Period], Iterator[str]]) -> Response:
    period = _period()

    def generate() -> Iterator[str]:
        with services().db.reading() as session:  # one snapshot for the whole file
            yield from rows(session, period)

    filename = f"{name}-{period.since:%Y%m%d}-{period.until:%Y%m%d}.csv"
    response = Response(stream_with_context(generate()), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@audit_api.get("/decisions.csv")
def decisions_csv() -> Response:
    return _csv("decisions", audit.decisions_csv)


@audit_api.get("/ledger.csv")
def ledger_csv() -> Response:
    return _csv("ledger", audit.ledger_csv)


@audit_pages.get("/audit")
def audit_page() -> str | tuple[str, int]:
    args = {k: v for k, v in request.args.to_dict().items() if v}
    error = None
    try:
        period = audit.period_from(args, utcnow())
    except Problem as exc:
        error = exc.detail or exc.title
        period = audit.period_from({}, utcnow())
    with services().db.reading() as session:
        body = audit.compliance_report(session, period)
    page = render_template("audit.html", report=body, args=args, error=error, period=period)
    return (page, 400) if error else page
