"""Real answers of the click redirect, the postback and the optimize API conform to the OpenAPI
document (status, media type, body schema)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from server.clicks.redirect import click_handler
from tests.conftest import make_token
from tests.integration.test_openapi import SPEC_PATH, SPEC_URI, conforms
from tests.support import factories

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    loaded = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def registry(spec: dict[str, Any]) -> Registry:
    return Registry().with_resource(SPEC_URI, Resource.from_contents(spec, default_specification=DRAFT202012))


@pytest.fixture(autouse=True)
def _close_click_path(app: Flask) -> Iterator[None]:
    yield
    click_handler(app).close()


def test_click_postback_and_optimize_answers_conform(
    app: Flask, client: FlaskClient, spec: dict[str, Any], registry: Registry
) -> None:
    link_id = factories.seed_link(app, {"a": 0.5, "b": 0.5}, slug="doc", params={"n_samples": 500})
    json_only = {"Accept": "application/json"}
    conforms(spec, registry, client.get("/r/missing", headers=json_only), "/r/{slug}", "get")
    redirect = client.get("/r/doc", headers={"User-Agent": BROWSER})
    assert redirect.status_code == 302 and "302" in spec["paths"]["/r/{slug}"]["get"]["responses"]
    click_id = redirect.headers["Location"].split("cid=")[1].split("&")[0]

    body = conforms(spec, registry, client.get("/postback", query_string={"cid": click_id}), "/postback", "get")
    assert body["duplicate"] is False
    again = client.post("/postback", json={"click_id": click_id})
    assert conforms(spec, registry, again, "/postback", "post")["duplicate"] is True
    bad = client.get("/postback", query_string={"cid": click_id, "payout": "1.00001"})
    assert conforms(spec, registry, bad, "/postback", "get")["errors"]["payout"]
    conforms(spec, registry, client.get("/postback", query_string={"cid": "0" * 32}), "/postback", "get")

    admin = {"Authorization": f"Bearer {make_token(app, 'admin')}"}
    path = "/v1/links/{link_id}/optimize"
    ok = client.post(f"/v1/links/{link_id}/optimize", headers=admin)
    assert conforms(spec, registry, ok, path, "post")["outcome"] in ("allowed", "clamped")
    factories.seed_link(app, {"c": 1.0}, id="lnk_paused_doc", status="paused")
    skipped = client.post("/v1/links/lnk_paused_doc/optimize", headers=admin)
    assert conforms(spec, registry, skipped, path, "post")["outcome"] == "skipped"
    missing = client.post("/v1/links/nope/optimize", headers=admin)
    assert conforms(spec, registry, missing, path, "post")["status"] == 404
