"""A realistic mix of decision inputs, as the gateway builds them (`build_input`): allocation
updates by the three algorithms (most of the traffic), budget reallocations, pauses and resumes
of links and offers, kill switches; some over limits, some on blocked or paused targets.

Used for the committed sample that the pull-request workflow replays
(`tests/fixtures/decision-sample.jsonl`, regenerate with
`python bench/decision_sample.py --count 500 -o tests/fixtures/decision-sample.jsonl`) and by
bench/policy_impact.py to record 10,000 decisions. Deterministic for a given seed."""

from __future__ import annotations

import argparse
import json
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.governance.gateway import Action, Actor, Target, build_input  # noqa: E402

ALGORITHMS = ("thompson_sampling", "traffic_optimizer", "ucb")
START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)


def _weights(rng: random.Random, arms: list[str]) -> dict[str, float]:
    raw = [rng.random() + 0.05 for _ in arms]
    total = sum(raw)
    return {arm: round(value / total, 4) for arm, value in zip(arms, raw, strict=True)}


def _allocation(rng: random.Random, i: int) -> tuple[Action, dict[str, Any]]:
    arms = [f"off_{k}" for k in range(rng.randint(2, 5))]
    current = {arm: round(1 / len(arms), 4) for arm in arms}
    proposed = _weights(rng, arms)
    if rng.random() < 0.5:  # most cycles move gently
        proposed = {arm: round((current[arm] * 3 + proposed[arm]) / 4, 4) for arm in arms}
    evidence = {
        arm: {
            "clicks": (clicks := rng.choice([0, 30, 150, 400, 1200, 5000])),
            "conversions": clicks // rng.randint(15, 60),
            "revenue": round(clicks * rng.uniform(0.05, 0.4), 2),
        }
        for arm in arms
    }
    link = "lnk_blocked" if rng.random() < 0.03 else f"lnk_{i % 80}"
    algorithm = rng.choice(ALGORITHMS)
    action = Action(
        "allocation.update",
        Actor(f"algo:{algorithm}", "algorithm"),
        {"algorithm": algorithm, "weights": proposed},
        Target("link", link),
    )
    return action, {"arms": arms, "current_weights": current, "evidence": evidence}


def _budget(rng: random.Random, i: int) -> tuple[Action, dict[str, Any]]:
    campaigns = {
        f"cmp_{k}": {
            "budget": (budget := rng.choice([200, 500, 800, 1000, 2500])),
            "daily_cap": budget * 3,
            "spend_today": round(budget * rng.uniform(0, 0.9), 2),
            "roi": round(rng.uniform(-0.2, 1.5), 3),
        }
        for k in range(rng.randint(2, 4))
    }
    budgets = {name: round(c["budget"] * rng.uniform(0.7, 1.35), 2) for name, c in campaigns.items()}
    action = Action(
        "budget.reallocate",
        Actor("algo:budget_arbitrage", "algorithm"),
        {"budgets": budgets},
        Target("account", f"acc_{i % 5}"),
    )
    return action, {"campaigns": campaigns}


def _operation(rng: random.Random, i: int) -> tuple[Action, dict[str, Any]]:
    kind = rng.choice(["link.pause", "link.pause", "link.resume", "offer.pause", "offer.resume"])
    target = (
        Target("link", "lnk_blocked" if rng.random() < 0.2 else f"lnk_{i % 80}")
        if kind.startswith("link")
        else Target("offer", f"off_{i % 40}")
    )
    actor = rng.choice(
        [Actor("algo:guard", "algorithm"), Actor("ai:supervisor", "ai"), Actor("user:7", "user", ("operator",))]
    )
    return Action(kind, actor, {"reason": "conversion rate dropped"}, target), {}


def _kill_switch(rng: random.Random, _i: int) -> tuple[Action, dict[str, Any]]:
    actor = rng.choice([Actor("user:7", "user", ("operator",)), Actor("user:3", "user", ("auditor",))])
    return Action(
        "controls.kill_switch",
        actor,
        {"enabled": rng.random() < 0.5, "scope": "global", "reason": "drill"},
        Target("system", "global"),
    ), {}


def sample(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """`count` decision records: {decision_id, action_type, input}."""
    rng = random.Random(seed)
    makers = [(_allocation, 0.6), (_budget, 0.15), (_operation, 0.2), (_kill_switch, 0.05)]
    out: list[dict[str, Any]] = []
    for i in range(count):
        maker = rng.choices([m for m, _ in makers], weights=[w for _, w in makers])[0]
        action, state = maker(rng, i)
        now = START + timedelta(seconds=37 * i)
        counts = {"60": rng.choice([0, 1, 3, 10, 130]), "3600": rng.randint(0, 300), "86400": rng.randint(0, 3000)}
        controls = {"kill_switch": rng.random() < 0.02, "target_kill_switch": rng.random() < 0.02}
        document = build_input(
            action,
            state=state,
            caller=Actor("token:1", "service", ("service",)) if action.actor.kind != "user" else action.actor,
            controls=controls,
            counts=counts,
            mode="test",
            now=now,
        )
        out.append({"decision_id": f"sample-{i:06d}", "action_type": action.type, "input": document})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("-o", "--output", type=Path, default=None)
    args = parser.parse_args()
    lines = [json.dumps(row, sort_keys=True, separators=(",", ":")) for row in sample(args.count, args.seed)]
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        print("\n".join(lines))


if __name__ == "__main__":
    main()
