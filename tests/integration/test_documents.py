"""Financial documents on SQLite and PostgreSQL: a receipt per paid payout and a monthly invoice per
advertiser, numbered per series and year without gaps (also under concurrent issuers), issued
once, immutable, rendered as HTML and a real PDF; emailed with the PDF attached through a real
SMTP server, retried with backoff, an alert once per failing address, never sent twice on purpose;
the API, the finance pages and the owner's download."""

from __future__ import annotations

import hashlib
import io
import random
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from email.message import Message
from typing import Any

import pypdf
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from billing.booking import book_conversion
from billing.document_mail import MAX_ATTEMPTS, STALE_AFTER, DocumentMailer, deliver_documents
from billing.documents import (
    DocumentError,
    Issuer,
    documents_for,
    issue_advertiser_invoice,
    issue_credit_note,
    issue_payout_receipt,
    month_start,
    next_month,
    request_resend,
)
from billing.ledger import reverse_entry
from billing.models import Alert, DocumentDelivery, FinancialDocument, ImmutableDocument
from server.auth.services import create_user
from server.config import Settings
from server.db import utcnow
from server.extensions import services
from server.finance.services import deliver_pending_documents, generate_invoices, generate_receipts
from server.links.models import Advertiser, Affiliate, Click, Conversion, Offer, SmartLink
from tests.conftest import PASSWORD, login, make_token, make_user
from tests.support.documents import add_affiliate, paid_payout
from tests.support.sinks import SmtpSink
from tests.support.stripe_mock import free_port

ISSUER = Issuer("SmartLinks Test Ltd", "1 Ledger Lane, London", "GB123456789", "billing@smartlinks.test")


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


def smtp_settings(app: Flask, port: int) -> Settings:
    return services(app).settings.with_overrides(
        {"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_from": "billing@smartlinks.test"}
    )


# -- seeding ------------------------------------------------------------------------------------
def seed_offers(app: Flask) -> None:
    with services(app).db.unit_of_work() as uow:
        s = uow.session
        s.add(Advertiser(id="adv_1", name="Acme Brands", email="ap@acme.test"))
        s.add(Advertiser(id="adv_2", name="Other Co", email="ap@other.test"))
        s.add(Affiliate(id="aff_pub", name="Publisher"))
        s.flush()
        for offer_id, advertiser_id, currency in (("off_1", "adv_1", "EUR"), ("off_2", "adv_1", "USD")):
            s.add(
                Offer(
                    id=offer_id,
                    advertiser_id=advertiser_id,
                    name=f"Offer {offer_id}",
                    url_template="https://x.test/{click_id}",
                    payout=Decimal("12.50"),
                    currency=currency,
                    countries=[],
                    devices=[],
                )
            )
        s.flush()
        s.add(
            SmartLink(
                id="lnk_1",
                slug="s1",
                name="L",
                affiliate_id="aff_pub",
                algorithm="thompson_sampling",
                algorithm_params={},
                commission_rate=Decimal("0.7000"),
            )
        )
        uow.commit()


def convert(app: Flask, offer_id: str, amount: str, currency: str, status: str = "approved") -> int:
    with services(app).db.unit_of_work() as uow:
        s = uow.session
        click_id = f"c{random.randrange(10**12)}"  # noqa: S311
        s.add(Click(id=click_id, link_id="lnk_1", offer_id=offer_id, probability=1.0, subs={}))
        s.flush()
        conversion = Conversion(
            click_id=click_id,
            txid=click_id,
            link_id="lnk_1",
            offer_id=offer_id,
            amount=Decimal(amount),
            currency=currency,
            status=status,
        )
        s.add(conversion)
        s.flush()
        if status == "approved":
            book_conversion(s, conversion.id)
        uow.commit()
        return int(conversion.id)


def pdf_text(pdf: bytes) -> str:
    assert pdf.startswith(b"%PDF-")
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)


def doc(app: Flask, number: str) -> FinancialDocument:
    with services(app).db.reading() as session:
        found = session.scalars(select(FinancialDocument).where(FinancialDocument.number == number)).one()
        session.expunge(found)
        return found


def deliveries(app: Flask) -> list[DocumentDelivery]:
    with services(app).db.reading() as session:
        rows = list(session.scalars(select(DocumentDelivery).order_by(DocumentDelivery.id)))
        session.expunge_all()
        return rows


