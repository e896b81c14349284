"""Impact analysis: replay the inputs of recorded decisions against a candidate version and the
active version, and report what would change.

Each version runs in its own temporary OPA process (`opa run --bundle` on the stored bundle,
verifying its signature), never in a live sidecar: the replay neither slows live decisions nor
lands in the audit trail. Inputs are replayed over keep-alive HTTP from a few threads per
process. A recorded decision whose policy revision is the baseline's needs no baseline replay:
OPA is deterministic given input and bundle (the server put `now` in the input), so the recorded
result is what the baseline answers.

Counted per action type and per rule (`policy.code` of the reason that appears or disappears):
allow to deny, deny to allow, changed obligations (a different clamp or approval) and changed
reasons (denied either way, for other reasons). The changed share that activation compares with
`policy_lifecycle.reason_required_above_share` counts the first three: a change of what happens."""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select

from server.db import Database, utcnow
from server.governance.gateway import DECISION_PATH, validate_decision
from server.governance.models import Decision
from server.policies.models import ImpactReport
from server.policy.opa_client import OpaClient, OpaError
from server.policy.sidecar import OpaSidecar

log = logging.getLogger(__name__)

THREADS_PER_OPA = 3
EXAMPLES_PER_GROUP = 5
MAX_EXAMPLES = 60


@dataclass(frozen=True)
class ReplayItem:
    decision_id: str
    action_type: str
    input: Any
    recorded_result: Any = None
    recorded_revision: str | None = None


@dataclass(frozen=True)
class Verdict:
    allow: bool
    reasons: frozenset[str]  # "policy.code"
    obligations: str  # canonical JSON, compared as text
    error: str | None = None

    def brief(self) -> dict[str, Any]:
        return {"allow": self.allow, "reasons": sorted(self.reasons), "error": self.error}


def verdict(result: Any) -> Verdict:
    """What a decision result means for the action (a failure is a deny, as in production)."""
    if isinstance(result, OpaError):
        return Verdict(False, frozenset({f"opa.{result.code}"}), "{}", result.code)
    try:
        allow, reasons, obligations = validate_decision(result)
    except OpaError as exc:
        return Verdict(False, frozenset({f"opa.{exc.code}"}), "{}", exc.code)
    keys = frozenset(f"{r.get('policy', '?')}.{r.get('code', '?')}" for r in reasons)
    return Verdict(allow, keys, json.dumps(obligations, sort_keys=True, default=str))


# -- samples ---------------------------------------------------------------------------------------
def load_recorded(db: Database, limit: int) -> list[ReplayItem]:
    """The inputs of the last `limit` recorded decisions, newest first."""
    with db.unit_of_work() as uow:
        rows = uow.session.execute(
            select(
                Decision.id,
                Decision.action_type,
                Decision.input,
                Decision.result,
                Decision.policy_revision,
                Decision.error_code,
            )
            .order_by(Decision.created_at.desc(), Decision.id.desc())
            .limit(limit)
        ).all()
    return [
        ReplayItem(
            decision_id=row.id,
            action_type=row.action_type,
            input=row.input,
            recorded_result=row.result if row.error_code is None else None,
            recorded_revision=row.policy_revision if row.error_code is None else None,
        )
        for row in rows
        if isinstance(row.input, dict)
    ]


def load_sample_file(path: Path, limit: int | None = None) -> list[ReplayItem]:
    """A recorded sample: JSON lines of {decision_id, action_type, input[, result, policy_revision]}."""
    items: list[ReplayItem] = []
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not JSON ({exc})") from exc
            if not isinstance(row, dict) or not isinstance(row.get("input"), dict):
                raise ValueError(f"{path}:{number}: each line needs an object with an `input` object")
            action = row["input"].get("action") if isinstance(row["input"].get("action"), dict) else {}
            items.append(
                ReplayItem(
                    decision_id=str(row.get("decision_id") or f"line-{number}"),
                    action_type=str(row.get("action_type") or action.get("type") or "?"),
                    input=row["input"],
                )
            )
            if limit is not None and len(items) >= limit:
                break
    return items


# -- temporary OPA processes -----------------------------------------------------------------------
@contextlib.contextmanager
def temporary_opa(
    opa_bin: Path, bundle: bytes, *, verification_key: Path | None, name: str = "replay"
) -> Iterator[OpaSidecar]:
    """An OPA process serving one bundle on a free loopback port, for as long as the block runs.
    With `verification_key` the bundle's signature is verified (an altered bundle fails here)."""
    with tempfile.TemporaryDirectory(prefix=f"smartlinks-{name}-") as tmp:
        path = Path(tmp) / "bundle.tar.gz"
        path.write_bytes(bundle)
        args: list[str] = []
        if verification_key is not None:
            args = ["--verification-key", str(verification_key)]
        sidecar = OpaSidecar(opa_bin, path, Path(tmp) / "opa.log", extra_args=args, ready_timeout=30)
        sidecar.start()
        try:
            sidecar.wait_ready(30)
            yield sidecar
        finally:
            sidecar.stop()


