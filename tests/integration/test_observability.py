"""Observability against the real app, OPA and databases: `/metrics` and its token, the metrics
that decisions, requests, OPA failures, clicks and scheduled jobs leave there, request ids echoed
and put on JSON log lines, and an unhandled exception logged once, answered with its request id
and counted. The multiprocess aggregation runs in real separate processes."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from server import create_app
from server.auth import authz
from server.autopilot.scheduler import AutopilotScheduler, Job
from server.clicks.redirect import click_handler
from server.config import Settings
from server.extensions import services
from server.observability.logs import configure_logging
from server.policy.sidecar import free_loopback_port
from tests.conftest import ROOT, make_settings, make_token
from tests.integration.test_decisions_api import allocation
from tests.support import factories

METRICS_TOKEN = "metrics-token-" + "m" * 40  # noqa: S105 - a test credential
SCRAPE = {"Authorization": f"Bearer {METRICS_TOKEN}"}
Labels = tuple[tuple[str, str], ...]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_overrides({"metrics_token": METRICS_TOKEN})


def scrape(client: FlaskClient) -> dict[tuple[str, Labels], float]:
    """Every sample of /metrics: {(name, sorted labels): value}."""
    response = client.get("/metrics", headers=SCRAPE)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    out: dict[tuple[str, Labels], float] = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict[tuple[str, Labels], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """The root logger's records as JSON lines in a buffer (what LOG_FORMAT=json writes)."""
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = configure_logging("INFO", "json", stream)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