# -- documents ----------------------------------------------------------------------------------
def test_every_paid_payout_gets_one_receipt_numbered_in_sequence(app: Flask) -> None:
    svc = services(app)
    settings = svc.settings.with_overrides(
        {"document_issuer_name": "SmartLinks Test Ltd", "document_issuer_vat": "GB1"}
    )
    add_affiliate(app, "aff_a", "a@pub.test")
    add_affiliate(app, "aff_b", "b@pub.test")
    first = paid_payout(app, "aff_a", 9000, ref="tr_123")
    paid_payout(app, "aff_b", 1234)
    paid_payout(app, "aff_a", 500, currency="JPY")
    run = generate_receipts(svc.db, settings)
    year = utcnow().year
    assert sorted(run.receipts) == [f"RCP-{year}-00000{n}" for n in (1, 2, 3)] and run.errors == []
    assert generate_receipts(svc.db, settings).receipts == []  # issued once
    with svc.db.unit_of_work() as uow:
        again, created = issue_payout_receipt(uow.session, first, ISSUER)
        assert not created
        receipt = doc(app, again.number)
    assert receipt.payout_id == first and receipt.totals == {"EUR": 9000} and receipt.recipient_email == "a@pub.test"
    text = pdf_text(receipt.pdf)
    for expected in (receipt.number, "90.00 EUR", "tr_123", "SmartLinks Test Ltd", "VAT GB1", "Publisher aff_a"):
        assert expected in text, expected
    assert "90.00 EUR" in receipt.html and "tr_123" in receipt.html
    assert hashlib.sha256(receipt.pdf).hexdigest() == receipt.pdf_sha256
    assert hashlib.sha256(receipt.html.encode()).hexdigest() == receipt.html_sha256
    with svc.db.reading() as session:
        mine = [n for n in run.receipts if doc(app, n).affiliate_id == "aff_a"]
        assert [d.number for d in documents_for(session, affiliate_id="aff_a")] == sorted(mine, reverse=True)
        assert documents_for(session, advertiser_id="adv_x") == []


def test_concurrent_issuers_number_without_gaps_and_issue_each_payout_once(app: Flask) -> None:
    db = services(app).db
    add_affiliate(app, "aff_c", "c@pub.test")
    payout_ids = [paid_payout(app, "aff_c", 100 + n) for n in range(12)]
    errors: list[BaseException] = []

    def issuer(seed: int) -> None:
        order = payout_ids[:]
        random.Random(seed).shuffle(order)
        try:
            for payout_id in order:
                with db.unit_of_work() as uow:
                    issue_payout_receipt(uow.session, payout_id, ISSUER)
                    uow.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=issuer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    with db.reading() as session:
        rows = session.execute(select(FinancialDocument.sequence, FinancialDocument.payout_id)).all()
        assert sorted(r[0] for r in rows) == list(range(1, 13))  # no gap, no duplicate
        assert sorted(r[1] for r in rows) == sorted(payout_ids)
        assert session.scalar(select(sa.func.count()).select_from(DocumentDelivery)) == 12


def test_an_issued_document_is_immutable(app: Flask) -> None:
    db = services(app).db
    add_affiliate(app, "aff_i")
    payout_id = paid_payout(app, "aff_i", 4200)
    with db.unit_of_work() as uow:
        document, _ = issue_payout_receipt(uow.session, payout_id, ISSUER)
        uow.commit()
    with db.unit_of_work() as uow, pytest.raises(ImmutableDocument):
        found = uow.session.get(FinancialDocument, document.id)
        assert found is not None
        found.recipient_name = "someone else"
        uow.session.flush()
    with db.unit_of_work() as uow, pytest.raises(ImmutableDocument):
        uow.session.execute(sa.update(FinancialDocument).values(html="<p>forged</p>"))
    with db.unit_of_work() as uow, pytest.raises(ImmutableDocument):
        found = uow.session.get(FinancialDocument, document.id)
        uow.session.delete(found)
        uow.session.flush()
    if db.engine.dialect.name == "postgresql":
        for statement in (
            f"UPDATE financial_documents SET html = 'x' WHERE id = '{document.id}'",
            f"DELETE FROM financial_documents WHERE id = '{document.id}'",
        ):
            with db.engine.connect() as conn, pytest.raises(sa.exc.DBAPIError, match="immutable"):
                conn.execute(sa.text(statement))
    assert doc(app, document.number).pdf_sha256 == document.pdf_sha256


