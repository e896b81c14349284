"""Settings from the environment: defaults for a laptop, `*_FILE` variants for secrets, and a
production mode that refuses to start on a missing or default secret."""

from __future__ import annotations

import os
import re
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
SECRET_NAMES = ("SECRET_KEY", "BOOTSTRAP_ADMIN_PASSWORD", "POSTBACK_SECRET")
SECRET_FIELDS = (
    "secret_key",
    "bootstrap_admin_password",
    "postback_secret",
    "stripe_api_key",
    "stripe_webhook_secret",
    "paypal_client_secret",
    "payout_encryption_key",
    "smtp_password",
    "openai_api_key",
    "opa_bundle_token",
    "metrics_token",
)
LOG_FORMATS = ("text", "json")
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
    decision_direct_path: bool = True  # POST /v1/decisions from services answered before Flask
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 2
    session_cookie_secure: bool = False
    public_cache_seconds: float = 5.0
    bootstrap_admin_email: str = "admin@smartlinks.local"
    bootstrap_admin_password: str | None = None
    log_level: str = "INFO"
    # Observability (server/observability; docs/operations.md "Monitoring").
    log_format: str = "text"  # json by default in production: one JSON object per line
    metrics_token: str | None = None  # bearer token of GET /metrics
    metrics_public: bool = False  # /metrics without a token (a private network only)
    policy_revision: str | None = None
    # Click path and conversions (server/clicks, docs/operations.md "Clicks and conversions").
    click_flush_interval: float = 0.2
    click_flush_size: int = 500
    click_buffer_max: int = 100_000
    routing_refresh_seconds: float = 1.0
    country_header: str = "CF-IPCountry"
    client_ip_header: str | None = None
    bot_clicks_per_minute: int = 60
    attribution_window_days: int = 30
    postback_secret: str | None = None
    # The autopilot scheduler (server/autopilot; started only by the CLI).
    autopilot_enabled: bool = True
    autopilot_interval_seconds: float = 60.0
    budget_interval_seconds: float = 3600.0
    # Payments (billing/, server/finance/; docs/operations.md "Payments").
    payments_mode: str = "test"
    stripe_api_key: str | None = None
    stripe_api_base: str | None = None  # stripe-mock in tests; Stripe's own API when unset
    stripe_webhook_secret: str | None = None
    stripe_webhook_tolerance: int = 300
    paypal_client_id: str | None = None
    paypal_client_secret: str | None = None
    paypal_api_base: str = "https://api-m.sandbox.paypal.com"
    paypal_webhook_id: str | None = None
    payout_encryption_key: str | None = None
    alert_webhook_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "smartlinks@localhost"
    smtp_starttls: bool = False
    alert_email_to: str | None = None
    treasury_interval_seconds: float = 86400.0
    finance_jobs_enabled: bool = True  # the scheduler runs treasury, booking, resume, verify, reconcile
    default_payout_threshold: str = "50.00"  # in major units of each currency
    # Printed on receipts, invoices and credit notes (billing/documents.py).
    document_issuer_name: str = "SmartLinks Autopilot"
    document_issuer_address: str = ""
    document_issuer_vat: str = ""
    document_issuer_email: str = ""
    # The AI supervisor (server/ai; docs/runbooks/ai-incidents.md). No key: degraded mode.
    openai_api_key: str | None = None
    openai_base_url: str | None = None  # any OpenAI-compatible server; OpenAI's own API when unset
    openai_model: str = "gpt-4o-mini"
    openai_timeout: float = 20.0
    openai_max_retries: int = 2
    openai_retry_backoff_seconds: float = 0.5
    ai_circuit_failures: int = 3
    ai_circuit_reset_seconds: float = 300.0
    ai_daily_token_budget: int = 2_000_000
    ai_supervisor_interval_seconds: float = 300.0  # 0 turns the scheduled supervisor off
    ai_price_per_1k_input: float = 0.00015
    ai_price_per_1k_output: float = 0.0006
    ai_error_rate_alert: float = 0.5
    ai_denial_rate_alert: float = 0.5
    # Policy lifecycle: versions, the bundle server OPA polls, shadow, impact (docs/policies.md).
    opa_bundle_token: str | None = None  # OPA's credential on /opa/*; generated into var/ outside production
    opa_signing_key_file: str | None = None  # PEM private key that signs bundles; var/keys/ outside production
    opa_verification_key_file: str | None = None  # its public key, given to every sidecar
    opa_shadow_url: str | None = None  # the shadow sidecar; `smartlinks serve` starts one on OPA_SHADOW_PORT
    opa_shadow_port: int = 8182
    opa_long_poll_seconds: int = 10
    opa_decision_logs: bool = True
    opa_decision_log_retention_days: int = 30  # the sidecars' copy; 0 keeps it forever
    policy_self_approval: bool = False
    policy_coverage_threshold: float = 90.0
    policy_impact_sample: int = 10_000
    policy_bootstrap: bool = True
    # The self-service portal (server/portal; docs/operations.md "Portal onboarding").
    portal_invitation_days: int = 7
    portal_base_url: str | None = None  # for links in invitation emails; the request's host when unset
    affiliate_terms_version: str = "1"  # server/legal/affiliate-terms-v<version>.md (CGU)
    advertiser_terms_version: str = "1"  # server/legal/advertiser-terms-v<version>.md (CGV)
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
            decision_direct_path=_bool(env, "DECISION_DIRECT_PATH", defaults.decision_direct_path),
            host=_read(env, "HOST") or defaults.host,
            port=_int(env, "PORT", defaults.port),
            workers=_int(env, "WEB_WORKERS", defaults.workers),
            session_cookie_secure=_bool(env, "SESSION_COOKIE_SECURE", environment == "production"),
            public_cache_seconds=_float(env, "PUBLIC_ENDPOINTS_CACHE_SECONDS", defaults.public_cache_seconds),
            bootstrap_admin_email=_read(env, "BOOTSTRAP_ADMIN_EMAIL") or defaults.bootstrap_admin_email,
            bootstrap_admin_password=_read(env, "BOOTSTRAP_ADMIN_PASSWORD"),
            log_level=(_read(env, "LOG_LEVEL") or "INFO").upper(),
            log_format=log_format_from_env(env),
            metrics_token=_read(env, "METRICS_TOKEN") or None,
            metrics_public=_bool(env, "METRICS_PUBLIC", defaults.metrics_public),
            policy_revision=_read(env, "SMARTLINKS_POLICY_REVISION") or None,
            click_flush_interval=_float(env, "CLICK_FLUSH_INTERVAL", defaults.click_flush_interval),
            click_flush_size=_int(env, "CLICK_FLUSH_SIZE", defaults.click_flush_size),
            click_buffer_max=_int(env, "CLICK_BUFFER_MAX", defaults.click_buffer_max),
            routing_refresh_seconds=_float(env, "ROUTING_REFRESH_SECONDS", defaults.routing_refresh_seconds),
            country_header=_read(env, "COUNTRY_HEADER") or defaults.country_header,
            client_ip_header=_read(env, "CLIENT_IP_HEADER") or None,
            bot_clicks_per_minute=_int(env, "BOT_CLICKS_PER_MINUTE", defaults.bot_clicks_per_minute),
            attribution_window_days=_int(env, "ATTRIBUTION_WINDOW_DAYS", defaults.attribution_window_days),
            postback_secret=_read(env, "POSTBACK_SECRET") or None,
            autopilot_enabled=_bool(env, "AUTOPILOT_ENABLED", defaults.autopilot_enabled),
            autopilot_interval_seconds=_float(env, "AUTOPILOT_INTERVAL_SECONDS", defaults.autopilot_interval_seconds),
            budget_interval_seconds=_float(env, "BUDGET_INTERVAL_SECONDS", defaults.budget_interval_seconds),
            **_payment_settings(env, defaults),
            **ai_settings_from_env(env, defaults),
            **policy_settings_from_env(env, defaults),
            **portal_settings_from_env(env, defaults),
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
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {self.log_format!r}")
        if self.metrics_token is not None and len(self.metrics_token) < 32:
            raise ConfigError("METRICS_TOKEN must have at least 32 characters")
        if self.opa_timeout <= 0 or self.opa_connect_timeout <= 0:
            raise ConfigError("OPA_TIMEOUT and OPA_CONNECT_TIMEOUT must be positive")
        self._check_clicks_and_autopilot()
        from server.finance.settings import check_payment_settings

        check_payment_settings(self)
        from server.ai.settings import check_ai_settings

        check_ai_settings(self)
        self._check_policy_lifecycle()

    def _check_policy_lifecycle(self) -> None:
        if not 0 <= self.policy_coverage_threshold <= 100:
            raise ConfigError("POLICY_COVERAGE_THRESHOLD must be a percentage between 0 and 100")
        if self.policy_impact_sample < 1:
            raise ConfigError("POLICY_IMPACT_SAMPLE must be at least 1")
        if not 1 <= self.opa_long_poll_seconds <= 60:
            raise ConfigError("OPA_LONG_POLL_SECONDS must be between 1 and 60")
        if bool(self.opa_signing_key_file) != bool(self.opa_verification_key_file):
            raise ConfigError("set both OPA_SIGNING_KEY_FILE and OPA_VERIFICATION_KEY_FILE, or neither")
        if self.opa_bundle_token is not None and len(self.opa_bundle_token) < 32:
            raise ConfigError("OPA_BUNDLE_TOKEN must have at least 32 characters")

    def _check_clicks_and_autopilot(self) -> None:
        if self.click_flush_interval <= 0 or self.routing_refresh_seconds <= 0:
            raise ConfigError("CLICK_FLUSH_INTERVAL and ROUTING_REFRESH_SECONDS must be positive")
        if not 1 <= self.click_flush_size <= self.click_buffer_max:
            raise ConfigError("CLICK_FLUSH_SIZE must be at least 1 and at most CLICK_BUFFER_MAX")
        if self.bot_clicks_per_minute < 0:
            raise ConfigError("BOT_CLICKS_PER_MINUTE must not be negative (0 turns the rate check off)")
        if self.attribution_window_days < 1:
            raise ConfigError("ATTRIBUTION_WINDOW_DAYS must be at least 1")
        if self.autopilot_interval_seconds < 1 or self.budget_interval_seconds < 1:
            raise ConfigError("AUTOPILOT_INTERVAL_SECONDS and BUDGET_INTERVAL_SECONDS must be at least 1")
        if self.opa_decision_log_retention_days < 0:
            raise ConfigError("OPA_DECISION_LOG_RETENTION_DAYS must not be negative (0 keeps the logs forever)")

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
            if f.name in SECRET_FIELDS and value:
                value = "***"
            elif f.name == "database_url":
                value = _redact_url(str(value))
            out[f.name] = value
        return out


