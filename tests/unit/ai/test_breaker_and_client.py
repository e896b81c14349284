"""The circuit breaker's transitions and the client's Retry-After reading and retry decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx2
import openai
import pytest

from server.ai.breaker import Breaker
from server.ai.client import classify, retry_after_seconds

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_consecutive_failures_open_the_circuit_and_a_success_closes_it() -> None:
    b = Breaker()
    b = b.failed(T0, threshold=3).failed(T0, threshold=3)
    assert b == Breaker("closed", 2, None) and b.may_call(T0, 60)
    assert b.succeeded() == Breaker()
    b = b.failed(T0, threshold=3)
    assert b.is_open and b.opened_at == T0 and not b.may_call(T0 + timedelta(seconds=59), 60)


def test_after_the_reset_time_one_probe_decides() -> None:
    opened = Breaker("open", 3, T0)
    later = T0 + timedelta(seconds=60)
    assert opened.may_call(later, 60)
    probe = opened.probing(later, 60)
    assert probe.state == "half_open"
    assert probe.succeeded() == Breaker()
    again = probe.failed(later, threshold=3)
    assert again == Breaker("open", 4, later) and not again.may_call(later + timedelta(seconds=30), 60)
    assert Breaker().probing(later, 60) == Breaker(), "a closed circuit does not probe"


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"Retry-After-Ms": "150"}, 0.15),
        ({"Retry-After": "Wed, 25 Nov 2026 12:00:30 GMT"}, 30.0),
        ({"Retry-After": "-5"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after(headers: dict[str, str] | None, seconds: float | None) -> None:
    assert retry_after_seconds(headers, now=T0) == seconds


def _status_error(cls: type[openai.APIStatusError], code: int) -> openai.APIStatusError:
    request = httpx2.Request("POST", "http://model.test/v1/chat/completions")
    return cls("failed", response=httpx2.Response(code, request=request), body=None)


def test_what_is_worth_retrying() -> None:
    request = httpx2.Request("POST", "http://model.test/v1/chat/completions")
    assert classify(openai.APITimeoutError(request=request)) == ("timeout", True)
    assert classify(openai.APIConnectionError(request=request)) == ("connection", True)
    assert classify(_status_error(openai.RateLimitError, 429)) == ("rate_limited", True)
    assert classify(_status_error(openai.InternalServerError, 503)) == ("server_error", True)
    assert classify(_status_error(openai.AuthenticationError, 401)) == ("rejected", False)
    assert classify(_status_error(openai.BadRequestError, 400)) == ("rejected", False)