def test_a_monthly_invoice_has_a_line_per_offer_and_a_total_per_currency(app: Flask) -> None:
    svc = services(app)
    seed_offers(app)
    for _ in range(3):
        convert(app, "off_1", "12.50", "EUR")
    convert(app, "off_1", "20.00", "EUR")
    convert(app, "off_2", "5.00", "USD")
    convert(app, "off_2", "5.00", "USD")
    convert(app, "off_1", "99.00", "EUR", status="rejected")  # never booked, never invoiced
    month = month_start(utcnow().date())
    after = datetime.combine(next_month(month), datetime.min.time()).replace(tzinfo=utcnow().tzinfo)
    with svc.db.unit_of_work() as uow, pytest.raises(DocumentError, match="not over"):
        issue_advertiser_invoice(uow.session, "adv_1", month, ISSUER)
    with svc.db.unit_of_work() as uow:
        invoice, created = issue_advertiser_invoice(uow.session, "adv_1", month, ISSUER, now=after)
        assert created and invoice is not None
        assert issue_advertiser_invoice(uow.session, "adv_2", month, ISSUER, now=after) == (None, False)
        uow.commit()
    with svc.db.unit_of_work() as uow:
        again, created = issue_advertiser_invoice(uow.session, "adv_1", month, ISSUER, now=after)
        assert not created and again is not None and again.id == invoice.id
    assert invoice.number == f"INV-{after.year}-000001"
    assert invoice.totals == {"EUR": 5750, "USD": 1000}
    lines = [(line["quantity"], line["unit"], line["amount"], line["currency"]) for line in invoice.content["lines"]]
    assert lines == [(3, "12.50", "37.50", "EUR"), (1, "20.00", "20.00", "EUR"), (2, "5.00", "10.00", "USD")]
    text = pdf_text(invoice.pdf)
    for expected in ("Total EUR", "57.50 EUR", "Total USD", "10.00 USD", "Acme Brands", f"{month:%Y-%m}"):
        assert expected in text, expected
    assert invoice.period_start == month and invoice.advertiser_id == "adv_1"
    # The job function covers every advertiser of the month once.
    assert generate_invoices(svc.db, svc.settings, month).invoices == []


def reverse_booking(app: Flask, conversion_id: int, now: datetime | None = None) -> None:
    with services(app).db.unit_of_work() as uow:
        conversion = uow.session.get(Conversion, conversion_id)
        assert conversion is not None and conversion.booked_entry_id is not None
        reverse_entry(uow.session, conversion.booked_entry_id, f"reverse-{conversion_id}", now=now)
        uow.commit()


def test_reversed_conversions_are_left_out_or_credited(app: Flask) -> None:
    """Reversed before the invoice: not invoiced. Reversed after it: a credit note against it,
    once, whatever the job's runs."""
    svc = services(app)
    seed_offers(app)
    first, second, _ = (convert(app, "off_1", "12.50", "EUR") for _ in range(3))
    convert(app, "off_2", "5.00", "USD")
    reverse_booking(app, first)  # before the invoice
    month = month_start(utcnow().date())
    after = datetime.combine(next_month(month), datetime.min.time()).replace(tzinfo=utcnow().tzinfo)
    with svc.db.unit_of_work() as uow:
        invoice, created = issue_advertiser_invoice(uow.session, "adv_1", month, ISSUER, now=after)
        assert created and invoice is not None
        uow.commit()
    assert invoice.totals == {"EUR": 2500, "USD": 500}
    assert [line["quantity"] for line in invoice.content["lines"]] == [2, 1]
    # Nothing was reversed after the invoice yet: no credit note.
    assert generate_invoices(svc.db, svc.settings, month).credit_notes == []

    reverse_booking(app, second, now=after + timedelta(days=3))
    run = generate_invoices(svc.db, svc.settings, month)
    assert len(run.credit_notes) == 1 and run.errors == []
    note = doc(app, run.credit_notes[0])
    assert note.kind == "credit_note" and note.credits_document_id == invoice.id
    assert note.totals == {"EUR": 1250}
    assert f"conversion {second} reversed" in note.content["reference"]["reason"]
    assert generate_invoices(svc.db, svc.settings, month).credit_notes == []  # once
    assert doc(app, invoice.number).totals == {"EUR": 2500, "USD": 500}  # the invoice stays as issued


