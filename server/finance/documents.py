"""Financial documents for the finance pages, the API and the self-service portal: listings, the
JSON shape of a document, who may download one, and the download route `documents.download`
(`/documents/<id>.pdf|.html`), which serves a document to finance staff and to its owner (a
portal user linked to the document's affiliate or advertiser).

`documents_for(session, affiliate_id=... | advertiser_id=...)` lists an entity's documents,
newest first (re-exported from billing.documents)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, abort
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from billing.documents import DocumentKind, documents_for, latest_delivery
from billing.models import DocumentDelivery, FinancialDocument
from server.auth.services import Subject
from server.errors import Problem

__all__ = [
    "DELIVERY_STATES",
    "KINDS",
    "can_download",
    "delivery_body",
    "document_body",
    "documents",
    "documents_for",
    "get_document",
    "list_documents",
]

KINDS = tuple(k.value for k in DocumentKind)
DELIVERY_STATES = ("pending", "sending", "sent", "failed")
STAFF_ENDPOINT = "finance.document_detail"  # who may read any document: whoever may open its page

documents = Blueprint("documents", __name__)


def get_document(session: Session, document_id: str) -> FinancialDocument:
    document = session.get(FinancialDocument, document_id)
    if document is None:
        raise Problem(404, "Not Found", f"no document {document_id}")
    return document


def list_documents(
    session: Session,
    *,
    kind: str | None = None,
    status: str | None = None,
    entity: str | None = None,
    limit: int = 200,
) -> list[FinancialDocument]:
    """Documents newest first; `status` is the state of each document's latest delivery and
    `entity` an affiliate or advertiser id."""
    query = select(FinancialDocument)
    if kind:
        query = query.where(FinancialDocument.kind == kind)
    if entity:
        query = query.where((FinancialDocument.affiliate_id == entity) | (FinancialDocument.advertiser_id == entity))
    if status:
        latest = (
            select(DocumentDelivery.document_id, func.max(DocumentDelivery.generation).label("generation"))
            .group_by(DocumentDelivery.document_id)
            .subquery()
        )
        query = (
            query.join(latest, latest.c.document_id == FinancialDocument.id)
            .join(
                DocumentDelivery,
                (DocumentDelivery.document_id == latest.c.document_id)
                & (DocumentDelivery.generation == latest.c.generation),
            )
            .where(DocumentDelivery.status == status)
        )
    query = query.order_by(FinancialDocument.issued_at.desc(), FinancialDocument.number.desc()).limit(limit)
    return list(session.scalars(query))


def delivery_body(delivery: DocumentDelivery) -> dict[str, Any]:
    return {
        "generation": delivery.generation,
        "recipient": delivery.recipient,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "message_id": delivery.message_id,
        "next_attempt_at": delivery.next_attempt_at.isoformat() if delivery.next_attempt_at else None,
        "last_error": delivery.last_error,
        "sent_at": delivery.sent_at.isoformat() if delivery.sent_at else None,
        "requested_by": delivery.requested_by,
        "created_at": delivery.created_at.isoformat(),
    }


def document_body(session: Session, document: FinancialDocument, *, with_deliveries: bool = False) -> dict[str, Any]:
    latest = latest_delivery(session, document.id)
    body: dict[str, Any] = {
        "id": document.id,
        "number": document.number,
        "kind": document.kind,
        "affiliate_id": document.affiliate_id,
        "advertiser_id": document.advertiser_id,
        "payout_id": document.payout_id,
        "credits_document_id": document.credits_document_id,
        "period_start": document.period_start.isoformat() if document.period_start else None,
        "period_end": document.period_end.isoformat() if document.period_end else None,
        "recipient_name": document.recipient_name,
        "recipient_email": document.recipient_email,
        "totals": [
            {"currency": t["currency"], "amount": t["amount"], "minor": t["minor"]}
            for t in document.content.get("totals", [])
        ],
        "html_sha256": document.html_sha256,
        "pdf_sha256": document.pdf_sha256,
        "issued_by": document.issued_by,
        "issued_at": document.issued_at.isoformat(),
        "delivery": delivery_body(latest) if latest else None,
    }
    if with_deliveries:
        body["lines"] = document.content.get("lines", [])
        body["reference"] = document.content.get("reference", {})
        body["deliveries"] = [
            delivery_body(d)
            for d in session.scalars(
                select(DocumentDelivery)
                .where(DocumentDelivery.document_id == document.id)
                .order_by(DocumentDelivery.generation)
            )
        ]
        body["credit_notes"] = [
            {"id": c.id, "number": c.number}
            for c in session.scalars(
                select(FinancialDocument)
                .where(FinancialDocument.credits_document_id == document.id)
                .order_by(FinancialDocument.number)
            )
        ]
    return body


def owns(session: Session, subject: Subject, document: FinancialDocument) -> bool:
    """Whether `subject` is a portal user linked to the document's affiliate or advertiser."""
    from server.auth.models import User

    if subject.kind != "user" or not subject.id.startswith("user:"):
        return False
    user = session.get(User, int(subject.id.removeprefix("user:")))
    if user is None or not user.active:
        return False
    affiliate_id = getattr(user, "affiliate_id", None)  # users.affiliate_id / advertiser_id: migration 0008
    advertiser_id = getattr(user, "advertiser_id", None)
    return bool(
        (affiliate_id and affiliate_id == document.affiliate_id)
        or (advertiser_id and advertiser_id == document.advertiser_id)
    )


def can_download(session: Session, subject: Subject, document: FinancialDocument) -> bool:
    """Its owner may, and so may whoever the authorisation policy lets open the finance page of
    a document (finance, admin, auditor)."""
    from server.auth.authz import authorize_now

    if owns(session, subject, document):
        return True
    try:
        return authorize_now(subject, STAFF_ENDPOINT) is None
    except Problem as exc:  # a refusal is raised as a problem; OPA being down is not a refusal
        if exc.status in (401, 403):
            return False
        raise


def file_response(document: FinancialDocument, fmt: str) -> Response:
    if fmt == "pdf":
        response = Response(document.pdf, mimetype="application/pdf")
        response.headers["Content-Disposition"] = f'attachment; filename="{document.number}.pdf"'
    else:
        response = Response(document.html, mimetype="text/html")
        response.headers["Content-Disposition"] = f'inline; filename="{document.number}.html"'
        response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    response.headers["X-Document-Sha256"] = document.pdf_sha256 if fmt == "pdf" else document.html_sha256
    response.headers["Cache-Control"] = "private, no-store"
    return response


@documents.get("/documents/<document_id>.pdf", defaults={"fmt": "pdf"})
@documents.get("/documents/<document_id>.html", defaults={"fmt": "html"})
def download(document_id: str, fmt: str) -> Response:
    """The issued bytes of a document, to finance staff and to its owner; anyone else gets 404
    (whether the document exists is not theirs to know)."""
    from server.auth.authz import current_subject
    from server.extensions import services

    with services().db.reading() as session:
        document = session.get(FinancialDocument, document_id)
        if document is None or not can_download(session, current_subject(), document):
            abort(404)
        return file_response(document, fmt)
