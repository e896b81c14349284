"""Benchmark: the governed autopilot on a drifting market, against the best fixed allocation in
hindsight and an 80/20 "best EPC" heuristic, with a check that no decision broke the Runtime
Control Policies.

Each run simulates a market (server/autopilot/simulator.py: four offers whose best one changes,
one FR/DE-only and one mobile-only offer, two traffic sources, conversions delayed by 45 minutes
on average) and drives the real service in process: every visit through `GET /r/<slug>`, every
conversion through `/postback`, a cycle every 30 simulated minutes through `optimize_link`, the
gateway and a real OPA sidecar running the project's bundle. Baselines see exactly the same
visits. Values are expected revenue (rate x payout of the offer each click went to), so the
comparison carries no conversion noise; traffic costs are the same for every policy.

RCP check: every denied decision must carry only expected reason codes, and every approved
allocation must satisfy the limits in rego/config/data.json (sum to 1, exploration floor,
undersampled arms at their minimum share, max change per cycle)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlalchemy as sa  # noqa: E402

from server.autopilot.cli import opa_for  # noqa: E402
from server.autopilot.simulation import InProcessDriver, in_process_app, run_simulation, seed_market  # noqa: E402
from server.autopilot.simulator import Market, default_scenario  # noqa: E402
from server.clicks.redirect import click_handler  # noqa: E402
from server.config import Settings  # noqa: E402
from server.extensions import services  # noqa: E402
from server.governance.models import Decision  # noqa: E402
from server.links.models import Allocation  # noqa: E402
from server.migrate import upgrade  # noqa: E402

LIMITS = json.loads((ROOT / "rego" / "config" / "data.json").read_text())
#: Denials the autopilot may meet by design (not violations): too little evidence for the
#: traffic optimiser early on. Anything else denied is counted as an RCP violation.
EXPECTED_DENIALS = {"insufficient_evidence"}


def check_allocations(app: Any, link_id: str, algorithm: str) -> tuple[int, list[str]]:
    """(approved allocations checked, violations) against the policy's limits in data.json."""
    cfg = LIMITS[algorithm]
    tol = cfg.get("bound_tolerance", 1e-9) + 1e-9
    problems: list[str] = []
    with services(app).db.session() as session:
        rows = session.execute(
            sa.select(Allocation, Decision)
            .join(Decision, Decision.id == Allocation.decision_id)
            .where(Allocation.link_id == link_id)
            .order_by(Allocation.id)
        ).all()
        previous: dict[str, float] | None = None
        for allocation, decision in rows:
            weights = {k: float(v) for k, v in allocation.weights.items()}
            evidence = decision.input["state"]["evidence"]
            k = len(weights)
            if abs(sum(weights.values()) - 1) > cfg["sum_tolerance"]:
                problems.append(f"allocation {allocation.id}: sums to {sum(weights.values())}")
            for arm, w in weights.items():
                clicks = evidence.get(arm, {}).get("clicks", 0)
                if algorithm == "traffic_optimizer":
                    lo, hi = cfg["min_share"], cfg["max_share"]
                else:
                    lo, hi = cfg["exploration_floor"], 1.0
                    if clicks < cfg["min_samples_before_starve"]:
                        lo = max(lo, min(cfg["unsampled_min_share"], 1 / k))
                if not lo - tol <= w <= hi + tol:
                    problems.append(f"allocation {allocation.id}: {arm}={w:.4f} outside [{lo}, {hi}]")
                if previous is not None and arm in previous:
                    if abs(w - previous[arm]) > cfg["max_change_per_cycle"] + tol:
                        problems.append(f"allocation {allocation.id}: {arm} moved by {abs(w - previous[arm]):.4f}")
            previous = weights
    return len(rows), problems


