"""The OPA tooling against the real `opa` binary (.tools/bin/opa, installed by opa/install.sh):
bundle building, policy revisions, and the supervised sidecar. Uses a throwaway Rego bundle."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from server.policy.bundle import (
    BundleBuildError,
    BundleInfo,
    build_bundle,
    file_sha256,
    policy_revision,
)
from server.policy.sidecar import DEFAULT_GOGC, OpaSidecar, SidecarError, active_revision

REPO = Path(__file__).resolve().parents[2]
OPA = REPO / ".tools" / "bin" / "opa"
CONFIG = REPO / "opa" / "config.yaml"

POLICY = """package demo

default allow := false

allow if input.x == 1

answer := data.settings.answer
"""

POLICY_V2 = """package demo

default allow := false

allow if input.x == 2

answer := data.settings.answer
"""

POLICY_TEST = """package demo

test_allow if allow with input as {"x": 1}
"""


@pytest.fixture(scope="module")
def opa_bin() -> Path:
    if not (OPA.exists() and os.access(OPA, os.X_OK)):
        pytest.fail(f"{OPA} is missing: run `bash opa/install.sh` first")
    return OPA


def write_rego(root: Path, policy: str = POLICY) -> Path:
    rego = root / "rego"
    (rego / "settings").mkdir(parents=True, exist_ok=True)
    (rego / "demo.rego").write_text(policy)
    (rego / "demo_test.rego").write_text(POLICY_TEST)
    (rego / "settings" / "data.json").write_text(json.dumps({"answer": 42}))
    return rego


@pytest.fixture()
def bundle(opa_bin: Path, tmp_path: Path) -> BundleInfo:
    return build_bundle(opa_bin, write_rego(tmp_path / "src"), tmp_path / "out" / "bundle.tar.gz", "rev-one")


@pytest.fixture()
def sidecar(opa_bin: Path, bundle: BundleInfo, tmp_path: Path) -> Iterator[OpaSidecar]:
    car = OpaSidecar(opa_bin, bundle.path, tmp_path / "opa.log", port=0)
    try:
        yield car
    finally:
        car.stop()


def query(url: str, path: str, input_doc: Any = None) -> dict[str, Any]:
    body = {} if input_doc is None else {"input": input_doc}
    response = requests.post(f"{url}/v1/data/{path}?provenance=true", json=body, timeout=2)
    response.raise_for_status()
    payload: dict[str, Any] = response.json()
    return payload


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Still exists: acceptable only if it is a zombie that is not ours (it never is here).
    return False


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


# -- bundle building ---------------------------------------------------------------------


def test_build_bundle_writes_revision_and_skips_tests(bundle: BundleInfo) -> None:
    assert bundle.path.is_file()
    assert bundle.revision == "rev-one"
    assert bundle.sha256 == file_sha256(bundle.path)
    with tarfile.open(bundle.path) as tar:
        names = {n.lstrip("/") for n in tar.getnames()}
        manifest_member = tar.extractfile("/.manifest") or tar.extractfile(".manifest")
        assert manifest_member is not None
        manifest = json.loads(manifest_member.read())
    assert manifest["revision"] == "rev-one"
    assert any(n.endswith("demo.rego") for n in names)
    assert not any(n.endswith("_test.rego") for n in names), names
    # No temporary files are left next to the bundle.
    assert sorted(p.name for p in bundle.path.parent.iterdir()) == ["bundle.tar.gz"]


def test_build_bundle_default_revision_is_content_hash(opa_bin: Path, tmp_path: Path) -> None:
    rego = write_rego(tmp_path / "src")
    info = build_bundle(opa_bin, rego, tmp_path / "b.tar.gz")
    assert info.revision == policy_revision(rego)
    assert info.revision.startswith("sha256-")


def test_build_bundle_failure_carries_rego_error(opa_bin: Path, tmp_path: Path) -> None:
    rego = tmp_path / "bad"
    rego.mkdir()
    (rego / "broken.rego").write_text("package broken\n\nallow if {\n")
    out = tmp_path / "out" / "bad.tar.gz"
    with pytest.raises(BundleBuildError) as excinfo:
        build_bundle(opa_bin, rego, out, "r1")
    message = str(excinfo.value)
    assert "rego_parse_error" in message
    assert "broken.rego" in message
    assert not out.exists()
    assert list(out.parent.iterdir()) == []


def test_build_bundle_compile_error_and_missing_binary(opa_bin: Path, tmp_path: Path) -> None:
    rego = tmp_path / "unsafe"
    rego.mkdir()
    (rego / "p.rego").write_text("package p\n\nallow if undefined_thing == 1\n")
    with pytest.raises(BundleBuildError, match="rego_unsafe_var_error"):
        build_bundle(opa_bin, rego, tmp_path / "x.tar.gz", "r1")
    with pytest.raises(BundleBuildError, match="not found"):
        build_bundle(tmp_path / "no-opa", write_rego(tmp_path / "ok"), tmp_path / "y.tar.gz", "r1")


# -- policy revisions --------------------------------------------------------------------


def test_policy_revision_outside_git_is_content_hash(tmp_path: Path) -> None:
    rego = write_rego(tmp_path / "plain")
    rev = policy_revision(rego)
    assert rev.startswith("sha256-")
    assert len(rev) == len("sha256-") + 16
    int(rev.removeprefix("sha256-"), 16)
    # Same content elsewhere -> same revision; location does not matter.
    assert policy_revision(write_rego(tmp_path / "elsewhere")) == rev
    # Test files count too.
    (rego / "demo_test.rego").write_text(POLICY_TEST + "\n# changed\n")
    changed = policy_revision(rego)
    assert changed != rev
    # A rename alone changes it.
    (rego / "demo_test.rego").rename(rego / "demo2_test.rego")
    assert policy_revision(rego) not in {rev, changed}


def test_policy_revision_in_git(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    rego = write_rego(repo)
    (repo / "README").write_text("outside the rego folder\n")
    # No commit yet -> content hash.
    assert policy_revision(rego).startswith("sha256-")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "one")
    head = git(repo, "rev-parse", "HEAD")
    assert policy_revision(rego) == head[:12]
    # Changes outside the rego folder do not make it dirty.
    (repo / "README").write_text("edited\n")
    (repo / "untracked.txt").write_text("x\n")
    assert policy_revision(rego) == head[:12]
    # A modified file inside -> content hash.
    (rego / "demo.rego").write_text(POLICY_V2)
    assert policy_revision(rego) == policy_revision(write_rego(tmp_path / "copy", POLICY_V2))
    git(repo, "checkout", "--", "rego")
    assert policy_revision(rego) == head[:12]
    # An untracked file inside -> content hash.
    (rego / "new.rego").write_text("package extra\n")
    assert policy_revision(rego).startswith("sha256-")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "two")
    head2 = git(repo, "rev-parse", "HEAD")
    assert head2 != head
    assert policy_revision(rego) == head2[:12]


# -- the sidecar -------------------------------------------------------------------------


def test_sidecar_serves_bundle_and_reports_revision(sidecar: OpaSidecar, bundle: BundleInfo) -> None:
    started = time.monotonic()
    sidecar.start()
    waited = sidecar.wait_ready(10)
    print(f"OPA start -> ready: {time.monotonic() - started:.3f}s (wait_ready {waited:.3f}s)")
    assert sidecar.alive()
    assert sidecar.port > 0
    assert sidecar.url == f"http://127.0.0.1:{sidecar.port}"

    allowed = query(sidecar.url, "demo/allow", {"x": 1})
    assert allowed["result"] is True
    assert query(sidecar.url, "demo/allow", {"x": 2})["result"] is False
    assert query(sidecar.url, "demo/answer")["result"] == 42
    # With --bundle <file>, provenance names the bundle by the path given on the command line.
    assert allowed["provenance"]["bundles"] == {str(bundle.path): {"revision": "rev-one"}}
    # /health?bundles says nothing about revisions: just 200 and {}.
    health = requests.get(f"{sidecar.url}/health?bundles", timeout=2)
    assert health.status_code == 200
    assert health.json() == {}
    assert active_revision(sidecar.url) == "rev-one"
    # Test files were not shipped.
    assert query(sidecar.url, "demo/test_allow").get("result") is None


def test_sidecar_gets_a_gc_target_unless_the_environment_sets_one(
    opa_bin: Path, bundle: BundleInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GOGC=400 by default (the decision tail, docs/benchmarks.md); an operator's GOGC wins."""

    def environ_of(car: OpaSidecar) -> dict[str, str]:
        assert car.pid is not None
        raw = Path(f"/proc/{car.pid}/environ").read_bytes()
        return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)

    monkeypatch.delenv("GOGC", raising=False)
    with OpaSidecar(opa_bin, bundle.path, tmp_path / "a.log") as car:
        assert environ_of(car)["GOGC"] == DEFAULT_GOGC == "400"
    monkeypatch.setenv("GOGC", "150")
    with OpaSidecar(opa_bin, bundle.path, tmp_path / "b.log") as car:
        assert environ_of(car)["GOGC"] == "150"


