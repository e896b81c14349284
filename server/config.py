"""Settings from the environment: defaults for a laptop, `*_FILE` variants for secrets, and a
production mode that refuses to start on a missing or default secret."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

_SOURCE_ROOT = Path(__file__).resolve().parent.parent
# A checkout (editable install) keeps rego/ beside server/; an installed package runs from a
# working directory that holds rego/ and var/ (the Docker image sets REGO_DIR etc. explicitly).
PROJECT_ROOT = _SOURCE_ROOT if (_SOURCE_ROOT / "rego").is_dir() else Path.cwd()
DEFAULT_SECRET_KEY = "dev-insecure-secret-key-change-me"  # noqa: S105 - the known default production refuses
SECRET_NAMES = ("SECRET_KEY", "BOOTSTRAP_ADMIN_PASSWORD")
ENVIRONMENTS = ("development", "test", "production")
MODES = ("test", "live", "shadow")


class ConfigError(RuntimeError):
    """The configuration cannot be used; the message says which setting and why."""


def _read(env: Mapping[str, str], name: str) -> str | None:
    """`NAME` from the environment, or the content of the file named by `NAME_FILE`."""
    value = env.get(name)
    file_name = env.get(f"{name}_FILE")
    if value is not None and file_name:
        raise ConfigError(f"set {name} or {name}_FILE, not both")
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={file_name} cannot be read: {exc.strerror}") from exc
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _read(env, name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from exc
    if value < 0:
        raise ConfigError(f"{name} must not be negative")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = _read(env, name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _read(env, name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    """Everything the server reads from its environment, validated once."""

    environment: str = "development"
    secret_key: str = DEFAULT_SECRET_KEY
    database_url: str = f"sqlite:///{PROJECT_ROOT / 'var' / 'smartlinks.db'}"
    opa_url: str | None = None
    opa_bin: str = str(PROJECT_ROOT / ".tools" / "bin" / "opa")
    opa_port: int = 8181
    opa_connect_timeout: float = 0.25
    opa_timeout: float = 0.5
    rego_dir: str = str(PROJECT_ROOT / "rego")
    var_dir: str = str(PROJECT_ROOT / "var")
    mode: str = "test"
    max_content_length: int = 1024 * 1024
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    session_cookie_secure: bool = False
    public_cache_seconds: float = 5.0
    bootstrap_admin_email: str = "admin@smartlinks.local"
    bootstrap_admin_password: str | None = None
    log_level: str = "INFO"
    policy_revision: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        environment = (_read(env, "SMARTLINKS_ENV") or "development").lower()
        if environment not in ENVIRONMENTS:
            raise ConfigError(f"SMARTLINKS_ENV must be one of {', '.join(ENVIRONMENTS)}, got {environment!r}")
        defaults = cls()
        var_dir = _read(env, "SMARTLINKS_VAR_DIR") or defaults.var_dir
        mode = (_read(env, "SMARTLINKS_MODE") or "test").lower()
        if mode not in MODES:
            raise ConfigError(f"SMARTLINKS_MODE must be one of {', '.join(MODES)}, got {mode!r}")
        settings = cls(
            environment=environment,
            secret_key=_read(env, "SECRET_KEY") or DEFAULT_SECRET_KEY,
            database_url=_read(env, "DATABASE_URL") or f"sqlite:///{Path(var_dir) / 'smartlinks.db'}",
            opa_url=(_read(env, "OPA_URL") or None),
            opa_bin=_read(env, "OPA_BIN") or defaults.opa_bin,
            opa_port=_int(env, "OPA_PORT", defaults.opa_port),
            opa_connect_timeout=_float(env, "OPA_CONNECT_TIMEOUT", defaults.opa_connect_timeout),
            opa_timeout=_float(env, "OPA_TIMEOUT", defaults.opa_timeout),
            rego_dir=_read(env, "REGO_DIR") or defaults.rego_dir,
            var_dir=var_dir,
            mode=mode,
            max_content_length=_int(env, "MAX_CONTENT_LENGTH", defaults.max_content_length),
            host=_read(env, "HOST") or defaults.host,
            port=_int(env, "PORT", defaults.port),
            workers=_int(env, "WEB_WORKERS", defaults.workers),
            session_cookie_secure=_bool(env, "SESSION_COOKIE_SECURE", environment == "production"),
            public_cache_seconds=_float(env, "PUBLIC_ENDPOINTS_CACHE_SECONDS", defaults.public_cache_seconds),
            bootstrap_admin_email=_read(env, "BOOTSTRAP_ADMIN_EMAIL") or defaults.bootstrap_admin_email,
            bootstrap_admin_password=_read(env, "BOOTSTRAP_ADMIN_PASSWORD"),
            log_level=(_read(env, "LOG_LEVEL") or "INFO").upper(),
            policy_revision=_read(env, "SMARTLINKS_POLICY_REVISION") or None,
        )
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse settings that are unsafe for the environment they run in."""
        if self.environment == "production":
            if self.secret_key == DEFAULT_SECRET_KEY or len(self.secret_key) < 32:
                raise ConfigError(
                    "production refuses the default or a short SECRET_KEY: set SECRET_KEY or SECRET_KEY_FILE "
                    "to at least 32 random characters (python -c 'import secrets; print(secrets.token_urlsafe(48))')"
                )
            if not self.session_cookie_secure:
                raise ConfigError("production requires SESSION_COOKIE_SECURE=true (pages are served over HTTPS)")
        if self.opa_timeout <= 0 or self.opa_connect_timeout <= 0:
            raise ConfigError("OPA_TIMEOUT and OPA_CONNECT_TIMEOUT must be positive")

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        return replace(self, **dict(overrides))

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with secrets replaced, safe for logs and pages."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("secret_key", "bootstrap_admin_password") and value:
                value = "***"
            elif f.name == "database_url":
                value = _redact_url(str(value))
            out[f.name] = value
        return out


def _redact_url(url: str) -> str:
    """Hide the password in a database URL."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def generate_secret() -> str:
    return secrets.token_urlsafe(48)
