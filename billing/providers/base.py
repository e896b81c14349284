"""The interface every payout provider implements, and the errors it raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol


class ProviderStatus(StrEnum):
    SUBMITTED = "submitted"  # accepted, not final yet
    PAID = "paid"
    FAILED = "failed"


@dataclass(frozen=True)
class TransferRequest:
    payout_id: str
    idempotency_key: str
    amount_minor: int
    currency: str
    destination: str
    description: str = ""


@dataclass(frozen=True)
class SubmitResult:
    reference: str
    status: ProviderStatus
    raw_status: str
    detail: str | None = None


@dataclass(frozen=True)
class ProviderRecord:
    """What a provider says it did: compared with the payouts and the ledger by reconciliation."""

    reference: str
    payout_id: str | None
    amount_minor: int
    currency: str
    status: ProviderStatus
    raw: dict[str, Any] = field(default_factory=dict)


class ProviderError(Exception):
    """A call failed. `retryable` errors leave the payout to be retried with the same key;
    the others fail it. `outcome_unknown` means the provider may have acted (a timeout)."""

    def __init__(
        self, code: str, message: str, *, retryable: bool, outcome_unknown: bool = False, config_problem: bool = False
    ) -> None:
        from billing.vault import redact

        message = redact(message)
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.outcome_unknown = outcome_unknown
        self.config_problem = config_problem


class PayoutProvider(Protocol):
    name: str
    live: bool

    def submit(self, request: TransferRequest) -> SubmitResult:
        """Send the money. Calling again with the same idempotency key never pays twice."""
        ...

    def status(self, reference: str, payout_id: str) -> SubmitResult:
        """Where a submitted payout stands at the provider."""
        ...

    def records(self, since: datetime, references: list[str]) -> list[ProviderRecord]:
        """The provider's own records since `since` (and for `references`), for reconciliation."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
