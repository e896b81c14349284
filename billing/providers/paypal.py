"""PayPal Payouts through its REST API with `requests` (PayPal's payouts SDKs are deprecated):
OAuth2 client credentials, one batch per payout with sender_batch_id = the payout's key (PayPal
refuses a reused sender_batch_id for 30 days and links the original batch), PayPal-Request-Id
for replay-safe retries, batch status polling, and webhook signature verification."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

import requests

from billing.money import format_minor, to_minor
from billing.providers.base import ProviderError, ProviderRecord, ProviderStatus, SubmitResult, TransferRequest
from billing.providers.modes import paypal_base_is_live

LIVE_BASE = "https://api-m.paypal.com"
SANDBOX_BASE = "https://api-m.sandbox.paypal.com"

ITEM_PAID = {"SUCCESS"}
ITEM_FAILED = {"FAILED", "RETURNED", "BLOCKED", "REFUNDED", "REVERSED", "DENIED", "CANCELED"}
BATCH_FAILED = {"DENIED", "CANCELED"}


class PayPalProvider:
    name = "paypal"

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        *,
        api_base: str = SANDBOX_BASE,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
    ) -> None:
        self.base = api_base.rstrip("/")
        self.live = paypal_base_is_live(self.base)
        self._auth = (client_id, client_secret)
        self._timeout = (connect_timeout, timeout)
        self._local = threading.local()
        self._token: tuple[str, float] | None = None
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._token_lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _access_token(self, refresh: bool = False) -> str:
        with self._token_lock:
            if self._token and not refresh and self._token[1] > time.monotonic():
                return self._token[0]
            try:
                response = self._session().post(
                    f"{self.base}/v1/oauth2/token",
                    auth=self._auth,
                    data={"grant_type": "client_credentials"},
                    headers={"Accept": "application/json"},
                    timeout=self._timeout,
                )
            except requests.RequestException as exc:
                raise ProviderError("network", f"paypal token: {exc}", retryable=True) from exc
            if response.status_code == 401:
                raise ProviderError(
                    "credentials", "paypal refused the client id and secret", retryable=True, config_problem=True
                )
            if response.status_code >= 400:
                raise ProviderError(
                    "token", f"paypal token: HTTP {response.status_code}", retryable=response.status_code >= 500
                )
            body = response.json()
            lifetime = float(body.get("expires_in", 300))
            self._token = (str(body["access_token"]), time.monotonic() + max(lifetime - 60, 5))
            return self._token[0]

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        unknown_outcome: bool = False,
    ) -> requests.Response:
        """An authorised call; a 401 refreshes the token once."""
        for attempt in (1, 2):
            token = self._access_token(refresh=attempt == 2)
            try:
                response = self._session().request(
                    method,
                    f"{self.base}{path}",
                    json=json,
                    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", **(headers or {})},
                    timeout=self._timeout,
                )
            except requests.Timeout as exc:
                raise ProviderError(
                    "timeout", f"paypal {method} {path} timed out", retryable=True, outcome_unknown=unknown_outcome
                ) from exc
            except requests.RequestException as exc:
                raise ProviderError(
                    "network", f"paypal {method} {path}: {exc}", retryable=True, outcome_unknown=unknown_outcome
                ) from exc
            if response.status_code == 401 and attempt == 1:
                continue
            return response
        raise ProviderError(
            "credentials", "paypal keeps refusing the access token", retryable=True, config_problem=True
        )

    def close(self) -> None:
        """Close the keep-alive connections of every thread."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    # -- the provider interface -----------------------------------------------------------------
    def submit(self, request: TransferRequest) -> SubmitResult:
        body = {
            "sender_batch_header": {
                "sender_batch_id": request.idempotency_key,
                "email_subject": "You have a payout",
                "email_message": request.description or "Your affiliate commission",
            },
            "items": [
                {
                    "recipient_type": "EMAIL",
                    "amount": {
                        "value": format_minor(request.amount_minor, request.currency),
                        "currency": request.currency,
                    },
                    "receiver": request.destination,
                    "note": request.description or f"payout {request.payout_id}",
                    "sender_item_id": request.payout_id,
                }
            ],
        }
        response = self.request(
            "POST",
            "/v1/payments/payouts",
            json=body,
            headers={"PayPal-Request-Id": request.idempotency_key},
            unknown_outcome=True,
        )
        if response.status_code in (200, 201):
            header = response.json().get("batch_header", {})
            return _batch_result(header, [])
        error = _error_body(response)
        duplicate = _duplicate_batch_id(error)
        if duplicate:
            # The batch exists already (an earlier attempt whose answer we never saw): follow it.
            return self.status(duplicate, request.payout_id)
        if response.status_code >= 500 or response.status_code == 429:
            raise ProviderError(
                str(error.get("name", "server_error")),
                f"paypal HTTP {response.status_code}: {error.get('message', '')}",
                retryable=True,
                outcome_unknown=response.status_code >= 500,
            )
        raise ProviderError(
            str(error.get("name", "rejected")),
            f"paypal refused the payout: {error.get('message', response.status_code)}",
            retryable=False,
        )

    def batch(self, batch_id: str) -> dict[str, Any]:
        response = self.request("GET", f"/v1/payments/payouts/{batch_id}")
        if response.status_code >= 400:
            error = _error_body(response)
            raise ProviderError(
                str(error.get("name", "lookup_failed")),
                f"paypal batch {batch_id}: HTTP {response.status_code}",
                retryable=response.status_code >= 500 or response.status_code == 429,
            )
        body: dict[str, Any] = response.json()
        return body

    def status(self, reference: str, payout_id: str) -> SubmitResult:
        body = self.batch(reference)
        return _batch_result(body.get("batch_header", {}), body.get("items") or [])

    def records(self, since: datetime, references: list[str]) -> list[ProviderRecord]:
        """PayPal has no list of batches: each batch we know of is read back."""
        out: list[ProviderRecord] = []
        for reference in references:
            body = self.batch(reference)
            header = body.get("batch_header", {})
            result = _batch_result(header, body.get("items") or [])
            for item in body.get("items") or []:
                amount = item.get("payout_item", {}).get("amount", {})
                currency = str(amount.get("currency", ""))
                out.append(
                    ProviderRecord(
                        reference=reference,
                        payout_id=item.get("payout_item", {}).get("sender_item_id"),
                        amount_minor=to_minor(str(amount.get("value", "0")), currency),
                        currency=currency,
                        status=result.status,
                        raw={
                            "transaction_status": item.get("transaction_status"),
                            "payout_item_id": item.get("payout_item_id"),
                        },
                    )
                )
        return out

    def verify_webhook(self, webhook_id: str, headers: dict[str, str], event: dict[str, Any]) -> bool:
        """PayPal's verification endpoint decides whether a delivery is genuine."""
        body = {
            "auth_algo": headers.get("PAYPAL-AUTH-ALGO", ""),
            "cert_url": headers.get("PAYPAL-CERT-URL", ""),
            "transmission_id": headers.get("PAYPAL-TRANSMISSION-ID", ""),
            "transmission_sig": headers.get("PAYPAL-TRANSMISSION-SIG", ""),
            "transmission_time": headers.get("PAYPAL-TRANSMISSION-TIME", ""),
            "webhook_id": webhook_id,
            "webhook_event": event,
        }
        response = self.request("POST", "/v1/notifications/verify-webhook-signature", json=body)
        if response.status_code >= 500:
            raise ProviderError(
                "verification_unavailable", f"paypal verification HTTP {response.status_code}", retryable=True
            )
        if response.status_code >= 400:
            return False
        return bool(response.json().get("verification_status") == "SUCCESS")