def replay(url: str, inputs: Sequence[Any], threads: int = THREADS_PER_OPA) -> list[Any]:
    """OPA's decision for each input, in order; an OpaError in place of an unusable answer."""
    client = OpaClient(url, connect_timeout=2.0, timeout=10.0)

    def ask(document: Any) -> Any:
        try:
            return client.query(DECISION_PATH, document).result
        except OpaError as exc:
            return exc

    try:
        with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="impact") as pool:
            return list(pool.map(ask, inputs, chunksize=64))
    finally:
        client.close()


# -- comparison ------------------------------------------------------------------------------------
def _target(document: Any) -> str | None:
    target = document.get("action", {}).get("target") if isinstance(document, dict) else None
    if isinstance(target, dict) and target.get("id"):
        return f"{target.get('kind')}:{target.get('id')}"
    return None


def compare(items: Sequence[ReplayItem], before: Sequence[Any], after: Sequence[Any]) -> dict[str, Any]:
    """Count what changes from `before` (baseline results) to `after` (candidate results)."""
    by_action: dict[str, Counter[str]] = defaultdict(Counter)
    by_rule: Counter[tuple[str, str]] = Counter()
    examples: list[dict[str, Any]] = []
    per_group: Counter[tuple[str, str]] = Counter()
    errors: Counter[str] = Counter()
    for item, old_result, new_result in zip(items, before, after, strict=True):
        old, new = verdict(old_result), verdict(new_result)
        counts = by_action[item.action_type]
        counts["total"] += 1
        if new.error:
            errors[new.error] += 1
        if old.allow and not new.allow:
            direction, rules = "allow_to_deny", new.reasons - old.reasons or new.reasons
        elif new.allow and not old.allow:
            direction, rules = "deny_to_allow", old.reasons - new.reasons or old.reasons
        elif new.allow and old.obligations != new.obligations:
            direction, rules = "obligations_changed", frozenset()
        elif not new.allow and old.reasons != new.reasons:
            direction, rules = "reasons_changed", old.reasons ^ new.reasons
        else:
            continue
        counts[direction] += 1
        for rule in rules:
            by_rule[(rule, direction)] += 1
        group = (direction, item.action_type)
        if per_group[group] < EXAMPLES_PER_GROUP and len(examples) < MAX_EXAMPLES:
            per_group[group] += 1
            document = item.input if isinstance(item.input, dict) else {}
            actor = document.get("action", {}).get("actor") if isinstance(document.get("action"), dict) else None
            examples.append(
                {
                    "decision_id": item.decision_id,
                    "action_type": item.action_type,
                    "actor": actor.get("id") if isinstance(actor, dict) else None,
                    "target": _target(document),
                    "direction": direction,
                    "before": old.brief(),
                    "after": new.brief(),
                }
            )
    totals: Counter[str] = Counter()
    for counts in by_action.values():
        totals.update(counts)
    return {
        "totals": {
            k: totals.get(k, 0) for k in ("allow_to_deny", "deny_to_allow", "obligations_changed", "reasons_changed")
        },
        "by_action": {
            name: {
                k: counts.get(k, 0)
                for k in ("total", "allow_to_deny", "deny_to_allow", "obligations_changed", "reasons_changed")
            }
            for name, counts in sorted(by_action.items())
        },
        "by_rule": [
            {"rule": rule, "direction": direction, "count": n}
            for (rule, direction), n in sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "examples": examples,
        "candidate_errors": dict(errors),
    }


@dataclass(frozen=True)
class Side:
    """One version taking part in an analysis: its revision and bundle bytes."""

    revision: str
    bundle: bytes
    signed: bool = True


def run(
    opa_bin: Path,
    items: Sequence[ReplayItem],
    candidate: Side,
    baseline: Side | None,
    *,
    verification_key: Path | None,
) -> dict[str, Any]:
    """Replay `items` and compare; the summary also says how long each step took."""
    started = time.perf_counter()
    reuse = [
        baseline is not None and item.recorded_revision == baseline.revision and item.recorded_result is not None
        for item in items
    ]
    to_replay = [item.input for item, reused in zip(items, reuse, strict=True) if not reused]
    with contextlib.ExitStack() as stack:
        candidate_opa = stack.enter_context(
            temporary_opa(
                opa_bin,
                candidate.bundle,
                verification_key=verification_key if candidate.signed else None,
                name="candidate",
            )
        )
        baseline_opa = None
        if baseline is not None and to_replay:
            baseline_opa = stack.enter_context(
                temporary_opa(
                    opa_bin,
                    baseline.bundle,
                    verification_key=verification_key if baseline.signed else None,
                    name="baseline",
                )
            )
        ready = time.perf_counter()
        with ThreadPoolExecutor(max_workers=2) as sides:
            after_future = sides.submit(replay, candidate_opa.url, [item.input for item in items])
            replayed_future = sides.submit(replay, baseline_opa.url, to_replay) if baseline_opa else None
            after = after_future.result()
            replayed = replayed_future.result() if replayed_future else []
    replayed_at = time.perf_counter()
    if baseline is None:
        # Nothing is active yet: every decision is compared with "denied" (nothing could run).
        before: list[Any] = [OpaError("no_active_version", "no active version") for _ in items]
    else:
        queue = iter(replayed)
        before = [item.recorded_result if reused else next(queue) for item, reused in zip(items, reuse, strict=True)]
    summary = compare(items, before, after)
    summary["baseline_source"] = {"recorded": sum(reuse), "replayed": len(replayed)}
    summary["timing_ms"] = {
        "start_opa": round((ready - started) * 1000, 1),
        "replay": round((replayed_at - ready) * 1000, 1),
        "compare": round((time.perf_counter() - replayed_at) * 1000, 1),
        "total": round((time.perf_counter() - started) * 1000, 1),
    }
    return summary


def changed_share(summary: dict[str, Any], size: int) -> float:
    totals = summary["totals"]
    changed = totals["allow_to_deny"] + totals["deny_to_allow"] + totals["obligations_changed"]
    return changed / size if size else 0.0


def analyse(
    db: Database,
    opa_bin: Path,
    candidate: Side,
    baseline: Side | None,
    *,
    sample: int,
    actor_id: str,
    verification_key: Path | None,
) -> ImpactReport:
    """Replay the last `sample` recorded decisions and store the report (its own transactions)."""
    started = time.perf_counter()
    items = load_recorded(db, sample)
    summary = run(opa_bin, items, candidate, baseline, verification_key=verification_key)
    totals = summary["totals"]
    report = ImpactReport(
        candidate_revision=candidate.revision,
        baseline_revision=baseline.revision if baseline else None,
        sample_requested=sample,
        sample_size=len(items),
        baseline_replayed=summary["baseline_source"]["replayed"],
        allow_to_deny=totals["allow_to_deny"],
        deny_to_allow=totals["deny_to_allow"],
        other_changes=totals["obligations_changed"] + totals["reasons_changed"],
        errors=sum(summary["candidate_errors"].values()),
        changed_share=changed_share(summary, len(items)),
        summary=summary,
        duration_ms=(time.perf_counter() - started) * 1000.0,
        created_by=actor_id,
        created_at=utcnow(),
    )
    with db.unit_of_work() as uow:
        uow.session.add(report)
        uow.commit()
    log.info(
        "impact of %s against %s on %d decisions: %d allow->deny, %d deny->allow (%.1f s)",
        candidate.revision,
        baseline.revision if baseline else "nothing",
        len(items),
        report.allow_to_deny,
        report.deny_to_allow,
        report.duration_ms / 1000,
    )
    return report


def markdown(summary: dict[str, Any], size: int, candidate: str, baseline: str) -> str:
    """The report as Markdown (a pull request's job summary)."""
    totals = summary["totals"]
    share = changed_share(summary, size)
    lines = [
        f"### Policy impact: `{candidate}` against `{baseline}` on {size} recorded decisions",
        "",
        f"- allow → deny: **{totals['allow_to_deny']}**",
        f"- deny → allow: **{totals['deny_to_allow']}**",
        f"- obligations changed: {totals['obligations_changed']}; reasons changed: {totals['reasons_changed']}",
        f"- changed share: {share:.2%}",
        "",
    ]
    rows = [(name, c) for name, c in summary["by_action"].items() if any(c[k] for k in c if k != "total")]
    if rows:
        lines += [
            "| action type | decisions | allow → deny | deny → allow | obligations | reasons |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for name, c in rows:
            lines.append(
                f"| `{name}` | {c['total']} | {c['allow_to_deny']} | {c['deny_to_allow']} | "
                f"{c['obligations_changed']} | {c['reasons_changed']} |"
            )
        lines.append("")
    if summary["by_rule"]:
        lines += ["| rule | change | decisions |", "| --- | --- | ---: |"]
        lines += [f"| `{r['rule']}` | {r['direction']} | {r['count']} |" for r in summary["by_rule"][:20]]
        lines.append("")
    for example in summary["examples"][:10]:
        lines.append(
            f"- `{example['decision_id']}` {example['action_type']} {example['target'] or ''}: "
            f"{_brief(example['before'])} → {_brief(example['after'])}"
        )
    if not rows:
        lines.append("No decision changes.")
    return "\n".join(lines) + "\n"


def _brief(side: dict[str, Any]) -> str:
    return "allow" if side["allow"] else "deny (" + ", ".join(side["reasons"]) + ")"


def iter_sample_lines(decisions: Iterable[Decision]) -> Iterator[str]:
    """JSON lines of a recorded sample (`smartlinks policy export-sample`)."""
    for d in decisions:
        yield json.dumps(
            {"decision_id": d.id, "action_type": d.action_type, "input": d.input, "policy_revision": d.policy_revision},
            sort_keys=True,
            separators=(",", ":"),
        )
