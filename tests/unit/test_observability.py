"""Observability settings and the pure parts of logging: LOG_FORMAT and METRICS_* settings, the
JSON formatter, request ids and the redaction of secrets in logged URLs."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from server.config import ConfigError, Settings
from server.observability.logs import (
    JsonFormatter,
    RequestIdFilter,
    configure_logging,
    redact_url,
    request_id_from,
    request_id_var,
)

PRODUCTION = {"SMARTLINKS_ENV": "production", "SECRET_KEY": "p" * 40, "SESSION_COOKIE_SECURE": "true"}


def test_log_format_is_text_in_development_and_json_in_production() -> None:
    assert Settings.from_env({}).log_format == "text"
    assert Settings.from_env(PRODUCTION).log_format == "json"
    assert Settings.from_env({**PRODUCTION, "LOG_FORMAT": "text"}).log_format == "text"
    assert Settings.from_env({"LOG_FORMAT": "JSON"}).log_format == "json"
    with pytest.raises(ConfigError, match="LOG_FORMAT must be one of text, json"):
        Settings.from_env({"LOG_FORMAT": "xml"})


def test_metrics_settings(tmp_path: Path) -> None:
    defaults = Settings.from_env({})
    assert defaults.metrics_token is None and defaults.metrics_public is False
    token_file = tmp_path / "metrics-token"
    token_file.write_text("t" * 40 + "\n")
    settings = Settings.from_env({"METRICS_TOKEN_FILE": str(token_file), "METRICS_PUBLIC": "true"})
    assert settings.metrics_token == "t" * 40 and settings.metrics_public is True
    assert settings.redacted()["metrics_token"] == "***"
    with pytest.raises(ConfigError, match="METRICS_TOKEN must have at least 32 characters"):
        Settings.from_env({"METRICS_TOKEN": "short"})


def test_request_ids_keep_sane_client_tokens_only() -> None:
    assert request_id_from("abc-123_x.y:z@w") == "abc-123_x.y:z@w"
    for header in (None, "", "has space", "x" * 129, "-leading-dash", "line\nbreak", 'q"uote', "é"):
        made = request_id_from(header)
        assert made != header and len(made) == 32 and int(made, 16) >= 0


def test_json_lines_carry_the_request_id_and_the_exception() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.unit.json")
    logger.addHandler(handler)
    logger.propagate = False
    token = request_id_var.set("req-1")
    try:
        try:
            raise ValueError("bad value")
        except ValueError:
            logger.exception("it failed: %s", "details")
    finally:
        request_id_var.reset(token)
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["message"] == "it failed: details" and line["level"] == "ERROR"
    assert line["logger"] == "tests.unit.json" and line["request_id"] == "req-1"
    assert line["time"].endswith("+00:00")
    assert line["exception"]["type"] == "ValueError" and line["exception"]["message"] == "bad value"
    assert "Traceback" in line["exception"]["stack"]


def test_text_lines_name_the_request() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure_logging("INFO", "text", stream)
    try:
        logging.getLogger("tests.unit.text").info("outside")
        token = request_id_var.set("req-2")
        logging.getLogger("tests.unit.text").info("inside")
        request_id_var.reset(token)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    outside, inside = stream.getvalue().splitlines()
    assert "[-]: outside" in outside and "[req-2]: inside" in inside


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        (
            "GET /postback?click_id=c1&secret=s3cr3t&payout=2 HTTP/1.1",
            "GET /postback?click_id=c1&secret=***&payout=2 HTTP/1.1",
        ),
        ("secret=abc&x=1", "secret=***&x=1"),
        ("/portal/invitations/tok_abcdef?next=1", "/portal/invitations/***?next=1"),
        ("/v1/decisions?limit=5", "/v1/decisions?limit=5"),
        ("/r/slug?sub1=a&token=t", "/r/slug?sub1=a&token=***"),
    ],
)
def test_secrets_in_logged_urls_are_redacted(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
