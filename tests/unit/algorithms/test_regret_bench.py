"""Smoke test of the regret benchmark's core (tiny horizon, seeded, deterministic). Only
`test_the_governed_loop_asks_the_real_policies` needs OPA (the session's sidecar)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.regret import (
    BenchConfig,
    arm_means,
    batch_schedule,
    format_report,
    lai_robbins_constant,
    main,
    rcp_bounds,
    run_benchmark,
    shipped_limits,
)
from server.policy.sidecar import OpaSidecar


def test_lai_robbins_constants() -> None:
    assert lai_robbins_constant(arm_means(10, 0.1)) == pytest.approx(44.70, abs=0.01)
    assert lai_robbins_constant(arm_means(10, 0.02)) == pytest.approx(224.9, abs=0.05)


def test_batch_schedule() -> None:
    assert batch_schedule(2500, 1000) == [1000, 1000, 500]
    grow = batch_schedule(10_000, 100, 2.0, 1000)
    assert sum(grow) == 10_000 and grow[:4] == [100, 200, 400, 800] and max(grow) == 1000
    with pytest.raises(ValueError):
        batch_schedule(10, 0)


def test_ts_beats_ucb1_on_easy_problem_and_is_deterministic() -> None:
    cfg = BenchConfig(
        k=3,
        eps=(0.2,),
        horizon=3000,
        reps=4,
        batch=200,
        mc_samples=2000,
        policies=("ts", "ucb1", "kl_ucb", "batched_rcp_approx"),
        seed=5,
        jobs=1,
    )
    results = {r.policy: r for r in run_benchmark(cfg)}
    assert results["ts"].mean < results["ucb1"].mean
    assert results["kl_ucb"].mean < results["ucb1"].mean
    # Regret can never exceed always playing a bad arm.
    for r in results.values():
        assert 0.0 <= r.mean <= 0.2 * cfg.horizon
    again = {r.policy: r for r in run_benchmark(cfg)}
    for name, r in results.items():
        assert again[name].regrets == r.regrets
    text = format_report(cfg, list(results.values()), None)
    assert "Lai-Robbins" in text and "cross-check" in text


def test_the_python_bounds_mirror_the_bandit_policy() -> None:
    limits = shipped_limits() | {"exploration_floor": 0.01, "max_change_per_cycle": 0.2}
    clicks = {"a": 500, "b": 50, "c": 500}
    bounds, notes = rcp_bounds({"a": 0.995, "b": 0.0, "c": 0.005}, {"a": 0.9, "b": 0.05, "c": 0.05}, clicks, limits)
    assert bounds == {"a": (0.7, 1.0), "b": (0.05, 0.25), "c": (0.01, 0.25)}
    assert sorted(notes) == ["arm_starved", "below_exploration_floor"]
    assert rcp_bounds({"a": 0.98, "b": 0.01, "c": 0.01}, None, {"a": 500, "b": 500, "c": 500}, limits)[1] == []


def test_the_governed_loop_asks_the_real_policies(opa_sidecar: OpaSidecar) -> None:
    cfg = BenchConfig(
        k=4,
        eps=(0.2,),
        horizon=3000,
        reps=2,
        batch=300,
        mc_samples=2000,
        policies=("batched_governed", "batched_rcp_approx"),
        seed=3,
        opa_url=opa_sidecar.url,
    )
    governed, approx = run_benchmark(cfg)
    assert governed.extra["decisions"] == 2 * 10  # the first allocation and 9 cycles per replication
    assert governed.extra.get("denied", 0) == 0 and governed.extra.get("errors", 0) == 0
    assert governed.extra["limit:exploration_floor"] == shipped_limits()["exploration_floor"]
    # The Python mirror of the shipped limits routes exactly like OPA's verdicts.
    assert governed.extra["clamped"] > 0 and governed.extra["note:arm_starved"] > 0
    assert approx.regrets == governed.regrets
    assert {k: v for k, v in approx.extra.items() if k.startswith(("clamped", "note:"))} == {
        k: v for k, v in governed.extra.items() if k.startswith(("clamped", "note:"))
    }


def test_mabwiser_and_python_engine_run() -> None:
    cfg = BenchConfig(
        k=2,
        eps=(0.3,),
        horizon=400,
        reps=2,
        mab_fit_every=50,
        policies=("mab_ts", "mab_ucb1", "ts", "batched_free"),
        ts_engine="python",
        batch=100,
        mc_samples=500,
        seed=1,
    )
    results = run_benchmark(cfg)
    assert [r.policy for r in results] == ["mab_ts", "mab_ucb1", "ts", "batched_free"]
    assert all(np.isfinite(r.mean) for r in results)


def test_cli_quick_subset(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "--quick",
            "--horizon",
            "500",
            "--k",
            "3",
            "--eps",
            "0.2",
            "--policies",
            "ts",
            "ucb1",
            "--no-speed",
            "--jobs",
            "1",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "TS per-click" in out and "UCB1 per-click" in out
