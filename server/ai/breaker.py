"""The circuit breaker in front of the model, as pure transitions on its state.

closed: calls go through; `failures` counts consecutive failed calls (after their retries), and
reaching the threshold opens the circuit. open: no call for `reset_seconds`; the supervisor runs
in degraded mode. After that one probe call is let through (half-open): success closes the
circuit, failure opens it again for another `reset_seconds`. The state lives in the database row
`ai_supervisor_state`, so every process sees the same circuit."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Breaker:
    state: str = "closed"  # closed | open | half_open
    failures: int = 0
    opened_at: datetime | None = None

    def may_call(self, now: datetime, reset_seconds: float) -> bool:
        if self.state == "closed":
            return True
        return self.opened_at is None or now - self.opened_at >= timedelta(seconds=reset_seconds)

    def probing(self, now: datetime, reset_seconds: float) -> Breaker:
        """The state while the probe call of an open circuit is made."""
        if self.state != "closed" and self.may_call(now, reset_seconds):
            return replace(self, state="half_open")
        return self

    def succeeded(self) -> Breaker:
        return Breaker()

    def failed(self, now: datetime, threshold: int) -> Breaker:
        failures = self.failures + 1
        if self.state in ("open", "half_open") or failures >= threshold:
            return Breaker(state="open", failures=failures, opened_at=now)
        return Breaker(state="closed", failures=failures)

    @property
    def is_open(self) -> bool:
        return self.state != "closed"