def log_format_from_env(env: Mapping[str, str]) -> str:
    """LOG_FORMAT (text or json; checked by Settings.check): json by default in production."""
    environment = (_read(env, "SMARTLINKS_ENV") or "development").lower()
    return (_read(env, "LOG_FORMAT") or ("json" if environment == "production" else "text")).lower()


def _payment_settings(env: Mapping[str, str], defaults: Settings) -> dict[str, Any]:
    return {
        "payments_mode": (_read(env, "PAYMENTS_MODE") or defaults.payments_mode).lower(),
        "stripe_api_key": _read(env, "STRIPE_API_KEY") or None,
        "stripe_api_base": _read(env, "STRIPE_API_BASE") or None,
        "stripe_webhook_secret": _read(env, "STRIPE_WEBHOOK_SECRET") or None,
        "stripe_webhook_tolerance": _int(env, "STRIPE_WEBHOOK_TOLERANCE", defaults.stripe_webhook_tolerance),
        "paypal_client_id": _read(env, "PAYPAL_CLIENT_ID") or None,
        "paypal_client_secret": _read(env, "PAYPAL_CLIENT_SECRET") or None,
        "paypal_api_base": _read(env, "PAYPAL_API_BASE") or defaults.paypal_api_base,
        "paypal_webhook_id": _read(env, "PAYPAL_WEBHOOK_ID") or None,
        "payout_encryption_key": _read(env, "PAYOUT_ENCRYPTION_KEY") or None,
        "alert_webhook_url": _read(env, "ALERT_WEBHOOK_URL") or None,
        "smtp_host": _read(env, "SMTP_HOST") or None,
        "smtp_port": _int(env, "SMTP_PORT", defaults.smtp_port),
        "smtp_user": _read(env, "SMTP_USER") or None,
        "smtp_password": _read(env, "SMTP_PASSWORD") or None,
        "smtp_from": _read(env, "SMTP_FROM") or defaults.smtp_from,
        "smtp_starttls": _bool(env, "SMTP_STARTTLS", defaults.smtp_starttls),
        "alert_email_to": _read(env, "ALERT_EMAIL_TO") or None,
        "treasury_interval_seconds": _float(env, "TREASURY_INTERVAL_SECONDS", defaults.treasury_interval_seconds),
        "finance_jobs_enabled": _bool(env, "FINANCE_JOBS_ENABLED", defaults.finance_jobs_enabled),
        "default_payout_threshold": _read(env, "DEFAULT_PAYOUT_THRESHOLD") or defaults.default_payout_threshold,
        "document_issuer_name": _read(env, "DOCUMENT_ISSUER_NAME") or defaults.document_issuer_name,
        "document_issuer_address": _read(env, "DOCUMENT_ISSUER_ADDRESS") or "",
        "document_issuer_vat": _read(env, "DOCUMENT_ISSUER_VAT") or "",
        "document_issuer_email": _read(env, "DOCUMENT_ISSUER_EMAIL") or "",
    }


