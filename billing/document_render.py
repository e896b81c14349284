"""Rendering of financial documents from their stored content: HTML through a Jinja template
(billing/templates/document.html, autoescaped) and PDF through fpdf2 (pure Python).

Both read only the content dict, so a document renders the same way each time; the issued bytes
are stored with the document anyway (billing/documents.py), and those are what is sent."""

from __future__ import annotations

import functools
from datetime import datetime
from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from jinja2 import Environment, FileSystemLoader, select_autoescape

TEMPLATES = Path(__file__).resolve().parent / "templates"


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
    """The PDF's core fonts are Latin-1: a character outside it prints as '?', never fails."""
    return str(text).encode("latin-1", "replace").decode("latin-1")


def render_pdf(content: dict[str, Any], created_at: datetime) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_creation_date(created_at)
    pdf.set_title(_latin1(f"{content['title']} {content['number']}"))
    pdf.set_author(_latin1(content["issuer"]["name"]))
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    width = pdf.epw

    def line(text: str, *, size: int = 10, style: str = "", height: float = 5.5) -> None:
        pdf.set_font("Helvetica", style=style, size=size)
        pdf.multi_cell(width, height, _latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

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
    pdf.set_font("Helvetica", style="B", size=10)
    for title, w, align in zip(("Description", "Qty", "Unit", "Amount"), columns, "LRRR", strict=True):
        pdf.cell(w, 7, title, border="B", align=align)
    pdf.ln(7)
    pdf.set_font("Helvetica", size=9)
    for item in content["lines"]:
        cells = (
            item["description"],
            str(item["quantity"]),
            f"{item['unit']} {item['currency']}",
            f"{item['amount']} {item['currency']}",
        )
        for text, w, align in zip(cells, columns, "LRRR", strict=True):
            pdf.cell(w, 6, _latin1(text)[:70], align=align)
        pdf.ln(6)
    pdf.set_font("Helvetica", style="B", size=10)
    for total in content["totals"]:
        pdf.cell(sum(columns[:3]), 7, _latin1(f"Total {total['currency']}"), border="T")
        pdf.cell(columns[3], 7, _latin1(f"{total['amount']} {total['currency']}"), border="T", align="R")
        pdf.ln(7)
    pdf.ln(4)
    line(content.get("note", ""), size=9)
    return bytes(pdf.output())
