"""A local PayPal REST server for the tests, speaking the documented request and response shapes
of the endpoints the payout code uses (there is no official offline mock):

* POST /v1/oauth2/token: client credentials (HTTP Basic), `grant_type=client_credentials`.
* POST /v1/payments/payouts: a payout batch; `sender_batch_header.sender_batch_id` may not be
  reused (PayPal rejects it with an error naming the duplicate and a HATEOAS link to the original
  batch); `PayPal-Request-Id` replays the first response.
* GET /v1/payments/payouts/{payout_batch_id}: the batch moves PENDING -> PROCESSING -> SUCCESS
  (or DENIED) over successive reads; items end SUCCESS, or FAILED / UNCLAIMED for receivers the
  test names.
* POST /v1/notifications/verify-webhook-signature: SUCCESS when the transmission signature is the
  one `sign()` made for that event, FAILURE otherwise.

It can be told to answer 5xx, to be slow (a timeout for the client) or to hold a request."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import string
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

CLIENT_ID = "test-client-id"
CLIENT_SECRET = "test-client-secret"  # noqa: S105
WEBHOOK_ID = "WH-TEST-1"
CERT_URL = "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-TEST"
SIGNING_KEY = b"paypal-fake-signing-key"


@dataclass
class Fault:
    path: str
    mode: str  # "500" | "503" | "slow" | "hold" | "hold_after"
    count: int
    seconds: float = 0.0


@dataclass
class Batch:
    id: str
    sender_batch_header: dict[str, Any]
    items: list[dict[str, Any]]
    reads: int = 0
    status: str = "PENDING"
    created: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))


@dataclass
class PayPalState:
    base: str = ""
    tokens: set[str] = field(default_factory=set)
    batches: dict[str, Batch] = field(default_factory=dict)
    by_sender_id: dict[str, str] = field(default_factory=dict)
    by_request_id: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)  # receiver -> final item status
    faults: list[Fault] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fault_for(self, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.count > 0 and path.startswith(fault.path):
                    fault.count -= 1
                    return fault
        return None


def _id(n: int = 13) -> str:
    return "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(n))


def _error(name: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "message": message,
        "debug_id": _id(12).lower(),
        "information_link": "https://developer.paypal.com/docs/api/payments.payouts-batch/#errors",
        **extra,
    }


def expected_signature(transmission_id: str, transmission_time: str, webhook_id: str, event: dict[str, Any]) -> str:
    crc = zlib.crc32(json.dumps(event, sort_keys=True, separators=(",", ":")).encode())
    message = f"{transmission_id}|{transmission_time}|{webhook_id}|{crc}".encode()
    return base64.b64encode(hmac.new(SIGNING_KEY, message, hashlib.sha256).digest()).decode()


def sign(event: dict[str, Any], *, webhook_id: str = WEBHOOK_ID, when: datetime | None = None) -> dict[str, str]:
    """The PAYPAL-* headers PayPal would send with `event`."""
    transmission_id = secrets.token_hex(16)
    transmission_time = (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "PAYPAL-AUTH-ALGO": "SHA256withRSA",
        "PAYPAL-CERT-URL": CERT_URL,
        "PAYPAL-TRANSMISSION-ID": transmission_id,
        "PAYPAL-TRANSMISSION-SIG": expected_signature(transmission_id, transmission_time, webhook_id, event),
        "PAYPAL-TRANSMISSION-TIME": transmission_time,
    }


class _Handler(BaseHTTPRequestHandler):
    state: PayPalState
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        if header.startswith("Bearer ") and header[7:] in self.state.tokens:
            return True
        self._send(
            401,
            _error(
                "AUTHENTICATION_FAILURE",
                "Authentication failed due to invalid authentication credentials or a missing Authorization header.",
            ),
        )
        return False

    def _fault(self, path: str) -> Fault | None:
        fault = self.state.fault_for(path)
        if fault is None:
            return None
        if fault.mode in ("500", "503"):
            self._send(int(fault.mode), _error("INTERNAL_SERVICE_ERROR", "An internal service error has occurred."))
            return fault
        if fault.mode == "slow":
            time.sleep(fault.seconds)
            return None  # then answer normally, too late for a client with a shorter timeout
        if fault.mode == "hold":
            self.state.held.set()
            self.state.release.wait(60)
            return fault
        return None if fault.mode == "hold_after" else fault

    def do_POST(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        raw = self._body()
        with self.state.lock:
            self.state.requests.append(("POST", path))
        if path == "/v1/oauth2/token":
            self._token(raw)
            return
        fault = self.state.faults and self._fault(path)
        if fault:
            return
        if not self._authorised():
            return
        if path == "/v1/payments/payouts":
            self._create(raw)
        elif path == "/v1/notifications/verify-webhook-signature":
            self._verify(raw)
        else:
            self._send(404, _error("RESOURCE_NOT_FOUND", "The specified resource does not exist."))

    def do_GET(self) -> None:  # noqa: N802
        path = urlsplit(self.path).path
        with self.state.lock:
            self.state.requests.append(("GET", path))
        if self.state.faults and self._fault(path):
            return
        if not self._authorised():
            return
        prefix = "/v1/payments/payouts/"
        if path.startswith(prefix):
            self._read(path[len(prefix) :])
        else:
            self._send(404, _error("RESOURCE_NOT_FOUND", "The specified resource does not exist."))

    def _token(self, raw: bytes) -> None:
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self._send(401, {"error": "invalid_client", "error_description": "Client Authentication failed"})
            return
        if parse_qs(raw.decode()).get("grant_type") != ["client_credentials"]:
            self._send(400, {"error": "unsupported_grant_type", "error_description": "Grant Type is NULL"})
            return
        token = "A21AA" + secrets.token_urlsafe(40)
        with self.state.lock:
            self.state.tokens.add(token)
        self._send(
            200,
            {
                "scope": "https://uri.paypal.com/services/payments/payouts",
                "access_token": token,
                "token_type": "Bearer",
                "app_id": "APP-80W284485P519543T",
                "expires_in": 32400,
                "nonce": f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}{_id(20)}",
            },
        )

    def _create(self, raw: bytes) -> None:
        state = self.state
        request_id = self.headers.get("PayPal-Request-Id")
        with state.lock:
            if request_id and request_id in state.by_request_id:
                status, body = state.by_request_id[request_id]
                self._send(status, body)
                return
        try:
            payload = json.loads(raw)
            header = payload["sender_batch_header"]
            sender_batch_id = str(header["sender_batch_id"])
            items = payload["items"]
            assert isinstance(items, list) and 1 <= len(items) <= 15000
            for item in items:
                value = Decimal(item["amount"]["value"])
                assert value > 0 and -value.as_tuple().exponent <= 2  # type: ignore[operator]
                assert item["receiver"] and item["amount"]["currency"]
        except (KeyError, ValueError, TypeError, AssertionError, ArithmeticError):
            self._send(
                400,
                _error(
                    "VALIDATION_ERROR",
                    "Invalid request - see details.",
                    details=[{"field": "items", "issue": "invalid payout request"}],
                ),
            )
            return
        with state.lock:
            if sender_batch_id in state.by_sender_id:
                original = state.by_sender_id[sender_batch_id]
                self._send(
                    400,
                    _error(
                        "USER_BUSINESS_ERROR",
                        f"Batch with given sender_batch_id already exists: {sender_batch_id}",
                        details=[
                            {
                                "field": "sender_batch_header.sender_batch_id",
                                "location": "body",
                                "issue": "Batch with given sender_batch_id already exists",
                            }
                        ],
                        links=[
                            {
                                "href": f"{state.base}/v1/payments/payouts/{original}",
                                "rel": "self",
                                "method": "GET",
                                "encType": "application/json",
                            }
                        ],
                    ),
                )
                return
            batch = Batch(
                _id(),
                header,
                [{"payout_item_id": _id(), "transaction_status": "PENDING", "payout_item": item} for item in items],
            )
            state.batches[batch.id] = batch
            state.by_sender_id[sender_batch_id] = batch.id
            body = json.dumps(
                {
                    "batch_header": {
                        "payout_batch_id": batch.id,
                        "batch_status": "PENDING",
                        "sender_batch_header": header,
                    },
                    "links": [
                        {
                            "href": f"{state.base}/v1/payments/payouts/{batch.id}",
                            "rel": "self",
                            "method": "GET",
                            "encType": "application/json",
                        }
                    ],
                }
            ).encode()
            if request_id:
                state.by_request_id[request_id] = (201, body)
        fault = state.fault_for("/v1/payments/payouts#after")
        if fault is not None and fault.mode == "hold_after":
            state.held.set()
            state.release.wait(60)
            return
        self._send(201, body)

    def _read(self, batch_id: str) -> None:
        state = self.state
        with state.lock:
            batch = state.batches.get(batch_id)
            if batch is None:
                self._send(404, _error("INVALID_RESOURCE_ID", "Requested resource ID was not found."))
                return
            batch.reads += 1
            if batch.reads >= 2 and batch.status == "PENDING":
                batch.status = "PROCESSING"
            if batch.reads >= 3 and batch.status == "PROCESSING":
                batch.status = "SUCCESS"
                for item in batch.items:
                    item["transaction_status"] = state.outcomes.get(item["payout_item"]["receiver"], "SUCCESS")
                    item["transaction_id"] = _id(17)
            total = sum(Decimal(i["payout_item"]["amount"]["value"]) for i in batch.items)
            currency = batch.items[0]["payout_item"]["amount"]["currency"]
            body = {
                "batch_header": {
                    "payout_batch_id": batch.id,
                    "batch_status": batch.status,
                    "time_created": batch.created,
                    "sender_batch_header": batch.sender_batch_header,
                    "amount": {"currency": currency, "value": f"{total:.2f}"},
                    "fees": {"currency": currency, "value": "0.00"},
                },
                "items": [
                    {
                        "payout_item_id": i["payout_item_id"],
                        "transaction_status": i["transaction_status"],
                        "transaction_id": i.get("transaction_id"),
                        "payout_batch_id": batch.id,
                        "payout_item_fee": {"currency": currency, "value": "0.00"},
                        "payout_item": i["payout_item"],
                        "links": [
                            {
                                "href": f"{state.base}/v1/payments/payouts-item/{i['payout_item_id']}",
                                "rel": "item",
                                "method": "GET",
                            }
                        ],
                    }
                    for i in batch.items
                ],
                "links": [{"href": f"{state.base}/v1/payments/payouts/{batch.id}", "rel": "self", "method": "GET"}],
            }
        self._send(200, body)

    def _verify(self, raw: bytes) -> None:
        try:
            body = json.loads(raw)
            good = body["cert_url"] == CERT_URL and hmac.compare_digest(
                body["transmission_sig"],
                expected_signature(
                    body["transmission_id"], body["transmission_time"], body["webhook_id"], body["webhook_event"]
                ),
            )
        except (KeyError, ValueError, TypeError):
            self._send(400, _error("VALIDATION_ERROR", "Invalid request - see details."))
            return
        self._send(200, {"verification_status": "SUCCESS" if good else "FAILURE"})


class PayPalServer:
    def __init__(self) -> None:
        self.state = PayPalState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.state.base = self.url
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def start(self) -> PayPalServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.state.release.set()
        self.server.shutdown()
        self.server.server_close()

    def fail(self, path: str, mode: str, count: int = 1, seconds: float = 0.0) -> None:
        with self.state.lock:
            self.state.faults.append(Fault(path, mode, count, seconds))

    def batches_for(self, sender_batch_id: str) -> int:
        with self.state.lock:
            return sum(
                1
                for b in self.state.batches.values()
                if b.sender_batch_header.get("sender_batch_id") == sender_batch_id
            )