def portal_settings_from_env(env: Mapping[str, str], defaults: Settings) -> dict[str, Any]:
    """The portal's settings: invitation lifetime, base URL of emailed links, current terms."""
    days = _int(env, "PORTAL_INVITATION_DAYS", defaults.portal_invitation_days)
    if not 1 <= days <= 90:
        raise ConfigError(f"PORTAL_INVITATION_DAYS must be between 1 and 90, got {days}")
    out: dict[str, Any] = {
        "portal_invitation_days": days,
        "portal_base_url": (_read(env, "PORTAL_BASE_URL") or "").rstrip("/") or None,
    }
    for kind in ("affiliate", "advertiser"):
        name = f"{kind.upper()}_TERMS_VERSION"
        version = _read(env, name) or getattr(defaults, f"{kind}_terms_version")
        if not re.fullmatch(r"[0-9A-Za-z.-]{1,20}", version):
            raise ConfigError(f"{name} must be a version such as 1 or 2.1, got {version!r}")
        out[f"{kind}_terms_version"] = version
    return out


def policy_settings_from_env(env: Mapping[str, str], defaults: Settings) -> dict[str, Any]:
    """The policy lifecycle's settings (checked by Settings._check_policy_lifecycle)."""
    return {
        "opa_bundle_token": _read(env, "OPA_BUNDLE_TOKEN") or None,
        "opa_signing_key_file": _read(env, "OPA_SIGNING_KEY_FILE") or None,
        "opa_verification_key_file": _read(env, "OPA_VERIFICATION_KEY_FILE") or None,
        "opa_shadow_url": _read(env, "OPA_SHADOW_URL") or None,
        "opa_shadow_port": _int(env, "OPA_SHADOW_PORT", defaults.opa_shadow_port),
        "opa_long_poll_seconds": _int(env, "OPA_LONG_POLL_SECONDS", defaults.opa_long_poll_seconds),
        "opa_decision_logs": _bool(env, "OPA_DECISION_LOGS", defaults.opa_decision_logs),
        "opa_decision_log_retention_days": _int(
            env, "OPA_DECISION_LOG_RETENTION_DAYS", defaults.opa_decision_log_retention_days
        ),
        "policy_self_approval": _bool(env, "POLICY_SELF_APPROVAL", defaults.policy_self_approval),
        "policy_coverage_threshold": _float(env, "POLICY_COVERAGE_THRESHOLD", defaults.policy_coverage_threshold),
        "policy_impact_sample": _int(env, "POLICY_IMPACT_SAMPLE", defaults.policy_impact_sample),
        "policy_bootstrap": _bool(env, "POLICY_BOOTSTRAP", defaults.policy_bootstrap),
    }


