"""Benchmark: activation (and rollback) to enforcement, with the server as the sidecar's bundle
server, against OPA's default bundle polling.

Starts the product as `smartlinks serve` runs it: a fresh SQLite database with a bootstrapped
version, gunicorn (2 gthread workers) serving the app and its bundle endpoints, and an OPA
sidecar configured by `bundle_server_config` (long polling, signed bundles, status and decision
logs). A client keeps asking for decisions (closed loop) while an admin activates a new version
through the API, then rolls it back. For each change it measures, on the client's clock, the time
from the API's answer (the activation is committed) to the first decision evaluated by the new
revision, and reports the server's own figures (OPA's status report confirming the revision; the
first recorded decision of the revision).

The baseline is the same sidecar configured with OPA's default polling (no `polling` section:
a poll every 60 to 120 s, no long polling), measured for real on `--baseline-samples` changes."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.auth.services import create_token  # noqa: E402
from server.config import Settings  # noqa: E402
from server.db import Database  # noqa: E402
from server.migrate import upgrade  # noqa: E402
from server.policies import services as policies  # noqa: E402
from server.policies.keys import KEY_ID, SigningKeys, generate_key_pair  # noqa: E402
from server.policies.pipeline import build_candidate  # noqa: E402
from server.policies.serving import bootstrap  # noqa: E402
from server.policy.sidecar import (  # noqa: E402
    TOKEN_ENV,
    OpaSidecar,
    bundle_server_config,
    free_loopback_port,
    write_config,
)
from tests.support.policies import AUTHOR, policy_tree  # noqa: E402
from tests.support.postgres import wait_port  # noqa: E402

OPA_BIN = ROOT / ".tools" / "bin" / "opa"
TOKEN = "bench-opa-token-0123456789-abcdefghijklmnopq"  # noqa: S105
SECRET = "bench-secret-key-0123456789-0123456789-abcdef"  # noqa: S105


class Decider(threading.Thread):
    """Asks for decisions in a closed loop and remembers when each revision was first seen."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url = f"{url}/v1/decisions"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.first_seen: dict[str, float] = {}
        self.count = 0
        self.stop = threading.Event()

    def run(self) -> None:
        body = {
            "action": {
                "type": "link.pause",
                "actor": {"id": "algo:bench", "kind": "algorithm"},
                "target": {"kind": "link", "id": "lnk_1"},
            }
        }
        while not self.stop.is_set():
            answer = self.session.post(self.url, json=body, timeout=5).json()
            revision = answer.get("policy_revision")
            self.count += 1
            if revision and revision not in self.first_seen:
                self.first_seen[revision] = time.monotonic()

    def wait_for(self, revision: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if revision in self.first_seen:
                return self.first_seen[revision]
            time.sleep(0.002)
        return None


def _variant(folder: Path, i: int) -> Path:
    tree = policy_tree(folder / f"v{i}", "base")
    data = tree / "config" / "data.json"
    data.write_text(
        data.read_text().replace(
            '"blocked_targets": [],', f'"blocked_targets": [{{"kind": "link", "id": "lnk_bench_{i}"}}],'
        )
    )
    return tree


def run_mode(tmp: Path, mode: str, changes: int, timeout: float) -> list[dict[str, Any]]:
    var = tmp / mode
    var.mkdir()
    keys = SigningKeys(var / "signing.pem", var / "verification.pem")
    generate_key_pair(keys.private, keys.public)
    url_db = f"sqlite:///{var / 'bench.db'}"
    upgrade(url_db)
    opa_port, web_port = free_loopback_port(), free_loopback_port()
    settings = Settings(
        environment="development",
        secret_key=SECRET,
        database_url=url_db,
        opa_url=f"http://127.0.0.1:{opa_port}",
        opa_bin=str(OPA_BIN),
        var_dir=str(var),
        opa_signing_key_file=str(keys.private),
        opa_verification_key_file=str(keys.public),
        opa_bundle_token=TOKEN,
        policy_coverage_threshold=0.0,
        policy_self_approval=True,
        autopilot_enabled=False,
    )
    database = Database()
    database.configure(url_db)
    toolchain = policies.Toolchain.from_settings(settings)
    base = build_candidate(
        OPA_BIN,
        policy_tree(var / "base", "base"),
        signing_key=keys.private,
        coverage_threshold=0.0,
        revision="bench-base",
    )
    bootstrap(settings, database, candidate=base)
    with database.unit_of_work() as uow:
        _, admin = create_token(uow.session, "bench-admin", "admin")
        _, service = create_token(uow.session, "bench-service", "service")
        uow.commit()
    env = {
        **os.environ,
        "SMARTLINKS_ENV": "development",
        "SECRET_KEY": SECRET,
        "DATABASE_URL": url_db,
        "OPA_URL": settings.opa_url or "",
        "SMARTLINKS_VAR_DIR": str(var),
        "OPA_SIGNING_KEY_FILE": str(keys.private),
        "OPA_VERIFICATION_KEY_FILE": str(keys.public),
        "OPA_BUNDLE_TOKEN": TOKEN,
        "POLICY_COVERAGE_THRESHOLD": "0",
        "AUTOPILOT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
    }
    web = subprocess.Popen(  # noqa: S603
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{web_port}",
            "--workers",
            "2",
            "--worker-class",
            "gthread",
            "--threads",
            "4",
            "--log-level",
            "warning",
            "server.wsgi:app",
        ],
        env=env,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{web_port}"
    config = bundle_server_config(
        service_url=f"{url}/opa",
        verification_key_pem=keys.public.read_text(),
        key_id=KEY_ID,
        resource="bundles/active",
        sidecar="primary",
    )
    if mode == "opa-default-polling":
        del config["bundles"]["smartlinks"]["polling"]
    sidecar = OpaSidecar(
        OPA_BIN,
        None,
        var / "opa.log",
        port=opa_port,
        config_file=write_config(var / "opa.json", config),
        env={TOKEN_ENV: TOKEN},
    )
    results: list[dict[str, Any]] = []
    try:
        wait_port("127.0.0.1", web_port, 30)
        sidecar.start()
        sidecar.wait_ready(60)
        decider = Decider(url, service)
        decider.start()
        admin_headers = {"Authorization": f"Bearer {admin}"}
        for i in range(changes):
            candidate = build_candidate(
                OPA_BIN, _variant(var, i), signing_key=keys.private, coverage_threshold=0.0, revision=f"bench-v{i}"
            )
            policies.publish_candidate(database, _gateway(settings), toolchain, AUTHOR, candidate)
            requests.post(
                f"{url}/v1/policies/versions/{candidate.revision}/impact",
                json={"sample": 200},
                headers=admin_headers,
                timeout=120,
            )
            for kind in ("activate", "rollback"):
                target = candidate.revision if kind == "activate" else "bench-base"
                decider.first_seen.pop(target, None)
                path = f"/v1/policies/versions/{target}/activate" if kind == "activate" else "/v1/policies/rollback"
                response = requests.post(f"{url}{path}", json={"reason": "bench"}, headers=admin_headers, timeout=120)
                committed = time.monotonic()
                assert response.status_code == 200, response.text
                seen = decider.wait_for(target, timeout)
                server = requests.get(f"{url}/v1/policies/activations", headers=admin_headers, timeout=10).json()[
                    "items"
                ][0]
                results.append(
                    {
                        "mode": mode,
                        "kind": kind,
                        "revision": target,
                        "client_s": round(seen - committed, 3) if seen else None,
                        "confirmed_s": server["seconds_to_confirmation"],
                        "enforced_s": server["seconds_to_enforcement"],
                    }
                )
                print(json.dumps(results[-1]), flush=True)
        decider.stop.set()
        decider.join(10)
    finally:
        sidecar.stop()
        web.terminate()
        web.wait(20)
        database.dispose()
    return results


def _gateway(settings: Settings) -> Any:
    from server.governance.gateway import Gateway
    from server.policy.opa_client import OpaClient

    return Gateway(OpaClient(settings.opa_url or "", timeout=5.0))


def summarise(rows: list[dict[str, Any]], kind: str) -> str:
    values = [r["client_s"] for r in rows if r["kind"] == kind and r["client_s"] is not None]
    if not values:
        return f"{kind:>8}: no sample enforced within the timeout"
    confirmed = [r["confirmed_s"] for r in rows if r["kind"] == kind and r["confirmed_s"] is not None] or [0.0]
    return (
        f"{kind:>8}: n={len(values)} median {statistics.median(values):.3f} s, max {max(values):.3f} s "
        f"(server: confirmed by OPA after a median {statistics.median(confirmed):.3f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--changes", type=int, default=5, help="activations (each followed by a rollback) with long polling"
    )
    parser.add_argument(
        "--baseline-samples", type=int, default=1, help="activations with OPA's default polling (60-120 s each)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-policy-") as tmp:
        ours = run_mode(Path(tmp), "bundle-server-long-poll", args.changes, timeout=30)
        baseline = (
            run_mode(Path(tmp), "opa-default-polling", args.baseline_samples, timeout=200)
            if args.baseline_samples
            else []
        )
    print(f"\nload average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    print("bundle server with long polling (ours):")
    print(summarise(ours, "activate"))
    print(summarise(ours, "rollback"))
    if baseline:
        print("OPA default polling (min_delay 60 s, max_delay 120 s):")
        print(summarise(baseline, "activate"))
        print(summarise(baseline, "rollback"))
        ours_median = statistics.median([r["client_s"] for r in ours if r["client_s"] is not None])
        base_values = [r["client_s"] for r in baseline if r["client_s"] is not None]
        if base_values:
            print(f"ratio (baseline median / ours median): {statistics.median(base_values) / ours_median:.0f}x")


if __name__ == "__main__":
    main()
