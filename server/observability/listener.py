"""`GET /metrics` for a process without the web app: the `smartlinks autopilot run` worker.

A scheduler running in its own container (not under `smartlinks serve`) records job runs,
decisions and OPA latencies in its own registry, which no gunicorn worker can answer for. This
listener serves them on `--metrics-port` with the same access rule as the app's endpoint
(METRICS_TOKEN as a bearer token, or METRICS_PUBLIC) and the same exposition. It answers nothing
else: every other path is a 404, every other method a 405, as problem+json."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from server.observability.metrics import exposition
from server.observability.web import metrics_refusal

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]


def _problem(start_response: StartResponse, status: str, detail: str, **extra: Any) -> list[bytes]:
    code, _, title = status.partition(" ")
    body = json.dumps({"type": "about:blank", "title": title, "status": int(code), "detail": detail, **extra}).encode()
    headers = [("Content-Type", "application/problem+json"), ("Content-Length", str(len(body)))]
    if code == "401":
        headers.append(("WWW-Authenticate", 'Bearer realm="metrics"'))
    if code == "405":
        headers.append(("Allow", "GET, HEAD"))
    start_response(status, headers)
    return [body]


def metrics_app(settings: Any) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """The WSGI app of the listener: `/metrics` only."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != "/metrics":
            return _problem(start_response, "404 Not Found", "this listener serves /metrics only")
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD"):
            return _problem(start_response, "405 Method Not Allowed", "scrape with GET")
        refusal = metrics_refusal(settings, environ.get("HTTP_AUTHORIZATION"))
        if refusal is not None:
            return _problem(start_response, "401 Unauthorized", refusal[1], reasons=[refusal[0]])
        body, content_type = exposition(environ.get("HTTP_ACCEPT"))
        start_response(
            "200 OK",
            [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store")],
        )
        return [body] if method == "GET" else []

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("metrics listener: " + format, *args)


class MetricsListener:
    """The listener in a daemon thread: `start()` binds (port 0 picks a free one), `stop()` ends it."""

    def __init__(self, settings: Any, host: str, port: int) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        self._server = make_server(self.host, self.port, metrics_app(self.settings), handler_class=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-listener", daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
