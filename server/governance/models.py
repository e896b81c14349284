"""Decision records (the primary audit trail) and runtime controls (kill switches)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, utcnow


class Decision(Base):
    """One answer of the policy engine to one action, allowed, denied or failed."""

    __tablename__ = "decisions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    action_type: Mapped[str] = mapped_column(String(64), index=True)
    actor_id: Mapped[str] = mapped_column(String(128))
    actor_kind: Mapped[str] = mapped_column(String(32))
    caller_id: Mapped[str | None] = mapped_column(String(128))
    target_kind: Mapped[str | None] = mapped_column(String(64))
    target_id: Mapped[str | None] = mapped_column(String(128))
    allow: Mapped[bool] = mapped_column(Boolean, index=True)
    outcome: Mapped[str] = mapped_column(String(24))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    mode: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[list[Any]]
    obligations: Mapped[dict[str, Any]]
    input: Mapped[dict[str, Any]]
    result: Mapped[dict[str, Any] | None]
    policy_revision: Mapped[str | None] = mapped_column(String(80))
    error_code: Mapped[str | None] = mapped_column(String(40))
    latency_ms: Mapped[float] = mapped_column(Float)
    executed: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str | None] = mapped_column(Text)
    # The sidecar's decision_id (set when OPA's decision_logs plugin is on): the link to the event
    # in opa_decision_logs (server/policies).
    opa_decision_id: Mapped[str | None] = mapped_column(String(64), index=True)

    __table_args__ = (
        Index("ix_decisions_actor_time", "actor_id", "created_at"),
        Index("ix_decisions_target_time", "target_kind", "target_id", "created_at"),
    )

    def to_dict(self, *, with_input: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "decision_id": self.id,
            "created_at": self.created_at.isoformat(),
            "action_type": self.action_type,
            "actor": {"id": self.actor_id, "kind": self.actor_kind},
            "caller_id": self.caller_id,
            "target": {"kind": self.target_kind, "id": self.target_id},
            "allow": self.allow,
            "outcome": self.outcome,
            "dry_run": self.dry_run,
            "mode": self.mode,
            "reasons": self.reasons,
            "obligations": self.obligations,
            "policy_revision": self.policy_revision,
            "error_code": self.error_code,
            "latency_ms": round(self.latency_ms, 3),
            "executed": self.executed,
        }
        if with_input:
            out["input"] = self.input
            out["result"] = self.result
            out["opa_decision_id"] = self.opa_decision_id
        return out


class Control(Base):
    """A runtime switch held in the database and passed to every decision (`input.controls`)."""

    __tablename__ = "controls"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    updated_by: Mapped[str | None] = mapped_column(String(128))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ActionCount(Base):
    """Allowed actions per actor in minute and hour buckets: the counts behind the policy's
    per-window rate limits (`input.context.actor_action_counts`)."""

    __tablename__ = "action_counts"

    actor_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    granularity: Mapped[str] = mapped_column(String(1), primary_key=True)
    bucket_start: Mapped[int] = mapped_column(primary_key=True)
    count: Mapped[int] = mapped_column(default=0)