def test_a_credit_note_corrects_a_document_without_changing_it(app: Flask) -> None:
    db = services(app).db
    add_affiliate(app, "aff_n", "n@pub.test")
    payout_id = paid_payout(app, "aff_n", 10_000)
    with db.unit_of_work() as uow:
        receipt, _ = issue_payout_receipt(uow.session, payout_id, ISSUER)
        note, created = issue_credit_note(
            uow.session,
            receipt.id,
            amount_minor=2_500,
            currency="EUR",
            reason="fee charged twice",
            idempotency_key="k1",
            issuer=ISSUER,
            issued_by="user:1",
        )
        assert created
        assert issue_credit_note(
            uow.session,
            receipt.id,
            amount_minor=2_500,
            currency="EUR",
            reason="fee charged twice",
            idempotency_key="k1",
            issuer=ISSUER,
            issued_by="user:1",
        ) == (note, False)
        with pytest.raises(DocumentError, match="between 0 and 75.00"):
            issue_credit_note(
                uow.session,
                receipt.id,
                amount_minor=7_501,
                currency="EUR",
                reason="too much",
                idempotency_key="k2",
                issuer=ISSUER,
                issued_by="user:1",
            )
        uow.commit()
    assert note.number == f"CRN-{utcnow().year}-000001" and note.credits_document_id == receipt.id
    assert receipt.number in pdf_text(note.pdf) and "25.00 EUR" in pdf_text(note.pdf)
    assert doc(app, receipt.number).totals == {"EUR": 10_000}


# -- email --------------------------------------------------------------------------------------
def attachment(message: Message) -> tuple[str, bytes]:
    for part in message.walk():
        if part.get_content_type() == "application/pdf":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return str(part.get_filename()), payload
    raise AssertionError("no PDF attached")


def test_a_document_is_emailed_once_with_its_pdf_attached(app: Flask, smtp: SmtpSink) -> None:
    db = services(app).db
    settings = smtp_settings(app, smtp.port)
    add_affiliate(app, "aff_m", "m@pub.test")
    paid_payout(app, "aff_m", 7_700)
    number = generate_receipts(db, settings).receipts[0]
    run = deliver_pending_documents(db, settings)
    assert run is not None and run.sent == 1
    again = deliver_pending_documents(db, settings)
    assert again is not None and again.sent == 0
    assert len(smtp.messages) == 1
    mail = smtp.messages[0]
    receipt = doc(app, number)
    [delivery] = deliveries(app)
    assert mail["To"] == "m@pub.test" and mail["X-Document-Number"] == number
    assert mail["Message-ID"] == delivery.message_id and number in delivery.message_id
    name, pdf = attachment(mail)
    assert name == f"{number}.pdf" and pdf == receipt.pdf
    assert delivery.status == "sent" and delivery.attempts == 1 and delivery.sent_at is not None


def test_no_smtp_leaves_documents_pending_and_the_page_says_so(app: Flask, client: FlaskClient) -> None:
    db = services(app).db
    add_affiliate(app, "aff_p", "p@pub.test")
    paid_payout(app, "aff_p", 100)
    generate_receipts(db, services(app).settings)
    assert deliver_pending_documents(db, services(app).settings) is None
    assert [d.status for d in deliveries(app)] == ["pending"]
    login(client, make_user(app, "finance", "fin@example.com"))
    page = client.get("/finance/documents").get_data(as_text=True)
    assert "SMTP is not configured" in page and "1 email(s) wait in the outbox" in page


