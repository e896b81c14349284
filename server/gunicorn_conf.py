"""gunicorn settings used by `smartlinks serve` (`--config python:server.gunicorn_conf`); the
command line sets bind, workers, threads and timeouts.

* `worker_exit` runs in each worker after it stopped serving (SIGTERM, graceful timeout, max
  requests): it flushes the worker's click buffer so that a graceful stop loses no click. A hard
  kill (SIGKILL) skips it: see docs/operations.md "Clicks and conversions".
* `child_exit` runs in the master when a worker has exited: in Prometheus multiprocess mode
  (PROMETHEUS_MULTIPROC_DIR, set by `smartlinks serve`) it drops the worker's live gauges.
* `logger_class` leaves click redirects (`/r/...`) out of the access log: every click is
  recorded in the `clicks` table (with a salted address hash rather than the raw address), and
  formatting and writing a log line per click would cost the redirect a fifth of its time. It
  also hides secrets in logged URLs (the postback secret, invitation tokens) and, with
  LOG_FORMAT=json, writes gunicorn's own lines as JSON too, the access lines with the request id
  the app returned in X-Request-ID."""

from __future__ import annotations

import os
from typing import Any

from gunicorn.glogging import Logger


class ClickQuietLogger(Logger):  # type: ignore[misc]
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        from server.config import log_format_from_env
        from server.observability.logs import RequestIdFilter, formatter

        if log_format_from_env(os.environ) == "json":
            for handler in (*self.error_log.handlers, *self.access_log.handlers):
                handler.setFormatter(formatter("json"))
                handler.addFilter(RequestIdFilter())

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        from server.observability.logs import redact_url

        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        for key in ("r", "U", "q"):
            if isinstance(atoms.get(key), str):
                atoms[key] = redact_url(atoms[key])
        return atoms

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if str(environ.get("PATH_INFO", "")).startswith("/r/"):
            return
        from server.observability.logs import request_id_var

        request_id = next((v for k, v in getattr(resp, "headers", ()) if k.lower() == "x-request-id"), None)
        token = request_id_var.set(request_id)
        try:
            super().access(resp, req, environ, request_time)
        finally:
            request_id_var.reset(token)


logger_class = ClickQuietLogger


def worker_exit(server: Any, worker: Any) -> None:
    from server.clicks.redirect import close_click_path

    close_click_path(getattr(worker, "wsgi", None))


def child_exit(server: Any, worker: Any) -> None:
    from server.observability.metrics import process_exited

    process_exited(worker.pid)