# -- access --------------------------------------------------------------------------------------
def test_metrics_need_the_metrics_token(client: FlaskClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {METRICS_TOKEN}"}):
        refused = client.get("/metrics", headers=headers)
        assert refused.status_code == 401 and refused.mimetype == "application/problem+json"
        assert refused.get_json()["reasons"] == ["invalid_metrics_token"]
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
    # An API token is not the metrics token, not even an admin's.
    admin = make_token(client.application, "admin")
    assert client.get("/metrics", headers={"Authorization": f"Bearer {admin}"}).status_code == 401
    assert client.get("/metrics", headers=SCRAPE).status_code == 200


def test_metrics_are_closed_without_a_token_unless_public(settings: Settings) -> None:
    closed = create_app(settings.with_overrides({"metrics_token": None}))
    refused = closed.test_client().get("/metrics")
    assert refused.status_code == 401
    assert refused.get_json()["reasons"] == ["metrics_token_not_configured"]
    services(closed).close()
    public = create_app(settings.with_overrides({"metrics_token": None, "metrics_public": True}))
    answered = public.test_client().get("/metrics")
    assert answered.status_code == 200 and b"smartlinks_decisions" in answered.data
    services(public).close()


def test_metrics_answer_while_opa_is_down(tmp_path: Path, database_url: str) -> None:
    settings = make_settings(
        database_url, f"http://127.0.0.1:{free_loopback_port()}", tmp_path, metrics_token=METRICS_TOKEN
    )
    app = create_app(settings)
    client = app.test_client()
    before = scrape(client)
    decided = client.post("/v1/decisions", json=allocation({"a": 0.5, "b": 0.5}))
    assert decided.status_code == 503  # the public list is unknown, authorisation fails closed
    after = scrape(client)
    code = {"code": "opa_unavailable"}
    assert value(after, "smartlinks_opa_errors_total", **code) > value(before, "smartlinks_opa_errors_total", **code)
    services(app).close()


# -- content ----------------------------------------------------------------------------------------
def test_decisions_and_requests_are_counted(client: FlaskClient, auth_header: dict[str, str]) -> None:
    before = scrape(client)
    allowed = client.post("/v1/decisions", json=allocation({"a": 0.5, "b": 0.5}), headers=auth_header)
    assert allowed.status_code == 200 and allowed.get_json()["outcome"] == "allowed"
    denied = client.post("/v1/decisions", json=allocation({"a": 0.99, "b": 0.01}, clicks=10), headers=auth_header)
    denied_outcome = denied.get_json()["outcome"]
    assert denied.status_code == 200 and denied_outcome != "allowed"  # a recorded decision either way
    listed = client.get("/v1/decisions", headers=auth_header)
    assert listed.status_code == 200
    assert client.get("/v1/decisions").status_code == 401
    after = scrape(client)

    def grew(name: str, by: float = 1, **labels: str) -> None:
        assert value(after, name, **labels) - value(before, name, **labels) == by, (name, labels)

    grew("smartlinks_decisions_total", action_type="allocation.update", outcome="allowed")
    grew("smartlinks_decisions_total", action_type="allocation.update", outcome=denied_outcome)
    grew("smartlinks_decision_seconds_count", 2, call="decide")
    create = {"endpoint": "decisions_api.create_decision", "method": "POST", "status": "200"}
    grew("smartlinks_http_requests_total", 2, **create)
    grew("smartlinks_http_requests_total", endpoint="decisions_api.list_decisions", method="GET", status="200")
    grew("smartlinks_http_requests_total", endpoint="decisions_api.list_decisions", method="GET", status="401")
    grew("smartlinks_http_request_seconds_count", 2, endpoint="decisions_api.create_decision")
    assert value(after, "smartlinks_opa_query_seconds_count") - value(before, "smartlinks_opa_query_seconds_count") >= 3
    # Endpoint names label the series, never raw paths.
    assert not any("/" in dict(labels).get("endpoint", "") for _, labels in after)


def test_a_batch_of_decisions_is_counted_per_decision(app: Flask) -> None:
    from server.governance.gateway import Action, Actor, Target

    client = app.test_client()
    before = scrape(client)
    svc = services(app)
    actor = Actor("algo:thompson", "algorithm")
    params = {"algorithm": "thompson_sampling", "weights": {"a": 0.5, "b": 0.5}}
    actions = [Action("allocation.update", actor, params, Target("link", f"lnk_{n}")) for n in range(3)]
    states = [allocation({"a": 0.5, "b": 0.5})["state"]] * 3
    with svc.db.unit_of_work() as uow:
        outcomes = svc.gateway.decide_many(uow.session, actions, states=states, dry_run=True)
        uow.commit()
    after = scrape(client)
    counted = sum(
        value(after, "smartlinks_decisions_total", action_type="allocation.update", outcome=o)
        - value(before, "smartlinks_decisions_total", action_type="allocation.update", outcome=o)
        for o in {outcome.record.outcome for outcome in outcomes}
    )
    assert counted == 3
    assert (
        value(after, "smartlinks_decision_seconds_count", call="decide_many")
        - value(before, "smartlinks_decision_seconds_count", call="decide_many")
        == 1
    )


def test_clicks_are_counted_by_the_writer_not_the_redirect(app: Flask) -> None:
    client = app.test_client()
    factories.seed_link(app, {"o1": 0.5, "o2": 0.5}, slug="metered")
    before = scrape(client)
    for n in range(5):
        assert client.get("/r/metered", environ_base={"REMOTE_ADDR": f"10.0.0.{n + 1}"}).status_code == 302
    writer = click_handler(app).writer
    writer.flush()
    writer.report()  # what the flusher thread does after each flush
    after = scrape(client)
    for name in (
        "smartlinks_clicks_answered_total",
        "smartlinks_clicks_buffered_total",
        "smartlinks_clicks_written_total",
    ):
        assert value(after, name) - value(before, name) == 5, name
    assert value(after, "smartlinks_clicks_dropped_total") == value(before, "smartlinks_clicks_dropped_total")
    # The redirect is not a Flask request in the metrics (it is counted by the click metrics).
    assert not any(dict(labels).get("endpoint") == "clicks.redirect" for _, labels in after)
    click_handler(app).close()


def test_scheduled_jobs_are_counted_and_timed(app: Flask) -> None:
    svc = services(app)
    client = app.test_client()
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("provider down")
        return "ok"

    job = Job("test.metered", 60, flaky)
    scheduler = AutopilotScheduler(svc.db, svc.gateway, jobs=[job], owner="test-metered")
    before = scrape(client)
    assert scheduler.run_job(job) is None
    assert scheduler.run_job(job) == "ok"
    scheduler.lease.release()
    after = scrape(client)
    labels = {"job": "test.metered"}
    assert (
        value(after, "smartlinks_job_runs_total", **labels) - value(before, "smartlinks_job_runs_total", **labels) == 2
    )
    assert (
        value(after, "smartlinks_job_failures_total", **labels)
        - value(before, "smartlinks_job_failures_total", **labels)
        == 1
    )
    assert (
        value(after, "smartlinks_job_seconds_count", **labels) - value(before, "smartlinks_job_seconds_count", **labels)
        == 2
    )
    assert value(after, "smartlinks_job_last_success_timestamp_seconds", **labels) > 0


# -- request ids and logs -------------------------------------------------------------------------
def test_the_request_id_is_echoed_or_made(client: FlaskClient) -> None:
    echoed = client.get("/healthz", headers={"X-Request-ID": "req-42.abc:1"})
    assert echoed.headers["X-Request-ID"] == "req-42.abc:1"
    for unsafe in ("two words", "x" * 200, 'quote"d', "new\\nline"):
        made = client.get("/healthz", headers={"X-Request-ID": unsafe}).headers["X-Request-ID"]
        assert made != unsafe and len(made) == 32 and int(made, 16) >= 0
    first, second = (client.get("/v1/decisions").headers["X-Request-ID"] for _ in range(2))
    assert first != second  # errors carry one too, a new one per request


@pytest.fixture
def boom_app(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    """The app with a test-only public endpoint that fails."""
    monkeypatch.setattr(authz, "ALWAYS_PUBLIC", authz.ALWAYS_PUBLIC | {"boom"})
    app = create_app(settings)
    app.testing = True

    @app.post("/test/boom/<secret>", endpoint="boom")
    def boom(secret: str) -> str:
        logging.getLogger("server.test").info("about to fail")
        raise RuntimeError("the failure under test")

    yield app
    services(app).close()


def test_an_unhandled_exception_is_logged_once_answered_and_counted(boom_app: Flask, json_logs: io.StringIO) -> None:
    client = boom_app.test_client()
    before = scrape(client)
    response = client.post(
        "/test/boom/invitation-secret-123",
        json={"password": "hunter2-body-secret"},
        headers={
            "X-Request-ID": "incident-7",
            "Authorization": "Bearer slk_header-secret",
            "Accept": "application/json",
        },
    )
    assert response.status_code == 500 and response.mimetype == "application/problem+json"
    problem = response.get_json()
    assert problem["type"] == "https://smartlinks.dev/problems/internal-server-error"
    assert problem["request_id"] == "incident-7" == response.headers["X-Request-ID"]
    assert "incident-7" in problem["detail"]
    assert "the failure under test" not in response.get_data(as_text=True)  # no internals to the caller

    lines = [line for line in json_lines(json_logs) if line.get("request_id") == "incident-7"]
    assert [line["message"] for line in lines] == ["about to fail", "unhandled error on POST /test/boom/<secret>"]
    error = lines[1]
    assert error["level"] == "ERROR" and error["logger"] == "server.errors"
    exception = error["exception"]
    assert isinstance(exception, dict) and exception["type"] == "RuntimeError"
    assert "the failure under test" in exception["stack"] and "Traceback" in exception["stack"]
    assert {"time", "level", "logger", "message", "request_id"} <= set(lines[0])
    logged = json_logs.getvalue()
    assert sum("exception" in line for line in json_lines(json_logs)) == 1  # logged once
    for secret in ("invitation-secret-123", "hunter2-body-secret", "slk_header-secret"):
        assert secret not in logged

    after = scrape(client)
    assert (
        value(after, "smartlinks_unhandled_exceptions_total", endpoint="boom")
        - value(before, "smartlinks_unhandled_exceptions_total", endpoint="boom")
        == 1
    )
    assert value(after, "smartlinks_http_requests_total", endpoint="boom", method="POST", status="500") >= 1


def test_log_lines_outside_a_request_have_no_request_id(json_logs: io.StringIO) -> None:
    logging.getLogger("server.test").warning("scheduler says hi")
    (line,) = json_lines(json_logs)
    assert line["message"] == "scheduler says hi" and "request_id" not in line


# -- across processes -------------------------------------------------------------------------------
WRITER = textwrap.dedent(
    """
    import sys
    from server.observability.metrics import metrics
    m = metrics()
    for _ in range(int(sys.argv[1])):
        m.decided("allocation.update", "allowed", 0.003)
    m.clicks_reported(answered=0, buffered=0, written=0, dropped=0, failures=0, pending=int(sys.argv[1]))
    print("done", flush=True)
    sys.stdin.read()  # stay alive (a live worker) until the test closes stdin
    """
)
SCRAPER = textwrap.dedent(
    """
    import sys
    from server.observability.metrics import exposition, process_exited
    for pid in sys.argv[1:]:
        process_exited(int(pid))
    sys.stdout.write(exposition()[0].decode())
    """
)


def test_one_scrape_adds_up_every_process(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    writers = [
        subprocess.Popen(  # noqa: S603 - fixed argv
            [sys.executable, "-c", WRITER, str(n)], env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        for n in (3, 4)
    ]
    try:
        for proc in writers:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"done"

        def scrape_all(*dead: int) -> dict[tuple[str, Labels], float]:
            out = subprocess.run(  # noqa: S603 - fixed argv
                [sys.executable, "-c", SCRAPER, *map(str, dead)], env=env, cwd=ROOT, check=True, capture_output=True
            ).stdout.decode()
            return {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(out)
                for s in family.samples
            }

        both = scrape_all()
        assert value(both, "smartlinks_decisions_total", action_type="allocation.update", outcome="allowed") == 7
        assert value(both, "smartlinks_decision_seconds_count", call="decide") == 7
        assert value(both, "smartlinks_clicks_pending") == 7
    finally:
        for proc in writers:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()
            proc.wait(10)
            proc.stdout.close()
    # gunicorn's child_exit hook: a dead worker's counters stay, its live gauges go.
    gone = scrape_all(writers[0].pid)
    assert value(gone, "smartlinks_decisions_total", action_type="allocation.update", outcome="allowed") == 7
    assert value(gone, "smartlinks_clicks_pending") == 4


# -- the worker's own listener ----------------------------------------------------------------------
def test_the_metrics_listener_answers_metrics_only_and_with_the_token(settings: Settings) -> None:
    import requests

    from server.observability.listener import MetricsListener

    listener = MetricsListener(settings, "127.0.0.1", 0)
    port = listener.start()
    base = f"http://127.0.0.1:{port}"
    try:
        refused = requests.get(f"{base}/metrics", timeout=5)
        assert refused.status_code == 401 and refused.headers["Content-Type"] == "application/problem+json"
        assert refused.json()["reasons"] == ["invalid_metrics_token"]
        assert refused.headers["WWW-Authenticate"] == 'Bearer realm="metrics"'
        assert requests.get(f"{base}/metrics", headers={"Authorization": "Bearer nope"}, timeout=5).status_code == 401
        assert requests.get(f"{base}/v1/decisions", headers=SCRAPE, timeout=5).status_code == 404
        assert requests.post(f"{base}/metrics", headers=SCRAPE, timeout=5).status_code == 405
        answered = requests.get(f"{base}/metrics", headers=SCRAPE, timeout=5)
        assert answered.status_code == 200 and answered.headers["Cache-Control"] == "no-store"
        assert "# HELP smartlinks_job_runs_total" in answered.text
    finally:
        listener.stop()


def test_a_separate_autopilot_worker_serves_its_job_metrics(settings: Settings, tmp_path: Path) -> None:
    """`smartlinks autopilot run --metrics-port 0`: the scheduler's job runs can be scraped."""
    import requests

    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "OPA_URL": str(settings.opa_url),
        "SMARTLINKS_VAR_DIR": str(tmp_path),
        "SECRET_KEY": settings.secret_key,
        "METRICS_TOKEN": METRICS_TOKEN,
        "AUTOPILOT_INTERVAL_SECONDS": "1",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    worker = subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "server.cli", "autopilot", "run", "--metrics-port", "0"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert worker.stdout is not None
        first = worker.stdout.readline().strip()
        assert first.startswith("metrics on http://127.0.0.1:"), first
        url = first.split(" ", 2)[2]
        deadline = time.monotonic() + 30
        runs = 0.0
        while time.monotonic() < deadline:
            response = requests.get(url, headers=SCRAPE, timeout=5)
            assert response.status_code == 200
            runs = sum(
                s.value
                for family in text_string_to_metric_families(response.text)
                for s in family.samples
                if s.name == "smartlinks_job_runs_total" and s.labels.get("job") == "autopilot.links"
            )
            if runs >= 1:
                break
            time.sleep(0.25)
        assert runs >= 1
        assert requests.get(url, timeout=5).status_code == 401
    finally:
        worker.terminate()
        worker.wait(30)
        if worker.stdout is not None:
            worker.stdout.close()
    assert worker.returncode == 0
