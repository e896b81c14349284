"""Policy versions and what happens to them: activations (the history rollback walks), impact
reports, shadow results, the sidecars' status reports and their decision-log events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, utcnow

DRAFT, SHADOW, ACTIVE, RETIRED = "draft", "shadow", "active", "retired"
STATUSES = (DRAFT, SHADOW, ACTIVE, RETIRED)


class PolicyVersion(Base):
    """One bundle built by `opa build` from a Rego tree, with everything known about it.

    The bundle bytes live in the database so that every server process can serve them; the
    sources (Rego, tests and data, as text) are kept for the per-file diff and the playground."""

    __tablename__ = "policy_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    revision: Mapped[str] = mapped_column(String(80), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default=DRAFT)
    sha256: Mapped[str] = mapped_column(String(64))
    bundle: Mapped[bytes] = mapped_column(LargeBinary)
    size: Mapped[int] = mapped_column(Integer)
    signed: Mapped[bool] = mapped_column(Boolean, default=False)
    author: Mapped[str] = mapped_column(String(128))
    author_name: Mapped[str | None] = mapped_column(String(254))
    message: Mapped[str] = mapped_column(Text, default="")
    git_commit: Mapped[str | None] = mapped_column(String(40))
    source: Mapped[str] = mapped_column(String(16), default="tree")  # tree | upload | bootstrap
    built_at: Mapped[datetime] = mapped_column(default=utcnow)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    check_ok: Mapped[bool] = mapped_column(Boolean, default=False)
    check_output: Mapped[str] = mapped_column(Text, default="")
    tests_passed: Mapped[int] = mapped_column(Integer, default=0)
    tests_failed: Mapped[int] = mapped_column(Integer, default=0)
    test_failures: Mapped[list[Any]]
    coverage: Mapped[float | None] = mapped_column(Float)
    coverage_threshold: Mapped[float] = mapped_column(Float)
    sources: Mapped[dict[str, Any]]
    status_changed_at: Mapped[datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[datetime | None]
    activated_by: Mapped[str | None] = mapped_column(String(128))
    publish_decision_id: Mapped[str | None] = mapped_column(String(40))

    @property
    def tests_ok(self) -> bool:
        return self.tests_failed == 0 and self.tests_passed > 0

    @property
    def coverage_ok(self) -> bool:
        return self.coverage is not None and self.coverage >= self.coverage_threshold

    @property
    def validated(self) -> bool:
        """`opa check --strict`, every test and the coverage threshold passed."""
        return self.check_ok and self.tests_ok and self.coverage_ok

    def validation_problems(self) -> list[str]:
        problems: list[str] = []
        if not self.check_ok:
            problems.append("opa check --strict failed")
        if self.tests_failed:
            problems.append(f"{self.tests_failed} test(s) failed")
        elif self.tests_passed == 0:
            problems.append("no test ran")
        if not self.coverage_ok:
            shown = "unknown" if self.coverage is None else f"{self.coverage:.1f}%"
            problems.append(f"coverage {shown} is below the threshold {self.coverage_threshold:g}%")
        return problems

    def to_dict(self, *, with_sources: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "revision": self.revision,
            "status": self.status,
            "sha256": self.sha256,
            "size": self.size,
            "signed": self.signed,
            "author": self.author,
            "author_name": self.author_name,
            "message": self.message,
            "git_commit": self.git_commit,
            "source": self.source,
            "built_at": self.built_at.isoformat(),
            "created_at": self.created_at.isoformat(),
            "activated_at": self.activated_at.isoformat() if self.activated_at else None,
            "activated_by": self.activated_by,
            "validation": {
                "ok": self.validated,
                "problems": self.validation_problems(),
                "check": {"ok": self.check_ok, "output": self.check_output},
                "tests": {
                    "ok": self.tests_ok,
                    "passed": self.tests_passed,
                    "failed": self.tests_failed,
                    "failures": self.test_failures,
                },
                "coverage": {"ok": self.coverage_ok, "value": self.coverage, "threshold": self.coverage_threshold},
            },
            "files": sorted(self.sources),
        }
        if with_sources:
            out["sources"] = self.sources
        return out


class PolicyActivation(Base):
    """A change of the active version: bootstrap, activation or rollback, with who, why, the
    impact it was allowed with, and when OPA confirmed and first enforced it."""

    __tablename__ = "policy_activations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    revision: Mapped[str] = mapped_column(String(80), index=True)
    previous_revision: Mapped[str | None] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(16))  # bootstrap | activate | rollback
    actor_id: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text)
    impact_report_id: Mapped[int | None] = mapped_column(Integer)
    changed_share: Mapped[float | None] = mapped_column(Float)
    decision_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    confirmed_at: Mapped[datetime | None]
    confirmed_by: Mapped[str | None] = mapped_column(String(64))
    enforced_at: Mapped[datetime | None]

    def to_dict(self) -> dict[str, Any]:
        def seconds(later: datetime | None) -> float | None:
            return round((later - self.created_at).total_seconds(), 3) if later else None

        return {
            "id": self.id,
            "revision": self.revision,
            "previous_revision": self.previous_revision,
            "kind": self.kind,
            "actor": self.actor_id,
            "reason": self.reason,
            "impact_report_id": self.impact_report_id,
            "changed_share": self.changed_share,
            "decision_id": self.decision_id,
            "created_at": self.created_at.isoformat(),
            "confirmed_at": self.confirmed_at.isoformat() if self.confirmed_at else None,
            "confirmed_by": self.confirmed_by,
            "seconds_to_confirmation": seconds(self.confirmed_at),
            "enforced_at": self.enforced_at.isoformat() if self.enforced_at else None,
            "seconds_to_enforcement": seconds(self.enforced_at),
        }


class ImpactReport(Base):
    """What a candidate version would change on the last N recorded decisions."""

    __tablename__ = "policy_impact_reports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    candidate_revision: Mapped[str] = mapped_column(String(80), index=True)
    baseline_revision: Mapped[str | None] = mapped_column(String(80))
    sample_requested: Mapped[int] = mapped_column(Integer)
    sample_size: Mapped[int] = mapped_column(Integer, default=0)
    baseline_replayed: Mapped[int] = mapped_column(Integer, default=0)
    allow_to_deny: Mapped[int] = mapped_column(Integer, default=0)
    deny_to_allow: Mapped[int] = mapped_column(Integer, default=0)
    other_changes: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    changed_share: Mapped[float] = mapped_column(Float, default=0.0)
    summary: Mapped[dict[str, Any]]
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "candidate_revision": self.candidate_revision,
            "baseline_revision": self.baseline_revision,
            "sample_requested": self.sample_requested,
            "sample_size": self.sample_size,
            "baseline_replayed": self.baseline_replayed,
            "allow_to_deny": self.allow_to_deny,
            "deny_to_allow": self.deny_to_allow,
            "other_changes": self.other_changes,
            "errors": self.errors,
            "changed_share": self.changed_share,
            "duration_ms": round(self.duration_ms, 1),
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            **self.summary,
        }


class ShadowResult(Base):
    """A live decision evaluated again by the shadow version: recorded, never enforced."""

    __tablename__ = "policy_shadow_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    decision_id: Mapped[str] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    action_type: Mapped[str] = mapped_column(String(64))
    active_revision: Mapped[str | None] = mapped_column(String(80))
    shadow_revision: Mapped[str] = mapped_column(String(80))
    active_allow: Mapped[bool] = mapped_column(Boolean)
    shadow_allow: Mapped[bool | None] = mapped_column(Boolean)
    agree: Mapped[bool] = mapped_column(Boolean)
    active_reasons: Mapped[list[Any]]
    shadow_reasons: Mapped[list[Any]]
    shadow_result: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(String(40))
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)

    __table_args__ = (Index("ix_policy_shadow_results_revision_time", "shadow_revision", "created_at"),)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "decision_id": self.decision_id,
            "created_at": self.created_at.isoformat(),
            "action_type": self.action_type,
            "active_revision": self.active_revision,
            "shadow_revision": self.shadow_revision,
            "active_allow": self.active_allow,
            "shadow_allow": self.shadow_allow,
            "agree": self.agree,
            "active_reasons": self.active_reasons,
            "shadow_reasons": self.shadow_reasons,
            "error": self.error,
            "latency_ms": round(self.latency_ms, 3),
        }


class SidecarReport(Base):
    """The latest status report of one OPA process (keyed by OPA's instance id): which revision
    it runs, its bundle errors, and its decision-log upload health."""

    __tablename__ = "policy_sidecars"

    instance_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sidecar: Mapped[str] = mapped_column(String(64), index=True)
    opa_version: Mapped[str | None] = mapped_column(String(32))
    active_revision: Mapped[str | None] = mapped_column(String(80))
    last_activation: Mapped[datetime | None]
    bundle_error: Mapped[str | None] = mapped_column(Text)
    decision_log_error: Mapped[str | None] = mapped_column(Text)
    dropped_events: Mapped[int] = mapped_column(Integer, default=0)
    upload_failures: Mapped[int] = mapped_column(Integer, default=0)
    plugins: Mapped[dict[str, Any]]
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    reported_at: Mapped[datetime] = mapped_column(default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "sidecar": self.sidecar,
            "opa_version": self.opa_version,
            "active_revision": self.active_revision,
            "last_activation": self.last_activation.isoformat() if self.last_activation else None,
            "bundle_error": self.bundle_error,
            "decision_log_error": self.decision_log_error,
            "dropped_events": self.dropped_events,
            "upload_failures": self.upload_failures,
            "plugins": self.plugins,
            "first_seen_at": self.first_seen_at.isoformat(),
            "reported_at": self.reported_at.isoformat(),
        }


class OpaDecisionLog(Base):
    """One event of a sidecar's decision log, as OPA sent it (already masked by system.log.mask).

    Linked to the server's own record through `decisions.opa_decision_id`; the server's record,
    written in the action's transaction, stays the primary audit record (OPA may drop events)."""

    __tablename__ = "opa_decision_logs"

    decision_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sidecar: Mapped[str] = mapped_column(String(64))
    instance_id: Mapped[str | None] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(200), index=True)
    revision: Mapped[str | None] = mapped_column(String(80), index=True)
    input: Mapped[Any] = mapped_column(JSON, nullable=True)
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    erased: Mapped[list[Any]]
    masked: Mapped[list[Any]]
    error: Mapped[Any] = mapped_column(JSON, nullable=True)
    requested_by: Mapped[str | None] = mapped_column(String(80))
    metrics: Mapped[Any] = mapped_column(JSON, nullable=True)
    timestamp: Mapped[datetime] = mapped_column(index=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision_id": self.decision_id,
            "sidecar": self.sidecar,
            "instance_id": self.instance_id,
            "path": self.path,
            "revision": self.revision,
            "input": self.input,
            "result": self.result,
            "erased": self.erased,
            "masked": self.masked,
            "error": self.error,
            "requested_by": self.requested_by,
            "metrics": self.metrics,
            "timestamp": self.timestamp.isoformat(),
            "received_at": self.received_at.isoformat(),
        }
