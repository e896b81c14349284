"""Alembic migrations: upgrade to head, downgrade to base and up again on SQLite and PostgreSQL,
and the models match the migrated schema (no pending autogenerate diff)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import server.models  # noqa: F401
from server.db import Base
from server.migrate import alembic_config, upgrade
from tests.conftest import BACKENDS
from tests.support.postgres import create_database


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'migrate.db'}"
    return create_database(request.getfixturevalue("pg_server"), "smartlinks_migrations")


def test_upgrade_downgrade_upgrade_and_no_drift(empty_url: str) -> None:
    upgrade(empty_url)
    command.downgrade(alembic_config(empty_url), "base")
    upgrade(empty_url)
    engine = sa.create_engine(empty_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"
