"""Use cases of the policy lifecycle: publish, activate, roll back, shadow; diffs; the sidecars'
status reports and decision-log batches. Views and the CLI call these; they take their
dependencies (session, gateway, toolchain) as arguments.

Every change of state goes through the governance gateway (`policy.*` action types), so it is
decided by the running policy and recorded with its actor, allowed or denied, in the caller's
transaction. Slow work (building, testing, impact analysis) happens before that transaction
opens: a SQLite write lock is never held while OPA runs."""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from server.config import Settings
from server.db import Database, json_safe, utcnow
from server.errors import Problem
from server.governance.gateway import Action, Actor, Gateway, Outcome, Target
from server.governance.models import Decision
from server.policies import actions
from server.policies.keys import signing_keys
from server.policies.models import (
    ACTIVE,
    DRAFT,
    RETIRED,
    SHADOW,
    ImpactReport,
    OpaDecisionLog,
    PolicyActivation,
    PolicyVersion,
    SidecarReport,
)
from server.policies.pipeline import Candidate

log = logging.getLogger(__name__)

PRIMARY = "primary"
SHADOW_SIDECAR = "shadow"
SYSTEM_ACTOR = Actor(id="system:bootstrap", kind="system")


@dataclass(frozen=True)
class Toolchain:
    """What building, checking, testing, signing and replaying policies needs."""

    opa_bin: Path
    signing_key: Path | None
    verification_key: Path | None
    coverage_threshold: float
    self_approval: bool
    impact_sample: int
    var_dir: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> Toolchain:
        keys = signing_keys(settings)
        return cls(
            opa_bin=Path(settings.opa_bin),
            signing_key=keys.private,
            verification_key=keys.public,
            coverage_threshold=settings.policy_coverage_threshold,
            self_approval=settings.policy_self_approval,
            impact_sample=settings.policy_impact_sample,
            var_dir=Path(settings.var_dir),
        )


def reading(db: Database) -> contextlib.AbstractContextManager[Session]:
    """A read-only session (see `Database.reading`)."""
    return db.reading()


# -- reading versions ----------------------------------------------------------------------------
def find_version(session: Session, revision: str) -> PolicyVersion | None:
    return session.scalar(select(PolicyVersion).where(PolicyVersion.revision == revision))


def get_version(session: Session, revision: str) -> PolicyVersion:
    version = find_version(session, revision)
    if version is None:
        known = session.scalars(select(PolicyVersion.revision).order_by(PolicyVersion.id.desc()).limit(5)).all()
        hint = f"; latest: {', '.join(known)}" if known else "; none is published yet (smartlinks policy publish)"
        raise Problem(404, "Not Found", f"no policy version {revision!r}{hint}", type_="unknown-policy-version")
    return version


def list_versions(session: Session, limit: int = 200) -> list[PolicyVersion]:
    return list(session.scalars(select(PolicyVersion).order_by(PolicyVersion.id.desc()).limit(limit)))


def current(session: Session, status: str) -> PolicyVersion | None:
    """The version with `status` (active or shadow): at most one at a time."""
    return session.scalar(select(PolicyVersion).where(PolicyVersion.status == status).limit(1))


def is_intact(version: PolicyVersion) -> bool:
    """The stored bundle bytes are those that were published (their SHA-256 matches)."""
    return hashlib.sha256(version.bundle).hexdigest() == version.sha256


def activation_history(session: Session, limit: int = 50) -> list[PolicyActivation]:
    return list(session.scalars(select(PolicyActivation).order_by(PolicyActivation.id.desc()).limit(limit)))


def activation_stack(session: Session) -> list[str]:
    """The revisions a rollback walks back through: each activation pushes, each rollback pops."""
    stack: list[str] = []
    for kind, revision in session.execute(
        select(PolicyActivation.kind, PolicyActivation.revision).order_by(PolicyActivation.id)
    ):
        if kind == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != revision:
                stack.append(revision)
        else:
            stack.append(revision)
    return stack


def rollback_target(session: Session) -> str | None:
    stack = activation_stack(session)
    active = current(session, ACTIVE)
    if active is None or not stack or stack[-1] != active.revision:
        return None
    for revision in reversed(stack[:-1]):
        if revision != active.revision:
            return revision
    return None


