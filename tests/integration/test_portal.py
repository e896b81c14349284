"""The self-service portal, its onboarding and the terms (CGU / CGV), on both databases with the
real OPA and a real SMTP server: invitations are single-use, expire, are replaced by a new one
and are stored hashed; nothing is written when an acceptance is refused; a portal user sees its
own entity's data only and must accept the current terms (again, after a new version)."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient

from billing.models import PayoutProfile
from server import create_app
from server.auth.models import User
from server.auth.services import AuthError, create_user
from server.cli import main
from server.config import Settings
from server.db import utcnow
from server.extensions import services
from server.portal import terms as terms_module
from server.portal.models import AppendOnlyViolation, PortalInvitation, TermsAcceptance
from tests.conftest import PASSWORD, csrf_from, login, make_token, make_user
from tests.support.finance import ENCRYPTION_KEY
from tests.support.portal import seed_network
from tests.support.sinks import SmtpSink
from tests.support.stripe_mock import free_port

BASE = "https://portal.example.test"
NEW_PASSWORD = "a long enough new password"  # noqa: S105


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def settings(settings: Settings, smtp: SmtpSink) -> Settings:
    return settings.with_overrides(
        {
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "smtp_from": "network@example.test",
            "portal_base_url": BASE,
            "payout_encryption_key": ENCRYPTION_KEY,
        }
    )


def bearer(app: Flask, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(app, role)}"}


def invite(client: FlaskClient, app: Flask, email: str, entity: str = "affiliates/aff_a") -> dict[str, Any]:
    response = client.post(f"/v1/{entity}/invitations", json={"email": email}, headers=bearer(app, "operator"))
    assert response.status_code == 201, response.json
    body: dict[str, Any] = response.json
    return body


def token_of(body: dict[str, Any]) -> str:
    return str(body["token"])


def accept(client: FlaskClient, token: str, **form: str) -> Any:
    page = client.get(f"/portal/invitations/{token}")
    assert page.status_code == 200, page.get_data(as_text=True)
    data = {
        "csrf_token": csrf_from(page.get_data(as_text=True)),
        "password": NEW_PASSWORD,
        "password_confirmation": NEW_PASSWORD,
        "terms_version": "1",
        "accept": "yes",
    } | form
    return client.post(f"/portal/invitations/{token}", data=data)


def api_csrf(client: FlaskClient) -> dict[str, str]:
    html = client.get("/portal/terms").get_data(as_text=True)
    return {"X-CSRF-Token": csrf_from(html)}


def count(app: Flask, model: Any) -> int:
    with services(app).db.session() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(model)) or 0)


# -- onboarding ---------------------------------------------------------------------------------------
def test_an_invitation_is_emailed_redeemed_once_and_logs_the_new_user_in(
    app: Flask, client: FlaskClient, smtp: SmtpSink
) -> None:
    seed_network(app)
    body = invite(client, app, "Jane@Example.com")
    token = token_of(body)
    assert body["email"] == "jane@example.com" and body["state"] == "pending"
    assert body["url"] == f"{BASE}/portal/invitations/{token}" and body["email_delivery"] == "sent"
    lifetime = datetime.fromisoformat(body["expires_at"]) - datetime.fromisoformat(body["created_at"])
    assert lifetime == timedelta(days=7)
    [message] = smtp.messages
    assert message["To"] == "jane@example.com" and "Affiliate A" in message["Subject"]
    assert body["url"] in message.get_payload(decode=True).decode()
    with services(app).db.session() as session:
        stored = session.scalars(sa.select(PortalInvitation)).one()
        assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert token not in (stored.token_hash, stored.email)

    welcome = accept(client, token)
    assert welcome.status_code == 303 and welcome.headers["Location"].endswith("/portal/")
    me = client.get("/v1/portal/me").json
    assert me["entity"] == {"kind": "affiliate", "id": "aff_a", "name": "Affiliate A"}
    assert me["terms"] == {"document": "affiliate-terms", "version": "1", "accepted": True}
    with services(app).db.session() as session:
        user = session.scalars(sa.select(User).where(User.email == "jane@example.com")).one()
        assert (user.role, user.affiliate_id, user.advertiser_id) == ("affiliate", "aff_a", None)
        acceptance = session.scalars(sa.select(TermsAcceptance)).one()
        text = (terms_module.LEGAL_DIR / "affiliate-terms-v1.md").read_text()
        assert acceptance.text_sha256 == hashlib.sha256(text.encode()).hexdigest()
        assert acceptance.user_id == user.id and acceptance.client_hash and "127.0.0.1" not in acceptance.client_hash
        assert session.get(PortalInvitation, stored.id).user_id == user.id  # type: ignore[union-attr]

    again = app.test_client().get(f"/portal/invitations/{token}")
    assert again.status_code == 410 and "used already" in again.get_data(as_text=True)
    fresh = app.test_client()
    login(fresh, "jane@example.com", NEW_PASSWORD)
    assert fresh.get("/v1/portal/dashboard").status_code == 200


def test_expired_revoked_unknown_and_reused_tokens_get_readable_pages(app: Flask, client: FlaskClient) -> None:
    seed_network(app)
    first = token_of(invite(client, app, "sam@example.com"))
    second = token_of(invite(client, app, "sam@example.com"))  # re-inviting revokes the first
    page = client.get(f"/portal/invitations/{first}")
    assert page.status_code == 410 and "replaced by a newer one" in page.get_data(as_text=True)
    with services(app).db.unit_of_work() as uow:
        uow.session.execute(sa.update(PortalInvitation).values(expires_at=utcnow() - timedelta(seconds=1)))
        uow.commit()
    page = client.get(f"/portal/invitations/{second}")
    assert page.status_code == 410 and "has expired" in page.get_data(as_text=True)
    assert client.post(f"/portal/invitations/{second}", data={"password": "x"}).status_code in (400, 410)
    assert count(app, User) == 0
    for bogus in ("nope", "x" * 500, "%00"):
        page = client.get(f"/portal/invitations/{bogus}")
        assert page.status_code == 404 and "not valid" in page.get_data(as_text=True)
    listed = client.get("/v1/affiliates/aff_a/invitations", headers=bearer(app, "auditor")).json["items"]
    assert [i["state"] for i in listed] == ["expired", "revoked"]
    assert all("token" not in i for i in listed)


def test_a_refused_acceptance_writes_nothing(app: Flask, client: FlaskClient) -> None:
    seed_network(app)
    token = token_of(invite(client, app, "ann@example.com"))
    for form, message in (
        ({"password_confirmation": "something else entirely"}, "the two passwords differ"),
        ({"password": "short", "password_confirmation": "short"}, "at least 12 characters"),
        ({"accept": ""}, "to continue"),
        ({"terms_version": "0"}, "to continue"),
        ({"csrf_token": "forged"}, "The form expired"),
    ):
        response = accept(client, token, **form)
        assert response.status_code == 400 and message in response.get_data(as_text=True), form
    assert count(app, User) == 0 and count(app, TermsAcceptance) == 0
    with services(app).db.session() as session:
        assert session.scalars(sa.select(PortalInvitation.accepted_at)).one() is None
    assert accept(client, token).status_code == 303  # still usable


def test_invitation_input_errors_are_problems(app: Flask, client: FlaskClient) -> None:
    seed_network(app)
    operator = bearer(app, "operator")
    bad = client.post("/v1/affiliates/aff_a/invitations", json={"email": "not an email"}, headers=operator)
    assert bad.status_code == 400 and bad.mimetype == "application/problem+json"
    assert client.post("/v1/affiliates/aff_a/invitations", json={}, headers=operator).status_code == 400
    assert client.post("/v1/affiliates/aff_a/invitations", data="x", headers=operator).status_code == 415
    missing = client.post("/v1/affiliates/aff_nope/invitations", json={"email": "a@b.test"}, headers=operator)
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
    make_user(app, "operator", "staff@example.com")
    taken = client.post("/v1/advertisers/adv_a/invitations", json={"email": "staff@example.com"}, headers=operator)
    assert taken.status_code == 409 and taken.json["type"].endswith("/user-exists")
    forbidden = client.post(
        "/v1/affiliates/aff_a/invitations", json={"email": "a@b.test"}, headers=bearer(app, "auditor")
    )
    assert forbidden.status_code == 403
    assert count(app, PortalInvitation) == 0


def test_smtp_failure_still_returns_the_link_once(app: Flask, settings: Settings) -> None:
    seed_network(app)
    unreachable = create_app(settings.with_overrides({"smtp_port": free_port()}))
    try:
        body = invite(unreachable.test_client(), unreachable, "offline@example.com", "advertisers/adv_a")
    finally:
        services(unreachable).close()
    assert body["email_delivery"].startswith("failed") and body["token"] in body["url"]


# -- terms --------------------------------------------------------------------------------------------
def test_terms_gate_every_portal_page_until_accepted(app: Flask, client: FlaskClient) -> None:
    seed_network(app)
    email = make_user(app, "affiliate", "gated@example.com", entity_id="aff_a")
    login(client, email)
    assert client.get("/").status_code == 403  # no staff dashboard for portal users
    for path in ("/portal/", "/portal/payouts", "/portal/links/lnk_a", "/portal/payout-profile"):
        page = client.get(path)
        assert page.status_code == 302 and "/portal/terms" in page.headers["Location"], path
    gated = client.get("/v1/portal/dashboard")
    assert gated.status_code == 403 and gated.json["type"].endswith("/terms-not-accepted")
    terms = client.get("/v1/portal/terms").json
    assert terms["document"] == "affiliate-terms" and terms["accepted"] is False
    headers = api_csrf(client) | {"User-Agent": "pytest-agent/1.0"}
    stale = client.post("/v1/portal/terms/acceptances", json={"version": "0"}, headers=headers)
    assert stale.status_code == 409 and stale.json["type"].endswith("/terms-version-mismatch")
    accepted = client.post("/v1/portal/terms/acceptances", json={"version": "1"}, headers=headers)
    assert accepted.status_code == 201 and accepted.json["user_agent"] == "pytest-agent/1.0"
    assert accepted.json["text_sha256"] == terms["sha256"]
    assert client.post("/v1/portal/terms/acceptances", json={"version": "1"}, headers=headers).status_code == 201
    assert count(app, TermsAcceptance) == 1  # idempotent
    assert client.get("/v1/portal/dashboard").status_code == 200
    staff = client.get("/v1/affiliates/aff_a/terms-acceptances", headers=bearer(app, "auditor")).json["items"]
    assert [(a["email"], a["version"]) for a in staff] == [("gated@example.com", "1")]
    assert client.get("/v1/affiliates/aff_b/terms-acceptances", headers=bearer(app, "auditor")).json["items"] == []


@pytest.fixture
def legal_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "legal"
    shutil.copytree(terms_module.LEGAL_DIR, folder)
    (folder / "affiliate-terms-v2.md").write_text("# Affiliate terms, version 2\n\nNew **rules**.\n")
    monkeypatch.setattr(terms_module, "LEGAL_DIR", folder)
    terms_module._load.cache_clear()
    yield folder
    terms_module._load.cache_clear()


def test_a_new_terms_version_forces_re_acceptance(app: Flask, settings: Settings, legal_v2: Path) -> None:
    seed_network(app)
    email = make_user(app, "affiliate", "again@example.com", entity_id="aff_a")
    client = app.test_client()
    login(client, email)
    html = client.get("/portal/terms").get_data(as_text=True)
    client.post("/portal/terms", data={"csrf_token": csrf_from(html), "accept": "yes", "version": "1"})
    assert client.get("/portal/").status_code == 200

    newer = create_app(settings.with_overrides({"affiliate_terms_version": "2"}))
    try:
        client2 = newer.test_client()
        login(client2, email)
        page = client2.get("/portal/payouts")
        assert page.status_code == 302 and "/portal/terms" in page.headers["Location"]
        html = client2.get("/portal/terms").get_data(as_text=True)
        assert "<strong>rules</strong>" in html and "version 2" in html
        refused = client2.post("/portal/terms", data={"csrf_token": csrf_from(html), "version": "2"})
        assert refused.status_code == 400 and "Tick the box" in refused.get_data(as_text=True)
        done = client2.post(
            "/portal/terms",
            data={"csrf_token": csrf_from(html), "accept": "yes", "version": "2", "next": "/portal/payouts"},
        )
        assert done.status_code == 303 and done.headers["Location"].endswith("/portal/payouts")
        assert client2.get("/portal/payouts").status_code == 200
    finally:
        services(newer).close()
    with services(app).db.session() as session:
        rows = session.execute(sa.select(TermsAcceptance.version).order_by(TermsAcceptance.id)).scalars().all()
    assert rows == ["1", "2"]


def test_terms_acceptances_are_append_only(app: Flask) -> None:
    seed_network(app)
    email = make_user(app, "advertiser", "adv@example.com", entity_id="adv_a")
    client = app.test_client()
    login(client, email)
    assert (
        client.post("/v1/portal/terms/acceptances", json={"version": "1"}, headers=api_csrf(client)).status_code == 201
    )
    with services(app).db.unit_of_work() as uow:
        row = uow.session.scalars(sa.select(TermsAcceptance)).one()
        assert row.document == "advertiser-terms" and row.advertiser_id == "adv_a"
        row.version = "9"
        with pytest.raises(AppendOnlyViolation):
            uow.session.flush()
    with services(app).db.unit_of_work() as uow, pytest.raises(AppendOnlyViolation):
        uow.session.execute(sa.delete(TermsAcceptance))
    engine = services(app).db.engine
    if engine.dialect.name == "postgresql":
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text("UPDATE terms_acceptances SET version = '9'"))


# -- accounts -----------------------------------------------------------------------------------------
def test_portal_users_belong_to_exactly_one_entity(app: Flask) -> None:
    seed_network(app)
    with services(app).db.unit_of_work() as uow:
        for role, links in (
            ("affiliate", {}),
            ("affiliate", {"advertiser_id": "adv_a"}),
            ("affiliate", {"affiliate_id": "aff_a", "advertiser_id": "adv_a"}),
            ("advertiser", {"affiliate_id": "aff_a"}),
            ("affiliate", {"affiliate_id": "aff_missing"}),
            ("operator", {"affiliate_id": "aff_a"}),
        ):
            with pytest.raises(AuthError):
                create_user(uow.session, f"{role}-x@example.com", PASSWORD, role, **links)
    engine = services(app).db.engine
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO users (email, password_hash, role, active, created_at, affiliate_id) "
                "VALUES ('raw@example.com', 'x', 'operator', true, CURRENT_TIMESTAMP, 'aff_a')"
            )
        )


def test_the_cli_invites_and_prints_the_link_once(app: Flask, settings: Settings, smtp: SmtpSink) -> None:
    seed_network(app)
    env = {
        "DATABASE_URL": settings.database_url,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "PORTAL_BASE_URL": BASE,
        "SMARTLINKS_VAR_DIR": settings.var_dir,
    }
    runner = CliRunner()
    result = runner.invoke(main, ["users", "invite", "--email", "cli@example.com", "--advertiser", "adv_b"], env=env)
    assert result.exit_code == 0, result.output
    assert "email: sent" in result.output
    match = re.search(r"link \(shown once\): (\S+)", result.output)
    assert match and match.group(1).startswith(f"{BASE}/portal/invitations/")
    assert match.group(1) in smtp.messages[0].get_payload(decode=True).decode()
    both = runner.invoke(
        main, ["users", "invite", "--email", "x@example.com", "--affiliate", "aff_a", "--advertiser", "adv_a"], env=env
    )
    assert both.exit_code != 0 and "exactly one" in both.output
    unknown = runner.invoke(main, ["users", "invite", "--email", "x@example.com", "--affiliate", "aff_zz"], env=env)
    assert unknown.exit_code != 0 and "no affiliate aff_zz" in unknown.output


# -- the portal: numbers and scoping ------------------------------------------------------------------
def portal_client(app: Flask, role: str, entity_id: str, email: str) -> FlaskClient:
    make_user(app, role, email, entity_id=entity_id)
    client = app.test_client()
    login(client, email)
    response = client.post("/v1/portal/terms/acceptances", json={"version": "1"}, headers=api_csrf(client))
    assert response.status_code == 201
    return client


def test_the_affiliate_sees_its_own_numbers_only(app: Flask) -> None:
    seed_network(app)
    a = portal_client(app, "affiliate", "aff_a", "a@example.com")
    board = a.get("/v1/portal/dashboard").json
    assert [link["id"] for link in board["links"]] == ["lnk_a"]
    assert board["links"][0]["tracking_url"] == f"{BASE}/r/alpha"
    assert board["links"][0]["clicks_30d"] == 3  # the bot click does not count
    assert board["links"][0]["conversions_30d"] == 2  # the pending one does not count
    for window in ("today", "last_30_days"):
        totals = board["totals"][window]
        assert (totals["clicks"], totals["conversions"]) == (3, 2)
        assert [(e["amount"], e["currency"]) for e in totals["earnings"]] == [("14.00", "EUR")]
    [balance] = board["balances"]
    assert (balance["balance"]["amount"], balance["available"]["amount"]) == ("14.00", "14.00")
    assert [p["id"] for p in a.get("/v1/portal/payouts").json["items"]] == ["pay_a"]
    assert [c["link_id"] for c in a.get("/v1/portal/conversions").json["items"]] == ["lnk_a"] * 3
    assert a.get("/v1/portal/links/lnk_a").status_code == 200
    # another affiliate's data does not exist for this user
    other = a.get("/v1/portal/links/lnk_b")
    assert other.status_code == 404 and other.mimetype == "application/problem+json"
    assert a.get("/portal/links/lnk_b").status_code == 404
    html = a.get("/portal/").get_data(as_text=True)
    assert "alpha" in html and "bravo" not in html and "Affiliate B" not in html and "14.00 EUR" in html
    assert "pay_b" not in a.get("/portal/payouts").get_data(as_text=True)
    # nor may it reach the staff API or the advertiser portal
    assert a.get("/v1/links/lnk_b").status_code == 403
    assert a.get("/v1/payout-profiles/aff_b").status_code == 403
    assert a.get("/v1/portal/offers").status_code == 403

    b = portal_client(app, "affiliate", "aff_b", "b@example.com")
    board_b = b.get("/v1/portal/dashboard").json
    assert [link["id"] for link in board_b["links"]] == ["lnk_b"]
    assert board_b["totals"]["last_30_days"]["earnings"][0]["amount"] == "21.00"


def test_the_advertiser_sees_its_offers_and_conversions_only(app: Flask) -> None:
    seed_network(app)
    adv = portal_client(app, "advertiser", "adv_a", "buyer@example.com")
    [offer] = adv.get("/v1/portal/offers").json["items"]
    assert (offer["id"], offer["clicks_30d"], offer["conversions_30d"]) == ("off_a", 3, 2)
    assert offer["spend_30d"] == [{"amount": "20.00", "currency": "EUR"}]
    conversions = adv.get("/v1/portal/conversions").json["items"]
    assert {c["offer_id"] for c in conversions} == {"off_a"} and len(conversions) == 3
    assert adv.get("/v1/portal/dashboard").json["advertiser_id"] == "adv_a"
    page = adv.get("/portal/").get_data(as_text=True)
    assert "Offer A" in page and "Offer B" not in page and "tx-b-0" not in page
    for path in ("/v1/portal/balances", "/v1/portal/payouts", "/v1/portal/links"):
        assert adv.get(path).status_code == 403, path


def test_staff_and_tokens_are_not_portal_users(app: Flask, client: FlaskClient) -> None:
    seed_network(app)
    admin = bearer(app, "admin")
    refused = client.get("/v1/portal/dashboard", headers=admin)
    assert refused.status_code == 403 and refused.json["type"].endswith("/portal-user-required")
    assert client.get("/v1/portal/me", headers=bearer(app, "affiliate")).status_code == 403
    assert client.get("/v1/portal/dashboard").status_code == 401


def test_the_payout_profile_goes_through_the_vault(app: Flask) -> None:
    seed_network(app)
    a = portal_client(app, "affiliate", "aff_a", "payee@example.com")
    headers = api_csrf(a)
    assert a.get("/v1/portal/payout-profile").json["method"] == "none"
    saved = a.put(
        "/v1/portal/payout-profile", json={"method": "paypal", "destination": "payee@paypal.test"}, headers=headers
    )
    assert saved.status_code == 200 and saved.json["method"] == "paypal"
    assert saved.json["destination"] != "payee@paypal.test" and "payee@paypal.test" not in saved.get_data(as_text=True)
    no_destination = a.put("/v1/portal/payout-profile", json={"method": "stripe"}, headers=headers)
    assert no_destination.status_code == 200  # keeps the stored destination
    assert a.put("/v1/portal/payout-profile", json={"method": "cash"}, headers=headers).status_code == 400
    assert (
        a.put("/v1/portal/payout-profile", json={"method": "paypal", "on_hold": False}, headers=headers).status_code
        == 400
    )
    with services(app).db.session() as session:
        profile = session.get(PayoutProfile, "aff_a")
        assert profile is not None and profile.destination_enc and "payee" not in profile.destination_enc
        assert session.get(PayoutProfile, "aff_b") is None
    html = a.get("/portal/payout-profile").get_data(as_text=True)
    form = a.post("/portal/payout-profile", data={"csrf_token": csrf_from(html), "method": "bogus"})
    assert form.status_code == 400 and "Choose a payout method" in form.get_data(as_text=True)


def test_a_self_service_destination_change_is_recorded_and_confirmed_by_email(app: Flask, smtp: SmtpSink) -> None:
    seed_network(app)
    a = portal_client(app, "affiliate", "aff_a", "payee@example.com")
    headers = api_csrf(a)
    before = len(smtp.messages)
    saved = a.put(
        "/v1/portal/payout-profile", json={"method": "paypal", "destination": "payee@paypal.test"}, headers=headers
    )
    assert saved.status_code == 200 and saved.json["destination_self_service"] is True
    assert saved.json["destination_changed_at"]
    notices = smtp.messages[before:]
    assert [m["To"] for m in notices] == ["payee@example.com"]
    assert notices[0]["Subject"] == "Your SmartLinks payout destination was changed"
    assert "payee@paypal.test" not in notices[0].get_payload()  # masked in the notice too
    with services(app).db.session() as session:
        profile = session.get(PayoutProfile, "aff_a")
        assert profile is not None and profile.destination_self_service
        assert profile.destination_changed_by and profile.destination_changed_by.startswith("user:")
    # The same method without a new destination changes nothing: no notice.
    assert a.put("/v1/portal/payout-profile", json={"method": "paypal"}, headers=headers).status_code == 200
    assert len(smtp.messages) == before + 1
    page = a.get("/portal/payout-profile").get_data(as_text=True)
    assert 'id="profile-changed"' in page and "holding period" in page


def test_staff_invite_from_the_affiliate_page_and_see_acceptances(app: Flask, client: FlaskClient) -> None:
    seed_network(app)
    make_user(app, "operator", "op@example.com")
    csrf = login(client, "op@example.com")
    assert 'href="/affiliates/aff_a"' in client.get("/links").get_data(as_text=True)
    page = client.post("/affiliates/aff_a/invitations", data={"csrf_token": csrf, "email": "new@example.com"})
    html = page.get_data(as_text=True)
    assert page.status_code == 201 and "shown only this once" in html
    url = re.search(r'id="invitation-url">([^<]+)<', html)
    assert url and url.group(1).startswith(f"{BASE}/portal/invitations/")
    assert url.group(1) not in client.get("/affiliates/aff_a").get_data(as_text=True)  # shown once
    bad = client.post("/affiliates/aff_a/invitations", data={"csrf_token": csrf, "email": "nope"})
    assert bad.status_code == 400 and "not an email address" in bad.get_data(as_text=True)
    assert client.get("/advertisers/adv_missing").status_code == 404
