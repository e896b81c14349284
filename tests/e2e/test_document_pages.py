"""The financial documents pages in a real browser: a finance user filters the list, opens a
receipt, downloads its PDF and resends it by email (a real SMTP server receives it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from server.config import Settings
from server.extensions import services
from server.finance.services import deliver_pending_documents, generate_receipts
from server.policy.bundle import BundleInfo
from server.policy.sidecar import OpaSidecar
from tests.conftest import make_settings, make_user
from tests.e2e.test_pages import log_in
from tests.support.documents import add_affiliate, paid_payout
from tests.support.sinks import SmtpSink

pytestmark = pytest.mark.browser


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def settings(
    database_url: str, opa_sidecar: OpaSidecar, policy_bundle: BundleInfo, tmp_path: Path, smtp: SmtpSink
) -> Settings:
    return make_settings(
        database_url,
        opa_sidecar.url,
        tmp_path,
        policy_revision=policy_bundle.revision,
        smtp_host="127.0.0.1",
        smtp_port=smtp.port,
        smtp_from="billing@smartlinks.test",
        document_issuer_name="SmartLinks Test Ltd",
    )


def test_a_receipt_is_listed_downloaded_and_resent(app: Flask, live_server: str, page: Any, smtp: SmtpSink) -> None:
    svc = services(app)
    add_affiliate(app, "aff_e2e", "e2e@pub.test")
    add_affiliate(app, "aff_other", "other@pub.test")
    paid_payout(app, "aff_e2e", 12_345)
    paid_payout(app, "aff_other", 100)
    numbers = generate_receipts(svc.db, svc.settings).receipts
    assert deliver_pending_documents(svc.db, svc.settings).sent == 2  # type: ignore[union-attr]
    assert len(smtp.messages) == 2

    log_in(page, live_server, make_user(app, "finance", "fin@example.com"))
    page.wait_for_url(f"{live_server}/decisions")
    page.click("header nav >> text=Finance")
    page.click("nav.subnav >> text=Documents")
    assert page.locator("#documents tbody tr[data-document]").count() == 2
    assert page.locator("#smtp-missing").count() == 0
    page.fill("#document-filters input[name=entity]", "aff_e2e")
    page.select_option("#document-filters select[name=status]", "sent")
    page.click("#document-filters button")
    rows = page.locator("#documents tbody tr[data-document]")
    assert rows.count() == 1 and "123.45 EUR" in rows.inner_text() and "sent" in rows.inner_text()
    rows.locator("a").first.click()
    number = page.locator("#document-number").inner_text()
    assert number in numbers
    assert page.locator("#lines .total").inner_text() == "123.45 EUR"

    with page.expect_download() as download_info:
        page.click("#download-pdf")
    download = download_info.value
    assert download.suggested_filename == f"{number}.pdf"
    pdf = Path(download.path()).read_bytes()
    assert pdf.startswith(b"%PDF-")

    page.click("#resend button")
    assert "1 sent" in page.locator(".flash").inner_text()
    assert page.locator("#deliveries tbody tr").count() == 2
    assert page.locator("#deliveries tr[data-generation='1'] .status").inner_text() == "sent"
    assert len(smtp.messages) == 3 and smtp.messages[-1]["X-Document-Number"] == number
    assert smtp.messages[-1]["Message-ID"] != smtp.messages[0]["Message-ID"]


def test_an_auditor_reads_documents_but_cannot_resend(app: Flask, live_server: str, page: Any) -> None:
    svc = services(app)
    add_affiliate(app, "aff_aud", "aud@pub.test")
    paid_payout(app, "aff_aud", 500)
    generate_receipts(svc.db, svc.settings)
    log_in(page, live_server, make_user(app, "auditor", "auditor@example.com"))
    page.wait_for_url(f"{live_server}/decisions")
    page.goto(f"{live_server}/finance/documents")
    page.locator("#documents tbody tr a").first.click()
    assert page.locator("#download-pdf").is_visible()
    assert page.locator("#resend").count() == 0
