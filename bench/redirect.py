"""Benchmark: `GET /r/<slug>` on the production server configuration against a bare redirect.

1. A fresh SQLite database (the default backend) with a smart link over three offers.
2. `smartlinks serve` (the real supervisor: OPA sidecar, the autopilot scheduler, gunicorn with
   `server/gunicorn_conf.py`, 2 gthread workers x 4 threads, access log on). Its scheduler's first
   cycle approves the link's allocation through OPA, exactly as in production; the benchmark
   waits until the link redirects.
3. wrk (Debian's package; installed with apt-get when missing) drives `/r/<slug>`, each request
   from a distinct address and on a new connection (`Connection: close`, bench/redirect.lua): a
   visitor's browser opens a connection to the tracker for its one click, and a handful of
   long-lived keep-alive connections would also all stick to whichever gunicorn worker accepted
   them first. Two modes: closed loop (each connection sends again as soon as it has its answer:
   the most the server answers) and paced (a pause between requests, offering about `--rate`
   requests a second: the latency at that rate). Then the server is stopped with SIGTERM
   (graceful) and the clicks in the database are counted: every answered redirect must be there.
4. The same gunicorn configuration serving a tiny WSGI app that only answers 302 (`bare_app`
   below), driven the same way: the ceiling of the server stack on this machine. Both servers
   run side by side and wrk alternates between them round after round, so that both see the
   same machine load; medians over the rounds are reported.

Prints requests/s, p50/p99 latency, the ratio, the clicks written, and the machine load. Load
generator and server share the machine's cores: compare figures from one run, not across runs.
Also prints the arm-choice speed of AliasSampler against MABWiser's predict() (bench/regret.py).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
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

from tests.support.postgres import wait_port  # noqa: E402

LUA = Path(__file__).resolve().parent / "redirect.lua"
PACED_LUA = Path(__file__).resolve().parent / "redirect_paced.lua"
SLUG = "bench"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
GUNICORN_FLAGS = ["--workers", "2", "--worker-class", "gthread", "--threads", "4", "--graceful-timeout", "20"]


def bare_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The baseline: a WSGI app that answers every request with a 302 and does nothing else."""
    start_response("302 Found", [("Location", "https://offers.example/a?cid=x"), ("Content-Length", "0")])
    return [b""]


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: installing Debian's wrk package", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=False, capture_output=True)
    if not shutil.which("wrk"):
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, capture_output=True)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or "wrk"


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def seed(database_url: str) -> None:
    from server.autopilot.simulation import seed_market
    from server.autopilot.simulator import ArmSpec, Scenario, Source
    from server.db import Database
    from server.migrate import upgrade

    upgrade(database_url)
    scenario = Scenario(
        arms=(ArmSpec("off_a", 0.03, 10.0), ArmSpec("off_b", 0.02, 12.0), ArmSpec("off_c", 0.01, 20.0)),
        sources=(Source("s", 0.1, 1.0, {"FR": 1.0}, {"desktop": 1.0}),),
    )
    db = Database()
    db.configure(database_url)
    with db.unit_of_work() as uow:
        link_id, _slug = seed_market(uow.session, scenario)
        uow.session.execute(
            __import__("sqlalchemy").text("UPDATE smart_links SET slug = :slug WHERE id = :id"),
            {"slug": SLUG, "id": link_id},
        )
        uow.commit()
    db.dispose()


def count_clicks(database_url: str) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        n = int(conn.execute(sa.text("SELECT COUNT(*) FROM clicks")).scalar() or 0)
    engine.dispose()
    return n