def test_a_crash_after_sending_resends_the_same_message(app: Flask, smtp: SmtpSink) -> None:
    """The at-least-once bound: the server accepted the mail, the process died before writing
    `sent`. After STALE_AFTER the delivery is sent again with the same Message-ID."""
    db = services(app).db
    add_affiliate(app, "aff_k", "k@pub.test")
    paid_payout(app, "aff_k", 300)
    generate_receipts(db, services(app).settings)

    class Crash(BaseException):
        pass

    class CrashingMailer(DocumentMailer):
        def send(self, message: Any) -> None:
            super().send(message)
            raise Crash

    mailer = DocumentMailer("127.0.0.1", smtp.port, "billing@smartlinks.test")
    with pytest.raises(Crash):
        deliver_documents(db.session, CrashingMailer("127.0.0.1", smtp.port, "billing@smartlinks.test"))
    [delivery] = deliveries(app)
    assert delivery.status == "sending" and delivery.attempt_id and len(smtp.messages) == 1
    assert deliver_documents(db.session, mailer).sent == 0  # in doubt, not yet stale: no second copy
    later = deliver_documents(db.session, mailer, now=lambda: utcnow() + STALE_AFTER + timedelta(seconds=1))
    assert later.sent == 1 and len(smtp.messages) == 2
    assert smtp.messages[0]["Message-ID"] == smtp.messages[1]["Message-ID"] == delivery.message_id
    assert deliveries(app)[0].status == "sent" and deliveries(app)[0].attempts == 2
    assert deliver_documents(db.session, mailer, now=lambda: utcnow() + timedelta(days=1)).sent == 0


class _Bouncer:
    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:  # noqa: N802
        return "550 5.1.1 no such mailbox"


def test_a_permanently_failing_address_fails_once_with_one_alert(app: Flask) -> None:
    db = services(app).db
    port = free_port()
    bouncer = Controller(_Bouncer(), hostname="127.0.0.1", port=port)
    bouncer.start()
    try:
        add_affiliate(app, "aff_bad", "Gone@Pub.test")
        paid_payout(app, "aff_bad", 100)
        paid_payout(app, "aff_bad", 200)
        generate_receipts(db, services(app).settings)
        run = deliver_documents(db.session, DocumentMailer("127.0.0.1", port, "billing@smartlinks.test"))
    finally:
        bouncer.stop()
    assert run.failed == 2 and run.sent == 0
    assert [(d.status, d.attempts) for d in deliveries(app)] == [("failed", 1), ("failed", 1)]
    with db.reading() as session:
        [alert] = session.scalars(select(Alert).where(Alert.kind == "document_delivery_failed")).all()
        assert alert.occurrences == 2 and "gone@pub.test" in alert.dedupe_key
    assert deliver_documents(db.session, DocumentMailer("127.0.0.1", port, "x@y.test")).failed == 0


def test_an_unreachable_server_is_retried_with_backoff_then_alerts(app: Flask) -> None:
    db = services(app).db
    add_affiliate(app, "aff_t", "t@pub.test")
    paid_payout(app, "aff_t", 100)
    generate_receipts(db, services(app).settings)
    mailer = DocumentMailer("127.0.0.1", free_port(), "billing@smartlinks.test", timeout=2)
    clock = [utcnow()]
    first = deliver_documents(db.session, mailer, now=lambda: clock[0])
    assert first.retried == 1
    [delivery] = deliveries(app)
    assert delivery.status == "pending" and delivery.attempts == 1
    assert delivery.next_attempt_at is not None and delivery.next_attempt_at >= clock[0] + timedelta(seconds=59)
    assert deliver_documents(db.session, mailer, now=lambda: clock[0]).retried == 0  # not due yet
    for _ in range(MAX_ATTEMPTS - 1):
        clock[0] += timedelta(days=1)
        deliver_documents(db.session, mailer, now=lambda: clock[0])
    [delivery] = deliveries(app)
    assert delivery.status == "failed" and delivery.attempts == MAX_ATTEMPTS
    with db.reading() as session:
        assert session.scalar(select(sa.func.count()).select_from(Alert)) == 1


def test_resend_is_a_new_delivery_with_its_own_message_id(app: Flask, smtp: SmtpSink) -> None:
    db = services(app).db
    settings = smtp_settings(app, smtp.port)
    add_affiliate(app, "aff_r", "r@pub.test")
    paid_payout(app, "aff_r", 100)
    number = generate_receipts(db, settings).receipts[0]
    document = doc(app, number)
    with db.unit_of_work() as uow, pytest.raises(DocumentError, match="already waiting"):
        request_resend(uow.session, document.id, requested_by="user:1")
    deliver_pending_documents(db, settings)
    with db.unit_of_work() as uow:
        request_resend(uow.session, document.id, requested_by="user:1")
        uow.commit()
    deliver_pending_documents(db, settings)
    assert len(smtp.messages) == 2 and smtp.messages[0]["Message-ID"] != smtp.messages[1]["Message-ID"]
    assert [(d.generation, d.status) for d in deliveries(app)] == [(0, "sent"), (1, "sent")]


