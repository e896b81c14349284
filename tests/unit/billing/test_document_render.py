"""Rendering of financial documents from their content (no database): the HTML escapes what it
shows, the PDF is a real PDF whose text has the lines and totals, and a name outside the PDF core
fonts' Latin-1 prints with '?' instead of failing; the month arithmetic of invoices."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime
from typing import Any

import pypdf

from billing.document_render import render_html, render_pdf
from billing.documents import next_month, previous_month

CONTENT: dict[str, Any] = {
    "title": "Invoice",
    "number": "INV-2026-000007",
    "kind": "invoice",
    "issued_at": "2026-11-01T00:05:00+00:00",
    "issuer": {"name": "SmartLinks Ltd", "address": "1 Road", "vat": "GB123", "email": ""},
    "recipient": {"name": "Zoë <Brands> 株式会社", "id": "adv_1", "role": "Advertiser", "email": "ap@z.test"},
    "reference": {"month": "2026-10"},
    "period": {"start": "2026-10-01", "end": "2026-10-31"},
    "lines": [
        {"description": "Offer A", "quantity": 3, "unit": "12.50", "amount": "37.50", "currency": "EUR"},
        {"description": "Offer B", "quantity": 2, "unit": "500", "amount": "1000", "currency": "JPY"},
    ],
    "totals": [
        {"currency": "EUR", "amount": "37.50", "minor": 3750},
        {"currency": "JPY", "amount": "1000", "minor": 1000},
    ],
    "note": "Amounts per currency.",
}


def test_the_pdf_is_a_pdf_with_the_lines_and_totals() -> None:
    pdf = render_pdf(CONTENT, datetime(2026, 11, 1, tzinfo=UTC))
    assert pdf.startswith(b"%PDF-")
    text = pypdf.PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    for expected in ("INV-2026-000007", "VAT GB123", "Total EUR", "37.50 EUR", "Total JPY", "1000 JPY", "Zoë"):
        assert expected in text, expected
    assert "????" in text  # the CJK characters, not an exception


def test_the_html_escapes_and_shows_the_totals() -> None:
    html = render_html(CONTENT)
    assert "Zoë &lt;Brands&gt;" in html and "<Brands>" not in html
    assert "37.50 EUR" in html and "1000 JPY" in html and 'id="document-number">INV-2026-000007' in html


def test_invoice_months() -> None:
    assert next_month(date(2026, 12, 1)) == date(2027, 1, 1)
    assert previous_month(date(2026, 1, 15)) == date(2025, 12, 1)
    assert previous_month(date(2026, 3, 1)) == date(2026, 2, 1)
