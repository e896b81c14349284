"""The legal terms portal users accept: the affiliate terms (CGU) and the advertiser terms (CGV).

Each version is a Markdown file shipped in server/legal/ (`<document>-v<version>.md`); the
current version of each document is a setting, so a new version is a new file plus a setting
change, and every portal user of that kind accepts it again before any other portal page.
An acceptance records the SHA-256 of the exact text shown, so what was accepted can be proven."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from markupsafe import Markup, escape

LEGAL_DIR = Path(__file__).resolve().parent.parent / "legal"
DOCUMENTS = {"affiliate": "affiliate-terms", "advertiser": "advertiser-terms"}
TITLES = {"affiliate-terms": "Affiliate terms of use (CGU)", "advertiser-terms": "Advertiser terms of sale (CGV)"}


class TermsMissing(RuntimeError):
    """The configured version of a terms document is not shipped."""


@dataclass(frozen=True)
class TermsDocument:
    document: str
    version: str
    title: str
    text: str
    sha256: str

    @property
    def html(self) -> Markup:
        return render_markdown(self.text)


def terms_for(role: str, version: str) -> TermsDocument:
    """The terms a portal user of `role` must accept, at `version`."""
    return _load(DOCUMENTS[role], version)


@lru_cache(maxsize=32)
def _load(document: str, version: str) -> TermsDocument:
    path = LEGAL_DIR / f"{document}-v{version}.md"
    if not re.fullmatch(r"[0-9A-Za-z.-]{1,20}", version) or not path.is_file():
        raise TermsMissing(f"{document} version {version} is not shipped ({path.name} missing)")
    text = path.read_text(encoding="utf-8")
    return TermsDocument(document, version, TITLES[document], text, hashlib.sha256(text.encode()).hexdigest())


def client_hash(secret_key: str, address: str) -> str:
    """A salted hash of the client address: proves which address accepted without storing it."""
    key = hmac.new(secret_key.encode(), b"smartlinks terms acceptance address", hashlib.sha256).digest()
    return hmac.new(key, address.encode(), hashlib.sha256).hexdigest()


_INLINE = re.compile(r"\*\*(.+?)\*\*")


def _inline(text: str) -> Markup:
    escaped = str(escape(text))
    return Markup(_INLINE.sub(r"<strong>\1</strong>", escaped))  # noqa: S704 - the text was escaped first


def render_markdown(text: str) -> Markup:
    """The small Markdown subset the terms use (headings, paragraphs, bullet lists, bold), with
    every character of the source escaped first: a terms file can never inject markup."""
    out: list[str] = []
    paragraph: list[str] = []
    in_list = False

    def flush() -> None:
        nonlocal in_list
        if paragraph:
            out.append(f"<p>{_inline(' '.join(paragraph))}</p>")
            paragraph.clear()
        if in_list:
            out.append("</ul>")
            in_list = False

    for raw in text.splitlines():
        line = raw.strip()
        heading = re.match(r"^(#{1,4})\s+(.*)$", line)
        if not line:
            flush()
        elif heading:
            flush()
            level = min(len(heading.group(1)) + 1, 5)  # the page's own title is the h1
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif line.startswith(("- ", "* ")):
            if paragraph:
                out.append(f"<p>{_inline(' '.join(paragraph))}</p>")
                paragraph.clear()
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{_inline(line[2:])}</li>")
        else:
            if in_list:
                out.append("</ul>")
                in_list = False
            paragraph.append(line)
    flush()
    return Markup("\n".join(out))  # noqa: S704 - built from escaped pieces only
