"""Stripe's own `stripe-mock` for the tests, on a free loopback port, behind a small proxy.

stripe-mock (github.com/stripe/stripe-mock, installed by scripts/install-stripe-mock.sh) validates
every request against Stripe's OpenAPI spec and answers with realistic objects, but it is
stateless: it does not honour Idempotency-Key and it forgets what it created. The payout tests
depend on those behaviours of the real Stripe API, so the proxy adds them and nothing else:
a POST repeated with the same Idempotency-Key gets the first response back (a different body
with the same key gets Stripe's idempotency_error), and created transfers are kept (with their
creation time and the metadata sent, as Stripe keeps them) and served by GET /v1/transfers and
GET /v1/transfers/{id}. Every other request goes to stripe-mock. The proxy can also be told to
fail: answer 500 or 400, or hold a request before or after forwarding it (a worker killed mid-call)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from tests.support.postgres import wait_port

ROOT = Path(__file__).resolve().parents[2]
STRIPE_MOCK_BIN = Path(os.environ.get("STRIPE_MOCK_BIN") or ROOT / ".tools" / "bin" / "stripe-mock")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class StripeMockProcess:
    def __init__(self, binary: Path = STRIPE_MOCK_BIN) -> None:
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if not self.binary.exists():
            raise RuntimeError(
                f"stripe-mock missing at {self.binary}: run `make tools` (scripts/install-stripe-mock.sh)"
            )
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv
            [str(self.binary), "-http-addr", f"127.0.0.1:{self.port}", "-https-addr", "127.0.0.1:"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port("127.0.0.1", self.port, timeout=20)
        except TimeoutError:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None


@dataclass
class Fault:
    mode: str  # "500" | "400" | "hold_before" | "hold_after"
    count: int
    path: str = "/v1/transfers"


@dataclass
class Recorded:
    method: str
    path: str
    idempotency_key: str | None
    body: dict[str, list[str]]
    status: int = 0


@dataclass
class StripeState:
    upstream: str
    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)
    replies: dict[str, tuple[str, int, bytes]] = field(default_factory=dict)  # key -> (body hash, status, body)
    requests: list[Recorded] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    upstream_calls: int = 0
    # One keep-alive session to stripe-mock per handler thread (a connection per request would
    # cost the proxy more CPU than stripe-mock spends answering).
    sessions: threading.local = field(default_factory=threading.local)

    def upstream_session(self) -> requests.Session:
        session: requests.Session | None = getattr(self.sessions, "session", None)
        if session is None:
            session = self.sessions.session = requests.Session()
        return session

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.count > 0 and path.startswith(fault.path):
                    fault.count -= 1
                    return fault
        return None

    def transfer_creations(self) -> dict[str, int]:
        """Idempotency key -> POST /v1/transfers requests that reached Stripe with it."""
        out: dict[str, int] = {}
        for rec in self.requests:
            if rec.method == "POST" and rec.path == "/v1/transfers" and rec.status == 200:
                out[rec.idempotency_key or ""] = out.get(rec.idempotency_key or "", 0) + 1
        return out


class _Handler(BaseHTTPRequestHandler):
    state: StripeState
    protocol_version = "HTTP/1.1"
    # The status line and headers, then the body, go out in two writes: with Nagle's algorithm on,
    # the body waits for the client's delayed ACK of the headers (40 ms a response on Linux).
    disable_nagle_algorithm = True

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _forward(self, method: str, raw: bytes) -> tuple[int, bytes]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        response = self.state.upstream_session().request(
            method, self.state.upstream + self.path, data=raw, headers=headers, timeout=10
        )
        with self.state.lock:
            self.state.upstream_calls += 1
        return response.status_code, response.content

    def do_GET(self) -> None:  # noqa: N802
        parts = urlsplit(self.path)
        st = self.state
        if parts.path == "/__proxy/creations":  # for a proxy running in another process (bench/)
            self._send(200, json.dumps(st.transfer_creations()).encode())
            return
        if parts.path.startswith("/v1/transfers/"):
            transfer_id = parts.path.rsplit("/", 1)[-1]
            with st.lock:
                found = st.transfers.get(transfer_id)
            if found is not None:
                self._send(200, json.dumps(found).encode())
                return
        if parts.path == "/v1/transfers":
            query = parse_qs(parts.query)
            since = int(query.get("created[gte]", ["0"])[0])
            limit = int(query.get("limit", ["10"])[0])
            after = query.get("starting_after", [None])[0]
            with st.lock:
                items = sorted(st.transfers.values(), key=lambda t: (-t["created"], t["id"]))
            items = [t for t in items if t["created"] >= since]
            if after:
                ids = [t["id"] for t in items]
                items = items[ids.index(after) + 1 :] if after in ids else []
            page = items[:limit]
            body = {"object": "list", "data": page, "has_more": len(items) > limit, "url": "/v1/transfers"}
            self._send(200, json.dumps(body).encode())
            return
        status, body = self._forward("GET", b"")
        self._send(status, body)

    def do_POST(self) -> None:  # noqa: N802
        st = self.state
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urlsplit(self.path).path
        key = self.headers.get("Idempotency-Key")
        record = Recorded("POST", path, key, parse_qs(raw.decode()))
        with st.lock:
            st.requests.append(record)
        digest = hashlib.sha256(raw).hexdigest()
        if key:
            with st.lock:
                earlier = st.replies.get(key)
            if earlier is not None:
                if earlier[0] != digest:
                    error = {
                        "error": {
                            "type": "idempotency_error",
                            "message": "Keys for idempotent requests can only"
                            " be used with the same parameters they were first used with.",
                        }
                    }
                    record.status = 400
                    self._send(400, json.dumps(error).encode())
                    return
                record.status = -earlier[1]  # a replay: not a new transfer
                self._send(earlier[1], earlier[2], {"Idempotent-Replayed": "true"})
                return
        fault = st.take_fault(path)
        if fault is not None and fault.mode == "500":
            record.status = 500
            error = {"error": {"type": "api_error", "message": "An unknown error occurred (injected)"}}
            self._send(500, json.dumps(error).encode(), {"Stripe-Should-Retry": "false"})
            return
        if fault is not None and fault.mode == "400":
            record.status = 400
            error = {
                "error": {
                    "type": "invalid_request_error",
                    "code": "account_invalid",
                    "param": "destination",
                    "message": "The provided destination account is not a connected account (injected)",
                }
            }
            self._send(400, json.dumps(error).encode())
            return
        if fault is not None and fault.mode == "hold_before":
            st.held.set()
            st.release.wait(60)
            return
        status, body = self._forward("POST", raw)
        if status == 200 and path == "/v1/transfers":
            obj = json.loads(body)
            obj["created"] = int(time.time())
            obj["metadata"] = {
                k[len("metadata[") : -1]: v[0] for k, v in record.body.items() if k.startswith("metadata[")
            }
            with st.lock:
                st.transfers[obj["id"]] = obj
            body = json.dumps(obj).encode()
        record.status = status
        if key and status < 500:
            with st.lock:
                st.replies[key] = (digest, status, body)
        if fault is not None and fault.mode == "hold_after":
            st.held.set()
            st.release.wait(60)
            return
        self._send(status, body)


def serve_in_child(upstream: str, ports: Any) -> None:
    """Run a proxy in this (child) process until it is terminated; its port goes to `ports`."""
    proxy = StripeProxy(upstream)
    ports.put(proxy.server.server_port)
    proxy.server.serve_forever()


class StripeProxy:
    """The proxy in front of stripe-mock; `url` is what STRIPE_API_BASE points at."""

    def __init__(self, upstream: str) -> None:
        self.state = StripeState(upstream=upstream)
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def start(self) -> StripeProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.state.release.set()
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self.state.lock:
            self.state.transfers.clear()
            self.state.replies.clear()
            self.state.requests.clear()
            self.state.faults.clear()
        self.state.release = threading.Event()
        self.state.held = threading.Event()

    def fail(self, mode: str, count: int = 1, path: str = "/v1/transfers") -> None:
        with self.state.lock:
            self.state.faults.append(Fault(mode, count, path))

    def reverse(self, transfer_id: str) -> dict[str, Any]:
        """Mark a stored transfer reversed, as Stripe shows it after a reversal."""
        with self.state.lock:
            transfer = self.state.transfers[transfer_id]
            transfer["reversed"] = True
            transfer["amount_reversed"] = transfer["amount"]
            return dict(transfer)