def test_supervision_restarts_killed_opa(sidecar: OpaSidecar, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="server.policy.sidecar")
    sidecar.start()
    sidecar.wait_ready(10)
    sidecar.supervise(interval=1.0)
    assert sidecar.supervising
    old_pid = sidecar.pid
    assert old_pid is not None

    killed = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)
    recovered = None
    while time.monotonic() - killed < 8:
        pid = sidecar.pid
        if pid is not None and pid != old_pid:
            try:
                if query(sidecar.url, "demo/allow", {"x": 1})["result"] is True:
                    recovered = time.monotonic() - killed
                    break
            except requests.RequestException:
                pass
        time.sleep(0.05)
    assert recovered is not None, "OPA was not restarted within 8s"
    print(f"kill -9 -> queries work again: {recovered:.3f}s")
    assert recovered < 4
    assert sidecar.restarts == 1
    assert process_gone(old_pid)
    assert any("restart #1" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)

    new_pid = sidecar.pid
    assert new_pid is not None
    sidecar.stop()
    assert not sidecar.alive()
    assert not sidecar.supervising
    assert sidecar.pid is None
    assert process_gone(new_pid)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{sidecar.url}/health", timeout=1)
    sidecar.stop()  # idempotent


def test_backoff_is_exponential_and_capped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A stand-in "opa" that dies at once exercises the crash loop without waiting minutes.
    fake = tmp_path / "crashing-opa"
    fake.write_text("#!/bin/sh\necho 'boom: simulated crash' >&2\nexit 3\n")
    fake.chmod(0o755)
    bundle = tmp_path / "b.tar.gz"
    bundle.write_bytes(b"not used")
    caplog.set_level(logging.WARNING, logger="server.policy.sidecar")
    car = OpaSidecar(fake, bundle, tmp_path / "opa.log", min_backoff=0.05, max_backoff=0.2, ready_timeout=0.5)
    try:
        car.start()
        with pytest.raises(SidecarError, match="boom: simulated crash"):
            car.wait_ready()
        car.supervise(interval=0.02)
        deadline = time.monotonic() + 10
        while car.restarts < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        car.stop()
    assert car.restarts >= 6
    found = (re.search(r"restart #\d+ in ([0-9.]+)s", r.getMessage()) for r in caplog.records)
    delays = [float(m.group(1)) for m in found if m]
    assert delays[:4] == [0.05, 0.1, 0.2, 0.2]
    assert max(delays) == 0.2


