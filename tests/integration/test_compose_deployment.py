"""docker-compose.yml cannot run here (no Docker engine), so its parts are checked one by one: the
secrets every service mounts are declared, the commands the containers run exist with the options
they pass, and the configuration the one-shot opa-config service writes is one that the real OPA
accepts (with the bearer token read from a secret file) and that makes it ask the server's bundle
server for the active bundle with that token."""

from __future__ import annotations

import json
import shlex
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from click.testing import CliRunner

from server.cli import main
from server.policy.sidecar import OpaSidecar, free_loopback_port
from tests.conftest import OPA_BIN, TEST_SECRET
from tests.support.postgres import wait_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def shell_of(service: str) -> str:
    command = COMPOSE["services"][service]["command"]
    assert command[:2] == ["sh", "-c"]
    return str(command[2])


def test_every_mounted_secret_is_declared_as_a_file() -> None:
    declared = COMPOSE["secrets"]
    for name, service in COMPOSE["services"].items():
        for secret in service.get("secrets", []):
            assert secret in declared, f"{name} mounts undeclared secret {secret}"
            assert declared[secret]["file"].startswith("./secrets/")
        for key, value in (service.get("environment") or {}).items():
            if key.endswith("_FILE") and str(value).startswith("/run/secrets/"):
                assert str(value).removeprefix("/run/secrets/") in service.get("secrets", []), (name, key)


def test_the_sidecars_read_the_config_the_one_shot_service_writes() -> None:
    written = {part.split(">")[1].strip() for part in shell_of("opa-config").split("&&")}
    assert written == {"/opa-config/primary.json", "/opa-config/shadow.json"}
    for sidecar, config in (("opa", "primary"), ("opa-shadow", "shadow")):
        service = COMPOSE["services"][sidecar]
        assert f"--config-file=/opa-config/{config}.json" in service["command"]
        assert "opa_bundle_token" in service["secrets"]
        assert service["depends_on"]["opa-config"]["condition"] == "service_completed_successfully"
    server = COMPOSE["services"]["server"]
    assert server["environment"]["OPA_URL"] == "http://opa:8181"
    assert server["environment"]["OPA_SHADOW_URL"] == "http://opa-shadow:8181"
    assert "opa" not in server["depends_on"]  # the sidecars need the server first: no cycle


@pytest.mark.parametrize(
    "command",
    [c.strip() for c in shell_of("server").replace("exec ", "").split("&&")],
)
def test_the_server_containers_commands_exist(command: str) -> None:
    words = shlex.split(command)
    assert words[0] == "smartlinks"
    result = CliRunner().invoke(main, [*words[1:], "--help"])
    assert result.exit_code == 0, result.output
    for option in (w for w in words[1:] if w.startswith("--")):
        assert option in result.output, (command, option)


class _BundleServer(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


def test_opa_accepts_the_generated_config_and_uses_the_token_file(tmp_path: Path) -> None:
    """The opa-config command line, run for real (the service URL pointed at a stand-in), then the
    real OPA started on its output: it runs, and asks for /opa/bundles/active with the token from
    the file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private, public = tmp_path / "signing.pem", tmp_path / "verification.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    token = tmp_path / "opa_bundle_token"
    token.write_text("compose-token-123\n")

    stand_in = ThreadingHTTPServer(("127.0.0.1", 0), _BundleServer)
    threading.Thread(target=stand_in.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{stand_in.server_address[1]}/opa"
    first = shell_of("opa-config").split("&&")[0].split(">")[0]
    args = shlex.split(first)[1:]
    args[args.index("--url") + 1] = url
    args[args.index("--token-path") + 1] = str(token)
    env = {
        "SMARTLINKS_ENV": "development",
        "SECRET_KEY": TEST_SECRET,
        "SMARTLINKS_VAR_DIR": str(tmp_path / "var"),
        "OPA_SIGNING_KEY_FILE": str(private),
        "OPA_VERIFICATION_KEY_FILE": str(public),
    }
    printed = CliRunner().invoke(main, args, env=env)
    assert printed.exit_code == 0, printed.output
    config = tmp_path / "primary.json"
    config.write_text(printed.output)
    assert json.loads(printed.output)["labels"]["sidecar"] == "primary"

    _BundleServer.seen = []
    port = free_loopback_port()
    sidecar = OpaSidecar(OPA_BIN, None, tmp_path / "opa.log", port=port, config_file=config, env={})
    sidecar.start()
    try:
        # OPA's plugins start before its HTTP listener: wait for both.
        wait_port("127.0.0.1", port, 15)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(
            p.startswith("/opa/bundles/active") for p, _ in _BundleServer.seen
        ):
            time.sleep(0.1)
        assert requests.get(f"{sidecar.url}/health", timeout=2).status_code == 200  # running
        asks = [(p, auth) for p, auth in _BundleServer.seen if p.startswith("/opa/bundles/active")]
        assert asks and asks[0][1] == "Bearer compose-token-123"
        # No bundle yet (404 from the stand-in): not ready, so /readyz of the server would be 503.
        assert requests.get(f"{sidecar.url}/health?bundles", timeout=2).status_code != 200
    finally:
        sidecar.stop()
        stand_in.shutdown()
        stand_in.server_close()
