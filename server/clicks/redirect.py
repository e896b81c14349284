"""`GET /r/<slug>`: route one click and answer 302, with no database or OPA call on the request.

Why a WSGI dispatch in front of Flask (`ClickDispatcher`): the redirect is the one request that
arrives at advertising volume, and Flask's request machinery (request context, URL matching,
`before_request` authorisation with its cached policy lookup, session, `after_request` hooks)
costs several times the routing itself. The dispatcher answers `GET`/`HEAD /r/<slug>` straight
from the WSGI environ and hands every other request to Flask untouched. The click path is in this
one module; the `clicks.redirect` Flask view calls the same `ClickHandler`, so the behaviour is
identical whichever way a request arrives (and the endpoint is still named in the authz data).

Background threads (routing refresh, click writer) start with the first click in a process, not
in the app factory, so that gunicorn's forked workers each start their own."""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from html import escape
from typing import Any
from urllib.parse import quote, unquote_plus

from flask import Flask

from server.clicks.routing import RoutingCache
from server.clicks.traffic import (
    ClickIds,
    RateCounter,
    address_hasher,
    bot_reason,
    client_address,
    country_code,
    device_class,
    environ_key,
)
from server.clicks.writer import ClickRecord, ClickWriter
from server.config import Settings
from server.db import Database

log = logging.getLogger(__name__)

EXTENSION_KEY = "smartlinks.clicks"
SUBS = ("sub1", "sub2", "sub3", "sub4", "sub5")
MAX_SUB_LENGTH = 200
MAX_USER_AGENT = 300

Headers = list[tuple[str, str]]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_COMMON = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
]
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{status} · {title}</title><link rel="stylesheet" href="/static/app.css"></head>
<body><main><section class="card narrow"><h1>{status} · {title}</h1><p>{detail}</p></section></main></body></html>
"""


class ErrorPage:
    """A click that cannot be redirected: an HTML page for browsers, problem+json for API clients."""

    def __init__(self, status: int, reason: str, title: str, detail: str) -> None:
        self.status = f"{status} {reason}"
        self.html = _PAGE.format(status=status, title=escape(title), detail=escape(detail)).encode()
        self.problem = json.dumps(
            {
                "type": "https://smartlinks.dev/problems/" + title.lower().replace(" ", "-"),
                "title": title,
                "status": status,
                "detail": detail,
            }
        ).encode()

    def response(self, environ: dict[str, Any]) -> tuple[str, Headers, bytes]:
        accept = str(environ.get("HTTP_ACCEPT", ""))
        if "json" in accept and "html" not in accept:
            body, kind = self.problem, "application/problem+json"
        else:
            body, kind = self.html, "text/html; charset=utf-8"
        headers = [
            ("Content-Type", kind),
            ("Content-Length", str(len(body))),
            ("Content-Security-Policy", "default-src 'self'"),
            *_COMMON,
        ]
        return self.status, headers, body


UNKNOWN_LINK = ErrorPage(404, "Not Found", "Link not found", "This link does not exist or is no longer available.")
NOTHING_TO_ROUTE = ErrorPage(
    503,
    "Service Unavailable",
    "No offer available",
    "This link has no offer available for you right now. Please try again later.",
)


class ClickHandler:
    """Routes one click from a WSGI environ; owns this process's routing table and click writer."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.routes = RoutingCache(db, refresh_seconds=settings.routing_refresh_seconds)
        self.writer = ClickWriter(
            db,
            flush_interval=settings.click_flush_interval,
            flush_size=settings.click_flush_size,
            max_buffered=settings.click_buffer_max,
        )
        self.rates = RateCounter(settings.bot_clicks_per_minute)
        self.hash_address = address_hasher(settings.secret_key)
        self._ids = ClickIds()
        self._country_key = environ_key(settings.country_header)
        self._address_key = environ_key(settings.client_ip_header) if settings.client_ip_header else None
        self._started_pid: int | None = None
        self._start_lock = threading.Lock()
        self._atexit = False

    # -- lifecycle ----------------------------------------------------------------------------
    def ensure_started(self) -> None:
        """Load the routing table and start the threads once per process (after a fork too)."""
        if self._started_pid == os.getpid():
            return
        with self._start_lock:
            if self._started_pid == os.getpid():
                return
            try:
                self.routes.refresh(force=True)
            except Exception:
                log.exception("routing table could not be loaded; retrying in the background")
            self.routes.start()
            self.writer.start()
            if not self._atexit:
                atexit.register(self.close)
                self._atexit = True
            self._started_pid = os.getpid()

    def close(self) -> None:
        """Stop refreshing and flush every queued click (graceful shutdown)."""
        self.routes.stop()
        self.writer.close()
        self._started_pid = None

    # -- the request ----------------------------------------------------------------------------
    def handle(self, environ: dict[str, Any]) -> tuple[str, Headers, bytes]:
        if self._started_pid != os.getpid():
            self.ensure_started()
        route = self.routes.table.get(environ["PATH_INFO"][3:])
        if route is None:
            return UNKNOWN_LINK.response(environ)

        user_agent = environ.get("HTTP_USER_AGENT", "")[:MAX_USER_AGENT]
        device = device_class(user_agent)
        country = country_code(environ.get(self._country_key))
        address = client_address(environ, self._address_key)
        reason = bot_reason(environ, user_agent)
        if self.rates.over_limit(address) and reason is None:
            reason = "rate_limit"

        # No rng: the samplers' pre-drawn choices, drawn per process (a forked worker draws its own).
        choice = route.choose(country, device, self.routes.capped_out)
        target = choice.target
        click_id = self._ids.next()
        query = environ.get("QUERY_STRING")
        subs = parse_subs(query) if query else {}
        self.writer.add(
            ClickRecord(
                click_id,
                route.link_id,
                target.offer_id if target is not None else None,
                route.allocation_id if target is not None and not choice.is_fallback else None,
                time.time(),
                choice.probability,
                choice.is_fallback,
                reason is not None,
                reason,
                country,
                device,
                self.hash_address(address),
                user_agent or None,
                subs,
            )
        )
        if target is None:
            return NOTHING_TO_ROUTE.response(environ)
        if subs:
            values = (click_id, *[quote(subs[k], safe="") if k in subs else "" for k in SUBS], country or "", device)
        else:
            values = (click_id, "", "", "", "", "", country or "", device)
        return "302 Found", [("Location", target.pattern.format(*values)), ("Content-Length", "0"), *_COMMON], b""


