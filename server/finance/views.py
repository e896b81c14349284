"""Finance pages: accounts and balances, journal entries and their postings, payouts with their
state history, the approval queue, reconciliation reports, alerts, and the financial documents
(receipts, invoices, credit notes: download, resend, correct). Forms post back here (with
the session's CSRF token) and redirect; each action goes through the same services as the API."""

from __future__ import annotations

import uuid
from datetime import timedelta

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as WerkzeugResponse

from billing.document_mail import pending_count
from billing.documents import DocumentError, issue_credit_note, request_resend
from billing.money import CURRENCY_EXPONENTS, MoneyError, to_minor
from billing.payouts import PayoutError, approve_payout, propose_payout, reject_payout, submit_payout
from billing.reconcile import reconcile
from billing.rules import LedgerError
from server.db import utcnow
from server.extensions import services
from server.finance import documents, queries
from server.finance.services import deliver_pending_documents, dispatch_alerts, document_issuer, payment_services
from server.governance.api import caller_actor
from server.governance.gateway import Outcome

finance = Blueprint("finance", __name__, url_prefix="/finance")

STATES = ("proposed", "approved", "submitted", "paid", "failed", "voided")


def _reasons(outcome: Outcome) -> str:
    return "; ".join(str(r.get("message", r.get("code"))) for r in outcome.reasons) or outcome.record.outcome


@finance.get("")
def overview() -> str:
    with services().db.unit_of_work() as uow:
        return render_template(
            "finance/overview.html",
            accounts=[
                queries.account_body(a)
                for a in queries.list_accounts(uow.session, owner_kind=request.args.get("owner"))
            ],
            totals=queries.balances_by_currency(uow.session),
            counts=queries.payout_counts(uow.session),
            open_alerts=len(queries.list_alerts(uow.session, status="open")),
            awaiting=len(queries.list_payouts(uow.session, awaiting_approval=True)),
            owner=request.args.get("owner", ""),
        )


@finance.get("/entries")
def entries() -> str:
    with services().db.unit_of_work() as uow:
        code = request.args.get("account") or None
        account = queries.get_account(uow.session, code) if code else None
        rows = queries.list_entries(
            uow.session,
            account_id=account.id if account else None,
            limit=100,
            before=request.args.get("before") or None,
        )
        return render_template(
            "finance/entries.html",
            entries=[queries.entry_body(uow.session, e) for e in rows],
            account=code or "",
            next_id=rows[-1].id if len(rows) == 100 else None,
        )


@finance.get("/entries/<entry_id>")
def entry_detail(entry_id: str) -> str:
    with services().db.unit_of_work() as uow:
        return render_template(
            "finance/entry_detail.html", e=queries.entry_body(uow.session, queries.get_entry(uow.session, entry_id))
        )


@finance.get("/payouts")
def payouts() -> str:
    state = request.args.get("state") or None
    with services().db.unit_of_work() as uow:
        rows = queries.list_payouts(uow.session, state=state if state in STATES else None, limit=200)
        return render_template(
            "finance/payouts.html",
            payouts=[queries.payout_body(uow.session, p) for p in rows],
            state=state or "",
            states=STATES,
            currencies=sorted(CURRENCY_EXPONENTS),
        )


@finance.post("/payouts")
def create_payout() -> WerkzeugResponse:
    form = request.form
    affiliate_id, currency = form.get("affiliate_id", "").strip(), form.get("currency", "EUR")
    svc = services()
    payments = payment_services()
    try:
        amount = to_minor(form["amount"], currency) if form.get("amount") else None
        with svc.db.unit_of_work() as uow:
            payout, outcome = propose_payout(
                uow.session,
                payments.payments,
                affiliate_id=affiliate_id,
                currency=currency,
                amount_minor=amount,
                actor=caller_actor(),
                manual=True,
                reason=form.get("reason") or None,
            )
            uow.commit()
            payout_id = payout.id
    except (MoneyError, PayoutError, LedgerError, KeyError) as exc:
        flash(f"Payout not created: {exc}", "error")
        return redirect(url_for("finance.payouts"))
    if outcome.executed:
        submit_payout(svc.db.session, payments.payments, payout_id, actor=caller_actor().id)
        flash(f"Payout {payout_id} approved by policy and sent.", "ok")
    elif outcome.record.outcome == "pending_approval":
        flash(f"Payout {payout_id} waits for a finance approval.", "ok")
    else:
        flash(f"Payout {payout_id} refused: {_reasons(outcome)}", "error")
    dispatch_alerts(svc.db.session, payments.channels)
    return redirect(url_for("finance.payout_detail", payout_id=payout_id))


@finance.get("/payouts/<payout_id>")
def payout_detail(payout_id: str) -> str:
    with services().db.unit_of_work() as uow:
        payout = queries.get_payout(uow.session, payout_id)
        return render_template(
            "finance/payout_detail.html", p=queries.payout_body(uow.session, payout, with_events=True)
        )


@finance.get("/approvals")
def approvals() -> str:
    with services().db.unit_of_work() as uow:
        rows = queries.list_payouts(uow.session, awaiting_approval=True, limit=200)
        return render_template("finance/approvals.html", payouts=[queries.payout_body(uow.session, p) for p in rows])