def ai_settings_from_env(env: Mapping[str, str], defaults: Settings) -> dict[str, Any]:
    """The AI supervisor's settings (checked by server.ai.settings.check_ai_settings)."""
    return {
        "openai_api_key": _read(env, "OPENAI_API_KEY") or None,
        "openai_base_url": _read(env, "OPENAI_BASE_URL") or None,
        "openai_model": _read(env, "OPENAI_MODEL") or defaults.openai_model,
        "openai_timeout": _float(env, "OPENAI_TIMEOUT", defaults.openai_timeout),
        "openai_max_retries": _int(env, "OPENAI_MAX_RETRIES", defaults.openai_max_retries),
        "openai_retry_backoff_seconds": _float(
            env, "OPENAI_RETRY_BACKOFF_SECONDS", defaults.openai_retry_backoff_seconds
        ),
        "ai_circuit_failures": _int(env, "AI_CIRCUIT_FAILURES", defaults.ai_circuit_failures),
        "ai_circuit_reset_seconds": _float(env, "AI_CIRCUIT_RESET_SECONDS", defaults.ai_circuit_reset_seconds),
        "ai_daily_token_budget": _int(env, "AI_DAILY_TOKEN_BUDGET", defaults.ai_daily_token_budget),
        "ai_supervisor_interval_seconds": _float(
            env, "AI_SUPERVISOR_INTERVAL_SECONDS", defaults.ai_supervisor_interval_seconds
        ),
        "ai_price_per_1k_input": _float(env, "AI_PRICE_PER_1K_INPUT", defaults.ai_price_per_1k_input),
        "ai_price_per_1k_output": _float(env, "AI_PRICE_PER_1K_OUTPUT", defaults.ai_price_per_1k_output),
        "ai_error_rate_alert": _float(env, "AI_ERROR_RATE_ALERT", defaults.ai_error_rate_alert),
        "ai_denial_rate_alert": _float(env, "AI_DENIAL_RATE_ALERT", defaults.ai_denial_rate_alert),
    }


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
