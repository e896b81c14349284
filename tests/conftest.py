"""Shared fixtures: a real OPA sidecar running the project's Rego bundle, real databases
(SQLite and PostgreSQL, migrated with Alembic once per session and emptied after each test),
the Flask app and helpers to log in or get an API token."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from server import create_app
from server.config import Settings
from server.db import Base
from server.extensions import services
from server.migrate import upgrade
from server.policy.bundle import BundleInfo, build_bundle, policy_revision
from server.policy.sidecar import OpaSidecar
from tests.support.postgres import create_database, postgres_server

ROOT = Path(__file__).resolve().parent.parent
OPA_BIN = Path(os.environ.get("OPA_BIN") or ROOT / ".tools" / "bin" / "opa")
BACKENDS = [b for b in os.environ.get("SMARTLINKS_TEST_BACKENDS", "sqlite,postgresql").split(",") if b]
TEST_SECRET = "test-secret-key-0123456789-0123456789-abcdef"  # noqa: S105
PASSWORD = "correct horse battery staple"  # noqa: S105


@pytest.fixture(scope="session")
def opa_bin() -> Path:
    if not OPA_BIN.exists():
        pytest.fail(f"OPA binary missing at {OPA_BIN}: run `make tools` (opa/install.sh)")
    return OPA_BIN


@pytest.fixture(scope="session")
def policy_bundle(opa_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> BundleInfo:
    out = tmp_path_factory.mktemp("bundle") / "smartlinks.tar.gz"
    return build_bundle(opa_bin, ROOT / "rego", out, policy_revision(ROOT / "rego"))


@pytest.fixture(scope="session")
def opa_sidecar(
    opa_bin: Path, policy_bundle: BundleInfo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OpaSidecar]:
    sidecar = OpaSidecar(opa_bin, policy_bundle.path, tmp_path_factory.mktemp("opa") / "opa.log")
    sidecar.start()
    sidecar.wait_ready(30)
    sidecar.supervise(interval=0.2)
    yield sidecar
    sidecar.stop()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session", params=BACKENDS)
def migrated_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
    else:
        url = create_database(request.getfixturevalue("pg_server"), "smartlinks_test")
    upgrade(url)
    return url


def empty_database(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
    engine.dispose()


@pytest.fixture
def database_url(migrated_db: str) -> Iterator[str]:
    yield migrated_db
    empty_database(migrated_db)


def make_settings(database_url: str, opa_url: str, var_dir: Path, **overrides: object) -> Settings:
    base = Settings(
        environment="test",
        secret_key=TEST_SECRET,
        database_url=database_url,
        opa_url=opa_url,
        opa_bin=str(OPA_BIN),
        var_dir=str(var_dir),
        public_cache_seconds=0.5,
    )
    return base.with_overrides(overrides) if overrides else base


@pytest.fixture
def settings(database_url: str, opa_sidecar: OpaSidecar, policy_bundle: BundleInfo, tmp_path: Path) -> Settings:
    return make_settings(database_url, opa_sidecar.url, tmp_path, policy_revision=policy_bundle.revision)


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    app.testing = True
    yield app
    services(app).close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def make_token(app: Flask, role: str, name: str | None = None) -> str:
    from server.auth.services import create_token

    with services(app).db.unit_of_work() as uow:
        _, plain = create_token(uow.session, name or f"{role}-token", role)
        uow.commit()
    return plain


def make_user(app: Flask, role: str, email: str | None = None, *, entity_id: str | None = None) -> str:
    """A user with `role`; a portal user (affiliate / advertiser) belongs to `entity_id`, created
    when it does not exist."""
    from server.auth.services import create_user
    from server.links.models import Advertiser, Affiliate

    email = email or f"{role}@example.com"
    with services(app).db.unit_of_work() as uow:
        links: dict[str, str] = {}
        if role in ("affiliate", "advertiser"):
            model = Affiliate if role == "affiliate" else Advertiser
            entity_id = entity_id or f"{role[:3]}_{email.split('@')[0]}"
            if uow.session.get(model, entity_id) is None:
                uow.session.add(model(id=entity_id, name=f"{role.title()} {entity_id}"))
                uow.session.flush()
            links[f"{role}_id"] = entity_id
        create_user(uow.session, email, PASSWORD, role, **links)
        uow.commit()
    return email


def csrf_from(html: str) -> str:
    import re

    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def login(client: FlaskClient, email: str, password: str = PASSWORD) -> str:
    """Log in through the real form; returns the session's CSRF token."""
    page = client.get("/login")
    token = csrf_from(page.get_data(as_text=True))
    response = client.post("/login", data={"email": email, "password": password, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)
    return csrf_from(client.get("/").get_data(as_text=True))


@pytest.fixture
def service_token(app: Flask) -> str:
    return make_token(app, "service")


@pytest.fixture
def auth_header(service_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {service_token}"}
