"""The server as the OPA sidecars' control plane: bundles (ETag/304 and long polling), status
reports and decision-log batches, under /opa, authenticated with OPA's own bearer token.

Long polling. OPA (with `long_polling_timeout_seconds`) sends `Prefer: modes=snapshot,delta;
wait=N` and `If-None-Match: <the ETag it holds>`. When that ETag is still current the request is
held until the version changes or N seconds pass (then 304), and OPA asks again at once; an
answer with `Content-Type: application/vnd.openpolicyagent.bundles` keeps OPA in long-poll mode.
A held request costs one gunicorn thread per sidecar. Activation may commit in another worker
process, so a held request re-reads the active version from the database every
`POLL_INTERVAL` seconds (one indexed row; shared by every held request of the process) and is
woken at once by an activation committed in its own process (`BundleWatch.notify`).

Integrity. The bytes served are the stored bundle only when their SHA-256 matches the one
recorded at publication; the ETag is that SHA-256. OPA itself verifies the bundle's signature
(`keys` and `bundles.*.signing` in its configuration) and keeps its last good bundle when the
bundle is unsigned or altered."""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import logging
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Response, current_app, request
from sqlalchemy import select

from server.errors import Problem
from server.extensions import services
from server.policies import services as policies
from server.policies.keys import bundle_token
from server.policies.models import ACTIVE, SHADOW, PolicyVersion

log = logging.getLogger(__name__)

opa_bundles = Blueprint("opa_bundles", __name__, url_prefix="/opa")

BUNDLE_MEDIA_TYPE = "application/vnd.openpolicyagent.bundles"
RESOURCES = {"active": ACTIVE, "shadow": SHADOW}
POLL_INTERVAL = 0.15
MAX_WAIT = 30.0
MAX_LOG_BYTES = 64 * 1024 * 1024  # decompressed size of one decision-log batch
EXTENSION_KEY = "smartlinks.policies.bundle_watch"


@dataclass(frozen=True)
class Served:
    revision: str
    sha256: str

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'


