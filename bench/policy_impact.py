"""Benchmark: impact analysis of 10,000 recorded decisions (target: under 30 s on the project's
2-core machine), and the cost of shadow evaluation on the decision path.

1. Records `--decisions` decisions (the realistic mix of bench/decision_sample.py) in a fresh
   SQLite database, with the answers of the active version (`bench-base`), as the gateway
   records them.
2. Impact of a candidate (`bench-blocked`, one more blocked link) against the active version:
   (a) the product's way: recorded answers of the active revision reused, the candidate replayed
   in a temporary OPA from 3 threads; (b) the same when the decisions were made by an older
   revision, so the baseline is replayed too (two OPA processes in parallel); and (c) the naive
   baseline: both versions replayed one request at a time.
3. Shadow: the latency the gateway's shadow hook adds to a decision (`Gateway.decide` with the
   hook on and off, alternating, against a real OPA)."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, update  # noqa: E402

from bench.decision_sample import sample  # noqa: E402
from server.db import Database, utcnow  # noqa: E402
from server.governance.gateway import Action, Actor, Gateway, Target  # noqa: E402
from server.governance.models import Decision  # noqa: E402
from server.migrate import upgrade  # noqa: E402
from server.policies import impact  # noqa: E402
from server.policies.keys import SigningKeys, generate_key_pair  # noqa: E402
from server.policies.models import ACTIVE, PolicyVersion  # noqa: E402
from server.policies.pipeline import build_candidate  # noqa: E402
from server.policies.shadow import ShadowEvaluator  # noqa: E402
from server.policy.opa_client import OpaClient  # noqa: E402
from tests.support.policies import policy_tree  # noqa: E402

OPA_BIN = ROOT / ".tools" / "bin" / "opa"


def record(database: Database, keys: SigningKeys, base: impact.Side, count: int) -> None:
    rows = sample(count)
    with impact.temporary_opa(OPA_BIN, base.bundle, verification_key=keys.public) as opa:
        results = impact.replay(opa.url, [r["input"] for r in rows])
    now = utcnow()
    records = []
    for i, (row, result) in enumerate(zip(rows, results, strict=True)):
        document = row["input"]
        allow = bool(isinstance(result, dict) and result.get("allow") and not result.get("reasons"))
        records.append(
            {
                "id": f"dec_{i:032x}",
                "created_at": now,
                "action_type": row["action_type"],
                "actor_id": document["action"]["actor"]["id"],
                "actor_kind": document["action"]["actor"]["kind"],
                "caller_id": None,
                "target_kind": (document["action"]["target"] or {}).get("kind"),
                "target_id": (document["action"]["target"] or {}).get("id"),
                "allow": allow,
                "outcome": "allowed" if allow else "denied",
                "dry_run": False,
                "mode": "test",
                "reasons": result.get("reasons", []) if isinstance(result, dict) else [],
                "obligations": result.get("obligations", {}) if isinstance(result, dict) else {},
                "input": document,
                "result": result if isinstance(result, dict) else None,
                "policy_revision": base.revision,
                "error_code": None,
                "latency_ms": 1.0,
                "executed": False,
                "note": None,
                "opa_decision_id": None,
            }
        )
    with database.unit_of_work() as uow:
        for start in range(0, len(records), 1000):
            uow.session.execute(insert(Decision), records[start : start + 1000])
        uow.commit()


def timed_analysis(
    database: Database, keys: SigningKeys, candidate: impact.Side, base: impact.Side, count: int
) -> tuple[float, Any]:
    started = time.perf_counter()
    report = impact.analyse(
        database, OPA_BIN, candidate, base, sample=count, actor_id="bench", verification_key=keys.public
    )
    return time.perf_counter() - started, report


def naive(database: Database, keys: SigningKeys, candidate: impact.Side, base: impact.Side, count: int) -> float:
    """Both versions replayed one request at a time, one after the other."""
    items = impact.load_recorded(database, count)
    started = time.perf_counter()
    answers = []
    for side in (base, candidate):
        with impact.temporary_opa(OPA_BIN, side.bundle, verification_key=keys.public) as opa:
            answers.append(impact.replay(opa.url, [i.input for i in items], threads=1))
    impact.compare(items, answers[0], answers[1])
    return time.perf_counter() - started


def shadow_overhead(
    database: Database, keys: SigningKeys, base: impact.Side, shadow: impact.Side, n: int
) -> tuple[float, float]:
    """Median `Gateway.decide` latency (ms) without and with the shadow hook active."""
    with database.unit_of_work() as uow:
        uow.session.execute(
            update(PolicyVersion).where(PolicyVersion.revision == shadow.revision).values(status="shadow")
        )
        uow.commit()
    with (
        impact.temporary_opa(OPA_BIN, base.bundle, verification_key=keys.public) as primary,
        impact.temporary_opa(OPA_BIN, shadow.bundle, verification_key=keys.public) as shadow_opa,
    ):
        gateway = Gateway(OpaClient(primary.url))
        evaluator = ShadowEvaluator(database, shadow_opa.url)
        evaluator.start()
        deadline = time.monotonic() + 10
        while evaluator.revision != shadow.revision and time.monotonic() < deadline:
            time.sleep(0.05)
        off: list[float] = []
        on: list[float] = []
        for i in range(n):
            hooked = i % 2 == 1
            gateway.shadow = evaluator if hooked else None
            action = Action(
                "link.pause", Actor(f"algo:bench-{i % 50}", "algorithm"), {}, Target("link", f"lnk_{i % 80}")
            )
            with database.unit_of_work() as uow:
                started = time.perf_counter()
                gateway.decide(uow.session, action)
                elapsed = (time.perf_counter() - started) * 1000
                uow.commit()
            (on if hooked else off).append(elapsed)
        evaluator.drain(30)
        evaluator.stop()
    return statistics.median(off), statistics.median(on)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=10_000)
    parser.add_argument("--shadow-decisions", type=int, default=2000)
    parser.add_argument("--skip-naive", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-impact-") as tmp_name:
        tmp = Path(tmp_name)
        keys = SigningKeys(tmp / "signing.pem", tmp / "verification.pem")
        generate_key_pair(keys.private, keys.public)
        url = f"sqlite:///{tmp / 'bench.db'}"
        upgrade(url)
        database = Database()
        database.configure(url)
        built = {}
        for variant, revision in (("base", "bench-base"), ("blocked", "bench-blocked")):
            candidate = build_candidate(
                OPA_BIN,
                policy_tree(tmp / variant, variant),
                signing_key=keys.private,
                coverage_threshold=0.0,
                revision=revision,
            )
            built[variant] = impact.Side(candidate.revision, candidate.bundle)
            with database.unit_of_work() as uow:
                uow.session.add(
                    PolicyVersion(
                        revision=revision,
                        status=ACTIVE if variant == "base" else "draft",
                        sha256=candidate.sha256,
                        bundle=candidate.bundle,
                        size=len(candidate.bundle),
                        signed=True,
                        author="bench",
                        message=variant,
                        check_ok=True,
                        check_output="",
                        tests_passed=1,
                        tests_failed=0,
                        test_failures=[],
                        coverage=100.0,
                        coverage_threshold=0.0,
                        sources={},
                    )
                )
                uow.commit()
        base, blocked = built["base"], built["blocked"]
        started = time.perf_counter()
        record(database, keys, base, args.decisions)
        print(f"recorded {args.decisions} decisions in {time.perf_counter() - started:.1f} s")

        seconds, report = timed_analysis(database, keys, blocked, base, args.decisions)
        print(
            f"(a) impact, recorded answers reused: {seconds:.1f} s for {report.sample_size} decisions "
            f"({report.allow_to_deny} allow->deny, {report.deny_to_allow} deny->allow; "
            f"steps {report.summary['timing_ms']})"
        )
        older = impact.Side("bench-older", base.bundle)  # same policy, but the records name another revision
        with database.unit_of_work() as uow:
            uow.session.execute(update(Decision).values(policy_revision="bench-older-recorded"))
            uow.commit()
        seconds_b, report_b = timed_analysis(database, keys, blocked, older, args.decisions)
        print(
            f"(b) impact, baseline replayed too:   {seconds_b:.1f} s for {report_b.sample_size} decisions "
            f"(replayed {report_b.baseline_replayed}; steps {report_b.summary['timing_ms']})"
        )
        if not args.skip_naive:
            seconds_c = naive(database, keys, blocked, base, args.decisions)
            print(
                f"(c) naive sequential replay of both:  {seconds_c:.1f} s "
                f"({seconds_c / seconds:.1f}x (a), {seconds_c / seconds_b:.1f}x (b))"
            )
        off, on = shadow_overhead(database, keys, base, blocked, args.shadow_decisions)
        print(f"shadow hook: Gateway.decide median {off:.2f} ms without, {on:.2f} ms with ({on - off:+.2f} ms)")
        database.dispose()
    print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