def test_reload_bundle_switches_policy(opa_bin: Path, sidecar: OpaSidecar, tmp_path: Path) -> None:
    sidecar.start()
    sidecar.wait_ready(10)
    sidecar.supervise()
    rego_v2 = write_rego(tmp_path / "v2", POLICY_V2)
    v2 = build_bundle(opa_bin, rego_v2, tmp_path / "out" / "v2.tar.gz", "rev-two")
    took = sidecar.reload_bundle(v2.path)
    print(f"reload_bundle (restart on new bundle): {took:.3f}s")
    assert sidecar.bundle == v2.path
    assert active_revision(sidecar.url) == "rev-two"
    assert query(sidecar.url, "demo/allow", {"x": 2})["result"] is True
    assert query(sidecar.url, "demo/allow", {"x": 1})["result"] is False
    assert sidecar.restarts == 0  # reloads are not crash restarts

    with pytest.raises(SidecarError, match="not a folder"):
        sidecar.reload_bundle(tmp_path / "v2")

    # A corrupt bundle fails with OPA's error, and the previous bundle is served again.
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x00not a gzip file")
    with pytest.raises(SidecarError, match="gzip"):
        sidecar.reload_bundle(junk, timeout=10)
    assert sidecar.bundle == v2.path
    assert active_revision(sidecar.url) == "rev-two"