def latest_impact(session: Session, candidate: str, baseline: str | None) -> ImpactReport | None:
    query = select(ImpactReport).where(ImpactReport.candidate_revision == candidate)
    query = query.where(
        ImpactReport.baseline_revision.is_(None) if baseline is None else ImpactReport.baseline_revision == baseline
    )
    return session.scalar(query.order_by(ImpactReport.id.desc()).limit(1))


def version_facts(version: PolicyVersion) -> dict[str, Any]:
    """What the policy_lifecycle package is told about a version (input.state.version)."""
    return {
        "revision": version.revision,
        "status": version.status,
        "validated": version.validated,
        "problems": version.validation_problems(),
        "published_by": version.author,
        "intact": is_intact(version),
        "signed": version.signed,
    }


def _state(session: Session, toolchain: Toolchain, **extra: Any) -> dict[str, Any]:
    active, shadow = current(session, ACTIVE), current(session, SHADOW)
    return {
        "active_revision": active.revision if active else None,
        "shadow_revision": shadow.revision if shadow else None,
        "self_approval_allowed": toolchain.self_approval,
        **extra,
    }


def _set_status(version: PolicyVersion, status: str) -> None:
    version.status = status
    version.status_changed_at = utcnow()


def _warn_if_altered(version: PolicyVersion) -> None:
    """An altered bundle is refused by the policy (bundle_altered) and never served; say so loudly."""
    if not is_intact(version):
        log.error(
            "policy version %s: the stored bundle does not match its SHA-256 %s", version.revision, version.sha256
        )


# -- publish ---------------------------------------------------------------------------------------
def publish(
    session: Session,
    gateway: Gateway,
    toolchain: Toolchain,
    actor: Actor,
    candidate: Candidate,
    *,
    message: str | None = None,
    source: str = "tree",
    bootstrap: bool = False,
) -> tuple[Outcome, PolicyVersion | None]:
    """Store `candidate` as a draft version, if the policy allows `actor` to publish it."""
    existing = find_version(session, candidate.revision)
    if existing is not None:
        raise Problem(
            409,
            "Conflict",
            f"version {candidate.revision} is already published (status {existing.status}); "
            "a new version needs a new commit or different content",
            type_="policy-version-exists",
        )
    text = (message or candidate.message_hint or "").strip()
    version = PolicyVersion(
        revision=candidate.revision,
        status=DRAFT,
        sha256=candidate.sha256,
        bundle=candidate.bundle,
        size=len(candidate.bundle),
        signed=candidate.signed,
        author=actor.id,
        author_name=candidate.author_hint,
        message=text[:2000],
        git_commit=candidate.git_commit,
        source=source,
        built_at=candidate.built_at,
        created_at=utcnow(),
        check_ok=candidate.check_ok,
        check_output=candidate.check_output[:20000],
        tests_passed=candidate.tests_passed,
        tests_failed=candidate.tests_failed,
        test_failures=candidate.test_failures[:200],
        coverage=candidate.coverage,
        coverage_threshold=candidate.coverage_threshold,
        sources=candidate.sources,
        status_changed_at=utcnow(),
    )
    stored: list[PolicyVersion] = []

    def store(db: Session, _params: dict[str, Any]) -> str:
        db.add(version)
        db.flush()
        stored.append(version)
        return version.revision

    facts = {
        "revision": version.revision,
        "status": "new",
        "validated": version.validated,
        "problems": version.validation_problems(),
        "published_by": actor.id,
        "intact": True,
        "signed": version.signed,
    }
    outcome = gateway.decide(
        session,
        Action(
            type=actions.PUBLISH,
            actor=actor,
            target=Target("policy", version.revision),
            params={
                "revision": version.revision,
                "sha256": version.sha256,
                "message": text[:200],
                "bootstrap": bootstrap,
            },
        ),
        state=_state(session, toolchain, version=facts),
        caller=actor,
        execute=store,
    )
    if stored:
        stored[0].publish_decision_id = outcome.decision_id
    return outcome, (stored[0] if stored else None)


