"""Rendering of financial documents from their stored content: HTML through a Jinja template
(billing/templates/document.html, autoescaped) and PDF through fpdf2 (pure Python).

Both read only the content dict, so a document renders the same way each time; the issued bytes
are stored with the document anyway (billing/documents.py), and those are what is sent."""

from __future__ import annotations

import functools
import json
import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES = Path(__file__).resolve().parent / "templates"
# Where the Unicode font for PDFs is looked for (DOCUMENT_FONT_DIR first): Debian's and Fedora's
# DejaVu packages (fonts-dejavu-core; the Dockerfile installs it).
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu-sans-fonts", "/usr/share/fonts/dejavu")
FONT_FILES = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf"}

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        keep_trailing_newline=True,
    )


def render_html(content: dict[str, Any]) -> str:
    return _environment().get_template("document.html").render(d=content)


def _latin1(text: object) -> str:
    """Text for the core fonts, which are Latin-1: a character outside it prints as '?'."""
    return str(text).encode("latin-1", "replace").decode("latin-1")


@functools.lru_cache(maxsize=4)
def unicode_font_files(font_dir: str | None = None) -> dict[str, Path] | None:
    """The DejaVu Sans regular and bold files, from `font_dir` (DOCUMENT_FONT_DIR) or the usual
    system places; None when they are not there."""
    for folder in ((font_dir,) if font_dir else ()) + FONT_DIRS:
        files = {style: Path(folder) / name for style, name in FONT_FILES.items()}
        if all(path.is_file() for path in files.values()):
            return files
    return None


def _is_latin1(content: dict[str, Any]) -> bool:
    try:
        json.dumps(content, ensure_ascii=False, default=str).encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def render_pdf(content: dict[str, Any], created_at: datetime) -> bytes:
    """The document as a PDF. Text in Latin-1 (most names and addresses in Western Europe and the
    Americas) uses the PDF's built-in Helvetica (7 ms a page, nothing embedded); other text (a
    Polish, Greek, Turkish or Cyrillic name, a euro sign) uses DejaVu Sans, embedded as a subset
    (90 ms, ~17 KB): the font is loaded only for the documents that need it. Without the font
    files such characters print as '?' (logged), as before."""
    family, clean = "Helvetica", _latin1
    files: dict[str, Path] | None = None
    if not _is_latin1(content):
        files = unicode_font_files(os.environ.get("DOCUMENT_FONT_DIR") or None)
        if files is None:
            log.warning(
                "document %s has characters outside Latin-1 and no DejaVu Sans font was found "
                "(install fonts-dejavu-core or set DOCUMENT_FONT_DIR): they print as '?'",
                content.get("number"),
            )
        else:
            family = "DejaVu"

            def clean(text: object) -> str:
                return str(text)

    pdf = FPDF(format="A4")
    if family == "DejaVu" and files is not None:  # embedded as a subset of the glyphs used
        for style, path in files.items():
            pdf.add_font(family, style=style, fname=str(path))
    pdf.set_creation_date(created_at)
    pdf.set_title(clean(f"{content['title']} {content['number']}"))
    pdf.set_author(clean(content["issuer"]["name"]))
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    width = pdf.epw

    def line(text: str, *, size: int = 10, style: str = "", height: float = 5.5) -> None:
        pdf.set_font(family, style=style, size=size)
        pdf.multi_cell(width, height, clean(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    line(content["title"], size=16, style="B", height=9)
    line(f"{content['number']}  -  issued {content['issued_at'][:10]}", style="B")
    pdf.ln(4)
    issuer, recipient = content["issuer"], content["recipient"]
    line("From", style="B")
    for text in (
        issuer["name"],
        issuer.get("address"),
        issuer.get("vat") and f"VAT {issuer['vat']}",
        issuer.get("email"),
    ):
        if text:
            line(str(text))
    pdf.ln(2)
    line("To", style="B")
    line(recipient["name"])
    line(f"{recipient['role']} {recipient['id']}")
    if recipient.get("email"):
        line(str(recipient["email"]))
    pdf.ln(2)
    for key, value in content.get("reference", {}).items():
        if value:
            line(f"{key.replace('_', ' ')}: {value}")
    period = content.get("period") or {}
    if period.get("end"):
        line(f"period: {period['start'] + ' to ' if period.get('start') else 'up to '}{period['end']}")
    pdf.ln(4)

    columns = (width * 0.52, width * 0.12, width * 0.18, width * 0.18)
    pdf.set_font(family, style="B", size=10)
    for title, w, align in zip(("Description", "Qty", "Unit", "Amount"), columns, "LRRR", strict=True):
        pdf.cell(w, 7, title, border="B", align=align)
    pdf.ln(7)
    pdf.set_font(family, size=9)
    for item in content["lines"]:
        cells = (
            item["description"],
            str(item["quantity"]),
            f"{item['unit']} {item['currency']}",
            f"{item['amount']} {item['currency']}",
        )
        for text, w, align in zip(cells, columns, "LRRR", strict=True):
            pdf.cell(w, 6, clean(text)[:70], align=align)
        pdf.ln(6)
    pdf.set_font(family, style="B", size=10)
    for total in content["totals"]:
        pdf.cell(sum(columns[:3]), 7, clean(f"Total {total['currency']}"), border="T")
        pdf.cell(columns[3], 7, clean(f"{total['amount']} {total['currency']}"), border="T", align="R")
        pdf.ln(7)
    pdf.ln(4)
    line(content.get("note", ""), size=9)
    return bytes(pdf.output())
