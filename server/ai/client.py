"""The one place that builds the model client: the `openai` library pointed at OpenAI or any
OpenAI-compatible server (OPENAI_BASE_URL), with the model, timeouts and retries from settings.

`AIClientFactory()` returns a `ModelClient`, or None when there is no API key (the supervisor then
runs in degraded mode). The library's own retries are off: `ModelClient.complete` retries 429, 5xx,
timeouts and connection failures itself with exponential back-off (honouring Retry-After up to a
cap), so that every attempt is counted and the total time of a call stays bounded. The circuit
breaker (`server.ai.breaker`) sits above this: it counts calls that failed after their retries."""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import openai

from server.ai.prompt import RESPONSE_FORMAT
from server.config import Settings

log = logging.getLogger(__name__)

MAX_OUTPUT_TOKENS = 2000
MAX_RETRY_DELAY = 10.0  # never wait longer than this between attempts, whatever Retry-After says


@dataclass(frozen=True)
class ModelReply:
    content: str | None
    model: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    attempts: int
    finish_reason: str | None
    refusal: str | None = None


class ModelCallError(Exception):
    """The model could not be asked (after retries). `kind` says why."""

    def __init__(self, kind: str, message: str, *, attempts: int, latency_ms: float) -> None:
        super().__init__(message)
        self.kind = kind  # rate_limited | server_error | timeout | connection | rejected
        self.message = message
        self.attempts = attempts
        self.latency_ms = latency_ms


def retry_after_seconds(headers: Mapping[str, str] | None, now: datetime | None = None) -> float | None:
    """Seconds a 429 or 503 asks us to wait (Retry-After-Ms, or Retry-After as seconds or a date)."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = lowered.get(name)
        if raw is None:
            continue
        try:
            return max(0.0, float(raw) * scale)
        except ValueError:
            pass
        if name == "retry-after":
            try:
                when = email.utils.parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return None


def classify(exc: Exception) -> tuple[str, bool]:
    """(kind, worth retrying) for an exception raised by the openai client."""
    if isinstance(exc, openai.APITimeoutError):
        return "timeout", True
    if isinstance(exc, openai.APIConnectionError):
        return "connection", True
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited", True
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return "server_error", True
        return "rejected", False  # 400, 401, 403, 404, 422: asking again changes nothing
    return "rejected", False


class ModelClient:
    """Chat completions with a strict JSON-schema answer, bounded retries and back-off."""

    def __init__(
        self,
        client: openai.OpenAI,
        model: str,
        *,
        max_retries: int = 2,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.model = model
        self.max_retries = max_retries
        self.backoff = backoff
        self.sleep = sleep

    def _delay(self, attempt: int, exc: Exception) -> float:
        delay = self.backoff * (2 ** (attempt - 1)) * (0.75 + 0.25 * random.random())  # noqa: S311 - jitter
        if isinstance(exc, openai.APIStatusError):
            asked = retry_after_seconds(dict(exc.response.headers))
            if asked is not None:
                delay = asked
        return float(min(delay, MAX_RETRY_DELAY))

    def complete(self, messages: list[dict[str, str]]) -> ModelReply:
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                completions: Any = self.client.chat.completions  # messages and schema are plain dicts
                response: Any = completions.create(
                    model=self.model,
                    messages=messages,
                    response_format=RESPONSE_FORMAT,
                    temperature=0,
                    max_completion_tokens=MAX_OUTPUT_TOKENS,
                )
            except openai.OpenAIError as exc:
                kind, retryable = classify(exc)
                if not retryable or attempt > self.max_retries:
                    raise ModelCallError(
                        kind,
                        f"{type(exc).__name__}: {str(exc)[:500]}",
                        attempts=attempt,
                        latency_ms=(time.perf_counter() - started) * 1000.0,
                    ) from exc
                delay = self._delay(attempt, exc)
                log.info("model call attempt %d failed (%s); retrying in %.2f s", attempt, kind, delay)
                self.sleep(delay)
                continue
            return self._reply(response, attempt, started)

    def _reply(self, response: Any, attempts: int, started: float) -> ModelReply:
        choice = response.choices[0] if getattr(response, "choices", None) else None
        message = getattr(choice, "message", None)
        usage = getattr(response, "usage", None)
        return ModelReply(
            content=getattr(message, "content", None),
            model=str(getattr(response, "model", None) or self.model)[:100],
            input_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            output_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            latency_ms=(time.perf_counter() - started) * 1000.0,
            attempts=attempts,
            finish_reason=getattr(choice, "finish_reason", None),
            refusal=getattr(message, "refusal", None),
        )


class AIClientFactory:
    """Builds the model client from settings, once per factory (it keeps its connection pool)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: ModelClient | None = None

    @property
    def model(self) -> str:
        return self.settings.openai_model

    def __call__(self) -> ModelClient | None:
        if not self.settings.openai_api_key:
            return None
        if self._client is None:
            timeout = self.settings.openai_timeout
            self._client = ModelClient(
                openai.OpenAI(
                    api_key=self.settings.openai_api_key,
                    base_url=self.settings.openai_base_url,
                    timeout=openai.Timeout(timeout, connect=min(timeout, 5.0)),
                    max_retries=0,
                ),
                self.settings.openai_model,
                max_retries=self.settings.openai_max_retries,
                backoff=self.settings.openai_retry_backoff_seconds,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.client.close()
            self._client = None