def parse_subs(query: str) -> dict[str, str]:
    """sub1..sub5 from a query string (first occurrence wins, each cut at 200 characters)."""
    subs: dict[str, str] = {}
    if "sub" not in query:
        return subs
    if not query.isascii():  # WSGI strings are bytes decoded as latin-1: re-decode raw UTF-8
        query = query.encode("latin-1").decode("utf-8", "replace")
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key in SUBS and key not in subs:
            subs[key] = unquote_plus(value)[:MAX_SUB_LENGTH]
    return subs


class ClickDispatcher:
    """WSGI middleware: `GET`/`HEAD /r/<slug>` go to the ClickHandler, everything else to Flask."""

    def __init__(self, handler: ClickHandler, app: WSGIApp) -> None:
        self.handler = handler
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/r/") and environ.get("REQUEST_METHOD") in ("GET", "HEAD") and "/" not in path[3:]:
            status, headers, body = self.handler.handle(environ)
            start_response(status, headers)
            return [body] if environ["REQUEST_METHOD"] == "GET" else []
        return self.app(environ, start_response)


def install(app: Flask, settings: Settings, db: Database) -> ClickHandler:
    """Put the click handler in `app.extensions` and its dispatcher in front of Flask."""
    handler = ClickHandler(settings, db)
    app.extensions[EXTENSION_KEY] = handler
    app.wsgi_app = ClickDispatcher(handler, app.wsgi_app)  # type: ignore[method-assign]
    return handler


def click_handler(app: Flask) -> ClickHandler:
    handler: ClickHandler = app.extensions[EXTENSION_KEY]
    return handler


def close_click_path(app: Any) -> None:
    """Flush this process's clicks (gunicorn worker_exit hook; safe to call more than once)."""
    extensions = getattr(app, "extensions", None)
    handler = extensions.get(EXTENSION_KEY) if isinstance(extensions, dict) else None
    if isinstance(handler, ClickHandler):
        handler.close()
