"""Fixtures and helpers of the policy lifecycle tests: a signing key pair, candidate versions built
once per session from controlled Rego trees, a policy-enabled `settings`, and the bundle-server
stack (the app served over real HTTP, a version bootstrapped, real OPA sidecars polling it).

Candidates are the project's policies with their tests replaced by one smoke test, so that the
other packages' test suites (which change while their authors work) do not decide whether the
lifecycle works; the coverage threshold is then 0 in `settings`, and the gates (failing tests,
coverage below threshold, strict errors) are tested on small trees of their own.

Test modules import the fixtures they use by name (`from tests.support.policies import ...`)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from server import create_app
from server.config import Settings
from server.extensions import services
from server.governance.gateway import Actor
from server.policies import services as policies
from server.policies.keys import KEY_ID, SigningKeys, generate_key_pair
from server.policies.pipeline import Candidate, build_candidate
from server.policies.serving import bootstrap
from server.policy.bundle import BundleInfo
from server.policy.sidecar import TOKEN_ENV, OpaSidecar, bundle_server_config, free_loopback_port, write_config
from tests.conftest import OPA_BIN, ROOT, make_settings

OPA_TOKEN = "opa-test-token-0123456789-abcdefghijklmnop"  # noqa: S105
SMOKE_TEST = """package smartlinks.smoke_test

import data.smartlinks

test_the_decision_is_total if {
	smartlinks.decision.allow == false with input as {}
}

test_public_endpoints_are_listed if {
	"health.healthz" in data.config.authz.public_endpoints
}
"""
FAILING_TEST = """package smartlinks.failing_test

import data.smartlinks

test_this_fails if {
	smartlinks.decision.allow == true with input as {}
}
"""
ADMIN = Actor("user:100", "user", ("admin",))
OTHER_ADMIN = Actor("user:101", "user", ("admin",))
AUTHOR = Actor("user:102", "user", ("policy_author",))


def policy_tree(folder: Path, variant: str = "base") -> Path:
    """The project's Rego tree without its tests, with a smoke test, changed per `variant`:
    `blocked` blocks link lnk_blocked (safety.blocked_targets); `failing` adds a failing test."""
    shutil.copytree(ROOT / "rego", folder, ignore=shutil.ignore_patterns("*_test.rego"))
    (folder / "smartlinks" / "smoke_test.rego").write_text(SMOKE_TEST, encoding="utf-8")
    if variant == "blocked":
        data = folder / "config" / "data.json"
        text = data.read_text(encoding="utf-8")
        assert '"blocked_targets": [],' in text
        data.write_text(
            text.replace('"blocked_targets": [],', '"blocked_targets": [{"kind": "link", "id": "lnk_blocked"}],'),
            encoding="utf-8",
        )
    elif variant == "failing":
        (folder / "smartlinks" / "failing_test.rego").write_text(FAILING_TEST, encoding="utf-8")
    return folder


@pytest.fixture(name="policy_keys", scope="session")
def policy_keys_fixture(tmp_path_factory: pytest.TempPathFactory) -> SigningKeys:
    folder = tmp_path_factory.mktemp("keys")
    keys = SigningKeys(folder / "signing.pem", folder / "verification.pem")
    generate_key_pair(keys.private, keys.public)
    return keys


@pytest.fixture(name="candidates", scope="session")
def candidates_fixture(policy_keys: SigningKeys, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Candidate]:
    """Signed candidate versions, built once: `base`, `blocked` (lnk_blocked denied), `failing`
    (a failing test: stored but never activatable)."""
    built: dict[str, Candidate] = {}
    for variant in ("base", "blocked", "failing"):
        tree = policy_tree(tmp_path_factory.mktemp(f"rego-{variant}") / "rego", variant)
        built[variant] = build_candidate(
            OPA_BIN, tree, signing_key=policy_keys.private, coverage_threshold=0.0, revision=f"test-{variant}"
        )
    assert built["base"].validated and built["blocked"].validated and not built["failing"].validated
    return built


def policy_settings(database_url: str, opa_url: str, var_dir: Path, keys: SigningKeys, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "opa_signing_key_file": str(keys.private),
        "opa_verification_key_file": str(keys.public),
        "opa_bundle_token": OPA_TOKEN,
        "policy_coverage_threshold": 0.0,
        "policy_impact_sample": 2000,
    }
    values.update(overrides)
    return make_settings(database_url, opa_url, var_dir, **values)


@pytest.fixture(name="settings")
def settings_fixture(
    database_url: str,
    opa_sidecar: OpaSidecar,
    policy_bundle: BundleInfo,
    tmp_path: Path,
    policy_keys: SigningKeys,
) -> Settings:
    """Policy-enabled settings; policy actions are decided by the session's OPA sidecar."""
    return policy_settings(database_url, opa_sidecar.url, tmp_path, policy_keys, policy_revision=policy_bundle.revision)