# -- activate and roll back ------------------------------------------------------------------------
def _switch(session: Session, version: PolicyVersion, actor: Actor) -> PolicyVersion | None:
    previous = current(session, ACTIVE)
    if previous is not None and previous.id != version.id:
        _set_status(previous, RETIRED)
    _set_status(version, ACTIVE)
    version.activated_at = utcnow()
    version.activated_by = actor.id
    session.flush()
    return previous


def activate(
    session: Session,
    gateway: Gateway,
    toolchain: Toolchain,
    actor: Actor,
    revision: str,
    *,
    reason: str | None = None,
    bootstrap: bool = False,
) -> Outcome:
    """Make `revision` the active version, if the policy allows it (see policy_lifecycle.rego).

    The impact analysis against the active version must exist already (`ensure_impact`); the
    policy denies an activation without one, and asks for a reason when it changes too much."""
    version = get_version(session, revision)
    _warn_if_altered(version)
    active = current(session, ACTIVE)
    report = None
    if active is not None and active.id != version.id:
        report = latest_impact(session, version.revision, active.revision)
    impact = (
        {
            "report_id": report.id,
            "changed_share": report.changed_share,
            "sample_size": report.sample_size,
            "allow_to_deny": report.allow_to_deny,
            "deny_to_allow": report.deny_to_allow,
        }
        if report is not None
        else None
    )
    text = (reason or "").strip() or None

    def switch(db: Session, _params: dict[str, Any]) -> str | None:
        previous = _switch(db, version, actor)
        db.add(
            PolicyActivation(
                revision=version.revision,
                previous_revision=previous.revision if previous else None,
                kind="bootstrap" if bootstrap else "activate",
                actor_id=actor.id,
                reason=text,
                impact_report_id=report.id if report else None,
                changed_share=report.changed_share if report else None,
                created_at=utcnow(),
            )
        )
        db.flush()
        return previous.revision if previous else None

    outcome = gateway.decide(
        session,
        Action(
            type=actions.ACTIVATE,
            actor=actor,
            target=Target("policy", version.revision),
            params={"revision": version.revision, "reason": text, "bootstrap": bootstrap},
        ),
        state=_state(session, toolchain, version=version_facts(version), impact=impact),
        caller=actor,
        execute=switch,
    )
    _link_decision(session, outcome, version.revision)
    return outcome


def rollback(
    session: Session, gateway: Gateway, toolchain: Toolchain, actor: Actor, *, reason: str | None = None
) -> Outcome:
    """Retire the active version and activate the one that was active before it."""
    active = current(session, ACTIVE)
    if active is None:
        raise Problem(
            409, "Conflict", "no policy version is active; there is nothing to roll back", type_="no-active-version"
        )
    target_revision = rollback_target(session)
    target = find_version(session, target_revision) if target_revision else None
    if target is not None:
        _warn_if_altered(target)
    text = (reason or "").strip() or None

    def switch(db: Session, _params: dict[str, Any]) -> str:
        assert target is not None  # the policy denies a rollback without a target
        _set_status(active, RETIRED)
        _set_status(target, ACTIVE)
        target.activated_at = utcnow()
        target.activated_by = actor.id
        db.add(
            PolicyActivation(
                revision=target.revision,
                previous_revision=active.revision,
                kind="rollback",
                actor_id=actor.id,
                reason=text,
                created_at=utcnow(),
            )
        )
        db.flush()
        return target.revision

    outcome = gateway.decide(
        session,
        Action(
            type=actions.ROLLBACK,
            actor=actor,
            target=Target("policy", active.revision),
            params={"revision": target_revision, "reason": text},
        ),
        state=_state(
            session,
            toolchain,
            rollback_target=target_revision,
            version=version_facts(target) if target is not None else None,
        ),
        caller=actor,
        execute=switch,
    )
    if target_revision:
        _link_decision(session, outcome, target_revision)
    return outcome


def _link_decision(session: Session, outcome: Outcome, revision: str) -> None:
    if outcome.executed:
        latest = session.scalar(
            select(PolicyActivation).where(PolicyActivation.revision == revision).order_by(PolicyActivation.id.desc())
        )
        if latest is not None:
            latest.decision_id = outcome.decision_id
            session.flush()


