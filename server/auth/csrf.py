"""CSRF protection for session-authenticated pages: a per-session token that every unsafe
request must echo in a form field or the X-CSRF-Token header. Bearer-token API calls are exempt
(a browser never attaches them by itself)."""

from __future__ import annotations

import hmac
import secrets

from flask import request, session

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SESSION_KEY = "_csrf"
FIELD = "csrf_token"
HEADER = "X-CSRF-Token"


def csrf_token() -> str:
    token = session.get(SESSION_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[SESSION_KEY] = token
    return token


def csrf_ok() -> bool:
    if request.method in SAFE_METHODS:
        return True
    expected = session.get(SESSION_KEY)
    given = request.headers.get(HEADER) or request.form.get(FIELD)
    return isinstance(expected, str) and isinstance(given, str) and hmac.compare_digest(expected, given)
