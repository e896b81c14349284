"""Benchmark: latency of the full decision API (authorisation, decision, stored record) against
a direct call to OPA's Data API with the same input, in one run.

Starts a real OPA sidecar with the project's bundle, migrates a fresh SQLite (or DATABASE_URL)
database, creates a service token, and serves the app with gunicorn (the production server
configuration of `smartlinks serve`). A single closed-loop client then alternates between the
two calls so that both see the same machine state. Prints p50/p90/p99 and the ratios.

A third line is the floor of this architecture on this machine: the same gunicorn flags serving
`proxy_app`, a WSGI app that only forwards the request body to OPA with the server's own OPA client
and returns OPA's answer (no authentication, validation, database or record). Its ratio to the
direct call is what two extra process hops (client -> server -> OPA) cost before any work.

The API line is the product as deployed: services' decisions take the direct path in front of
Flask (server/governance/direct.py). `--compare-flask` adds a line for the same requests sent to
a server with DECISION_DIRECT_PATH=false, in the same rounds."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.policy.bundle import build_bundle, policy_revision  # noqa: E402
from server.policy.sidecar import OpaSidecar, free_loopback_port  # noqa: E402
from tests.support.postgres import wait_port  # noqa: E402

_PROXY: dict[str, Any] = {}


def proxy_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The floor: forward the body's `input` to OPA (OPA_URL) through `OpaClient` and answer its
    result; nothing else."""
    from server.policy.opa_client import OpaClient

    client = _PROXY.get("opa")
    if client is None:
        client = _PROXY["opa"] = OpaClient(os.environ["OPA_URL"])
    length = int(environ.get("CONTENT_LENGTH") or 0)
    doc = json.loads(environ["wsgi.input"].read(length))
    answer = client.query("smartlinks/gate", doc["input"])
    body = json.dumps({"result": answer.result, "revision": answer.revision}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def payload(i: int, actors: int) -> dict[str, Any]:
    return {
        "action": {
            "type": "allocation.update",
            "actor": {"id": f"algo:bench-{i % actors}", "kind": "algorithm"},
            "target": {"kind": "link", "id": f"lnk_{i % 50}"},
            "params": {"algorithm": "thompson_sampling", "weights": {"a": 0.4, "b": 0.35, "c": 0.25}},
        },
        "state": {
            "arms": ["a", "b", "c"],
            "current_weights": {"a": 0.34, "b": 0.33, "c": 0.33},
            "evidence": {k: {"clicks": 5000, "conversions": 200, "revenue": 1000.0} for k in "abc"},
        },
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def summary(name: str, values: list[float]) -> dict[str, float]:
    out = {
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "mean": statistics.fmean(values),
    }
    print(
        f"{name:<34} p50 {out['p50']:.3f} ms  p90 {out['p90']:.3f} ms  p99 {out['p99']:.3f} ms  "
        f"mean {out['mean']:.3f} ms  (n={len(values)})"
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000, help="measured requests per target")
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--worker-class", default="gthread", help="gunicorn worker class (smartlinks serve: gthread)")
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker (smartlinks serve: 4)")
    parser.add_argument("--actors", type=int, default=500, help="distinct actors (keeps rate limits out of the way)")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument(
        "--compare-flask",
        action="store_true",
        help="also measure the API with DECISION_DIRECT_PATH=false (every decision through Flask)",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="smartlinks-bench-"))
    opa_bin = Path(os.environ.get("OPA_BIN") or ROOT / ".tools" / "bin" / "opa")
    info = build_bundle(opa_bin, ROOT / "rego", work / "bundle.tar.gz", policy_revision(ROOT / "rego"))
    sidecar = OpaSidecar(opa_bin, info.path, work / "opa.log")
    sidecar.start()
    sidecar.wait_ready(30)
    env = dict(os.environ)
    env.update(
        OPA_URL=sidecar.url,
        SMARTLINKS_POLICY_REVISION=info.revision,
        SMARTLINKS_VAR_DIR=str(work),
        SECRET_KEY="bench-secret-" + "x" * 40,
    )
    env.setdefault("DATABASE_URL", f"sqlite:///{work / 'bench.db'}")
    smartlinks = [sys.executable, "-m", "server.cli"]
    subprocess.run([*smartlinks, "db", "upgrade"], env=env, check=True, capture_output=True, cwd=ROOT)
    created = subprocess.run(
        [*smartlinks, "tokens", "create", "--name", "bench", "--role", "service"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    token = created.stdout.strip().splitlines()[-1]
    port, proxy_port = free_loopback_port(), free_loopback_port()

    def gunicorn(bind_port: int, target: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--bind",
                f"127.0.0.1:{bind_port}",
                "--workers",
                str(args.workers),
                "--worker-class",
                args.worker_class,
                "--threads",
                str(args.threads),
                "--log-level",
                "warning",
                target,
            ],
            env={**env, **(extra_env or {})},
            cwd=ROOT,
        )

    web = gunicorn(port, "server.wsgi:app")
    proxy = gunicorn(proxy_port, "bench.decisions:proxy_app")
    flask_port = free_loopback_port()
    servers = [web, proxy]
    if args.compare_flask:
        servers.append(gunicorn(flask_port, "server.wsgi:app", {"DECISION_DIRECT_PATH": "false"}))
    try:
        wait_port("127.0.0.1", port, 30)
        wait_port("127.0.0.1", proxy_port, 30)
        if args.compare_flask:
            wait_port("127.0.0.1", flask_port, 30)
        api = requests.Session()
        api.headers.update({"Authorization": f"Bearer {token}"})
        opa = requests.Session()
        base = f"http://127.0.0.1:{port}"
        # The direct call gets exactly the input the server sends: take it from a recorded decision.
        first = api.post(f"{base}/v1/decisions", json=payload(0, args.actors)).json()
        recorded = api.get(f"{base}/v1/decisions/{first['decision_id']}").json()
        opa_input = json.dumps({"input": recorded["input"]})
        assert first["allow"] is True, first
        # The proxy asks what the server asks: the gate query (authorisation and decision).
        gate_input = dict(recorded["input"])
        gate_input["subject"] = {"kind": "token", "id": "bench", "roles": ["service"]}
        gate_input["request"] = {"method": "POST", "endpoint": "decisions_api.create_decision", "path": "/v1/decisions"}
        proxy_body = json.dumps({"input": gate_input})
        proxy_url = f"http://127.0.0.1:{proxy_port}/"
        floor = requests.Session()

        api_ms: list[float] = []
        opa_ms: list[float] = []
        proxy_ms: list[float] = []
        flask_ms: list[float] = []
        denied = 0
        json_type = {"Content-Type": "application/json"}
        for i in range(args.warmup + args.requests):
            # Serialized before the clock starts, like the direct call's input: the figures compare
            # the servers, not the client's JSON encoding.
            body = json.dumps(payload(i, args.actors))
            t0 = time.perf_counter()
            r = api.post(f"{base}/v1/decisions", data=body, headers=json_type)
            t1 = time.perf_counter()
            o = opa.post(
                f"{sidecar.url}/v1/data/smartlinks/decision",
                data=opa_input,
                headers={"Content-Type": "application/json"},
            )
            t2 = time.perf_counter()
            f = floor.post(proxy_url, data=proxy_body, headers={"Content-Type": "application/json"})
            t3 = time.perf_counter()
            if r.status_code != 200 or o.status_code != 200 or f.status_code != 200:
                raise SystemExit(f"unexpected status {r.status_code}/{o.status_code}/{f.status_code}: {r.text[:300]}")
            denied += not r.json()["allow"]
            if args.compare_flask:
                t4 = time.perf_counter()
                v = api.post(f"http://127.0.0.1:{flask_port}/v1/decisions", data=body, headers=json_type)
                t5 = time.perf_counter()
                if v.status_code != 200:
                    raise SystemExit(f"unexpected status {v.status_code} through Flask: {v.text[:300]}")
                if i >= args.warmup:
                    flask_ms.append((t5 - t4) * 1000)
            if i >= args.warmup:
                api_ms.append((t1 - t0) * 1000)
                opa_ms.append((t2 - t1) * 1000)
                proxy_ms.append((t3 - t2) * 1000)

        print(
            f"decision API benchmark: {args.requests} requests each after {args.warmup} warm-up, "
            f"gunicorn {args.workers} workers, {env['DATABASE_URL'].split(':')[0]}, policy {info.revision}"
        )
        direct = summary("direct OPA Data API", opa_ms)
        through = summary("floor: gunicorn app -> OPA, no work", proxy_ms)
        full = summary("POST /v1/decisions (full)", api_ms)
        through_flask = summary("  the same through Flask", flask_ms) if args.compare_flask else None
        ratios = {k: full[k] / direct[k] for k in ("p50", "p90", "p99")}
        floor_ratios = {k: through[k] / direct[k] for k in ("p50", "p90", "p99")}
        print(f"ratio full/direct: p50 {ratios['p50']:.2f}x  p90 {ratios['p90']:.2f}x  p99 {ratios['p99']:.2f}x")
        print(
            f"ratio floor/direct: p50 {floor_ratios['p50']:.2f}x  p90 {floor_ratios['p90']:.2f}x  "
            f"p99 {floor_ratios['p99']:.2f}x; the server's own work (full - floor): p50 "
            f"{full['p50'] - through['p50']:.3f} ms"
        )
        print(
            f"targets: p50 ratio <= 2.0 -> {'met' if ratios['p50'] <= 2.0 else 'NOT met'}; "
            f"p99 < 5 ms -> {'met' if full['p99'] < 5.0 else 'NOT met'}; denied during run: {denied}"
        )
        if through_flask is not None:
            print(
                f"direct path against Flask: p50 {through_flask['p50']:.3f} -> {full['p50']:.3f} ms, "
                f"p99 {through_flask['p99']:.3f} -> {full['p99']:.3f} ms "
                f"(Flask path / direct OPA p50 {through_flask['p50'] / direct['p50']:.2f}x)"
            )
        if args.json:
            figures = {"direct": direct, "floor": through, "full": full, "ratios": ratios, "floor_ratios": floor_ratios}
            if through_flask is not None:
                figures["through_flask"] = through_flask
            args.json.write_text(json.dumps(figures, indent=2))
    finally:
        for server in servers:
            server.terminate()
            server.wait(10)
        sidecar.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