def _error_body(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _duplicate_batch_id(error: dict[str, Any]) -> str | None:
    """The original batch's id from a 'sender_batch_id already used' rejection (its HATEOAS link)."""
    text = f"{error.get('message', '')} {error.get('details', '')}".lower()
    if "sender_batch_id" not in text or "already" not in text:
        return None
    for link in error.get("links") or []:
        href = str(link.get("href", ""))
        if "/v1/payments/payouts/" in href:
            return href.rstrip("/").rsplit("/", 1)[-1]
    return None


def _batch_result(header: dict[str, Any], items: list[dict[str, Any]]) -> SubmitResult:
    batch_id = str(header.get("payout_batch_id", ""))
    batch_status = str(header.get("batch_status", ""))
    if not batch_id:
        raise ProviderError(
            "malformed", "paypal answered without a payout_batch_id", retryable=True, outcome_unknown=True
        )
    if batch_status in BATCH_FAILED:
        return SubmitResult(batch_id, ProviderStatus.FAILED, batch_status)
    statuses = {str(item.get("transaction_status", "")) for item in items}
    if statuses and statuses <= ITEM_PAID:
        return SubmitResult(batch_id, ProviderStatus.PAID, "SUCCESS")
    failed = statuses & ITEM_FAILED
    if failed:
        return SubmitResult(batch_id, ProviderStatus.FAILED, sorted(failed)[0])
    return SubmitResult(batch_id, ProviderStatus.SUBMITTED, batch_status or "PENDING")