def run_wrk(
    wrk: str, url: str, duration: int, connections: int, threads: int, pause_ms: int | None = None
) -> dict[str, float]:
    """Closed loop (each connection sends its next request as soon as it has the answer), or
    paced (`pause_ms` between an answer and the next request on each connection)."""
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    if pause_ms is None:
        command += ["-s", str(LUA), url]
    else:
        command += ["-s", str(PACED_LUA), url, "--", str(pause_ms)]
    out = subprocess.run(
        command,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = {}
    match = re.search(r"(\d+) requests in", out)
    result["requests"] = float(match.group(1)) if match else 0.0
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    result["rps"] = float(match.group(1)) if match else 0.0
    for pct in ("50", "90", "99"):
        match = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)\b", out)
        if match:
            value, unit = float(match.group(1)), match.group(2)
            result[f"p{pct}"] = value / 1000 if unit == "us" else (value * 1000 if unit == "s" else value)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["bad"] = float(errors.group(1)) if errors else 0.0
    socket_errors = re.search(r"Socket errors: (.*)", out)
    result["socket_errors"] = 0.0 if socket_errors is None else 1.0
    return result


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT)  # noqa: S603


def stop(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_redirect(url: str, timeout: float = 90.0) -> int:
    """Wait until the link redirects (its first allocation approved and loaded); returns how many
    probe clicks were made."""
    deadline = time.monotonic() + timeout
    probes = 0
    while time.monotonic() < deadline:
        try:
            response = requests.get(url, headers={"User-Agent": BROWSER}, allow_redirects=False, timeout=2)
            probes += 1
            if response.status_code == 302:
                return probes
        except requests.RequestException:
            pass  # not listening yet, or busy starting
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not redirect within {timeout} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--duration", type=int, default=8, help="seconds of load per round, server and mode (default 8)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds; medians are reported (default 5)")
    ap.add_argument("--connections", type=int, default=8, help="closed-loop wrk connections (default 8)")
    ap.add_argument("--rate", type=int, default=2000, help="offered rate of the paced runs (default 2000/s)")
    ap.add_argument("--paced-connections", type=int, default=32, help="connections of the paced runs (default 32)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: the machine has 2 cores)")
    ap.add_argument("--skip-speed", action="store_true", help="skip the AliasSampler vs MABWiser figure")
    args = ap.parse_args()
    # Each paced connection sends a request every pause + connect + latency (about 3 ms here):
    # aim slightly above the rate.
    pause_ms = max(0, 1000 * args.paced_connections // args.rate - 4)
    wrk = ensure_wrk()
    print(f"machine: {os.cpu_count()} cores, load average before: {load()}", flush=True)

    with tempfile.TemporaryDirectory(prefix="smartlinks-bench-") as tmp:
        var = Path(tmp)
        database_url = f"sqlite:///{var / 'smartlinks.db'}"
        seed(database_url)
        port, opa_port, bare_port = _free_port(), _free_port(), _free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SMARTLINKS_VAR_DIR": str(var),
            "SECRET_KEY": "bench-secret-key-0123456789-0123456789-abcdef",
            "OPA_PORT": str(opa_port),
            "CLIENT_IP_HEADER": "X-Forwarded-For",
            "PYTHONPATH": str(ROOT),
        }
        env.pop("OPA_URL", None)
        url = f"http://127.0.0.1:{port}/r/{SLUG}"
        bare_url = f"http://127.0.0.1:{bare_port}/r/{SLUG}"

        serve = start([sys.executable, "-m", "server.cli", "serve", "--port", str(port)], env, var / "serve.log")
        bare_command = [sys.executable, "-m", "gunicorn", *GUNICORN_FLAGS, "--access-logfile", "-"]
        bare_command += ["--config", "python:server.gunicorn_conf", "--bind", f"127.0.0.1:{bare_port}"]
        bare = start([*bare_command, "bench.redirect:bare_app"], env, var / "bare.log")
        runs: dict[str, list[dict[str, float]]] = {"ours": [], "bare": [], "ours_paced": [], "bare_paced": []}
        loads: list[str] = []
        try:
            wait_redirect(url)
            wait_port("127.0.0.1", bare_port, timeout=20)
            run_wrk(wrk, bare_url, 2, args.connections, args.threads)  # warm both up
            run_wrk(wrk, url, 2, args.connections, args.threads)
            time.sleep(0.5)
            before = count_clicks(database_url)
            for _ in range(args.rounds):
                for key, target_url in (("ours", url), ("bare", bare_url)):
                    runs[key].append(run_wrk(wrk, target_url, args.duration, args.connections, args.threads))
                for key, target_url in (("ours_paced", url), ("bare_paced", bare_url)):
                    runs[key].append(
                        run_wrk(wrk, target_url, args.duration, args.paced_connections, args.threads, pause_ms)
                    )
                loads.append(load())
        finally:
            stop(serve)
            stop(bare)
        written = count_clicks(database_url) - before

    def median(key: str, field: str) -> float:
        return statistics.median(r.get(field, 0.0) for r in runs[key])

    print()
    print(
        f"wrk: {args.threads} thread(s), a distinct client address per request, {args.rounds} alternating rounds "
        f"of {args.duration} s per server and mode; medians over the rounds"
    )
    for title, ours, bare_key in (
        (f"closed loop, {args.connections} connections (as many requests as each server answers):", "ours", "bare"),
        (
            f"paced, {args.paced_connections} connections x ({pause_ms} ms pause + latency), "
            f"about {args.rate}/s offered:",
            "ours_paced",
            "bare_paced",
        ),
    ):
        print(title)
        print(f"{'':<46}{'requests/s':>12}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'non-3xx':>9}")
        for name, key in (
            ("  GET /r/<slug> (smartlinks serve, gunicorn)", ours),
            ("  bare 302 WSGI app (same gunicorn flags)", bare_key),
        ):
            print(
                f"{name:<46}{median(key, 'rps'):>12,.0f}{median(key, 'p50'):>9.2f}{median(key, 'p90'):>9.2f}"
                f"{median(key, 'p99'):>9.2f}{sum(r['bad'] for r in runs[key]):>9.0f}"
            )
        print(
            f"  ratio smart link / bare: {median(ours, 'rps') / median(bare_key, 'rps'):.2f} throughput, "
            f"{median(ours, 'p99') / max(median(bare_key, 'p99'), 1e-9):.2f} p99"
        )
    print("per round, requests/s and p99 ms: closed loop ours | bare || paced ours | bare || load average after")
    for a, b, c, d, ld in zip(runs["ours"], runs["bare"], runs["ours_paced"], runs["bare_paced"], loads, strict=True):
        cells = [f"{r['rps']:>6,.0f} {r.get('p99', 0):>6.2f}" for r in (a, b, c, d)]
        print(f"  {cells[0]} | {cells[1]} || {cells[2]} | {cells[3]} || {ld}")
    answered = int(sum(r["requests"] for r in runs["ours"] + runs["ours_paced"]))
    print(
        f"clicks answered by wrk: {answered:,}; clicks in the database after the graceful stop: {written:,} "
        f"({'all present' if written >= answered else 'MISSING CLICKS'}; requests in flight when a wrk run "
        "ends are answered and written too)"
    )
    met = median("ours_paced", "rps") >= args.rate and median("ours_paced", "p99") < 10
    print(f"target >= {args.rate} redirects/s with p99 < 10 ms (paced runs): {'met' if met else 'NOT met'}")

    if not args.skip_speed:
        from bench.regret import measure_speed

        speed = measure_speed()
        print()
        print("arm choice, single thread (bench/regret.py measure_speed):")
        print(f"  AliasSampler.choose()         {speed.alias_buffered_choose:>14,.0f} /s (pre-drawn: the click path)")
        print(f"  AliasSampler.choose(rng)      {speed.alias_choose:>14,.0f} /s (one uniform)")
        print(f"  AliasSampler.sample_eligible  {speed.alias_sample_eligible:>14,.0f} /s (half the arms eligible)")
        print(f"  MABWiser TS predict()         {speed.mab_ts_predict:>14,.0f} /s")
        print(f"  MABWiser UCB1 predict()       {speed.mab_ucb1_predict:>14,.0f} /s")
        print(f"  ratio AliasSampler.choose() / MABWiser TS, UCB1: {speed.ratio_ts:,.0f}x, {speed.ratio_ucb1:,.1f}x")
    print(f"load average after: {load()}")


def _free_port() -> int:
    from server.policy.sidecar import free_loopback_port

    return free_loopback_port()


if __name__ == "__main__":
    main()
