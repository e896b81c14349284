"""Settings: environment parsing, *_FILE secrets, production refusals, redaction."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import DEFAULT_SECRET_KEY, ConfigError, Settings


def test_defaults_use_embedded_sqlite_and_test_mode() -> None:
    settings = Settings.from_env({})
    assert settings.database_url.startswith("sqlite:///") and settings.database_url.endswith("smartlinks.db")
    assert settings.mode == "test" and settings.environment == "development"
    assert settings.opa_url is None


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s" * 40 + "\n")
    settings = Settings.from_env({"SECRET_KEY_FILE": str(secret)})
    assert settings.secret_key == "s" * 40


def test_secret_and_file_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not both"):
        Settings.from_env({"SECRET_KEY": "x", "SECRET_KEY_FILE": str(tmp_path / "f")})


def test_unreadable_secret_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SECRET_KEY_FILE"):
        Settings.from_env({"SECRET_KEY_FILE": str(tmp_path / "missing")})


@pytest.mark.parametrize(
    "env, message",
    [
        ({"SMARTLINKS_ENV": "production"}, "default or a short SECRET_KEY"),
        ({"SMARTLINKS_ENV": "production", "SECRET_KEY": "short"}, "default or a short SECRET_KEY"),
        (
            {"SMARTLINKS_ENV": "production", "SECRET_KEY": "k" * 40, "SESSION_COOKIE_SECURE": "false"},
            "SESSION_COOKIE_SECURE",
        ),
        ({"SMARTLINKS_ENV": "staging"}, "SMARTLINKS_ENV"),
        ({"SMARTLINKS_MODE": "yolo"}, "SMARTLINKS_MODE"),
        ({"OPA_TIMEOUT": "abc"}, "OPA_TIMEOUT must be a number"),
        ({"OPA_TIMEOUT": "0"}, "must be positive"),
        ({"PORT": "eighty"}, "PORT must be an integer"),
        ({"SESSION_COOKIE_SECURE": "maybe"}, "true or false"),
    ],
)
def test_unsafe_or_invalid_settings_refuse_to_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_production_starts_with_a_real_secret() -> None:
    settings = Settings.from_env({"SMARTLINKS_ENV": "production", "SECRET_KEY": "k" * 40})
    assert settings.session_cookie_secure is True
    assert settings.secret_key != DEFAULT_SECRET_KEY


def test_redacted_hides_secrets_and_database_password() -> None:
    settings = Settings.from_env(
        {"SECRET_KEY": "k" * 40, "DATABASE_URL": "postgresql+psycopg://app:hunter2@db:5432/smartlinks"}
    )
    shown = settings.redacted()
    assert shown["secret_key"] == "***"
    assert "hunter2" not in str(shown)
    assert shown["database_url"] == "postgresql+psycopg://app:***@db:5432/smartlinks"
