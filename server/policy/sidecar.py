"""Run and supervise a local OPA server (`opa run --server`) as a child process.

`OpaSidecar` starts OPA on a loopback port with one bundle file, waits until
`/health?bundles` answers 200, and (with `supervise()`) restarts it with capped
exponential back-off whenever it dies. OPA's stdout and stderr go to a log file, never
to a pipe, so OPA can never block on a full pipe.

Revision reporting with ``--bundle file.tar.gz`` (checked against OPA 1.22.3): the
bundle is named by the path given on the command line, and its manifest revision is in
`provenance.bundles[<path>].revision` of ``/v1/data/...?provenance=true`` answers and in
``GET /v1/data/system/bundles``; ``/health?bundles`` only answers ``{}``.
`active_revision()` reads the latter.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

__all__ = [
    "TOKEN_ENV",
    "OpaSidecar",
    "SidecarError",
    "active_revision",
    "bundle_server_config",
    "free_loopback_port",
    "write_config",
]

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_RUN_MARKER = "--- opa sidecar: "
# Go's garbage collector target for the sidecar unless GOGC is set in the environment: OPA
# allocates ~80 KB per decision, and at Go's default (100) its collections put one decision in a
# hundred at 3.7 ms against 0.87 ms at the median; at 400 the p99 is 1.8 ms for 26 MB more
# resident memory (docs/benchmarks.md, "OPA's garbage collector").
DEFAULT_GOGC = "400"
# The environment variable that carries OPA's bearer token for the bundle server: the generated
# configuration names it (`${SMARTLINKS_OPA_TOKEN}`, expanded by OPA) so that the token is never
# written to the configuration file.
TOKEN_ENV = "SMARTLINKS_OPA_TOKEN"  # noqa: S105 - a variable name, not a secret


class SidecarError(RuntimeError):
    """OPA did not start, did not become ready, or exited; the message ends with its log tail."""


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def active_revision(url: str, timeout: float = 2.0) -> str | None:
    """Revision of the bundle OPA at `url` has active, from ``GET /v1/data/system/bundles``.

    Works for bundles given with ``--bundle`` (keyed by their path) and for bundles from
    the bundles plugin (keyed by their configured name). None when OPA has no bundle with
    a revision; with several bundles, the revisions are joined with "," in name order.
    Raises `requests.RequestException` when OPA cannot be reached.
    """
    response = requests.get(f"{url.rstrip('/')}/v1/data/system/bundles", timeout=timeout)
    response.raise_for_status()
    payload: Any = response.json()
    bundles = payload.get("result") if isinstance(payload, dict) else None
    if not isinstance(bundles, dict):
        return None
    revisions: list[str] = []
    for name in sorted(bundles):
        info = bundles[name]
        manifest = info.get("manifest") if isinstance(info, dict) else None
        revision = manifest.get("revision") if isinstance(manifest, dict) else None
        if isinstance(revision, str) and revision:
            revisions.append(revision)
    return ",".join(revisions) if revisions else None


def bundle_server_config(
    *,
    service_url: str,
    verification_key_pem: str,
    key_id: str,
    resource: str,
    sidecar: str,
    long_poll_seconds: int = 10,
    status: bool = True,
    decision_logs: bool = True,
    token_path: str | None = None,
) -> dict[str, Any]:
    """OPA configuration for a sidecar fed by the server's bundle server (checked against 1.22.3).

    * `bundles.smartlinks` polls `<service_url>/<resource>` with `If-None-Match` and long polling
      (`long_polling_timeout_seconds`; the server answers within that time, 304 when unchanged),
      falling back to 1-2 s polling; `persist: false` (the server is the source of truth).
    * `keys` + `signing.keyid`: the bundle must carry a valid RS256 signature by the server's
      key; an unsigned or altered bundle is refused and the last good one stays active.
    * `status` POSTs to `<service_url>/status/<sidecar>` after every change (active revision,
      bundle errors, decision-log upload state and counters such as dropped events).
    * `decision_logs` uploads gzip batches to `<service_url>/logs/<sidecar>` every 1-2 s (OPA's
      default is 300-600 s); the buffer is bounded (32 MiB) so that a long outage of the server
      drops events (counted, and surfaced by the server as an alert) instead of growing without
      end. `system.log.mask` and `system.log.drop` ship in the bundle.
    * `labels.sidecar` names the sidecar in reports and events.

    The bearer token is `${SMARTLINKS_OPA_TOKEN}`, expanded by OPA from its environment, or read
    by OPA from the file `token_path` (a container secret) when given.
    """
    bearer = {"token_path": token_path} if token_path else {"token": "${" + TOKEN_ENV + "}"}
    config: dict[str, Any] = {
        "services": {
            "smartlinks": {
                "url": service_url.rstrip("/"),
                "credentials": {"bearer": bearer},
            }
        },
        "keys": {key_id: {"key": verification_key_pem, "algorithm": "RS256"}},
        "labels": {"sidecar": sidecar, "app": "smartlinks"},
        "bundles": {
            "smartlinks": {
                "service": "smartlinks",
                "resource": resource,
                "persist": False,
                "signing": {"keyid": key_id},
                "polling": {
                    "min_delay_seconds": 1,
                    "max_delay_seconds": 2,
                    "long_polling_timeout_seconds": long_poll_seconds,
                },
            }
        },
    }
    if status:
        config["status"] = {"service": "smartlinks", "partition_name": sidecar}
    if decision_logs:
        config["decision_logs"] = {
            "service": "smartlinks",
            "partition_name": sidecar,
            "reporting": {
                "min_delay_seconds": 1,
                "max_delay_seconds": 2,
                "upload_size_limit_bytes": 262144,
                "buffer_size_limit_bytes": 32 * 1024 * 1024,
            },
        }
    return config


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    """Write an OPA configuration (JSON is YAML) readable by its owner only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    tmp.chmod(0o600)
    os.replace(tmp, path)
    return path


