"""Every endpoint in the app is covered by the authz policy: anonymous callers get 401 (or the
login page), a role without the permission gets 403, and public endpoints are exactly those the
policy's data names."""

from __future__ import annotations

import json
import re
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import ROOT, make_token

DATA = json.loads(Path(ROOT / "rego" / "config" / "data.json").read_text())["authz"]


def concrete(rule: str) -> str:
    return re.sub(r"<(?:int:)?[^>]+>", lambda m: "1" if m.group(0).startswith("<int:") else "x", rule)


def routes(app: Flask) -> list[tuple[str, str, str]]:
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, concrete(rule.rule)))
    return out


def test_every_endpoint_is_named_in_the_policy(app: Flask) -> None:
    named = set(DATA["endpoints"]) | set(DATA["public_endpoints"])
    missing = sorted({endpoint for endpoint, _, _ in routes(app)} - named)
    assert not missing, f"endpoints the authz policy does not know: {missing}"


def test_anonymous_callers_are_refused_everywhere_but_public(app: Flask, client: FlaskClient) -> None:
    public = set(DATA["public_endpoints"])
    for endpoint, method, path in routes(app):
        if endpoint in public:
            continue
        response = client.open(path, method=method, headers={"Accept": "application/json"})
        assert response.status_code == 401, (endpoint, method, path, response.status_code)


def test_anonymous_pages_redirect_to_login(client: FlaskClient) -> None:
    response = client.get("/decisions", headers={"Accept": "text/html"})
    assert response.status_code == 302 and "/login?next=" in response.headers["Location"]


def test_a_role_without_permission_gets_403(app: Flask, client: FlaskClient) -> None:
    header = {"Authorization": f"Bearer {make_token(app, 'advertiser')}", "Accept": "application/json"}
    public = set(DATA["public_endpoints"])
    allowed = {"session", "portal:advertiser"}
    checked = 0
    for endpoint, method, path in routes(app):
        if endpoint in public:
            continue
        permission = DATA["endpoints"][endpoint]
        if isinstance(permission, dict):
            permission = permission.get(method)
        if permission in allowed:
            continue
        response = client.open(path, method=method, headers=header)
        assert response.status_code == 403, (endpoint, method, path, response.status_code)
        checked += 1
    assert checked >= 5


def test_admin_reaches_protected_endpoints(app: Flask, client: FlaskClient) -> None:
    header = {"Authorization": f"Bearer {make_token(app, 'admin')}"}
    assert client.get("/v1/decisions", headers=header).status_code == 200
    assert client.get("/v1/controls", headers=header).status_code == 200
    assert client.get("/v1/tokens", headers=header).status_code == 200