def run_once(settings: Settings, opa_url: str, algorithm: str, seed: int, hours: int, clicks: int) -> dict[str, Any]:
    scenario = default_scenario(hours=hours, clicks_per_hour=clicks, algorithm=algorithm, seed=seed)
    if algorithm == "traffic_optimizer":
        scenario = type(scenario)(**{**scenario.__dict__, "params": {"min_clicks": 100}})
    market = Market(scenario)
    with tempfile.TemporaryDirectory(prefix="smartlinks-bench-") as tmp:
        database_url = f"sqlite:///{Path(tmp) / 'sim.db'}"
        upgrade(database_url)
        app = in_process_app(settings, database_url, opa_url, Path(tmp))
        try:
            with services(app).db.unit_of_work() as uow:
                link_id, slug = seed_market(uow.session, scenario)
                uow.commit()
            started = time.perf_counter()
            result = run_simulation(market, InProcessDriver(app, link_id, slug))
            elapsed = time.perf_counter() - started
            checked, violations = check_allocations(app, link_id, algorithm)
        finally:
            click_handler(app).close()
            services(app).close()
    denied_unexpected = sum(
        1 for c in result.cycles if c.outcome == "denied" and not set(c.reasons) <= EXPECTED_DENIALS
    )
    errors = sum(1 for c in result.cycles if c.outcome in ("error", "failed"))
    _, best = market.best_fixed()
    heuristic = market.epc_heuristic(seed=seed + 100)
    return {
        "seed": seed,
        "autopilot": result.tally.expected_revenue,
        "realised": result.tally.revenue,
        "best_fixed": best,
        "heuristic": heuristic,
        "cost": result.tally.cost,
        "outcomes": result.outcomes(),
        "reasons": result.reason_codes(),
        "violations": violations,
        "unexpected_denials": denied_unexpected,
        "errors": errors,
        "checked": checked,
        "clicks": result.tally.clicks,
        "seconds": elapsed,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--algorithms", default="thompson_sampling,traffic_optimizer")
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--hours", type=int, default=48)
    ap.add_argument("--clicks-per-hour", type=int, default=600)
    args = ap.parse_args()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"load average before: {load}")
    with tempfile.TemporaryDirectory(prefix="smartlinks-bench-opa-") as var:
        settings = Settings(environment="test", var_dir=var, secret_key="bench-secret-key-0123456789-0123456789-abc")
        with opa_for(settings) as (opa_url, revision):
            print(f"OPA sidecar {opa_url}, policy revision {revision}")
            for algorithm in args.algorithms.split(","):
                runs = []
                for seed in (int(s) for s in args.seeds.split(",")):
                    r = run_once(settings, opa_url, algorithm, seed, args.hours, args.clicks_per_hour)
                    runs.append(r)
                    print(
                        f"  {algorithm} seed {seed}: autopilot {r['autopilot']:,.0f}  "
                        f"best fixed {r['best_fixed']:,.0f}  "
                        f"80/20 {r['heuristic']:,.0f}  (cost {r['cost']:,.0f})  decisions {r['outcomes']} "
                        f"reasons {r['reasons'] or '{}'}  {r['clicks']:,} clicks in {r['seconds']:.0f} s"
                    )
                    for v in r["violations"][:5]:
                        print(f"    VIOLATION {v}")
                vs_best = [r["autopilot"] / r["best_fixed"] for r in runs]
                vs_heur = [r["autopilot"] / r["heuristic"] for r in runs]
                profit = [
                    (r["autopilot"] - r["cost"], r["best_fixed"] - r["cost"], r["heuristic"] - r["cost"]) for r in runs
                ]
                print(
                    f"{algorithm}: {args.hours} h x {args.clicks_per_hour} clicks/h, drift piecewise, {len(runs)} seeds"
                )
                print(
                    f"  expected revenue, autopilot / best fixed in hindsight: mean {statistics.mean(vs_best):.3f} "
                    f"(min {min(vs_best):.3f}, max {max(vs_best):.3f})"
                )
                print(
                    f"  expected revenue, autopilot / 80-20 best EPC:          mean {statistics.mean(vs_heur):.3f} "
                    f"(min {min(vs_heur):.3f}, max {max(vs_heur):.3f})"
                )
                print(
                    "  expected profit (revenue - traffic cost), mean: autopilot "
                    f"{statistics.mean(p[0] for p in profit):,.0f}, "
                    f"best fixed {statistics.mean(p[1] for p in profit):,.0f}, "
                    f"80/20 {statistics.mean(p[2] for p in profit):,.0f}"
                )
                print(
                    f"  RCP: {sum(r['checked'] for r in runs)} approved allocations checked against data.json, "
                    f"{sum(len(r['violations']) for r in runs)} violations; "
                    f"{sum(r['unexpected_denials'] for r in runs)} unexpected denials; "
                    f"{sum(r['errors'] for r in runs)} errors"
                )
    print(f"load average after: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")


if __name__ == "__main__":
    main()