def _tail(path: Path, max_lines: int = 20, max_bytes: int = 8192) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return "(no OPA log)"
    lines = data.decode("utf-8", errors="replace").splitlines()
    # Only the latest run: from the last marker line that _spawn() writes.
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(_RUN_MARKER):
            lines = lines[i + 1 :]
            break
    lines = lines[-max_lines:]
    return "\n".join(lines) if lines else "(OPA wrote nothing)"


class OpaSidecar:
    """One supervised `opa run --server` child process on 127.0.0.1.

    Thread-safe. The port is fixed for the object's lifetime (``port=0`` picks a free one
    once), so `url` stays valid across restarts.
    """

    def __init__(
        self,
        opa_bin: Path,
        bundle: Path | None,
        log_path: Path,
        *,
        port: int = 0,
        config_file: Path | None = None,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        ready_timeout: float = 15.0,
        max_backoff: float = 10.0,
        min_backoff: float = 0.25,
        stable_after: float = 30.0,
    ) -> None:
        self.opa_bin = Path(opa_bin)
        self.log_path = Path(log_path)
        self.config_file = Path(config_file) if config_file is not None else None
        self.env = dict(env) if env is not None else {}
        self.extra_args = tuple(extra_args)
        self.ready_timeout = ready_timeout
        self.max_backoff = max_backoff
        self.min_backoff = min_backoff
        self.stable_after = stable_after
        if bundle is None and self.config_file is None:
            raise SidecarError("OpaSidecar needs a bundle file or a config file that configures bundles")
        self._bundle = self._check_bundle(bundle) if bundle is not None else None
        self._port = port if port else free_loopback_port()
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._restarts = 0
        self._failures = 0
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._atexit_registered = False

    # -- properties ------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the OPA REST API, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{LOOPBACK}:{self._port}"

    @property
    def bundle(self) -> Path | None:
        """The bundle file given with ``--bundle`` (None when only the config file loads bundles)."""
        return self._bundle

    @property
    def pid(self) -> int | None:
        """PID of the current OPA process (None when not started or stopped)."""
        proc = self._proc
        return proc.pid if proc is not None else None

    @property
    def restarts(self) -> int:
        """How many times supervision restarted OPA after it died."""
        return self._restarts

    @property
    def supervising(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def command(self) -> list[str]:
        """The argv used to start OPA."""
        argv = [
            str(self.opa_bin),
            "run",
            "--server",
            "--addr",
            f"{LOOPBACK}:{self._port}",
            "--log-level",
            "error",
            "--skip-version-check",
            "--shutdown-grace-period",
            "2",
        ]
        if self.config_file is not None:
            argv += ["--config-file", str(self.config_file)]
        argv += self.extra_args
        if self._bundle is not None:
            argv += ["--bundle", str(self._bundle)]
        return argv

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Spawn OPA (no-op if it is already running). Does not wait for readiness."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return
            self._spawn()

    def _spawn(self) -> None:
        # Caller holds self._lock.
        if not self._atexit_registered:
            atexit.register(self._atexit_stop)
            self._atexit_registered = True
        argv = self.command()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log_file.write(f"{_RUN_MARKER}{stamp} starting: {' '.join(argv)}\n".encode())
            log_file.flush()
            try:
                # Same session and process group as the parent (start_new_session=False):
                # no preexec_fn, which is unsafe with threads; stop()/atexit end it.
                self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=False,
                    close_fds=True,
                    env={"GOGC": DEFAULT_GOGC, **os.environ, **self.env},
                )
            except OSError as exc:
                self._proc = None
                raise SidecarError(f"cannot start {self.opa_bin}: {exc}") from exc
        self._started_at = time.monotonic()
        source = self._bundle if self._bundle is not None else f"bundles from {self.config_file}"
        log.info("OPA started (pid %d) on %s with %s", self._proc.pid, self.url, source)

    def alive(self) -> bool:
        """True while the OPA process is running."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    def wait_ready(self, timeout: float | None = None) -> float:
        """Poll ``GET /health?bundles`` until 200; return the seconds waited.

        Raises `SidecarError` (with the tail of OPA's log) when OPA exits or the timeout
        (default `ready_timeout`) passes first.
        """
        return self._wait_ready(self.ready_timeout if timeout is None else timeout, None)

    def _wait_ready(self, timeout: float, abort: threading.Event | None) -> float:
        started = time.monotonic()
        deadline = started + timeout
        health = f"{self.url}/health?bundles"
        last = "no answer yet"
        with requests.Session() as session:
            while True:
                proc = self._proc
                if proc is None:
                    raise SidecarError("OPA is not running (start() was not called or stop() was)")
                code = proc.poll()
                if code is not None:
                    raise SidecarError(
                        f"OPA exited with code {code} before it became ready.\n"
                        f"--- tail of {self.log_path} ---\n{_tail(self.log_path)}"
                    )
                try:
                    response = session.get(health, timeout=0.5)
                    if response.status_code == 200:
                        return time.monotonic() - started
                    last = f"HTTP {response.status_code}: {response.text[:200]}"
                except requests.RequestException as exc:
                    last = type(exc).__name__
                if time.monotonic() >= deadline:
                    raise SidecarError(
                        f"OPA (pid {proc.pid}) not ready at {health} after {timeout:g}s ({last}).\n"
                        f"--- tail of {self.log_path} ---\n{_tail(self.log_path)}"
                    )
                if abort is not None and abort.wait(0.02):
                    raise SidecarError("stopped while waiting for OPA to become ready")
                if abort is None:
                    time.sleep(0.02)

    def _terminate(self, timeout: float) -> None:
        # Caller holds self._lock.
        proc = self._proc
        self._proc = None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning("OPA (pid %d) ignored SIGTERM for %.1fs; sending SIGKILL", proc.pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop supervision, then OPA (SIGTERM, SIGKILL after `timeout` s). Idempotent."""
        self.stop_supervising()
        with self._lock:
            self._terminate(timeout)
            if self._atexit_registered:
                atexit.unregister(self._atexit_stop)
                self._atexit_registered = False

    def _atexit_stop(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout=2.0)

    def restart(self, timeout: float | None = None) -> float:
        """Stop OPA and start it again; wait until ready and return the seconds that took."""
        started = time.monotonic()
        with self._lock:
            self._terminate(5.0)
            self._spawn()
        self.wait_ready(timeout)
        return time.monotonic() - started

    def reload_bundle(self, path: Path, timeout: float | None = None) -> float:
        """Serve the bundle file `path` from now on: restart OPA on it and wait until ready.

        If OPA fails to become ready on the new bundle, the previous bundle is restored
        (and OPA restarted on it) before `SidecarError` is raised. Only for sidecars given a
        bundle file; one that loads bundles through its config file gets them by polling.
        """
        if self._bundle is None:
            raise SidecarError("this sidecar loads its bundles through its config file, not --bundle")
        new = self._check_bundle(path)
        with self._lock:
            old = self._bundle
            self._bundle = new
            try:
                return self.restart(timeout)
            except SidecarError:
                self._bundle = old
                with contextlib.suppress(SidecarError):
                    self.restart(timeout)
                raise

    @staticmethod
    def _check_bundle(path: Path) -> Path:
        bundle = Path(path).resolve()
        if not bundle.is_file():
            raise SidecarError(f"bundle must be an existing bundle file (not a folder): {bundle}")
        return bundle

    # -- supervision ------------------------------------------------------------------

    def supervise(self, interval: float = 1.0) -> None:
        """Start a daemon thread that restarts OPA whenever it dies (idempotent).

        Back-off between restarts doubles from `min_backoff` up to `max_backoff`, and
        resets once a process has stayed up for `stable_after` seconds.
        """
        with self._lock:
            if self.supervising:
                return
            self._stop_event = threading.Event()
            thread = threading.Thread(
                target=self._supervise_loop,
                args=(interval, self._stop_event),
                name=f"opa-sidecar-{self._port}",
                daemon=True,
            )
            self._thread = thread
            thread.start()

    def stop_supervising(self, timeout: float = 5.0) -> None:
        thread = self._thread
        self._stop_event.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._thread = None

    def _supervise_loop(self, interval: float, stop: threading.Event) -> None:
        while not stop.wait(interval):
            with self._lock:
                proc = self._proc
                if proc is None:  # stopped on purpose
                    continue
                code = proc.poll()
                if code is None:
                    continue
                if time.monotonic() - self._started_at >= self.stable_after:
                    self._failures = 0
                delay = min(self.min_backoff * (2**self._failures), self.max_backoff)
                self._failures += 1
            log.warning(
                "OPA (pid %d) exited with code %s; restart #%d in %.2fs. Log tail:\n%s",
                proc.pid,
                code,
                self._restarts + 1,
                delay,
                _tail(self.log_path, max_lines=5),
            )
            if stop.wait(delay):
                return
            with self._lock:
                if self._proc is not proc:  # stopped or restarted by someone else meanwhile
                    continue
                try:
                    self._spawn()
                except SidecarError as exc:
                    log.error("OPA restart failed: %s", exc)
                    continue
                self._restarts += 1
            try:
                waited = self._wait_ready(self.ready_timeout, stop)
                log.info("OPA ready again after restart #%d (%.2fs)", self._restarts, waited)
            except SidecarError as exc:
                log.error("OPA not ready after restart #%d: %s", self._restarts, exc)

    # -- context manager --------------------------------------------------------------

    def __enter__(self) -> OpaSidecar:
        """Start OPA, wait until ready and supervise it; `stop()` on exit."""
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        self.supervise()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