def test_corrupt_bundle_start_fails_with_log_tail(opa_bin: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x00not a gzip file")
    car = OpaSidecar(opa_bin, junk, tmp_path / "logs" / "opa.log")
    try:
        car.start()
        with pytest.raises(SidecarError) as excinfo:
            car.wait_ready(10)
    finally:
        car.stop()
    assert "exited with code 1" in str(excinfo.value)
    assert "bundle read failed" in str(excinfo.value)
    assert not car.alive()


def test_context_manager_and_fixed_port(opa_bin: Path, bundle: BundleInfo, tmp_path: Path) -> None:
    from server.policy.sidecar import free_loopback_port

    port = free_loopback_port()
    with OpaSidecar(opa_bin, bundle.path, tmp_path / "opa.log", port=port) as car:
        assert car.url == f"http://127.0.0.1:{port}"
        assert car.supervising
        assert query(car.url, "demo/allow", {"x": 1})["result"] is True
        pid = car.pid
        assert pid is not None
        restart_took = car.restart()
        print(f"restart(): {restart_took:.3f}s")
        assert car.pid != pid
        assert process_gone(pid)
        assert query(car.url, "demo/allow", {"x": 1})["result"] is True
        pid = car.pid
    assert pid is not None and process_gone(pid)
    assert not car.supervising


# -- opa/config.yaml against a stand-in bundle server ------------------------------------


class BundleServer:
    """Serves one bundle at /bundles/smartlinks.tar.gz with an ETag, like the server will."""

    def __init__(self) -> None:
        self.body = b""
        self.etag = ""
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if self.path != "/bundles/smartlinks.tar.gz" or not outer.body:
                    self.send_response(404)
                    self.end_headers()
                    return
                if self.headers.get("If-None-Match") == outer.etag:
                    self.send_response(304)
                    self.send_header("ETag", outer.etag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("ETag", outer.etag)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, info: BundleInfo) -> None:
        self.body = info.path.read_bytes()
        self.etag = f'"{info.sha256}"'

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def test_config_template_polls_bundle_service(opa_bin: Path, bundle: BundleInfo, tmp_path: Path) -> None:
    server = BundleServer()
    env = {"SMARTLINKS_BUNDLE_URL": server.url}
    car = OpaSidecar(opa_bin, None, tmp_path / "opa.log", config_file=CONFIG, env=env)
    try:
        car.start()
        # No bundle published yet: OPA runs but /health?bundles is 500 until one is activated.
        with pytest.raises(SidecarError, match="HTTP 500"):
            car.wait_ready(1.5)
        server.publish(bundle)
        car.wait_ready(10)
        assert active_revision(car.url) == "rev-one"
        answer = query(car.url, "demo/allow", {"x": 1})
        assert answer["result"] is True
        assert answer["provenance"]["bundles"] == {"smartlinks": {"revision": "rev-one"}}
        assert "decision_id" not in answer  # decision logging is off
        status = requests.get(f"{car.url}/v1/status", timeout=2).json()["result"]
        assert status["bundles"]["smartlinks"]["active_revision"] == "rev-one"

        rego_v2 = write_rego(tmp_path / "v2", POLICY_V2)
        server.publish(build_bundle(opa_bin, rego_v2, tmp_path / "v2.tar.gz", "rev-two"))
        published = time.monotonic()
        while active_revision(car.url) != "rev-two" and time.monotonic() - published < 6:
            time.sleep(0.05)
        print(f"new bundle picked up by polling after {time.monotonic() - published:.3f}s")
        assert active_revision(car.url) == "rev-two"
        assert query(car.url, "demo/allow", {"x": 2})["result"] is True
        assert set(server.requests) == {"/bundles/smartlinks.tar.gz"}  # no /status, no /logs
        with pytest.raises(SidecarError, match="config file"):
            car.reload_bundle(bundle.path)
    finally:
        car.stop()
        server.close()
