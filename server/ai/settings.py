"""Checks of the AI supervisor's settings, run by Settings.check()."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from server.config import Settings


def check_ai_settings(settings: Settings) -> None:
    """Refuse AI settings that cannot work; the message names the setting."""
    from server.config import ConfigError

    if settings.openai_timeout <= 0:
        raise ConfigError("OPENAI_TIMEOUT must be positive (seconds per model request)")
    if not 0 <= settings.openai_max_retries <= 10:
        raise ConfigError("OPENAI_MAX_RETRIES must be between 0 and 10")
    if settings.ai_circuit_failures < 1:
        raise ConfigError("AI_CIRCUIT_FAILURES must be at least 1")
    if settings.ai_circuit_reset_seconds <= 0:
        raise ConfigError("AI_CIRCUIT_RESET_SECONDS must be positive")
    if settings.ai_daily_token_budget < 0:
        raise ConfigError("AI_DAILY_TOKEN_BUDGET must not be negative (0 keeps the model off)")
    if settings.ai_supervisor_interval_seconds != 0 and settings.ai_supervisor_interval_seconds < 10:
        raise ConfigError("AI_SUPERVISOR_INTERVAL_SECONDS must be 0 (off) or at least 10")
    for name, value in (
        ("AI_ERROR_RATE_ALERT", settings.ai_error_rate_alert),
        ("AI_DENIAL_RATE_ALERT", settings.ai_denial_rate_alert),
    ):
        if not 0 < value <= 1:
            raise ConfigError(f"{name} must be a share in (0, 1]")
    if settings.openai_base_url:
        parts = urlsplit(settings.openai_base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"OPENAI_BASE_URL must be an http(s) URL, got {settings.openai_base_url!r}")
        if (
            settings.environment == "production"
            and parts.scheme != "https"
            and parts.hostname
            not in (
                "127.0.0.1",
                "localhost",
                "::1",
            )
        ):
            raise ConfigError("production sends the OpenAI key only over HTTPS: OPENAI_BASE_URL must be https://")
