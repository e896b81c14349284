"""PDFs of financial documents print every name as written: Latin-1 text with the built-in
Helvetica, anything else with the embedded DejaVu Sans; '?' only when no font is installed."""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pypdf
import pytest

from billing import document_render
from billing.document_render import render_pdf, unicode_font_files


@pytest.fixture(autouse=True)
def _fonts_installed() -> None:
    if unicode_font_files() is None:
        pytest.fail("DejaVu Sans is missing: `make test` installs fonts-dejavu-core (scripts/system-deps.sh)")


def content(recipient: str, note: str = "Paid.") -> dict[str, Any]:
    return {
        "title": "Payout receipt",
        "number": "RCP-2026-000042",
        "issued_at": "2026-11-26T10:00:00+00:00",
        "issuer": {"name": "SmartLinks Test Ltd", "address": "1 Ledger Lane", "vat": "GB1", "email": "b@s.test"},
        "recipient": {"name": recipient, "role": "Affiliate", "id": "aff_1", "email": "a@example.com"},
        "reference": {"payout": "po_1"},
        "period": {"start": "2026-10-01", "end": "2026-10-31"},
        "lines": [{"description": "Commission", "quantity": 1, "unit": "57.50", "amount": "57.50", "currency": "EUR"}],
        "totals": [{"currency": "EUR", "amount": "57.50", "minor": 5750}],
        "note": note,
    }


def text_of(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)


def fonts_of(pdf: bytes) -> set[str]:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    fonts = reader.pages[0]["/Resources"]["/Font"]
    return {str(fonts[key].get_object()["/BaseFont"]) for key in fonts}


NOW = datetime(2026, 11, 26, tzinfo=UTC)


def test_latin1_documents_keep_the_built_in_font() -> None:
    pdf = render_pdf(content("Société Générale Müller"), NOW)
    assert "Société Générale Müller" in text_of(pdf)
    assert all("Helvetica" in font for font in fonts_of(pdf))


@pytest.mark.parametrize("name", ["Łódź Spółka z o.o.", "Ελληνική Εταιρεία", "ООО Ромашка", "Şirket Ağı"])
def test_other_scripts_print_as_written_with_an_embedded_font(name: str) -> None:
    pdf = render_pdf(content(name, note="Paid in € through Stripe."), NOW)
    text = text_of(pdf)
    assert name in text and "€" in text and "?" not in text
    assert any("DejaVu" in font for font in fonts_of(pdf))
    assert len(pdf) < 60_000  # a subset of the glyphs, not the whole font


def test_without_the_font_other_characters_print_as_question_marks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(document_render, "FONT_DIRS", ())
    monkeypatch.setenv("DOCUMENT_FONT_DIR", str(tmp_path))
    unicode_font_files.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="billing.document_render"):
            pdf = render_pdf(content("Łódź"), NOW)
    finally:
        unicode_font_files.cache_clear()
    assert "?" in text_of(pdf) and "RCP-2026-000042" in text_of(pdf)
    assert "outside Latin-1" in caplog.text


def test_document_font_dir_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = unicode_font_files()
    assert found is not None
    for path in found.values():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(document_render, "FONT_DIRS", ())
    unicode_font_files.cache_clear()
    try:
        assert unicode_font_files(str(tmp_path)) == {style: tmp_path / p.name for style, p in found.items()}
        assert unicode_font_files(None) is None
    finally:
        unicode_font_files.cache_clear()
