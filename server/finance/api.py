"""The ledger, payouts and documents JSON API (`/v1/ledger/...`, `/v1/payouts`,
`/v1/payout-profiles`, `/v1/reconciliation/reports`, `/v1/alerts`, `/v1/documents`): thin views
over billing/, finance.queries and finance.documents."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from flask import Blueprint, Response, jsonify, request
from marshmallow import EXCLUDE, Schema, fields, validate, validates_schema
from marshmallow import ValidationError as SchemaError

from billing import ledger
from billing.accounts import AccountSpec
from billing.booking import book_conversion
from billing.money import CURRENCY_EXPONENTS, MoneyError, to_minor
from billing.payouts import PayoutError, approve_payout, propose_payout, reject_payout, submit_payout
from billing.reconcile import reconcile
from billing.rules import AccountType, EntryKind, EntryRequest, LedgerError
from server.db import utcnow
from server.errors import Problem
from server.extensions import services
from server.finance import documents, queries
from server.finance.services import dispatch_alerts, payment_services
from server.governance.api import caller_actor, json_body, raise_if_denied
from server.governance.gateway import Outcome
from server.governance.services import outcome_body

ledger_api = Blueprint("ledger_api", __name__, url_prefix="/v1/ledger")
payouts_api = Blueprint("payouts_api", __name__, url_prefix="/v1")

CURRENCIES = sorted(CURRENCY_EXPONENTS)
KEY = fields.String(required=True, validate=validate.Length(min=1, max=200))
DECIMAL = validate.Regexp(r"^\d{1,15}(\.\d{1,6})?$", error="a decimal amount such as 12.34")


def ledger_problem(exc: LedgerError) -> Problem:
    return Problem(
        exc.status,
        exc.code.replace("_", " ").capitalize(),
        str(exc),
        type_=exc.code.replace("_", "-"),
        errors=exc.errors,
    )


@contextmanager
def ledger_errors() -> Iterator[None]:
    try:
        yield
    except LedgerError as exc:
        raise ledger_problem(exc) from exc
    except PayoutError as exc:
        raise Problem(exc.status, "Payout refused", str(exc), type_="payout-refused") from exc


# -- schemas ------------------------------------------------------------------------------------------
class AccountCreateSchema(Schema):
    code = fields.String(
        required=True, validate=[validate.Length(min=3, max=200), validate.Regexp(r"^[a-z0-9_]+(:[A-Za-z0-9_\-]+)+$")]
    )
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    type = fields.String(required=True, validate=validate.OneOf([t.value for t in AccountType]))
    currency = fields.String(required=True, validate=validate.OneOf(CURRENCIES))
    owner_kind = fields.String(load_default=None, validate=validate.Length(max=32))
    owner_id = fields.String(load_default=None, validate=validate.Length(max=64))
    may_go_negative = fields.Boolean(load_default=True)


class PostingSchema(Schema):
    account = fields.String(required=True, validate=validate.Length(min=1, max=200))
    direction = fields.String(required=True, validate=validate.OneOf(["debit", "credit"]))
    amount = fields.String(required=True, validate=DECIMAL)
    currency = fields.String(required=True, validate=validate.OneOf(CURRENCIES))


class EntryCreateSchema(Schema):
    idempotency_key = KEY
    kind = fields.String(load_default="posted", validate=validate.OneOf(["posted", "pending"]))
    description = fields.String(load_default="", validate=validate.Length(max=2000))
    metadata = fields.Dict(keys=fields.String(validate=validate.Length(max=64)), load_default=dict)
    postings = fields.List(fields.Nested(PostingSchema), required=True, validate=validate.Length(min=2, max=200))


class EntryActionSchema(Schema):
    idempotency_key = KEY
    description = fields.String(load_default="", validate=validate.Length(max=2000))


class PayoutCreateSchema(Schema):
    affiliate_id = fields.String(required=True, validate=validate.Length(min=1, max=40))
    currency = fields.String(required=True, validate=validate.OneOf(CURRENCIES))
    amount = fields.String(load_default=None, validate=DECIMAL)
    reason = fields.String(load_default=None, validate=validate.Length(max=500))


class PayoutDecisionSchema(Schema):
    reason = fields.String(load_default=None, validate=validate.Length(max=500))


class PayoutProfileSchema(Schema):
    method = fields.String(required=True, validate=validate.OneOf(list(queries.METHODS)))
    destination = fields.String(load_default=None, validate=validate.Length(min=3, max=254))
    threshold = fields.String(load_default=None, allow_none=True, validate=DECIMAL)
    threshold_currency = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(CURRENCIES))
    on_hold = fields.Boolean(load_default=False)
    hold_reason = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))

    @validates_schema
    def _threshold_currency(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("threshold") is not None and not data.get("threshold_currency"):
            raise SchemaError("required with a threshold", "threshold_currency")


class ReconcileSchema(Schema):
    provider = fields.String(required=True, validate=validate.OneOf(["stripe", "paypal"]))
    since = fields.AwareDateTime(load_default=None, default_timezone=None)


class ListSchema(Schema):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


# -- ledger -------------------------------------------------------------------------------------------
@ledger_api.get("/accounts")
def list_accounts() -> Response:
    args = request.args
    with services().db.unit_of_work() as uow:
        rows = queries.list_accounts(uow.session, owner_kind=args.get("owner_kind"), currency=args.get("currency"))
        return jsonify({"items": [queries.account_body(a) for a in rows]})


@ledger_api.post("/accounts")
def create_account() -> tuple[Response, int]:
    data = AccountCreateSchema().load(json_body())
    kind = AccountType(data["type"])
    spec = AccountSpec(
        code=data["code"],
        name=data["name"],
        type=kind,
        currency=data["currency"],
        owner_kind=data["owner_kind"],
        owner_id=data["owner_id"],
        debits_must_not_exceed_credits=not data["may_go_negative"] and not kind.debit_normal,
        credits_must_not_exceed_debits=not data["may_go_negative"] and kind.debit_normal,
    )
    with services().db.unit_of_work() as uow, ledger_errors():
        account, created = ledger.create_account(uow.session, spec)
        uow.commit()
        return jsonify(queries.account_body(account)), 201 if created else 200


@ledger_api.get("/accounts/<account_id>")
def get_account(account_id: str) -> Response:
    with services().db.unit_of_work() as uow:
        return jsonify(queries.account_body(queries.get_account(uow.session, account_id)))


@ledger_api.get("/entries")
def list_entries() -> Response:
    limit = ListSchema().load({"limit": request.args.get("limit", "100")})["limit"]
    with services().db.unit_of_work() as uow:
        account = request.args.get("account")
        account_id = queries.get_account(uow.session, account).id if account else None
        rows = queries.list_entries(
            uow.session,
            account_id=account_id,
            kind=request.args.get("kind"),
            limit=limit,
            before=request.args.get("before"),
        )
        return jsonify(
            {
                "items": [queries.entry_body(uow.session, e) for e in rows],
                "next": rows[-1].id if len(rows) == limit else None,
            }
        )


@ledger_api.post("/entries")
def create_entry() -> tuple[Response, int]:
    data = EntryCreateSchema().load(json_body())
    with services().db.unit_of_work() as uow, ledger_errors():
        lines = ledger.iter_lines(data["postings"])
        result = ledger.record_entry(
            uow.session,
            EntryRequest(
                idempotency_key=data["idempotency_key"],
                lines=lines,
                kind=EntryKind(data["kind"]),
                description=data["description"],
                metadata=data["metadata"],
            ),
            created_by=caller_actor().id,
        )
        uow.commit()
        body = queries.entry_body(uow.session, queries.get_entry(uow.session, result.entry_id))
    body["replayed"] = result.replayed
    return jsonify(body), 200 if result.replayed else 201


@ledger_api.get("/entries/<entry_id>")
def get_entry(entry_id: str) -> Response:
    with services().db.unit_of_work() as uow:
        return jsonify(queries.entry_body(uow.session, queries.get_entry(uow.session, entry_id)))


def _entry_action(entry_id: str, action: str) -> tuple[Response, int]:
    data = EntryActionSchema().load(json_body())
    operations: dict[str, Callable[..., ledger.EntryResult]] = {
        "post": ledger.post_pending,
        "void": ledger.void_pending,
        "reverse": ledger.reverse_entry,
    }
    operation = operations[action]
    with services().db.unit_of_work() as uow, ledger_errors():
        queries.get_entry(uow.session, entry_id)
        result = operation(
            uow.session,
            entry_id,
            data["idempotency_key"],
            description=data["description"],
            created_by=caller_actor().id,
        )
        uow.commit()
        body = queries.entry_body(uow.session, queries.get_entry(uow.session, result.entry_id))
    body["replayed"] = result.replayed
    return jsonify(body), 200 if result.replayed else 201


@ledger_api.post("/entries/<entry_id>/post")
def post_entry(entry_id: str) -> tuple[Response, int]:
    return _entry_action(entry_id, "post")


@ledger_api.post("/entries/<entry_id>/void")
def void_entry(entry_id: str) -> tuple[Response, int]:
    return _entry_action(entry_id, "void")


@ledger_api.post("/entries/<entry_id>/reverse")
def reverse_entry(entry_id: str) -> tuple[Response, int]:
    return _entry_action(entry_id, "reverse")


@ledger_api.post("/conversions/<int:conversion_id>/book")
def book(conversion_id: int) -> tuple[Response, int]:
    with services().db.unit_of_work() as uow, ledger_errors():
        result = book_conversion(uow.session, conversion_id, created_by=caller_actor().id)
        uow.commit()
        body = queries.entry_body(uow.session, queries.get_entry(uow.session, result.entry_id))
    body["replayed"] = result.replayed
    return jsonify(body), 200 if result.replayed else 201


@ledger_api.get("/verification")
def verify() -> Response:
    with services().db.unit_of_work() as uow:
        report = ledger.verify(uow.session)
        return jsonify(report.as_dict())


# -- payouts ------------------------------------------------------------------------------------------
def _decided(payout_id: str, outcome: Outcome, *, created: bool) -> tuple[Response, int]:
    svc = services()
    payments = payment_services()
    if outcome.executed:
        submit_payout(svc.db.session, payments.payments, payout_id, actor=caller_actor().id)
    dispatch_alerts(svc.db.session, payments.channels)
    with svc.db.unit_of_work() as uow:
        body = {
            "payout": queries.payout_body(uow.session, queries.get_payout(uow.session, payout_id), with_events=True),
            "decision": outcome_body(outcome),
        }
    raise_if_denied(outcome.allow, outcome.record.error_code, {**body["decision"], "payout": body["payout"]})
    return jsonify(body), 201 if created else 200


@payouts_api.get("/payouts")
def list_payouts() -> Response:
    limit = ListSchema().load({"limit": request.args.get("limit", "100")})["limit"]
    with services().db.unit_of_work() as uow:
        rows = queries.list_payouts(
            uow.session,
            state=request.args.get("state"),
            affiliate_id=request.args.get("affiliate_id"),
            awaiting_approval=request.args.get("awaiting_approval") == "true",
            limit=limit,
        )
        return jsonify({"items": [queries.payout_body(uow.session, p) for p in rows]})


@payouts_api.post("/payouts")
def create_payout() -> tuple[Response, int]:
    data = PayoutCreateSchema().load(json_body())
    try:
        amount = to_minor(data["amount"], data["currency"]) if data["amount"] is not None else None
    except MoneyError as exc:
        raise Problem(400, "Validation failed", str(exc), errors={"amount": [str(exc)]}) from exc
    svc = services()
    with svc.db.unit_of_work() as uow, ledger_errors():
        payout, outcome = propose_payout(
            uow.session,
            payment_services().payments,
            affiliate_id=data["affiliate_id"],
            currency=data["currency"],
            amount_minor=amount,
            actor=caller_actor(),
            manual=True,
            reason=data["reason"],
        )
        uow.commit()
        payout_id = payout.id
    return _decided(payout_id, outcome, created=True)


@payouts_api.get("/payouts/<payout_id>")
def get_payout(payout_id: str) -> Response:
    with services().db.unit_of_work() as uow:
        return jsonify(queries.payout_body(uow.session, queries.get_payout(uow.session, payout_id), with_events=True))


@payouts_api.post("/payouts/<payout_id>/approve")
def approve(payout_id: str) -> tuple[Response, int]:
    data = PayoutDecisionSchema().load(json_body())
    with services().db.unit_of_work() as uow, ledger_errors():
        _, outcome = approve_payout(uow.session, payment_services().payments, payout_id, caller_actor(), data["reason"])
        uow.commit()
    return _decided(payout_id, outcome, created=False)


@payouts_api.post("/payouts/<payout_id>/reject")
def reject(payout_id: str) -> tuple[Response, int]:
    data = PayoutDecisionSchema().load(json_body())
    with services().db.unit_of_work() as uow, ledger_errors():
        _, outcome = reject_payout(uow.session, payment_services().payments, payout_id, caller_actor(), data["reason"])
        uow.commit()
    return _decided(payout_id, outcome, created=False)


@payouts_api.get("/payout-profiles/<affiliate_id>")
def get_profile(affiliate_id: str) -> Response:
    from billing.models import PayoutProfile

    with services().db.unit_of_work() as uow:
        return jsonify(queries.profile_body(affiliate_id, uow.session.get(PayoutProfile, affiliate_id)))


@payouts_api.put("/payout-profiles/<affiliate_id>")
def put_profile(affiliate_id: str) -> Response:
    data = PayoutProfileSchema().load(json_body())
    with services().db.unit_of_work() as uow:
        profile = queries.save_profile(
            uow.session, payment_services().vault, affiliate_id, data, changed_by=caller_actor().id
        )
        uow.commit()
        return jsonify(queries.profile_body(affiliate_id, profile))


@payouts_api.get("/reconciliation/reports")
def list_reconciliations() -> Response:
    with services().db.unit_of_work() as uow:
        return jsonify({"items": [queries.report_body(r) for r in queries.list_reports(uow.session)]})


@payouts_api.post("/reconciliation/reports")
def run_reconciliation() -> tuple[Response, int]:
    data = ReconcileSchema().load(json_body())
    payments = payment_services()
    provider = payments.payments.providers.get(data["provider"])
    if provider is None:
        raise Problem(
            409,
            "Provider not configured",
            f"{data['provider']} has no credentials in this server",
            type_="provider-not-configured",
        )
    since = data["since"] or utcnow() - timedelta(days=7)
    svc = services()
    with svc.db.unit_of_work() as uow:
        report = reconcile(uow.session, provider, since)
        uow.commit()
        body = queries.report_body(report)
    dispatch_alerts(svc.db.session, payments.channels)
    return jsonify(body), 201


@payouts_api.get("/alerts")
def list_alerts() -> Response:
    with services().db.unit_of_work() as uow:
        rows = queries.list_alerts(uow.session, status=request.args.get("status"))
        return jsonify({"items": [queries.alert_body(uow.session, a) for a in rows]})


@payouts_api.post("/alerts/<alert_id>/acknowledge")
def acknowledge_alert(alert_id: str) -> Response:
    with services().db.unit_of_work() as uow:
        alert = queries.acknowledge_alert(uow.session, alert_id, caller_actor().id)
        uow.commit()
        return jsonify(queries.alert_body(uow.session, alert))


# -- financial documents ----------------------------------------------------------------------------
documents_api = Blueprint("documents_api", __name__, url_prefix="/v1")


class DocumentQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    kind = fields.String(load_default=None, validate=validate.OneOf(documents.KINDS))
    status = fields.String(load_default=None, validate=validate.OneOf(documents.DELIVERY_STATES))
    entity = fields.String(load_default=None, validate=validate.Length(min=1, max=40))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))


@documents_api.get("/documents")
def list_documents() -> Response:
    args = DocumentQuerySchema().load(request.args.to_dict())
    with services().db.reading() as session:
        rows = documents.list_documents(session, **args)
        return jsonify({"items": [documents.document_body(session, d) for d in rows]})


@documents_api.get("/documents/<document_id>")
def get_document(document_id: str) -> Response:
    with services().db.reading() as session:
        document = documents.get_document(session, document_id)
        return jsonify(documents.document_body(session, document, with_deliveries=True))


@documents_api.get("/documents/<document_id>.pdf")
def get_document_pdf(document_id: str) -> Response:
    with services().db.reading() as session:
        return documents.file_response(documents.get_document(session, document_id), "pdf")
