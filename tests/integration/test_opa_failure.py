"""Fail closed: with OPA unreachable, slow or answering nonsense, nothing is allowed; /readyz is
503 while OPA is down, and the server recovers without a restart when OPA comes back."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from flask import Flask

from server import create_app
from server.extensions import services
from server.governance.models import Decision
from server.policy.bundle import BundleInfo
from server.policy.sidecar import OpaSidecar
from tests.conftest import make_settings, make_token
from tests.integration.test_decisions_api import allocation


@pytest.fixture
def own_opa(opa_bin: Path, policy_bundle: BundleInfo, tmp_path: Path) -> Iterator[OpaSidecar]:
    sidecar = OpaSidecar(opa_bin, policy_bundle.path, tmp_path / "opa.log")
    sidecar.start()
    sidecar.wait_ready(30)
    yield sidecar
    sidecar.stop()


def app_for(database_url: str, opa_url: str, tmp_path: Path, **extra: object) -> Flask:
    app = create_app(make_settings(database_url, opa_url, tmp_path, **extra))
    app.testing = True
    return app


def test_opa_down_denies_and_recovers(database_url: str, own_opa: OpaSidecar, tmp_path: Path) -> None:
    app = app_for(database_url, own_opa.url, tmp_path)
    client = app.test_client()
    header = {"Authorization": f"Bearer {make_token(app, 'service')}"}
    assert client.post("/v1/decisions", json=allocation({"a": 0.5, "b": 0.5}), headers=header).json["allow"]

    own_opa.stop()
    response = client.post("/v1/decisions", json=allocation({"a": 0.5, "b": 0.5}), headers=header)
    assert response.status_code == 503
    assert response.json["allow"] is False
    assert [r["code"] for r in response.json["reasons"]] == ["opa_unavailable"]
    with services(app).db.unit_of_work() as uow:
        failed = uow.session.get(Decision, response.json["decision_id"])
        assert failed is not None and failed.outcome == "error" and failed.error_code == "opa_unavailable"
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["not_ready"] == ["opa"]
    assert client.get("/healthz").status_code == 200
    assert client.get("/v1/decisions", headers=header).status_code == 503  # authz cannot be decided either

    own_opa.start()
    own_opa.wait_ready(30)
    assert client.get("/readyz").status_code == 200
    assert client.post("/v1/decisions", json=allocation({"a": 0.5, "b": 0.5}), headers=header).json["allow"]
    services(app).close()


class FakeOpa(BaseHTTPRequestHandler):
    """An HTTP server that misbehaves the way a broken sidecar could (a project-owned fake)."""

    behaviour = "undefined"

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body: bytes
        if self.behaviour == "slow":
            time.sleep(1.5)
            body = b'{"result": {"allow": true, "reasons": [], "obligations": {}}}'
        elif self.behaviour == "undefined":
            body = b"{}"
        elif self.behaviour == "not_json":
            body = b"<html>proxy error</html>"
        elif self.behaviour == "string_allow":
            body = json.dumps({"result": {"authz": {"allow": True}, "decision": {"allow": "true"}}}).encode()
        else:
            body = json.dumps({"result": ["allow"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


@pytest.mark.parametrize(
    "behaviour, code",
    [
        ("slow", "opa_timeout"),
        ("undefined", "opa_undefined"),
        ("not_json", "opa_malformed"),
        ("string_allow", "opa_malformed"),
        ("list", "opa_malformed"),
    ],
)
def test_bad_answers_are_denies_with_distinct_codes(
    database_url: str, tmp_path: Path, behaviour: str, code: str
) -> None:
    handler = type("Handler", (FakeOpa,), {"behaviour": behaviour})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        app = app_for(database_url, f"http://127.0.0.1:{server.server_port}", tmp_path, opa_timeout=0.3)
        from server.governance.gateway import Action, Actor, Target

        with services(app).db.unit_of_work() as uow:
            executed: list[bool] = []
            outcome = services(app).gateway.decide(
                uow.session,
                Action("link.pause", Actor("ops", "user", ("operator",)), {}, Target("link", "l1")),
                execute=lambda _s, _p: executed.append(True),
            )
            uow.commit()
        assert outcome.allow is False and not executed
        assert outcome.record.error_code == code
        assert outcome.reasons[0]["code"] == code
        services(app).close()
    finally:
        server.shutdown()
        server.server_close()
