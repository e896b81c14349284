"""Log records as text or as one JSON object per line, each carrying the id of the request it
belongs to.

The request id lives in a context variable (set by `server.observability.web` for a request,
reset when the request ends), so every log line written while a request is served carries it,
whichever module logs. Nothing here reads request bodies or headers: what reaches the logs is
what the code chose to log (secrets are never logged; `Settings.redacted()` is the safe view of
the settings)."""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from server.config import LOG_FORMATS

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
# A client's X-Request-ID is kept only when it is a plain token (no spaces, quotes or control
# characters that could forge log lines); otherwise the server makes one.
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")

request_id_var: ContextVar[str | None] = ContextVar("smartlinks_request_id", default=None)


def new_request_id() -> str:
    return secrets.token_hex(16)


def request_id_from(header: str | None) -> str:
    """The client's X-Request-ID when it is a sane token, else a new id."""
    if header and _SANE_ID.fullmatch(header):
        return header
    return new_request_id()


class RequestIdFilter(logging.Filter):
    """Puts `record.request_id` on every record (the current request's id, or "-")."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id_var.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, request_id when
    there is one, and the exception (type, message, stack) when the record has one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id and request_id != "-":
            entry["request_id"] = request_id
        if record.exc_info and record.exc_info[0] is not None:
            kind, value, _ = record.exc_info
            entry["exception"] = {
                "type": kind.__name__,
                "message": str(value),
                "stack": self.formatException(record.exc_info),
            }
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(level: str, log_format: str, stream: Any = None) -> logging.Handler:
    """Send the root logger's records to `stream` (stderr) in `log_format`, with request ids.
    Called once per process by the entry points (CLI, gunicorn's WSGI module), never by the app
    factory; calling it again replaces the handler it installed."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_smartlinks", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._smartlinks = True  # type: ignore[attr-defined]
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(formatter(log_format))
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


# Secrets a URL can carry: the postback secret (`?secret=`), tokens in query strings, and the
# single-use invitation token in `/portal/invitations/<token>`.
_SECRET_QUERY = re.compile(r"(?i)(^|[?&])((?:secret|token|password|api_key|key|signature)=)[^&#\s]*")
_SECRET_PATH = re.compile(r"(/portal/invitations/)[^/?#\s]+")


def redact_url(url: str) -> str:
    """`url` (a path with its query, or a request line) with secret values replaced by ***."""
    if "=" in url:
        url = _SECRET_QUERY.sub(r"\1\2***", url)
    if "/invitations/" in url:
        url = _SECRET_PATH.sub(r"\1***", url)
    return url
