"""The README's run command end to end: `smartlinks serve` starts and supervises the OPA sidecar
and gunicorn; with OPA killed nothing is allowed and /readyz is 503; the supervisor brings OPA
back and the server recovers without a restart; SIGTERM stops everything. One scrape of
`/metrics` sees the metrics of the gunicorn worker and of the supervisor's scheduler, and the log
lines are JSON with the request id."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from server.policy.sidecar import free_loopback_port
from tests.conftest import ROOT
from tests.integration.test_decisions_api import allocation

pytestmark = pytest.mark.slow
METRICS_TOKEN = "e2e-metrics-token-" + "t" * 32  # noqa: S105 - a test credential


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.extend(int(c) for c in text)
    return out


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found.append(child)
        found.extend(descendants(child))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():  # type: ignore[operator]
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, dict[str, str], subprocess.Popen[bytes]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPA_URL", "DATABASE_URL", "SMARTLINKS_"))}
    port, opa_port = free_loopback_port(), free_loopback_port()
    env.update(
        SMARTLINKS_VAR_DIR=str(tmp_path),
        PORT=str(port),
        OPA_PORT=str(opa_port),
        SECRET_KEY="serve-test-secret-" + "x" * 40,
        WEB_WORKERS="1",
        METRICS_TOKEN=METRICS_TOKEN,
        LOG_FORMAT="json",
    )
    cli = [sys.executable, "-m", "server.cli"]
    subprocess.run([*cli, "db", "upgrade"], env=env, cwd=ROOT, check=True, capture_output=True)
    boot = subprocess.run([*cli, "bootstrap"], env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    assert re.search(r"password: \S+", boot.stdout), boot.stdout
    made = subprocess.run(
        [*cli, "tokens", "create", "--name", "e2e", "--role", "service"],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    token = made.stdout.strip().splitlines()[-1]
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*cli, "serve"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{base}/readyz", timeout=1).status_code == 200, 60, "the server to be ready")
        yield base, {"Authorization": f"Bearer {token}"}, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def test_serve_supervises_opa_and_fails_closed(served: tuple[str, dict[str, str], subprocess.Popen[bytes]]) -> None:
    base, header, proc = served

    def decide() -> requests.Response:
        return requests.post(f"{base}/v1/decisions", json=allocation({"a": 0.5, "b": 0.5}), headers=header, timeout=5)

    assert decide().json()["allow"] is True

    opa = [p for p in descendants(proc.pid) if " run " in cmdline(p) and "opa" in cmdline(p)]
    assert len(opa) == 1, [cmdline(p) for p in descendants(proc.pid)]
    os.kill(opa[0], signal.SIGKILL)
    # Until the supervisor has restarted it, every decision fails closed.
    down = decide()
    if down.status_code == 503:
        assert down.json()["allow"] is False and down.json()["reasons"][0]["code"].startswith("opa_")
    wait_for(lambda: requests.get(f"{base}/readyz", timeout=1).status_code == 200, 30, "OPA to be restarted")
    assert decide().json()["allow"] is True  # recovered without restarting the server

    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    assert proc.returncode == 0
    time.sleep(0.5)
    assert not any(cmdline(p) for p in opa), "OPA must stop with the server"


def test_serve_exposes_the_metrics_of_every_process(
    served: tuple[str, dict[str, str], subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    base, header, _ = served
    decided = requests.post(
        f"{base}/v1/decisions",
        json=allocation({"a": 0.5, "b": 0.5}),
        headers={**header, "X-Request-ID": "e2e-metrics-1"},
        timeout=5,
    )
    assert decided.json()["allow"] is True and decided.headers["X-Request-ID"] == "e2e-metrics-1"
    assert requests.get(f"{base}/metrics", timeout=5).status_code == 401
    assert requests.get(f"{base}/metrics", headers=header, timeout=5).status_code == 401  # an API token is not it

    def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        response = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=5)
        assert response.status_code == 200
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        }

    # The scheduler's first cycle runs in the supervisor process; the decision in the worker.
    links_job = ("smartlinks_job_runs_total", (("job", "autopilot.links"),))
    wait_for(lambda: samples().get(links_job, 0) >= 1, 30, "the supervisor's job metrics")
    found = samples()
    decisions = ("smartlinks_decisions_total", (("action_type", "allocation.update"), ("outcome", "allowed")))
    assert found[decisions] >= 1
    assert found[("smartlinks_decision_seconds_count", (("call", "decide"),))] >= 1
    assert found[("smartlinks_opa_query_seconds_count", ())] >= 1
    assert any(name == "smartlinks_http_requests_total" for name, _ in found)
    assert (tmp_path / "metrics").is_dir() and any((tmp_path / "metrics").glob("*.db"))

    lines = (tmp_path / "serve.log").read_text(errors="replace").splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records, lines[:20]
    access = [r for r in records if r.get("logger") == "gunicorn.access" and r.get("request_id") == "e2e-metrics-1"]
    assert len(access) == 1 and "/v1/decisions" in access[0]["message"], records[-5:]