# -- shadow ------------------------------------------------------------------------------------------
def start_shadow(session: Session, gateway: Gateway, toolchain: Toolchain, actor: Actor, revision: str) -> Outcome:
    """Evaluate live decisions with `revision` too (recorded, never enforced)."""
    version = get_version(session, revision)
    _warn_if_altered(version)

    def start(db: Session, _params: dict[str, Any]) -> str:
        previous = current(db, SHADOW)
        if previous is not None and previous.id != version.id:
            _set_status(previous, DRAFT)
        _set_status(version, SHADOW)
        db.flush()
        return version.revision

    return gateway.decide(
        session,
        Action(actions.SHADOW_START, actor, {"revision": version.revision}, Target("policy", version.revision)),
        state=_state(session, toolchain, version=version_facts(version)),
        caller=actor,
        execute=start,
    )


def stop_shadow(session: Session, gateway: Gateway, toolchain: Toolchain, actor: Actor) -> Outcome:
    shadow = current(session, SHADOW)

    def stop(db: Session, _params: dict[str, Any]) -> str | None:
        if shadow is not None:
            _set_status(shadow, DRAFT)
            db.flush()
        return shadow.revision if shadow else None

    return gateway.decide(
        session,
        Action(
            actions.SHADOW_STOP,
            actor,
            {"revision": shadow.revision if shadow else None},
            Target("policy", shadow.revision if shadow else "-"),
        ),
        state=_state(session, toolchain),
        caller=actor,
        execute=stop,
    )


# -- diff ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileDiff:
    path: str
    change: str  # added | removed | changed | unchanged
    lines: list[str]
    added: int
    removed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "change": self.change,
            "added": self.added,
            "removed": self.removed,
            "diff": "\n".join(self.lines),
        }


def diff_versions(old: PolicyVersion, new: PolicyVersion, *, context: int = 3) -> list[FileDiff]:
    """Per-file unified diff of the sources (Rego, tests and data) of two versions."""
    out: list[FileDiff] = []
    for path in sorted(set(old.sources) | set(new.sources)):
        before, after = old.sources.get(path), new.sources.get(path)
        if before == after:
            out.append(FileDiff(path, "unchanged", [], 0, 0))
            continue
        lines = list(
            difflib.unified_diff(
                (before or "").splitlines(),
                (after or "").splitlines(),
                fromfile=f"{old.revision}/{path}" if before is not None else "/dev/null",
                tofile=f"{new.revision}/{path}" if after is not None else "/dev/null",
                lineterm="",
                n=context,
            )
        )
        added = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
        removed = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
        change = "added" if before is None else "removed" if after is None else "changed"
        out.append(FileDiff(path, change, lines, added, removed))
    return out


# -- sidecar status reports ----------------------------------------------------------------------------
DROP_COUNTER_PREFIXES = ("counter_decision_logs_dropped", "counter_decision_logs_encoding_failure")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    text = value.strip().replace("Z", "+00:00")
    # OPA writes nanoseconds; Python keeps microseconds.
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _counters(metrics: Any) -> tuple[int, int]:
    """(dropped decision-log events, failed uploads) from a status report's metrics."""
    dropped = failed = 0
    provider = metrics.get("prometheus") if isinstance(metrics, dict) else None
    if isinstance(provider, dict):
        for name, value in provider.items():
            if not isinstance(value, int | float):
                continue
            if name.startswith(DROP_COUNTER_PREFIXES):
                dropped += int(value)
            elif name == "counter_decision_logs_chunks_upload_failed":
                failed += int(value)
    return dropped, failed


