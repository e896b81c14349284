"""Stripe: Connect transfers to the affiliate's connected account through the `stripe` library's
StripeClient. The payout's key goes in the Idempotency-Key header, and its id in transfer_group,
so the transfer can be found again whatever happened to the response."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import requests
import stripe
from requests.adapters import HTTPAdapter

from billing.providers.base import ProviderError, ProviderRecord, ProviderStatus, SubmitResult, TransferRequest
from billing.providers.modes import stripe_key_mode


class StripeProvider:
    name = "stripe"

    def __init__(
        self, api_key: str, *, api_base: str | None = None, timeout: float = 20.0, max_network_retries: int = 2
    ) -> None:
        mode = stripe_key_mode(api_key)
        if mode is None:
            raise ValueError("STRIPE_API_KEY must be a secret or restricted key (sk_test_, sk_live_, rk_...)")
        self.live = mode == "live"
        # One connection pool shared by the treasury's worker threads (closed with the provider).
        self._session = requests.Session()
        self._session.mount("https://", HTTPAdapter(pool_connections=2, pool_maxsize=32))
        self._session.mount("http://", HTTPAdapter(pool_connections=2, pool_maxsize=32))
        self._http = stripe.RequestsClient(timeout=timeout, session=self._session)
        self.client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else None,
            max_network_retries=max_network_retries,
            http_client=self._http,
        )

    def close(self) -> None:
        self._session.close()

    def submit(self, request: TransferRequest) -> SubmitResult:
        params: dict[str, Any] = {
            "amount": request.amount_minor,
            "currency": request.currency.lower(),
            "destination": request.destination,
            "transfer_group": request.payout_id,
            "description": request.description or f"payout {request.payout_id}",
            "metadata": {"payout_id": request.payout_id},
        }
        try:
            transfer = self.client.v1.transfers.create(
                params,  # type: ignore[arg-type]
                {"idempotency_key": request.idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _classify(exc) from exc
        return _result(transfer)

    def status(self, reference: str, payout_id: str) -> SubmitResult:
        try:
            transfer = self.client.v1.transfers.retrieve(reference)
        except stripe.StripeError as exc:
            raise _classify(exc) from exc
        result = _result(transfer)
        if result.status is ProviderStatus.SUBMITTED:
            # A transfer that exists and is not reversed has reached the connected account.
            return SubmitResult(result.reference, ProviderStatus.PAID, "transferred")
        return result

    def records(self, since: datetime, references: list[str]) -> list[ProviderRecord]:
        out: list[ProviderRecord] = []
        try:
            page = self.client.v1.transfers.list({"created": {"gte": int(since.timestamp())}, "limit": 100})
            for transfer in page.auto_paging_iter():
                out.append(_record(transfer))
        except stripe.StripeError as exc:
            raise _classify(exc) from exc
        return out


def _result(transfer: Any) -> SubmitResult:
    reversed_ = bool(getattr(transfer, "reversed", False))
    status = ProviderStatus.FAILED if reversed_ else ProviderStatus.SUBMITTED
    return SubmitResult(str(transfer.id), status, "reversed" if reversed_ else "created")


def _record(transfer: Any) -> ProviderRecord:
    reversed_ = bool(getattr(transfer, "reversed", False))
    group = getattr(transfer, "transfer_group", None)
    return ProviderRecord(
        reference=str(transfer.id),
        payout_id=str(group) if group else None,
        amount_minor=int(transfer.amount) - int(getattr(transfer, "amount_reversed", 0) or 0),
        currency=str(transfer.currency).upper(),
        status=ProviderStatus.FAILED if reversed_ else ProviderStatus.PAID,
        raw={"destination": getattr(transfer, "destination", None), "created": getattr(transfer, "created", None)},
    )


def _classify(exc: stripe.StripeError) -> ProviderError:
    code = getattr(exc, "code", None) or type(exc).__name__
    message = f"stripe: {exc.user_message or str(exc)}"
    if isinstance(exc, stripe.APIConnectionError):
        return ProviderError("network", message, retryable=True, outcome_unknown=True)
    if isinstance(exc, stripe.RateLimitError):
        return ProviderError("rate_limited", message, retryable=True)
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return ProviderError("credentials", message, retryable=True, config_problem=True)
    if isinstance(exc, stripe.IdempotencyError):
        return ProviderError("idempotency", message, retryable=False, config_problem=True)
    status = getattr(exc, "http_status", None) or 0
    if status >= 500 or status == 409:
        return ProviderError(str(code), message, retryable=True, outcome_unknown=status >= 500)
    return ProviderError(str(code), message, retryable=False)
