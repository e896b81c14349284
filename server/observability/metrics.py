"""Prometheus metrics of the server (`prometheus_client`), correct across gunicorn's workers.

One `Metrics` object per process, created on first use (never at import): `metrics()`. Under
`smartlinks serve` every process (the gunicorn workers and the supervisor, which runs the
scheduler) writes its values to files in `PROMETHEUS_MULTIPROC_DIR` (a fresh `var/metrics/` set
by `use_multiprocess_dir` before gunicorn starts), and a scrape of `/metrics` on any worker
aggregates all of them (`prometheus_client.multiprocess`). Without that variable (tests, a bare
`flask run`) the values live in this process's registry.

Costs on the hot paths: a decision is one counter increment and one histogram observation (the
labelled children are cached, so no label lookup either); a request two; an OPA query one
observation. The click redirect makes no metric call at all: the click writer's thread adds the
counts of its process once per flush (`ClickWriter.report`). Labels are bounded: action types
come from the registry, endpoints are Flask endpoint names (never raw paths), methods outside
the standard set are `other`, jobs are the scheduler's job names."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from time import perf_counter, time
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# OPA answers in about a millisecond on loopback; the read timeout is 0.5 s.
OPA_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
DECISION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class Metrics:
    """Every metric of the server, registered in `registry`."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        registry = CollectorRegistry(auto_describe=True)
        self.registry = registry
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        if not self.multiprocess:
            from prometheus_client import ProcessCollector

            ProcessCollector(registry=registry)
        # -- decisions and OPA ------------------------------------------------------------------
        self.decisions = Counter(
            "smartlinks_decisions",
            "Governed decisions recorded, by action type and outcome (allowed, clamped, denied, error, "
            "failed, shadow, pending_approval).",
            ["action_type", "outcome"],
            registry=registry,
        )
        self.decision_seconds = Histogram(
            "smartlinks_decision_seconds",
            "Time of one Gateway.decide call (call=decide) or of one Gateway.decide_many batch "
            "(call=decide_many): envelope, OPA, clamp and re-ask, record, execute.",
            ["call"],
            buckets=DECISION_BUCKETS,
            registry=registry,
        )
        self._decide_seconds = self.decision_seconds.labels("decide")
        self._decide_many_seconds = self.decision_seconds.labels("decide_many")
        self.opa_query_seconds = Histogram(
            "smartlinks_opa_query_seconds",
            "Round trip of one query to the OPA sidecar (answered or failed).",
            buckets=OPA_BUCKETS,
            registry=registry,
        )
        self.opa_errors = Counter(
            "smartlinks_opa_errors",
            "OPA queries without a usable answer, by reason code (opa_unavailable, opa_timeout, "
            "opa_undefined, opa_malformed, opa_error).",
            ["code"],
            registry=registry,
        )
        # -- HTTP ---------------------------------------------------------------------------------
        self.http_requests = Counter(
            "smartlinks_http_requests",
            "Requests answered by Flask, by endpoint name, method and status (click redirects are "
            "counted by the smartlinks_clicks_* metrics).",
            ["endpoint", "method", "status"],
            registry=registry,
        )
        self.http_request_seconds = Histogram(
            "smartlinks_http_request_seconds",
            "Time to answer a request in Flask, by endpoint name (not the click redirect or the postback).",
            ["endpoint"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        self.unhandled_exceptions = Counter(
            "smartlinks_unhandled_exceptions",
            "Requests answered 500 because of an unhandled exception, by endpoint name.",
            ["endpoint"],
            registry=registry,
        )
        # -- clicks (added by each process's click writer thread, once per flush) -----------------
        self.clicks_answered = Counter(
            "smartlinks_clicks_answered",
            "Clicks routed by the redirect (redirected, or 503 when no offer is available).",
            registry=registry,
        )
        self.clicks_buffered = Counter(
            "smartlinks_clicks_buffered", "Clicks accepted into the click buffer.", registry=registry
        )
        self.clicks_written = Counter("smartlinks_clicks_written", "Clicks written to the database.", registry=registry)
        self.clicks_dropped = Counter(
            "smartlinks_clicks_dropped",
            "Clicks redirected but not recorded: the buffer was full (CLICK_BUFFER_MAX).",
            registry=registry,
        )
        self.click_write_failures = Counter(
            "smartlinks_click_write_failures",
            "Failed flushes of the click buffer (the clicks stay queued and are retried).",
            registry=registry,
        )
        self.clicks_pending = Gauge(
            "smartlinks_clicks_pending",
            "Clicks waiting in the buffers of the live processes.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        # -- scheduler jobs (in the process holding the scheduler lease) -----------------------------
        self.job_runs = Counter(
            "smartlinks_job_runs", "Scheduled job runs (by the lease holder), by job.", ["job"], registry=registry
        )
        self.job_failures = Counter(
            "smartlinks_job_failures", "Scheduled job runs that raised, by job.", ["job"], registry=registry
        )
        self.job_seconds = Histogram(
            "smartlinks_job_seconds",
            "Duration of a scheduled job run, by job.",
            ["job"],
            buckets=JOB_BUCKETS,
            registry=registry,
        )
        self.job_last_success = Gauge(
            "smartlinks_job_last_success_timestamp_seconds",
            "Unix time of the last run of a job that did not raise, by job.",
            ["job"],
            registry=registry,
            multiprocess_mode="max",
        )
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        # A dict read instead of `labels()` (validation and a lock) on every call; two threads
        # racing on a new key both get the same child from prometheus_client.
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # -- recording ------------------------------------------------------------------------------
    def decided(self, action_type: str, outcome: str, seconds: float) -> None:
        self._child(self.decisions, action_type, outcome).inc()
        self._decide_seconds.observe(seconds)

    def decided_many(self, outcomes: Iterable[tuple[str, str]], seconds: float) -> None:
        counts: dict[tuple[str, str], int] = {}
        for key in outcomes:
            counts[key] = counts.get(key, 0) + 1
        for (action_type, outcome), n in counts.items():
            self._child(self.decisions, action_type, outcome).inc(n)
        self._decide_many_seconds.observe(seconds)

    def opa_queried(self, seconds: float, error_code: str | None = None) -> None:
        self.opa_query_seconds.observe(seconds)
        if error_code is not None:
            self._child(self.opa_errors, error_code).inc()

    def request_answered(self, endpoint: str, method: str, status: int, seconds: float | None) -> None:
        method = method if method in HTTP_METHODS else "other"
        self._child(self.http_requests, endpoint, method, str(status)).inc()
        if seconds is not None:
            self._child(self.http_request_seconds, endpoint).observe(seconds)

    def unhandled_exception(self, endpoint: str) -> None:
        self._child(self.unhandled_exceptions, endpoint).inc()

    def clicks_reported(
        self, *, answered: int, buffered: int, written: int, dropped: int, failures: int, pending: int
    ) -> None:
        """Add one click writer's counts since its last report (deltas; pending may be negative)."""
        for counter, n in (
            (self.clicks_answered, answered),
            (self.clicks_buffered, buffered),
            (self.clicks_written, written),
            (self.clicks_dropped, dropped),
            (self.click_write_failures, failures),
        ):
            if n > 0:
                counter.inc(n)
        if pending:
            self.clicks_pending.inc(pending)

    @contextmanager
    def job_run(self, job: str) -> Iterator[None]:
        """Time one run of `job` and count it; a raise is counted as a failure and re-raised."""
        started = perf_counter()
        try:
            yield
        except BaseException:
            self._child(self.job_failures, job).inc()
            raise
        else:
            self._child(self.job_last_success, job).set(time())
        finally:
            self._child(self.job_runs, job).inc()
            self._child(self.job_seconds, job).observe(perf_counter() - started)


_metrics: Metrics | None = None
_create_lock = threading.Lock()


def metrics() -> Metrics:
    """This process's metrics, created on first use."""
    global _metrics
    found = _metrics
    if found is None:
        with _create_lock:
            if _metrics is None:
                _metrics = Metrics()
            found = _metrics
    return found


def use_multiprocess_dir(path: Path) -> Path:
    """Make this process and its children (gunicorn and its workers) write their metrics to a
    fresh `path`: emptied, then named in PROMETHEUS_MULTIPROC_DIR. Must run before this process
    creates its metrics (`smartlinks serve` calls it first)."""
    if _metrics is not None:
        raise RuntimeError("metrics were created before the multiprocess directory was chosen")
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(path)
    # prometheus_client picks in-process or file-backed values when it is first imported, which
    # may have happened already in this process (nothing has created a value yet: checked above).
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return path


def process_exited(pid: int) -> None:
    """Forget the live gauges of a dead worker (gunicorn's child_exit hook, in the master)."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def exposition(accept: str | None = None) -> tuple[bytes, str]:
    """The text exposition of every process's metrics (multiprocess mode) or this process's."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import choose_encoder

    m = metrics()
    if m.multiprocess:
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = m.registry
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