class BundleWatch:
    """Per-process view of the active and shadow versions, refreshed at most every POLL_INTERVAL,
    and the bundle bytes by SHA-256 (a bundle never changes under a given digest)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._state: dict[str, Served | None] = {}
        self._read_at = 0.0
        self._bytes: dict[str, bytes] = {}
        self.closed = False

    def close(self) -> None:
        """Answer every held request now (the process is stopping)."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def notify(self) -> None:
        """A version changed in this process: drop the cached state and wake held requests."""
        with self._cond:
            self._read_at = 0.0
            self._cond.notify_all()

    def current(self, status: str) -> Served | None:
        now = time.monotonic()
        with self._cond:
            if now - self._read_at < POLL_INTERVAL and status in self._state:
                return self._state[status]
        fresh: dict[str, Served | None] = {ACTIVE: None, SHADOW: None}
        with policies.reading(services().db) as session:
            for revision, sha256, state in session.execute(
                select(PolicyVersion.revision, PolicyVersion.sha256, PolicyVersion.status).where(
                    PolicyVersion.status.in_((ACTIVE, SHADOW))
                )
            ):
                fresh[state] = Served(revision, sha256)
        with self._cond:
            self._state = fresh
            self._read_at = time.monotonic()
            return fresh.get(status)

    def wait(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait(timeout)

    def bundle(self, served: Served) -> bytes:
        cached = self._bytes.get(served.sha256)
        if cached is not None:
            return cached
        with policies.reading(services().db) as session:
            data = session.scalar(select(PolicyVersion.bundle).where(PolicyVersion.revision == served.revision))
        if not isinstance(data, bytes) or hashlib.sha256(data).hexdigest() != served.sha256:
            log.error("bundle of %s does not match its recorded SHA-256: not served", served.revision)
            raise Problem(
                503,
                "Bundle integrity check failed",
                f"the stored bundle of {served.revision} does not match its recorded SHA-256; it is not served",
                type_="bundle-altered",
            )
        if len(self._bytes) > 8:
            self._bytes.clear()
        self._bytes[served.sha256] = data
        return data


def bundle_watch(app: Flask | None = None) -> BundleWatch:
    target = app or current_app
    watch = target.extensions.get(EXTENSION_KEY)
    if not isinstance(watch, BundleWatch):
        watch = BundleWatch()
        target.extensions[EXTENSION_KEY] = watch
    return watch


@opa_bundles.record_once
def _setup(state: Any) -> None:
    state.app.extensions[EXTENSION_KEY] = BundleWatch()


def require_opa_token() -> None:
    """OPA authenticates with `services.<name>.credentials.bearer.token`; nothing else gets in."""
    expected = bundle_token(services().settings, create=False)
    if expected is None:
        raise Problem(
            503,
            "Bundle server not configured",
            "set OPA_BUNDLE_TOKEN (or OPA_BUNDLE_TOKEN_FILE) to let OPA sidecars use this server",
            type_="bundle-server-not-configured",
        )
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise Problem(401, "Invalid token", "the /opa endpoints take the OPA sidecar's bearer token only")


def long_poll_seconds() -> float:
    """The `wait=N` of OPA's `Prefer` header (0 without one), capped by the server."""
    for preference in request.headers.get("Prefer", "").replace(",", ";").split(";"):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                wanted = float(value.strip())
            except ValueError:
                return 0.0
            return max(0.0, min(wanted, float(services().settings.opa_long_poll_seconds), MAX_WAIT))
    return 0.0


@opa_bundles.get("/bundles/<name>")
def bundle(name: str) -> Response:
    """The bundle of the active (or shadow) version; 304 while OPA's ETag is current."""
    require_opa_token()
    status = RESOURCES.get(name.removesuffix(".tar.gz"))
    if status is None:
        raise Problem(404, "Not Found", f"no bundle resource {name!r}; use bundles/active or bundles/shadow")
    watch = bundle_watch()
    held = request.headers.get("If-None-Match", "").strip()
    served = watch.current(status)
    deadline = time.monotonic() + long_poll_seconds()
    while held and served is not None and served.etag == held and time.monotonic() < deadline and not watch.closed:
        watch.wait(min(POLL_INTERVAL, max(0.0, deadline - time.monotonic())))
        served = watch.current(status)
    if served is None:
        raise Problem(404, "Not Found", f"no {status} policy version", type_="no-policy-version")
    headers = {"ETag": served.etag, "Cache-Control": "no-store", "X-Policy-Revision": served.revision}
    if held and served.etag == held:
        # OPA stays in long-poll mode across 304s (it decides on the last 200's content type).
        return Response(status=304, headers=headers)
    return Response(watch.bundle(served), status=200, headers=headers, content_type=BUNDLE_MEDIA_TYPE)


def _json_body(raw: bytes) -> Any:
    """The JSON body OPA sends (`Content-Type: application/json`, gzip for decision logs)."""
    if request.mimetype != "application/json":
        raise Problem(415, "Unsupported Media Type", "send the body as application/json (gzip allowed)")
    if request.headers.get("Content-Encoding", "").lower() == "gzip":
        try:
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            raw = inflater.decompress(raw, MAX_LOG_BYTES)
            if inflater.unconsumed_tail:
                raise Problem(413, "Request Entity Too Large", f"the decompressed batch exceeds {MAX_LOG_BYTES} bytes")
        except (zlib.error, OSError, EOFError) as exc:
            raise Problem(400, "Malformed body", "the body is not valid gzip") from exc
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, "Malformed JSON", "the body is not valid JSON") from exc


@opa_bundles.post("/status/", defaults={"partition": ""})
@opa_bundles.post("/status/<partition>")
def status(partition: str) -> Response:
    """OPA's status plugin: which revision the sidecar runs, bundle errors, decision-log health."""
    require_opa_token()
    report = _json_body(request.get_data())
    if not isinstance(report, dict):
        raise Problem(400, "Validation failed", "a status report is a JSON object")
    svc = services()
    with svc.db.unit_of_work() as uow:
        policies.record_status(uow.session, partition, report)
        uow.commit()
    return Response(status=204)


@opa_bundles.post("/logs/", defaults={"partition": ""})
@opa_bundles.post("/logs/<partition>")
def decision_logs(partition: str) -> Response:
    """OPA's decision_logs plugin: a gzip JSON array of events, stored once per decision_id."""
    require_opa_token()
    events = _json_body(request.get_data())
    if not isinstance(events, list):
        raise Problem(400, "Validation failed", "a decision-log batch is a JSON array of events")
    svc = services()
    with svc.db.unit_of_work() as uow:
        stored = policies.store_decision_logs(uow.session, partition, events)
        uow.commit()
    body = json.dumps({"received": len(events), "stored": stored})
    return Response(body, status=200, content_type="application/json")


def gzip_json(value: Any) -> bytes:
    """A JSON value gzip-compressed as OPA sends decision-log batches (tests, tools)."""
    return gzip.compress(json.dumps(value).encode())
