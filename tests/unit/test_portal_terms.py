"""The terms documents: every shipped default version exists, its hash is the hash of its text,
the renderer escapes everything (a terms file cannot inject markup), and the portal settings are
validated."""

from __future__ import annotations

import hashlib

import pytest

from server.config import ConfigError, Settings
from server.portal.terms import DOCUMENTS, TermsMissing, client_hash, render_markdown, terms_for


def test_the_default_versions_are_shipped_and_hashed() -> None:
    defaults = Settings()
    for role, document in DOCUMENTS.items():
        terms = terms_for(role, getattr(defaults, f"{role}_terms_version"))
        assert terms.document == document and terms.version == "1"
        assert terms.sha256 == hashlib.sha256(terms.text.encode()).hexdigest()
        assert "<h2>" in terms.html and "<li>" in terms.html


def test_an_unknown_or_odd_version_is_refused() -> None:
    with pytest.raises(TermsMissing):
        terms_for("affiliate", "99")
    with pytest.raises(TermsMissing):
        terms_for("affiliate", "../../etc/passwd")


def test_the_renderer_escapes_everything() -> None:
    html = render_markdown('# Title <script>\n\nText **bold** & <img src=x onerror="a()">\n\n- item <b>x</b>\n')
    assert "<script>" not in html and "<img" not in html and "<b>" not in html
    assert "&lt;script&gt;" in html and "<strong>bold</strong>" in html and "&amp;" in html
    assert html.startswith("<h2>") and "<ul>\n<li>item &lt;b&gt;x&lt;/b&gt;</li>\n</ul>" in html


def test_the_client_address_is_kept_as_a_keyed_hash() -> None:
    assert client_hash("k1", "203.0.113.9") != client_hash("k2", "203.0.113.9")
    assert "203.0.113.9" not in client_hash("k1", "203.0.113.9")


def test_portal_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {"PORTAL_INVITATION_DAYS": "3", "PORTAL_BASE_URL": "https://p.example/", "AFFILIATE_TERMS_VERSION": "2"}
    )
    assert (settings.portal_invitation_days, settings.portal_base_url) == (3, "https://p.example")
    assert (settings.affiliate_terms_version, settings.advertiser_terms_version) == ("2", "1")
    for env in ({"PORTAL_INVITATION_DAYS": "0"}, {"ADVERTISER_TERMS_VERSION": "../x"}):
        with pytest.raises(ConfigError):
            Settings.from_env(env)