@finance.post("/approvals/<payout_id>")
def decide_approval(payout_id: str) -> WerkzeugResponse:
    verdict = request.form.get("verdict")
    reason = (request.form.get("reason") or "").strip() or None
    svc = services()
    payments = payment_services()
    decide = approve_payout if verdict == "approve" else reject_payout if verdict == "reject" else None
    if decide is None:
        flash("Choose approve or reject.", "error")
        return redirect(url_for("finance.approvals"))
    try:
        with svc.db.unit_of_work() as uow:
            _, outcome = decide(uow.session, payments.payments, payout_id, caller_actor(), reason)
            uow.commit()
    except (PayoutError, LedgerError) as exc:
        flash(f"{payout_id}: {exc}", "error")
        return redirect(url_for("finance.approvals"))
    if outcome.executed and verdict == "approve":
        submit_payout(svc.db.session, payments.payments, payout_id, actor=caller_actor().id)
        flash(f"Payout {payout_id} approved and sent.", "ok")
    elif outcome.executed:
        flash(f"Payout {payout_id} rejected.", "ok")
    else:
        flash(f"The policy refused to {verdict} {payout_id}: {_reasons(outcome)}", "error")
    dispatch_alerts(svc.db.session, payments.channels)
    return redirect(url_for("finance.approvals"))


@finance.get("/reconciliation")
def reconciliation() -> str:
    with services().db.unit_of_work() as uow:
        return render_template(
            "finance/reconciliation.html",
            reports=[queries.report_body(r) for r in queries.list_reports(uow.session)],
            providers=sorted(payment_services().payments.providers),
        )


@finance.post("/reconciliation")
def run_reconciliation() -> WerkzeugResponse:
    payments = payment_services()
    provider = payments.payments.providers.get(request.form.get("provider", ""))
    if provider is None:
        flash("That provider is not configured.", "error")
        return redirect(url_for("finance.reconciliation"))
    days = request.form.get("days", "7")
    since = utcnow() - timedelta(days=int(days) if days.isdigit() and 0 < int(days) <= 90 else 7)
    svc = services()
    with svc.db.unit_of_work() as uow:
        report = reconcile(uow.session, provider, since)
        uow.commit()
        flash(
            f"Reconciliation {report.id}: {report.status}, {len(report.differences)} difference(s).",
            "ok" if report.status == "clean" else "error",
        )
    dispatch_alerts(svc.db.session, payments.channels)
    return redirect(url_for("finance.reconciliation"))


@finance.get("/alerts")
def alerts() -> str:
    with services().db.unit_of_work() as uow:
        rows = queries.list_alerts(uow.session, limit=200)
        return render_template("finance/alerts.html", alerts=[queries.alert_body(uow.session, a) for a in rows])


@finance.post("/alerts/<alert_id>/acknowledge")
def acknowledge_alert(alert_id: str) -> WerkzeugResponse:
    with services().db.unit_of_work() as uow:
        queries.acknowledge_alert(uow.session, alert_id, caller_actor().id)
        uow.commit()
    flash(f"Alert {alert_id} acknowledged.", "ok")
    return redirect(url_for("finance.alerts"))


@finance.get("/documents")
def documents_index() -> str:
    kind = request.args.get("kind") or None
    status = request.args.get("status") or None
    entity = (request.args.get("entity") or "").strip() or None
    svc = services()
    with svc.db.reading() as session:
        rows = documents.list_documents(
            session,
            kind=kind if kind in documents.KINDS else None,
            status=status if status in documents.DELIVERY_STATES else None,
            entity=entity,
        )
        return render_template(
            "finance/documents.html",
            documents=[documents.document_body(session, d) for d in rows],
            kinds=documents.KINDS,
            states=documents.DELIVERY_STATES,
            kind=kind or "",
            status=status or "",
            entity=entity or "",
            smtp_configured=bool(svc.settings.smtp_host),
            waiting=pending_count(session),
        )


@finance.get("/documents/<document_id>")
def document_detail(document_id: str) -> str:
    svc = services()
    with svc.db.reading() as session:
        document = documents.get_document(session, document_id)
        return render_template(
            "finance/document_detail.html",
            d=documents.document_body(session, document, with_deliveries=True),
            smtp_configured=bool(svc.settings.smtp_host),
            form_key=uuid.uuid4().hex,  # a double submit of the credit-note form issues one note
        )


@finance.post("/documents/<document_id>/resend")
def resend_document(document_id: str) -> WerkzeugResponse:
    svc = services()
    try:
        with svc.db.unit_of_work() as uow:
            request_resend(uow.session, document_id, requested_by=caller_actor().id)
            uow.commit()
    except DocumentError as exc:
        flash(f"Not resent: {exc}", "error")
        return redirect(url_for("finance.document_detail", document_id=document_id))
    run = deliver_pending_documents(svc.db, svc.settings)
    if run is None:
        flash("Queued; SMTP is not configured, so it stays pending until SMTP_HOST is set.", "ok")
    else:
        flash(f"Queued and delivered: {run.sent} sent, {run.retried} to retry, {run.failed} failed.", "ok")
    return redirect(url_for("finance.document_detail", document_id=document_id))


@finance.post("/documents/<document_id>/credit-note")
def create_credit_note(document_id: str) -> WerkzeugResponse:
    form = request.form
    currency = form.get("currency", "")
    svc = services()
    try:
        amount = to_minor(form.get("amount", ""), currency)
        with svc.db.unit_of_work() as uow:
            note, _ = issue_credit_note(
                uow.session,
                document_id,
                amount_minor=amount,
                currency=currency,
                reason=form.get("reason", ""),
                idempotency_key=f"{document_id}:{form.get('idempotency_key') or uuid.uuid4().hex}",
                issuer=document_issuer(svc.settings),
                issued_by=caller_actor().id,
            )
            uow.commit()
            note_id, number = note.id, note.number
    except (MoneyError, DocumentError) as exc:
        flash(f"No credit note: {exc}", "error")
        return redirect(url_for("finance.document_detail", document_id=document_id))
    deliver_pending_documents(svc.db, svc.settings)
    flash(f"Credit note {number} issued.", "ok")
    return redirect(url_for("finance.document_detail", document_id=note_id))