def record_status(session: Session, partition: str, report: dict[str, Any]) -> SidecarReport:
    """Keep the latest status report of an OPA process; confirm activations it shows running."""
    labels = _obj(report.get("labels"))
    instance = str(labels.get("id") or f"unknown-{partition or 'sidecar'}")[:64]
    sidecar = str(labels.get("sidecar") or partition or PRIMARY)[:64]
    bundles = _obj(report.get("bundles"))
    bundle: dict[str, Any] = next((b for b in bundles.values() if isinstance(b, dict)), {})
    revision = bundle.get("active_revision") or None
    errors = [bundle.get("message")] if bundle.get("code") else []
    errors += [e.get("message") if isinstance(e, dict) else str(e) for e in bundle.get("errors") or []]
    logs = _obj(report.get("decision_logs"))
    dropped, failed = _counters(report.get("metrics"))
    row = session.get(SidecarReport, instance)
    now = utcnow()
    if row is None:
        row = SidecarReport(instance_id=instance, sidecar=sidecar, first_seen_at=now, plugins={})
        session.add(row)
    previous_dropped = row.dropped_events or 0
    row.sidecar = sidecar
    row.opa_version = str(labels.get("version") or "")[:32] or None
    row.active_revision = str(revision)[:80] if revision else None
    row.last_activation = _parse_time(bundle.get("last_successful_activation"))
    row.bundle_error = "; ".join(str(e) for e in errors if e)[:4000] or None
    row.decision_log_error = (str(logs.get("message"))[:4000] if logs.get("code") else None) or None
    row.dropped_events = dropped
    row.upload_failures = failed
    plugins = report.get("plugins")
    row.plugins = json_safe(plugins) if isinstance(plugins, dict) else {}
    row.reported_at = now
    if dropped > previous_dropped:
        log.error(
            "OPA sidecar %s (%s) dropped decision-log events: counter %d (was %d); the decisions table stays complete",
            sidecar,
            instance,
            dropped,
            previous_dropped,
        )
    if sidecar == PRIMARY and revision and not errors:
        pending = session.scalar(
            select(PolicyActivation)
            .where(PolicyActivation.revision == revision, PolicyActivation.confirmed_at.is_(None))
            .order_by(PolicyActivation.id.desc())
            .limit(1)
        )
        if pending is not None:
            seen = row.last_activation or now
            pending.confirmed_at = max(seen, pending.created_at) if seen else now
            pending.confirmed_by = f"{sidecar}:{instance[:8]}"
    session.flush()
    return row


def sidecar_reports(session: Session, *, stale_after: float = 600.0) -> list[SidecarReport]:
    """The latest report of each OPA process seen in the last `stale_after` seconds."""
    since = utcnow().timestamp() - stale_after
    rows = session.scalars(select(SidecarReport).order_by(SidecarReport.sidecar, SidecarReport.reported_at.desc()))
    return [r for r in rows if r.reported_at.timestamp() >= since]


def alerts(session: Session) -> list[dict[str, Any]]:
    """What an admin must look at: dropped decision-log events, failing uploads, bundle errors,
    a sidecar running another revision than the active one."""
    out: list[dict[str, Any]] = []
    active = current(session, ACTIVE)
    shadow = current(session, SHADOW)
    for row in sidecar_reports(session):
        name = f"{row.sidecar} ({row.instance_id[:8]})"
        if row.dropped_events:
            out.append(
                {
                    "code": "decision_logs_dropped",
                    "sidecar": row.sidecar,
                    "message": f"OPA {name} dropped decision-log events ({row.dropped_events} drops counted); "
                    "the server's decision records stay complete, OPA's log is not",
                }
            )
        if row.decision_log_error:
            out.append(
                {
                    "code": "decision_logs_failing",
                    "sidecar": row.sidecar,
                    "message": f"OPA {name}: {row.decision_log_error}",
                }
            )
        idle_shadow = row.sidecar == SHADOW_SIDECAR and shadow is None  # nothing to load: its 404s are expected
        if row.bundle_error and not idle_shadow:
            out.append(
                {"code": "bundle_rejected", "sidecar": row.sidecar, "message": f"OPA {name}: {row.bundle_error}"}
            )
        expected = active if row.sidecar == PRIMARY else shadow if row.sidecar == SHADOW_SIDECAR else None
        if expected is not None and row.active_revision != expected.revision:
            out.append(
                {
                    "code": "revision_mismatch",
                    "sidecar": row.sidecar,
                    "message": f"OPA {name} runs {row.active_revision or 'no bundle'}, not {expected.revision}",
                }
            )
    return out


def enforced_at(session: Session, activation: PolicyActivation) -> datetime | None:
    """When a decision was first evaluated by the activated revision (decision records)."""
    if activation.enforced_at is not None:
        return activation.enforced_at
    first: datetime | None = session.scalar(
        select(func.min(Decision.created_at)).where(
            Decision.created_at >= activation.created_at, Decision.policy_revision == activation.revision
        )
    )
    return first


