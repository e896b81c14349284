"""Per-click facts taken from the request: device class, country, client address, salted
address hash and bot signals. Pure functions and one small in-memory counter; no Flask.

Bot rules (a bot click is still redirected, and recorded with its reason, but never counted in
the learning counters): a HEAD request, a prefetch (`Purpose`/`Sec-Purpose: prefetch`,
`X-Moz: prefetch`), a missing or known crawler / HTTP-library user agent, or more than
`BOT_CLICKS_PER_MINUTE` clicks in a minute from one address (a per-process sliding-window
estimate: with W worker processes an address may reach up to W times the limit before every
process flags it)."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

DEVICES = ("desktop", "mobile", "tablet")
# Cloudflare's "unknown" and "Tor" pseudo-countries are not countries.
_NOT_COUNTRIES = frozenset({"XX", "T1"})

_CRAWLER = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|archiver|facebookexternalhit|embedly|preview|headless|phantomjs|"
    r"python-requests|python-urllib|aiohttp|httpx|curl/|wget/|libwww|scrapy|okhttp|go-http-client|java/|"
    r"apache-httpclient|node-fetch|axios/|lighthouse|pingdom|uptimerobot|statuscake|monitor\b",
    re.IGNORECASE,
)
_TABLET = re.compile(r"ipad|tablet|playbook|silk/|kindle|android(?!.*mobile)", re.IGNORECASE)
_MOBILE = re.compile(r"mobi|iphone|ipod|windows phone|blackberry|opera mini|iemobile", re.IGNORECASE)


@lru_cache(maxsize=4096)
def device_class(user_agent: str) -> str:
    """`desktop`, `mobile` or `tablet` from a user agent (cached: user agents repeat a lot)."""
    if _TABLET.search(user_agent):
        return "tablet"
    if _MOBILE.search(user_agent):
        return "mobile"
    return "desktop"


@lru_cache(maxsize=4096)
def crawler_user_agent(user_agent: str) -> bool:
    return bool(_CRAWLER.search(user_agent))


def country_code(raw: str | None) -> str | None:
    """An ISO 3166 alpha-2 code from a geo header, or None when absent or not a country."""
    if not raw or len(raw) != 2:
        return None
    code = raw.upper()
    if not ("A" <= code[0] <= "Z" and "A" <= code[1] <= "Z") or code in _NOT_COUNTRIES:
        return None
    return code


def environ_key(header: str) -> str:
    """The WSGI environ key of an HTTP request header."""
    return "HTTP_" + header.upper().replace("-", "_")


def client_address(environ: Mapping[str, Any], header_key: str | None) -> str:
    """The client's address: the first address of a trusted proxy header when one is configured
    (CLIENT_IP_HEADER, e.g. CF-Connecting-IP), else the socket peer."""
    if header_key:
        value = environ.get(header_key)
        if value:
            return str(value).split(",", 1)[0].strip()[:64]
    return str(environ.get("REMOTE_ADDR") or "")


def address_hasher(secret_key: str, cache_size: int = 65536) -> Callable[[str], str | None]:
    """HMAC-SHA256 of an address with a key derived from SECRET_KEY: comparable between clicks,
    not reversible by someone who reads the database without the secret. Recent addresses are
    cached (an address usually clicks more than once)."""
    key = hmac.new(secret_key.encode(), b"smartlinks click address", hashlib.sha256).digest()
    template = hmac.new(key, digestmod=hashlib.sha256)

    @lru_cache(maxsize=cache_size)
    def hash_address(address: str) -> str | None:
        if not address:
            return None
        mac = template.copy()
        mac.update(address.encode())
        return mac.hexdigest()

    return hash_address


class ClickIds:
    """Click ids, 32 hex characters: 48 bits of milliseconds since the epoch, then 80 unguessable
    bits (BLAKE2b keyed with 256 random bits drawn once per process, over a counter).

    Time first (as in UUIDv7) so that new ids land at the end of the clicks table's primary-key
    index instead of at random places in it: an insert then costs the same with a billion clicks
    as with a thousand, on SQLite and PostgreSQL alike. The key is drawn again in every process
    (a forked worker never repeats its parent's ids), with one system call per process rather than
    one per click (getrandom is slow on some VMs)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._pid = -1
        self._key = b""
        self._counter = itertools.count()

    def next(self) -> str:
        if self._pid != os.getpid():
            self._key = os.urandom(32)
            self._counter = itertools.count()
            self._pid = os.getpid()
        millis = int(self._clock() * 1000) & 0xFFFFFFFFFFFF
        tail = hashlib.blake2b(next(self._counter).to_bytes(8, "big"), key=self._key, digest_size=10).hexdigest()
        return f"{millis:012x}{tail}"


class RateCounter:
    """Clicks per key over the last minute, estimated with two fixed windows (the current minute
    and the previous one weighted by how much of it still overlaps the sliding minute). Memory is
    bounded: at most `max_keys` keys per minute are tracked; keys beyond that are not flagged."""

    def __init__(self, limit_per_minute: int, *, max_keys: int = 200_000, clock: Callable[[], float] = time.monotonic):
        self.limit = limit_per_minute
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._window = -1
        self._current: dict[str, int] = {}
        self._previous: dict[str, int] = {}

    def over_limit(self, key: str) -> bool:
        """Count one click for `key`; True when the key is above the limit per minute."""
        if self.limit <= 0 or not key:
            return False
        now = self._clock()
        window = int(now // 60)
        with self._lock:
            if window != self._window:
                self._previous = self._current if window == self._window + 1 else {}
                self._current = {}
                self._window = window
            count = self._current.get(key)
            if count is None:
                if len(self._current) >= self.max_keys:
                    return False
                count = 0
            count += 1
            self._current[key] = count
            previous = self._previous.get(key, 0)
        overlap = 1.0 - (now % 60) / 60.0
        return count + previous * overlap > self.limit


def bot_reason(environ: Mapping[str, Any], user_agent: str) -> str | None:
    """Why this request is not a human click (rate limits aside), or None."""
    if environ.get("REQUEST_METHOD") == "HEAD":
        return "head_request"
    purpose = environ.get("HTTP_SEC_PURPOSE") or environ.get("HTTP_PURPOSE") or environ.get("HTTP_X_MOZ") or ""
    if purpose and "prefetch" in purpose.lower():
        return "prefetch"
    if not user_agent:
        return "no_user_agent"
    if crawler_user_agent(user_agent):
        return "crawler_user_agent"
    return None
