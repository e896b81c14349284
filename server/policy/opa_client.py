"""The one client for the OPA sidecar's Data API: a keep-alive session per thread, short
timeouts, and failures turned into distinct reason codes so that callers can fail closed."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

OPA_UNAVAILABLE = "opa_unavailable"
OPA_TIMEOUT = "opa_timeout"
OPA_UNDEFINED = "opa_undefined"
OPA_MALFORMED = "opa_malformed"
OPA_ERROR = "opa_error"


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


class OpaClient:
    """Asks OPA for decisions. Thread-safe: each thread keeps its own keep-alive session."""

    def __init__(self, url: str, *, connect_timeout: float = 0.25, timeout: float = 0.5) -> None:
        self.url = url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.fallback_revision: str | None = None
        self._local = threading.local()
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=4, max_retries=0))
            session.headers.update({"Content-Type": "application/json", "Accept": "application/json"})
            self._local.session = session
            with self._lock:
                self._all.append(session)
        return session

    def _drop_session(self) -> None:
        """Forget this thread's session (after a connection error) so the next call reconnects."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            with self._lock:
                if session in self._all:
                    self._all.remove(session)
        self._local.session = None

    def close(self) -> None:
        """Close every keep-alive connection this client opened, in any thread."""
        with self._lock:
            sessions, self._all = self._all, []
        for session in sessions:
            session.close()
        self._local = threading.local()

    def query(self, path: str, input_doc: Any) -> OpaAnswer:
        """POST /v1/data/<path> and return the result; raise OpaError on anything unusable."""
        started = time.perf_counter()
        body = json.dumps({"input": input_doc}, separators=(",", ":"), default=str)
        try:
            response = self._session().post(
                f"{self.url}/v1/data/{path.strip('/')}?provenance=true",
                data=body,
                timeout=(self.connect_timeout, self.timeout),
            )
        except requests.Timeout as exc:
            self._drop_session()
            raise OpaError(OPA_TIMEOUT, f"OPA did not answer within {self.timeout}s", _ms(started)) from exc
        except requests.ConnectionError as exc:
            self._drop_session()
            raise OpaError(OPA_UNAVAILABLE, f"OPA is unreachable at {self.url}", _ms(started)) from exc
        except requests.RequestException as exc:
            raise OpaError(OPA_UNAVAILABLE, f"OPA request failed: {type(exc).__name__}", _ms(started)) from exc
        latency = _ms(started)
        if response.status_code != 200:
            raise OpaError(OPA_ERROR, f"OPA answered HTTP {response.status_code}: {response.text[:200]}", latency)
        try:
            payload = response.json()
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
            response = self._session().get(
                f"{self.url}/health{'?bundles' if bundles else ''}",
                timeout=(self.connect_timeout, max(self.timeout, 1.0)),
            )
        except requests.RequestException as exc:
            self._drop_session()
            return False, f"unreachable: {type(exc).__name__}"
        if response.status_code == 200:
            return True, "ok"
        return False, f"HTTP {response.status_code}: {response.text[:200]}"


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
