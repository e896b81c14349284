"""gunicorn settings used by `smartlinks serve` (`--config python:server.gunicorn_conf`); the
command line sets bind, workers, threads and timeouts.

* `worker_exit` runs in each worker after it stopped serving (SIGTERM, graceful timeout, max
  requests): it flushes the worker's click buffer so that a graceful stop loses no click. A hard
  kill (SIGKILL) skips it: see docs/operations.md "Clicks and conversions".
* `logger_class` leaves click redirects (`/r/...`) out of the access log: every click is
  recorded in the `clicks` table (with a salted address hash rather than the raw address), and
  formatting and writing a log line per click would cost the redirect a fifth of its time."""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger


class ClickQuietLogger(Logger):  # type: ignore[misc]
    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> None:
        if str(environ.get("PATH_INFO", "")).startswith("/r/"):
            return
        super().access(resp, req, environ, request_time)


logger_class = ClickQuietLogger


def worker_exit(server: Any, worker: Any) -> None:
    from server.clicks.redirect import close_click_path

    close_click_path(getattr(worker, "wsgi", None))
