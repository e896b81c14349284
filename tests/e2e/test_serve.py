"""The README's run command end to end: `smartlinks serve` starts and supervises the OPA sidecar
and gunicorn; with OPA killed nothing is allowed and /readyz is 503; the supervisor brings OPA
back and the server recovers without a restart; SIGTERM stops everything."""

from __future__ import annotations

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

from server.policy.sidecar import free_loopback_port
from tests.conftest import ROOT
from tests.integration.test_decisions_api import allocation

pytestmark = pytest.mark.slow


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
