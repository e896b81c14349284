"""One error contract: application/problem+json (RFC 9457) on the API, HTML pages elsewhere."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify, render_template, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

PROBLEM_BASE = "https://smartlinks.dev/problems/"


class Problem(Exception):
    """An error the API reports as problem+json; raise it from services or views."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str | None = None,
        *,
        type_: str | None = None,
        errors: Any = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_ or title.lower().replace(" ", "-")
        self.errors = errors
        self.extra = extra or {}


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    *,
    type_: str | None = None,
    errors: Any = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + (type_ or title.lower().replace(" ", "-")),
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if errors is not None:
        body["errors"] = errors
    body.update(extra or {})
    response = jsonify(body)
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


def wants_api() -> bool:
    """API callers get problem+json: paths under /v1, /webhooks, /opa, or a JSON Accept header."""
    path = request.path
    if path.startswith(("/v1/", "/webhooks/", "/opa/", "/postback")) or path in ("/healthz", "/readyz", "/metrics"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json", "application/problem+json"])
    return best in ("application/json", "application/problem+json")


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(Problem)
    def _problem(exc: Problem) -> Response | tuple[str, int]:
        if wants_api():
            return problem_response(
                exc.status, exc.title, exc.detail, type_=exc.type, errors=exc.errors, extra=exc.extra
            )
        return render_template("error.html", status=exc.status, title=exc.title, detail=exc.detail), exc.status

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError) -> Response | tuple[str, int]:
        return _problem(Problem(400, "Validation failed", "the request has invalid fields", errors=exc.messages))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response | tuple[str, int]:
        status = exc.code or 500
        title = exc.name
        detail = exc.description
        if status == 413:
            detail = f"the request body is larger than {app.config.get('MAX_CONTENT_LENGTH')} bytes"
        if wants_api():
            response = problem_response(status, title, detail)
            if status == 405 and exc.get_response().headers.get("Allow"):
                response.headers["Allow"] = exc.get_response().headers["Allow"]
            return response
        return render_template("error.html", status=status, title=title, detail=detail), status

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response | tuple[str, int]:
        # Logged once here (with the stack and the request id of every line of the request),
        # counted in smartlinks_unhandled_exceptions_total, and answered with the request id
        # so that a caller's report leads to this log line.
        from server.observability.web import count_unhandled_exception

        request_id = count_unhandled_exception()
        # The route's pattern, not the path: a path can carry a secret (an invitation token).
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        log.exception("unhandled error on %s %s", request.method, rule)
        detail = "an unexpected error occurred; it has been logged"
        if request_id:
            detail += f" with request id {request_id}"
        return _problem(
            Problem(500, "Internal Server Error", detail, extra={"request_id": request_id} if request_id else None)
        )