# -- API, pages, download -----------------------------------------------------------------------
def test_the_api_lists_documents_and_serves_the_pdf(app: Flask, client: FlaskClient) -> None:
    add_affiliate(app, "aff_api", "api@pub.test")
    paid_payout(app, "aff_api", 4_321)
    number = generate_receipts(services(app).db, services(app).settings).receipts[0]
    finance = {"Authorization": f"Bearer {make_token(app, 'finance')}"}
    listed = client.get("/v1/documents?kind=receipt&status=pending&entity=aff_api", headers=finance)
    assert listed.status_code == 200, listed.json
    [item] = listed.json["items"]
    assert item["number"] == number and item["totals"] == [{"currency": "EUR", "amount": "43.21", "minor": 4321}]
    assert item["delivery"]["status"] == "pending"
    assert client.get("/v1/documents?status=sent", headers=finance).json["items"] == []
    assert client.get("/v1/documents?kind=bogus", headers=finance).status_code == 400
    one = client.get(f"/v1/documents/{item['id']}", headers=finance)
    assert one.status_code == 200 and one.json["lines"][0]["amount"] == "43.21"
    pdf = client.get(f"/v1/documents/{item['id']}.pdf", headers=finance)
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and "43.21 EUR" in pdf_text(pdf.data)
    assert client.get("/v1/documents/doc_missing", headers=finance).status_code == 404
    service = {"Authorization": f"Bearer {make_token(app, 'service')}"}
    assert client.get("/v1/documents", headers=service).status_code == 403


def test_the_owner_downloads_their_document_and_nobody_else_does(app: Flask) -> None:
    db = services(app).db
    add_affiliate(app, "aff_own", "own@pub.test")
    add_affiliate(app, "aff_else", "else@pub.test")
    mine = doc(app, (paid_payout(app, "aff_own", 100), generate_receipts(db, services(app).settings))[1].receipts[0])
    paid_payout(app, "aff_else", 200)
    theirs = doc(app, generate_receipts(db, services(app).settings).receipts[0])
    with db.unit_of_work() as uow:
        create_user(uow.session, "owner@pub.test", PASSWORD, "affiliate", affiliate_id="aff_own")
        uow.commit()
    owner = app.test_client()
    login(owner, "owner@pub.test")
    got = owner.get(f"/documents/{mine.id}.pdf")
    assert got.status_code == 200 and got.data == mine.pdf
    assert owner.get(f"/documents/{mine.id}.html").status_code == 200
    assert owner.get(f"/documents/{theirs.id}.pdf").status_code == 404
    staff = app.test_client()
    login(staff, make_user(app, "auditor", "aud@example.com"))
    assert staff.get(f"/documents/{theirs.id}.pdf").data == theirs.pdf
    operator = app.test_client()
    login(operator, make_user(app, "operator", "op@example.com"))
    denied = operator.get(f"/documents/{theirs.id}.pdf")
    assert denied.status_code == 404


def test_a_finance_user_resends_and_corrects_from_the_pages(app: Flask, client: FlaskClient) -> None:
    add_affiliate(app, "aff_pg", "pg@pub.test")
    paid_payout(app, "aff_pg", 5_000)
    number = generate_receipts(services(app).db, services(app).settings).receipts[0]
    document = doc(app, number)
    csrf = login(client, make_user(app, "finance", "fin2@example.com"))
    page = client.get(f"/finance/documents/{document.id}").get_data(as_text=True)
    assert number in page and "50.00 EUR" in page
    refused = client.post(f"/finance/documents/{document.id}/resend", data={"csrf_token": csrf}, follow_redirects=True)
    assert "already waiting" in refused.get_data(as_text=True)
    noted = client.post(
        f"/finance/documents/{document.id}/credit-note",
        data={
            "csrf_token": csrf,
            "amount": "10.00",
            "currency": "EUR",
            "reason": "duplicate fee",
            "idempotency_key": "x",
        },
        follow_redirects=True,
    )
    body = noted.get_data(as_text=True)
    assert f"CRN-{utcnow().year}-000001" in body and "issued" in body
    with services(app).db.reading() as session:
        assert session.scalar(select(sa.func.count()).select_from(FinancialDocument)) == 2
