"""Benchmark: does the AI supervisor add latency to the click path?

The redirect benchmark's setup (bench/redirect.py: a fresh SQLite database with a smart link,
`smartlinks serve` with its OPA sidecar, autopilot scheduler and gunicorn workers, wrk driving
`GET /r/<slug>` with a distinct client address per request), measured in alternating rounds:

* without: nothing but the server (its scheduled AI job is off: AI_SUPERVISOR_INTERVAL_SECONDS=0);
* with: a second process runs supervisor cycles back to back against the same database and OPA
  sidecar (far more often than the production default of one cycle every 300 s), asking a local
  OpenAI-compatible server (tests/support/openai_server.py) that answers after a simulated model
  latency with a mix of proposals (an alert, a review request, a parameter change, an invalid
  budget shift), each validated, decided by OPA and recorded.

Prints requests/s, p50/p90/p99 latency per mode (medians over the rounds), the ratios, and how
many cycles ran while wrk measured. Load generator, server and cycle loop share the machine's
cores: compare figures from one run, not across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.redirect import (  # noqa: E402
    SLUG,
    _free_port,
    count_clicks,
    ensure_wrk,
    load,
    run_wrk,
    seed,
    start,
    stop,
    wait_redirect,
)

API_KEY = "sk-bench"


def proposals(link_id: str) -> str:
    keys = ("reason", "param", "value", "from_campaign", "to_campaign", "amount", "severity", "title", "detail")

    def item(action: str, target: dict[str, str] | None, **params: object) -> dict[str, object]:
        return {"action": action, "target": target, "params": {k: params.get(k) for k in keys}, "rationale": "bench"}

    link = {"kind": "link", "id": link_id}
    return json.dumps(
        {
            "proposals": [
                item("ai.alert", None, severity="info", title="bench summary"),
                item("ai.review.request", link, reason="bench review"),
                item("ai.algorithm.set_param", link, param="gamma", value=0.97),
                item(
                    "ai.budget.shift",
                    {"kind": "campaign", "id": "cmp_x"},
                    from_campaign="cmp_x",
                    to_campaign="cmp_y",
                    amount=5,
                ),
            ]
        }
    )


def cycle_loop(database_url: str, opa_url: str, model_url: str, ready: Path, stop_file: Path, out: Path) -> None:
    """Run supervisor cycles back to back until `stop_file` appears; write the count and times."""
    from server.ai.client import AIClientFactory
    from server.ai.supervisor import run_supervisor_cycle
    from server.config import Settings
    from server.db import Database, utcnow
    from server.governance.gateway import Gateway
    from server.policy.opa_client import OpaClient

    settings = Settings(
        database_url=database_url,
        opa_url=opa_url,
        openai_api_key=API_KEY,
        openai_base_url=model_url,
        openai_max_retries=0,
    )
    db = Database()
    db.configure(database_url)
    opa = OpaClient(opa_url, connect_timeout=settings.opa_connect_timeout, timeout=settings.opa_timeout)
    gateway = Gateway(opa, mode=settings.mode)
    factory = AIClientFactory(settings)
    durations: list[float] = []
    proposals_decided = 0
    while not stop_file.exists():
        started = time.perf_counter()
        report = run_supervisor_cycle(db.session, gateway, factory, utcnow(), trigger="bench")
        durations.append(time.perf_counter() - started)
        proposals_decided += len(report.proposals)
        if len(durations) == 1:
            ready.write_text("ready")
    out.write_text(json.dumps({"cycles": len(durations), "proposals": proposals_decided, "durations": durations}))
    opa.close()
    db.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--duration", type=int, default=8, help="seconds of load per round (default 8)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per mode; medians are reported")
    ap.add_argument("--connections", type=int, default=8, help="wrk keep-alive connections (default 8)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: the machine has 2 cores)")
    ap.add_argument("--model-latency", type=float, default=0.2, help="seconds the scripted model takes to answer")
    ap.add_argument("--cycle-loop", nargs=6, metavar="ARG", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cycle_loop:
        database_url, opa_url, model_url, ready, stop_file, out = args.cycle_loop
        cycle_loop(database_url, opa_url, model_url, Path(ready), Path(stop_file), Path(out))
        return

    from sqlalchemy import create_engine, text

    from tests.support import openai_server as oai

    wrk = ensure_wrk()
    print(f"machine: {os.cpu_count()} cores, load average before: {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="smartlinks-ai-bench-") as tmp:
        var = Path(tmp)
        database_url = f"sqlite:///{var / 'smartlinks.db'}"
        seed(database_url)
        engine = create_engine(database_url)
        with engine.connect() as conn:
            link_id = str(conn.execute(text("SELECT id FROM smart_links WHERE slug = :s"), {"s": SLUG}).scalar())
        engine.dispose()
        model = oai.ScriptedOpenAI(API_KEY, default=oai.slow(args.model_latency, proposals(link_id))).start()
        port, opa_port = _free_port(), _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SMARTLINKS_VAR_DIR": str(var),
            "SECRET_KEY": "bench-secret-key-0123456789-0123456789-abcdef",
            "OPA_PORT": str(opa_port),
            "CLIENT_IP_HEADER": "X-Forwarded-For",
            "AI_SUPERVISOR_INTERVAL_SECONDS": "0",
            "PYTHONPATH": str(ROOT),
        }
        env.pop("OPA_URL", None)
        url = f"http://127.0.0.1:{port}/r/{SLUG}"
        serve = start([sys.executable, "-m", "server.cli", "serve", "--port", str(port)], env, var / "serve.log")
        without: list[dict[str, float]] = []
        with_ai: list[dict[str, float]] = []
        loops: list[dict[str, object]] = []
        try:
            wait_redirect(url)
            run_wrk(wrk, url, 2, args.connections, args.threads)  # warm up
            before = count_clicks(database_url)
            for n in range(args.rounds):
                without.append(run_wrk(wrk, url, args.duration, args.connections, args.threads))
                ready, stop_file, out = var / f"ready{n}", var / f"stop{n}", var / f"loop{n}.json"
                loop = start(
                    [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "--cycle-loop",
                        database_url,
                        f"http://127.0.0.1:{opa_port}",
                        model.base_url,
                        str(ready),
                        str(stop_file),
                        str(out),
                    ],
                    env,
                    var / f"loop{n}.log",
                )
                deadline = time.monotonic() + 60
                while not ready.exists() and loop.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not ready.exists():
                    raise RuntimeError(f"the cycle loop did not start: {(var / f'loop{n}.log').read_text()[-2000:]}")
                with_ai.append(run_wrk(wrk, url, args.duration, args.connections, args.threads))
                stop_file.write_text("stop")
                loop.wait(timeout=60)
                loops.append(json.loads(out.read_text()))
        finally:
            stop(serve)
            model.stop()
        written = count_clicks(database_url) - before

    def median(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r.get(key, 0.0) for r in runs)

    cycles = sum(int(str(loop["cycles"])) for loop in loops)
    decided = sum(int(str(loop["proposals"])) for loop in loops)
    durations = [d for loop in loops for d in loop["durations"]]  # type: ignore[attr-defined]
    print()
    print(
        f"wrk: {args.threads} thread(s), {args.connections} connections, {args.rounds} alternating rounds of "
        f"{args.duration} s per mode; medians over the rounds"
    )
    print(
        f"{'GET /r/<slug> (smartlinks serve)':<46}{'requests/s':>12}"
        f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'non-3xx':>9}"
    )
    for name, runs in (("without supervisor cycles", without), ("with supervisor cycles back to back", with_ai)):
        print(
            f"{name:<46}{median(runs, 'rps'):>12,.0f}{median(runs, 'p50'):>9.2f}{median(runs, 'p90'):>9.2f}"
            f"{median(runs, 'p99'):>9.2f}{sum(r['bad'] for r in runs):>9.0f}"
        )
    print("per round (without: rps / p50 / p99 ms | with: rps / p50 / p99 ms):")
    for a, b in zip(without, with_ai, strict=True):
        print(
            f"  {a['rps']:>8,.0f} / {a.get('p50', 0):>5.2f} / {a.get('p99', 0):>6.2f} | "
            f"{b['rps']:>8,.0f} / {b.get('p50', 0):>5.2f} / {b.get('p99', 0):>6.2f}"
        )
    print(
        f"ratio with / without (medians): {median(with_ai, 'rps') / median(without, 'rps'):.2f} throughput, "
        f"{median(with_ai, 'p50') / max(median(without, 'p50'), 1e-9):.2f} p50, "
        f"{median(with_ai, 'p99') / max(median(without, 'p99'), 1e-9):.2f} p99"
    )
    print(
        f"supervisor cycles during the 'with' rounds: {cycles} ({decided} proposals validated, decided and "
        f"recorded); cycle time median {statistics.median(durations) * 1000:.0f} ms "
        f"with a {args.model_latency * 1000:.0f} ms model"
    )
    print(f"clicks in the database after the graceful stop: {written:,}; load average after: {load()}")


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.excepthook = lambda hook: None  # a wrk connection closed mid-answer is not an error here
    main()
