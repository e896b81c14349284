"""The Flask side of observability: a request id per request (the client's X-Request-ID when it
is a sane token, else a new one) put on every log line of the request and returned in the
response header; per-request metrics by endpoint name; and `GET /metrics`.

`/metrics` authenticates itself: a bearer token (METRICS_TOKEN, compared in constant time), or
nothing when METRICS_PUBLIC=true. It is public to the authz policy (and in code, like the health
endpoints, so that a scrape works while OPA is down)."""

from __future__ import annotations

import hmac
from time import perf_counter
from typing import Any

from flask import Blueprint, Flask, Response, g, request

from server.errors import Problem
from server.extensions import services
from server.observability.logs import request_id_from, request_id_var
from server.observability.metrics import exposition, metrics

REQUEST_ID_HEADER = "X-Request-ID"
# The click redirect (normally answered before Flask, see server.clicks.redirect) and the
# advertisers' postback arrive at traffic volume: they are counted, but not timed per request.
UNTIMED_ENDPOINTS = frozenset({"clicks.redirect", "clicks.postback"})
UNCOUNTED_ENDPOINTS = frozenset({"clicks.redirect"})

observability = Blueprint("observability", __name__)


def current_request_id() -> str | None:
    return request_id_var.get()


def _start_request() -> None:
    g.request_started = perf_counter()
    g.request_id_token = request_id_var.set(request_id_from(request.headers.get(REQUEST_ID_HEADER)))


def _finish_request(response: Response) -> Response:
    request_id = request_id_var.get()
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    endpoint = request.endpoint or "unmatched"
    if endpoint not in UNCOUNTED_ENDPOINTS:
        started = g.get("request_started")
        seconds = None if started is None or endpoint in UNTIMED_ENDPOINTS else perf_counter() - started
        metrics().request_answered(endpoint, request.method, response.status_code, seconds)
    return response


def _end_request(_exc: BaseException | None) -> None:
    token = g.pop("request_id_token", None)
    if token is not None:
        try:
            request_id_var.reset(token)
        except ValueError:  # torn down in another context (a streamed response): forget it there
            request_id_var.set(None)


def register_request_observability(app: Flask) -> None:
    """Request ids and request metrics; registered before authorisation so that its answers
    (401, 403, 503) carry the id and are counted too."""
    app.before_request(_start_request)
    app.after_request(_finish_request)
    app.teardown_request(_end_request)


def count_unhandled_exception() -> str | None:
    """Count the current request's unhandled exception; returns the request id to report."""
    metrics().unhandled_exception(request.endpoint or "unmatched")
    return request_id_var.get()


def metrics_refusal(settings: Any, authorization: str | None) -> tuple[str, str] | None:
    """Why a scrape with this Authorization header is refused ((reason code, detail)), or None.
    Shared by `GET /metrics` and the worker's metrics listener (server.observability.listener)."""
    if settings.metrics_public:
        return None
    if not settings.metrics_token:
        return (
            "metrics_token_not_configured",
            "metrics need a bearer token: set METRICS_TOKEN (or METRICS_PUBLIC=true on a private network)",
        )
    scheme, _, token = (authorization or "").partition(" ")
    given = token.strip().encode() if scheme.lower() == "bearer" else b""
    if not hmac.compare_digest(given, settings.metrics_token.encode()):
        return "invalid_metrics_token", "send the metrics token as 'Authorization: Bearer <METRICS_TOKEN>'"
    return None


@observability.get("/metrics", endpoint="metrics")
def scrape() -> Response:
    refusal = metrics_refusal(services().settings, request.headers.get("Authorization"))
    if refusal is not None:
        raise Problem(401, "Authentication required", refusal[1], extra={"reasons": [refusal[0]]})
    body, content_type = exposition(request.headers.get("Accept"))
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = "no-store"
    return response


def _www_authenticate(response: Any) -> Any:
    if response.status_code == 401:
        response.headers.setdefault("WWW-Authenticate", 'Bearer realm="metrics"')
    return response


observability.after_request(_www_authenticate)