# -- decision logs -------------------------------------------------------------------------------------
def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(OpaDecisionLog)


def store_decision_logs(session: Session, partition: str, events: list[Any]) -> int:
    """Store a batch of decision-log events, idempotently by decision_id; returns how many were new."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    now = utcnow()
    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("decision_id"), str):
            continue
        decision_id = event["decision_id"][:64]
        if decision_id in seen:
            continue
        seen.add(decision_id)
        labels = _obj(event.get("labels"))
        bundles = _obj(event.get("bundles"))
        revision = next(
            (b.get("revision") for b in bundles.values() if isinstance(b, dict) and b.get("revision")),
            event.get("revision"),
        )
        rows.append(
            {
                "decision_id": decision_id,
                "sidecar": str(labels.get("sidecar") or partition or PRIMARY)[:64],
                "instance_id": str(labels.get("id"))[:64] if labels.get("id") else None,
                "path": str(event.get("path") or event.get("query") or "")[:200],
                "revision": str(revision)[:80] if revision else None,
                "input": event.get("input"),
                "result": event.get("result"),
                "erased": [str(e) for e in event.get("erased") or []],
                "masked": [str(m) for m in event.get("masked") or []],
                "error": event.get("error"),
                "requested_by": str(event.get("requested_by"))[:80] if event.get("requested_by") else None,
                "metrics": event.get("metrics"),
                "timestamp": _parse_time(event.get("timestamp")) or now,
                "received_at": now,
            }
        )
    if not rows:
        return 0
    statement = (
        _insert(session)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["decision_id"])
        .returning(OpaDecisionLog.decision_id)
    )
    return len(session.execute(statement).scalars().all())


def decision_log(session: Session, decision_id: str) -> OpaDecisionLog:
    row = session.get(OpaDecisionLog, decision_id)
    if row is None:
        raise Problem(
            404,
            "Not Found",
            f"no decision-log event {decision_id!r} (not received yet, dropped by OPA, or not a sidecar decision id)",
        )
    return row


def records_for_log(session: Session, decision_id: str, limit: int = 200) -> list[Decision]:
    """The server's records answered by one OPA decision: one for a single query, up to a batch's
    size for a batch query (`Gateway.decide_many`), in the order they were decided."""
    query = (
        select(Decision)
        .where(Decision.opa_decision_id == decision_id)
        .order_by(Decision.created_at, Decision.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def mark_enforced(session: Session) -> None:
    """Fill enforced_at of recent activations from the decision records (first decision whose
    policy_revision is the activated one)."""
    for activation in session.scalars(
        select(PolicyActivation)
        .where(PolicyActivation.enforced_at.is_(None))
        .order_by(PolicyActivation.id.desc())
        .limit(5)
    ):
        first = enforced_at(session, activation)
        if first is not None:
            session.execute(
                update(PolicyActivation).where(PolicyActivation.id == activation.id).values(enforced_at=first)
            )


def prune_decision_logs(db: Database, older_than: datetime, *, batch: int = 5000) -> int:
    """Delete the sidecars' decision-log events stamped before `older_than`, `batch` rows per
    transaction (short write locks), and return how many went. The server's own `decisions` rows
    are the audit record and are never pruned; this only bounds the sidecars' copy."""
    removed = 0
    while True:
        with db.unit_of_work() as uow:
            ids = select(OpaDecisionLog.decision_id).where(OpaDecisionLog.timestamp < older_than).limit(batch)
            result = uow.session.execute(delete(OpaDecisionLog).where(OpaDecisionLog.decision_id.in_(ids)))
            uow.commit()
        count = int(getattr(result, "rowcount", 0) or 0)
        removed += count
        if count < batch:
            return removed


# -- transaction scripts (one unit of work each; slow work first) -------------------------------------
def _side(version: PolicyVersion) -> Any:
    from server.policies.impact import Side

    return Side(version.revision, version.bundle, version.signed)


