"""User administration: admins list users, deactivate and reactivate them, change staff roles;
nobody locks the platform out. Invitations can be revoked. API and pages."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from server.auth.models import ApiToken, User
from server.extensions import services
from server.governance.models import Decision
from server.portal.models import PortalInvitation
from tests.conftest import PASSWORD, csrf_from, login, make_token, make_user


def user_id(app: Flask, email: str) -> int:
    with services(app).db.session() as session:
        return int(session.scalars(sa.select(User.id).where(User.email == email)).one())


def test_admins_list_users_and_others_may_not(app: Flask, client: FlaskClient) -> None:
    make_user(app, "finance")
    make_user(app, "affiliate", "aff@example.com")
    admin = {"Authorization": f"Bearer {make_token(app, 'admin')}"}
    items = client.get("/v1/users", headers=admin).json["items"]
    by_email = {u["email"]: u for u in items}
    assert by_email["finance@example.com"]["role"] == "finance" and by_email["finance@example.com"]["active"]
    assert by_email["aff@example.com"]["affiliate_id"] == "aff_aff"
    assert all("password" not in key for u in items for key in u)
    for role in ("operator", "finance", "auditor", "service"):
        headers = {"Authorization": f"Bearer {make_token(app, role, f'{role}-list')}"}
        assert client.get("/v1/users", headers=headers).status_code == 403
        assert (
            client.patch(
                f"/v1/users/{user_id(app, 'finance@example.com')}", json={"active": False}, headers=headers
            ).status_code
            == 403
        )


def test_a_deactivated_user_is_signed_out_at_once_and_cannot_log_in(app: Flask, client: FlaskClient) -> None:
    make_user(app, "admin", "boss@example.com")
    make_user(app, "operator", "op@example.com")
    operator = app.test_client()
    login(operator, "op@example.com")
    assert operator.get("/v1/me").json["roles"] == ["operator"]

    csrf = {"X-CSRF-Token": login(client, "boss@example.com")}
    target = user_id(app, "op@example.com")
    off = client.patch(f"/v1/users/{target}", json={"active": False}, headers=csrf)
    assert off.status_code == 200 and off.json["active"] is False
    assert operator.get("/v1/me").status_code == 401  # the live session ends at its next request
    fresh = app.test_client()
    form = {"email": "op@example.com", "password": PASSWORD}
    form["csrf_token"] = csrf_from(fresh.get("/login").get_data(as_text=True))
    assert fresh.post("/login", data=form).status_code == 401

    on = client.patch(f"/v1/users/{target}", json={"active": True, "role": "auditor"}, headers=csrf)
    assert on.status_code == 200 and on.json["active"] is True and on.json["role"] == "auditor"
    login(operator, "op@example.com")
    assert operator.get("/v1/me").json["roles"] == ["auditor"]


def test_nobody_locks_the_platform_out(app: Flask, client: FlaskClient) -> None:
    make_user(app, "admin", "boss@example.com")
    make_user(app, "affiliate", "aff@example.com")
    csrf = {"X-CSRF-Token": login(client, "boss@example.com")}
    me = user_id(app, "boss@example.com")
    mine = client.patch(f"/v1/users/{me}", json={"active": False}, headers=csrf)
    assert mine.status_code == 403 and mine.json["type"].endswith("/denied-by-policy")
    assert {r["code"] for r in mine.json["reasons"]} == {"self_change", "last_admin"}  # both rules say no
    demoted = client.patch(f"/v1/users/{me}", json={"role": "auditor"}, headers=csrf)
    assert {r["code"] for r in demoted.json["reasons"]} == {"self_change", "last_admin"}

    # Through a token (no user behind it), the last active admin still cannot go.
    token = {"Authorization": f"Bearer {make_token(app, 'admin')}"}
    last = client.patch(f"/v1/users/{me}", json={"role": "finance"}, headers=token)
    assert last.status_code == 403 and {r["code"] for r in last.json["reasons"]} == {"last_admin"}
    make_user(app, "admin", "second@example.com")
    demote = client.patch(f"/v1/users/{me}", json={"role": "finance"}, headers=token)
    assert demote.status_code == 200 and demote.json["decision"]["outcome"] == "allowed"
    with services(app).db.session() as session:
        decisions = session.execute(
            sa.select(Decision.target_id, Decision.outcome).where(Decision.action_type == "user.update")
        ).all()
    assert sorted(decisions) == sorted(
        [(f"user:{me}", "denied"), (f"user:{me}", "denied"), (f"user:{me}", "denied"), (f"user:{me}", "allowed")]
    )  # every decision recorded, the denials too
    unchanged = client.patch(f"/v1/users/{me}", json={"role": "finance"}, headers=token)
    assert unchanged.status_code == 200 and unchanged.json["decision"] is None

    portal = user_id(app, "aff@example.com")
    moved = client.patch(f"/v1/users/{portal}", json={"role": "operator"}, headers=token)
    assert moved.status_code == 409 and "portal users" in moved.json["detail"]
    assert client.patch(f"/v1/users/{portal}", json={"active": False}, headers=token).status_code == 200

    bad = client.patch(f"/v1/users/{portal}", json={"role": "service"}, headers=token)
    assert bad.status_code == 400 and "role" in bad.json["errors"]
    assert client.patch(f"/v1/users/{portal}", json={}, headers=token).status_code == 400
    assert client.patch("/v1/users/999999", json={"active": True}, headers=token).status_code == 404
    with services(app).db.session() as session:
        roles = dict(session.execute(sa.select(User.email, User.role)).all())
    assert roles == {"boss@example.com": "finance", "second@example.com": "admin", "aff@example.com": "affiliate"}


def test_a_pending_invitation_is_revoked_and_its_link_stops_working(app: Flask, client: FlaskClient) -> None:
    from server.links.models import Affiliate

    with services(app).db.unit_of_work() as uow:
        uow.session.add(Affiliate(id="aff_a", name="Affiliate A"))
        uow.commit()
    operator = {"Authorization": f"Bearer {make_token(app, 'operator')}"}
    invited = client.post("/v1/affiliates/aff_a/invitations", json={"email": "sam@example.com"}, headers=operator)
    assert invited.status_code == 201
    link = invited.json["url"].split("://", 1)[1].split("/", 1)[1]
    auditor = {"Authorization": f"Bearer {make_token(app, 'auditor')}"}
    assert client.post(f"/v1/invitations/{invited.json['id']}/revoke", headers=auditor).status_code == 403
    revoked = client.post(f"/v1/invitations/{invited.json['id']}/revoke", headers=operator)
    assert revoked.status_code == 200 and revoked.json["state"] == "revoked"
    assert client.get(f"/{link}").status_code == 410
    again = client.post(f"/v1/invitations/{invited.json['id']}/revoke", headers=operator)
    assert again.status_code == 409 and "revoked" in again.json["detail"]
    assert client.post("/v1/invitations/424242/revoke", headers=operator).status_code == 404
    with services(app).db.session() as session:
        assert session.scalars(sa.select(PortalInvitation.revoked_at)).one() is not None


def test_the_users_page_deactivates_changes_roles_and_manages_tokens(app: Flask, client: FlaskClient) -> None:
    make_user(app, "admin", "boss@example.com")
    make_user(app, "finance", "fin@example.com")
    login(client, "boss@example.com")
    page = client.get("/admin/users")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "fin@example.com" in html and "(you)" in html
    csrf = csrf_from(html)
    fin = user_id(app, "fin@example.com")
    done = client.post(f"/admin/users/{fin}", data={"csrf_token": csrf, "change": "deactivate"})
    assert done.status_code == 302
    assert "fin@example.com: deactivated" in client.get("/admin/users").get_data(as_text=True)
    role = client.post(f"/admin/users/{fin}", data={"csrf_token": csrf, "change": "role", "role": "operator"})
    assert role.status_code == 302
    me = user_id(app, "boss@example.com")
    refused = client.post(f"/admin/users/{me}", data={"csrf_token": csrf, "change": "deactivate"})
    assert refused.status_code == 403 and "ask another admin" in refused.get_data(as_text=True)
    assert (
        client.post(f"/admin/users/{fin}", data={"csrf_token": csrf, "change": "role", "role": "service"}).status_code
        == 400
    )
    assert client.post(f"/admin/users/{fin}", data={"change": "activate"}).status_code == 403  # no CSRF token

    created = client.post("/admin/tokens", data={"csrf_token": csrf, "name": "etl", "role": "service"})
    body = created.get_data(as_text=True)
    assert created.status_code == 201 and 'id="token-value">slk_' in body
    plain = body.split('id="token-value">', 1)[1].split("<", 1)[0]
    assert app.test_client().get("/v1/me", headers={"Authorization": f"Bearer {plain}"}).status_code == 200
    with services(app).db.session() as session:
        token_id = session.scalars(sa.select(ApiToken.id).where(ApiToken.name == "etl")).one()
    assert client.post(f"/admin/tokens/{token_id}/revoke", data={"csrf_token": csrf}).status_code == 302
    assert app.test_client().get("/v1/me", headers={"Authorization": f"Bearer {plain}"}).status_code == 401
    assert client.post("/admin/tokens", data={"csrf_token": csrf, "name": "", "role": "service"}).status_code == 400
    with services(app).db.session() as session:
        user = session.get(User, fin)
        assert user is not None and (user.active, user.role) == (False, "operator")

    operator = app.test_client()
    make_user(app, "operator", "op@example.com")
    login(operator, "op@example.com")
    assert operator.get("/admin/users").status_code == 403