def toolchain(app: Flask) -> policies.Toolchain:
    return policies.Toolchain.from_settings(services(app).settings)


def publish(app: Flask, candidate: Candidate, actor: Actor = AUTHOR, message: str = "test version") -> str:
    svc = services(app)
    outcome, version = policies.publish_candidate(
        svc.db, svc.gateway, toolchain(app), actor, candidate, message=message
    )
    assert outcome.allow and version is not None, outcome.reasons
    return version.revision


def activate(app: Flask, revision: str, actor: Actor = ADMIN, reason: str | None = None) -> Any:
    svc = services(app)
    return policies.activate_version(svc.db, svc.gateway, toolchain(app), actor, revision, reason=reason)


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@dataclass
class BundleStack:
    """The app served over HTTP as the bundle server, with real OPA sidecars polling it."""

    app: Flask
    url: str
    primary: OpaSidecar
    shadow: OpaSidecar | None
    sidecars: list[OpaSidecar] = field(default_factory=list)

    @property
    def client(self) -> FlaskClient:
        return self.app.test_client()


def start_sidecar(
    stack_url: str, keys: SigningKeys, folder: Path, name: str, port: int, *, decision_logs: bool
) -> OpaSidecar:
    # The primary reads its bearer token from its environment (as `smartlinks serve` starts it),
    # the shadow sidecar from a file (as docker-compose.yml mounts it as a secret): both ways run.
    token_path = None
    if name != "primary":
        token_file = folder / f"opa-{name}.token"
        token_file.write_text(OPA_TOKEN + "\n")
        token_path = str(token_file)
    config = write_config(
        folder / f"opa-{name}.json",
        bundle_server_config(
            service_url=f"{stack_url}/opa",
            verification_key_pem=keys.public.read_text(),
            key_id=KEY_ID,
            resource="bundles/active" if name == "primary" else "bundles/shadow",
            sidecar=name,
            long_poll_seconds=10,
            decision_logs=decision_logs,
            token_path=token_path,
        ),
    )
    env = {TOKEN_ENV: OPA_TOKEN} if token_path is None else {}
    return OpaSidecar(OPA_BIN, None, folder / f"opa-{name}.log", port=port, config_file=config, env=env)


@pytest.fixture(name="bundle_stack")
def bundle_stack_fixture(
    database_url: str,
    tmp_path: Path,
    policy_keys: SigningKeys,
    candidates: dict[str, Candidate],
) -> Iterator[BundleStack]:
    """Bootstrap `test-base`, serve the app over HTTP, and start two sidecars configured as
    `smartlinks serve` configures them: the primary (decision logs on; the app's OPA_URL) and the
    shadow sidecar (the app's OPA_SHADOW_URL), both polling the app's /opa/bundles."""
    primary_port, shadow_port = free_loopback_port(), free_loopback_port()
    settings = policy_settings(
        database_url,
        f"http://127.0.0.1:{primary_port}",
        tmp_path,
        policy_keys,
        opa_shadow_url=f"http://127.0.0.1:{shadow_port}",
        opa_timeout=2.0,
    )
    app = create_app(settings)
    app.testing = True
    assert bootstrap(settings, services(app).db, candidate=candidates["base"]) == "test-base"
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}"
    primary = start_sidecar(url, policy_keys, tmp_path, "primary", primary_port, decision_logs=True)
    shadow = start_sidecar(url, policy_keys, tmp_path, "shadow", shadow_port, decision_logs=False)
    started: list[OpaSidecar] = []
    try:
        for sidecar in (primary, shadow):
            sidecar.start()
            started.append(sidecar)
        primary.wait_ready(30)
        yield BundleStack(app, url, primary, shadow, started)
    finally:
        from server.policies.bundle_server import bundle_watch
        from server.policies.shadow import evaluator_of

        evaluator = evaluator_of(app)
        if evaluator is not None:
            evaluator.stop()
        for sidecar in started:
            sidecar.stop()
        bundle_watch(app).close()  # held long-poll requests answer now
        server.shutdown()
        server.server_close()
        time.sleep(0.3)  # let the request threads finish before their connections are closed
        services(app).close()