def run_impact(
    db: Database, toolchain: Toolchain, revision: str, actor_id: str, *, sample: int | None = None
) -> ImpactReport:
    """Replay the last `sample` recorded decisions against `revision` and the active version."""
    from server.policies import impact

    with reading(db) as session:
        candidate = get_version(session, revision)
        active = current(session, ACTIVE)
        candidate_side = _side(candidate)
        baseline_side = _side(active) if active is not None and active.id != candidate.id else None
        if not is_intact(candidate):
            raise Problem(
                409,
                "Bundle altered",
                f"the stored bundle of {revision} does not match its SHA-256",
                type_="bundle-altered",
            )
    try:
        return impact.analyse(
            db,
            toolchain.opa_bin,
            candidate_side,
            baseline_side,
            sample=sample or toolchain.impact_sample,
            actor_id=actor_id,
            verification_key=toolchain.verification_key,
        )
    except Exception as exc:  # OPA refused the bundle (e.g. its signature), or could not start
        from server.policy.sidecar import SidecarError

        if isinstance(exc, SidecarError):
            raise Problem(422, "Impact analysis failed", str(exc)[-2000:], type_="impact-failed") from exc
        raise


def ensure_impact(db: Database, toolchain: Toolchain, revision: str, actor_id: str) -> ImpactReport | None:
    """The latest impact report of `revision` against the active version, run now when missing
    (None when nothing is active, or `revision` is the active version)."""
    with reading(db) as session:
        candidate = get_version(session, revision)
        active = current(session, ACTIVE)
        if active is None or active.id == candidate.id:
            return None
        report = latest_impact(session, candidate.revision, active.revision)
        if report is not None:
            session.expunge(report)
            return report
    return run_impact(db, toolchain, revision, actor_id)


def publish_candidate(
    db: Database,
    gateway: Gateway,
    toolchain: Toolchain,
    actor: Actor,
    candidate: Candidate,
    *,
    message: str | None = None,
    source: str = "tree",
    bootstrap: bool = False,
) -> tuple[Outcome, PolicyVersion | None]:
    with db.unit_of_work() as uow:
        outcome, version = publish(
            uow.session, gateway, toolchain, actor, candidate, message=message, source=source, bootstrap=bootstrap
        )
        uow.commit()
    return outcome, version


def activate_version(
    db: Database, gateway: Gateway, toolchain: Toolchain, actor: Actor, revision: str, *, reason: str | None = None
) -> Outcome:
    with reading(db) as session:
        version = get_version(session, revision)
        ready = version.validated and version.status not in (ACTIVE, RETIRED) and is_intact(version)
    if ready:  # an activation the policy would refuse anyway needs no replay first
        ensure_impact(db, toolchain, revision, actor.id)
    with db.unit_of_work() as uow:
        outcome = activate(uow.session, gateway, toolchain, actor, revision, reason=reason)
        uow.commit()
    return outcome


def rollback_version(
    db: Database, gateway: Gateway, toolchain: Toolchain, actor: Actor, *, reason: str | None = None
) -> Outcome:
    with db.unit_of_work() as uow:
        outcome = rollback(uow.session, gateway, toolchain, actor, reason=reason)
        uow.commit()
    return outcome


def start_shadow_version(db: Database, gateway: Gateway, toolchain: Toolchain, actor: Actor, revision: str) -> Outcome:
    with db.unit_of_work() as uow:
        outcome = start_shadow(uow.session, gateway, toolchain, actor, revision)
        uow.commit()
    return outcome


def stop_shadow_version(db: Database, gateway: Gateway, toolchain: Toolchain, actor: Actor) -> Outcome:
    with db.unit_of_work() as uow:
        outcome = stop_shadow(uow.session, gateway, toolchain, actor)
        uow.commit()
    return outcome


def overview(session: Session) -> dict[str, Any]:
    """The state an admin looks at first: active and shadow versions, rollback target, the
    sidecars and what each runs, alerts, recent activations with their confirmation times."""
    mark_enforced(session)
    active, shadow = current(session, ACTIVE), current(session, SHADOW)
    return {
        "active": active.to_dict() if active else None,
        "shadow": shadow.to_dict() if shadow else None,
        "rollback_target": rollback_target(session),
        "sidecars": [r.to_dict() for r in sidecar_reports(session)],
        "alerts": alerts(session),
        "activations": [a.to_dict() for a in activation_history(session, 10)],
    }
