"""The one client for the OPA sidecar's Data API: a keep-alive connection per thread, short
timeouts, and failures turned into distinct reason codes so that callers can fail closed.

It speaks HTTP/1.1 through `http.client` rather than `requests`: a decision sits on the hot path of
every governed action and every API request, and the plain connection costs a fraction of a
`requests` round trip (see docs/benchmarks.md)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from server.observability.metrics import metrics

OPA_UNAVAILABLE = "opa_unavailable"
OPA_TIMEOUT = "opa_timeout"
OPA_UNDEFINED = "opa_undefined"
OPA_MALFORMED = "opa_malformed"
OPA_ERROR = "opa_error"

_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class OpaError(Exception):
    """OPA gave no usable answer. `code` is one of the OPA_* reason codes."""

    def __init__(self, code: str, message: str, latency_ms: float = 0.0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.latency_ms = latency_ms


@dataclass(frozen=True)
class OpaAnswer:
    result: Any
    revision: str | None
    latency_ms: float
    decision_id: str | None


class _Reply:
    __slots__ = ("status", "body")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body


class _OneWrite:
    """Sends a request's head and a bytes body in one write. `http.client` writes them separately:
    two system calls and two segments (TCP_NODELAY is set) that wake OPA's reader twice."""

    _buffer: list[bytes]

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if isinstance(message_body, bytes) and not encode_chunked:
            self._buffer.extend((b"", b""))
            head = b"\r\n".join(self._buffer)
            del self._buffer[:]
            self.send(head + message_body)  # type: ignore[attr-defined]
            return
        super()._send_output(message_body, encode_chunked)  # type: ignore[misc]


class _Connection(_OneWrite, http.client.HTTPConnection):
    pass


class _TLSConnection(_OneWrite, http.client.HTTPSConnection):
    pass


class OpaClient:
    """Asks OPA for decisions. Thread-safe: each thread keeps its own keep-alive connection."""

    def __init__(self, url: str, *, connect_timeout: float = 0.25, timeout: float = 0.5) -> None:
        self.url = url.rstrip("/")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"OPA URL must be http(s)://host[:port], got {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.fallback_revision: str | None = None
        self._local = threading.local()
        self._all: set[http.client.HTTPConnection] = set()
        self._lock = threading.Lock()

    # -- connections --------------------------------------------------------------------------
    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = _TLSConnection if self._https else _Connection
            conn = cls(self._host, self._port, timeout=self.connect_timeout)
            self._local.conn = conn
            with self._lock:
                self._all.add(conn)
        if conn.sock is None:
            conn.connect()  # within connect_timeout
            sock: socket.socket = conn.sock  # type: ignore[assignment]
            sock.settimeout(self.timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _drop(self) -> None:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            with self._lock:
                self._all.discard(conn)
        self._local.conn = None

    def close(self) -> None:
        """Close every keep-alive connection this client opened, in any thread."""
        with self._lock:
            conns, self._all = self._all, set()
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def _request(self, method: str, path: str, body: bytes | None, timeout: float | None = None) -> _Reply:
        """One request on this thread's connection; a stale keep-alive connection (closed by OPA
        while idle, or by an OPA restart) is retried once on a fresh one: Data API reads are
        idempotent. `timeout` replaces the read timeout for this request only."""
        for attempt in (1, 2):
            reused = getattr(self._local, "conn", None) is not None and self._local.conn.sock is not None
            try:
                conn = self._connection()
                if timeout is not None:
                    conn.sock.settimeout(timeout)
                conn.request(method, self._prefix + path, body=body, headers=_HEADERS)
                response = conn.getresponse()
                data = response.read()
                if response.will_close:
                    self._drop()
                elif timeout is not None and conn.sock is not None:
                    conn.sock.settimeout(self.timeout)
                return _Reply(response.status, data)
            except TimeoutError:
                self._drop()
                raise
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, http.client.BadStatusLine):
                self._drop()
                if attempt == 2 or not reused:
                    raise
            except (OSError, http.client.HTTPException):
                self._drop()
                raise
        raise AssertionError("unreachable")

    # -- API ----------------------------------------------------------------------------------
    def query(self, path: str, input_doc: Any, *, timeout: float | None = None) -> OpaAnswer:
        """POST /v1/data/<path> and return the result; raise OpaError on anything unusable.
        `timeout` (seconds) replaces the client's read timeout for this query (a batch query).
        Timed and, when it fails, counted by reason code (smartlinks_opa_* metrics)."""
        started = time.perf_counter()
        try:
            answer = self._query(path, input_doc, timeout, started)
        except OpaError as exc:
            metrics().opa_queried(time.perf_counter() - started, exc.code)
            raise
        metrics().opa_queried(time.perf_counter() - started)
        return answer

    def _query(self, path: str, input_doc: Any, timeout: float | None, started: float) -> OpaAnswer:
        body = json.dumps({"input": input_doc}, separators=(",", ":"), default=str).encode()
        try:
            reply = self._request("POST", f"/v1/data/{path.strip('/')}?provenance=true", body, timeout)
        except TimeoutError as exc:
            waited = self.timeout if timeout is None else timeout
            raise OpaError(OPA_TIMEOUT, f"OPA did not answer within {waited}s", _ms(started)) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise OpaError(OPA_UNAVAILABLE, f"OPA is unreachable at {self.url}", _ms(started)) from exc
        latency = _ms(started)
        if reply.status != 200:
            text = reply.body[:200].decode("utf-8", "replace")
            raise OpaError(OPA_ERROR, f"OPA answered HTTP {reply.status}: {text}", latency)
        try:
            payload = json.loads(reply.body)
        except ValueError as exc:
            raise OpaError(OPA_MALFORMED, "OPA answered with a body that is not JSON", latency) from exc
        if not isinstance(payload, dict):
            raise OpaError(OPA_MALFORMED, "OPA answered with a JSON body that is not an object", latency)
        if "result" not in payload:
            raise OpaError(OPA_UNDEFINED, f"the policy at {path} is undefined for this input", latency)
        return OpaAnswer(
            result=payload["result"],
            revision=_revision(payload) or self.fallback_revision,
            latency_ms=latency,
            decision_id=payload.get("decision_id"),
        )

    def health(self, *, bundles: bool = True) -> tuple[bool, str]:
        """(healthy, detail) from GET /health; never raises."""
        try:
            reply = self._request("GET", "/health?bundles" if bundles else "/health", None)
        except (OSError, http.client.HTTPException) as exc:
            return False, f"unreachable: {type(exc).__name__}"
        if reply.status == 200:
            return True, "ok"
        return False, f"HTTP {reply.status}: {reply.body[:200].decode('utf-8', 'replace')}"


def _revision(payload: dict[str, Any]) -> str | None:
    provenance = payload.get("provenance")
    if not isinstance(provenance, dict):
        return None
    bundles = provenance.get("bundles")
    if isinstance(bundles, dict):
        for info in bundles.values():
            if isinstance(info, dict) and isinstance(info.get("revision"), str) and info["revision"]:
                return str(info["revision"])
    revision = provenance.get("revision")
    return revision if isinstance(revision, str) and revision else None


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
