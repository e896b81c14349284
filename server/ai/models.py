"""What the AI supervisor records: its controls and circuit breaker (one row, shared by every
process), the periods it spent in each mode, every cycle (model, prompt, response, tokens, latency,
cost) and every proposal with the governance decision that judged it and what became of it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, utcnow

#: The mode a cycle runs in: the model proposes, or the rule-based supervisor does (degraded).
MODES = ("model", "degraded")
#: Periods also record when the supervisor was switched off.
PERIOD_MODES = (*MODES, "disabled")
CIRCUIT_STATES = ("closed", "open", "half_open")
#: What became of a proposal.
PROPOSAL_STATUSES = (
    "invalid",  # the validator refused it (recorded as a denied `ai.invalid` decision)
    "denied",  # the policy refused it
    "error",  # the policy could not be asked (OPA down): a deny
    "shadow",  # shadow mode: recorded, not executed
    "pending_approval",  # allowed with require_approval: waits for a person
    "executed",  # allowed and executed
    "approved",  # approved by a person (re-checked by policy) and executed
    "failed",  # allowed, but executing it raised or the operation's own policy refused it
    "rejected",  # a person rejected it
    "undone",  # executed, then undone by a person
)


class AiSupervisorState(Base):
    """The supervisor's switches and circuit breaker: a single row (id 1), in the database so that
    every process (web workers, scheduler, CLI) sees the same state."""

    __tablename__ = "ai_supervisor_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    forced_degraded: Mapped[bool] = mapped_column(Boolean, default=False)
    control_reason: Mapped[str | None] = mapped_column(Text)
    control_by: Mapped[str | None] = mapped_column(String(128))
    control_at: Mapped[datetime | None]
    circuit_state: Mapped[str] = mapped_column(String(16), default="closed")
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    circuit_opened_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_cycle_at: Mapped[datetime | None]


class AiModePeriod(Base):
    """A stretch of time the supervisor spent in one mode; the open one has no `ended_at`."""

    __tablename__ = "ai_mode_periods"

    id: Mapped[int] = mapped_column(primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))  # model | degraded | disabled
    reason: Mapped[str] = mapped_column(String(40))
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    ended_at: Mapped[datetime | None]
    alert_id: Mapped[str | None] = mapped_column(String(40))


class AiPrompt(Base):
    """A prompt sent to the model, stored once by its SHA-256 (cycles refer to it)."""

    __tablename__ = "ai_prompts"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AiCycle(Base):
    """One supervisor cycle: the mode, the model call (or why there was none) and its cost."""

    __tablename__ = "ai_cycles"

    id: Mapped[int] = mapped_column(primary_key=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    trigger: Mapped[str] = mapped_column(String(16))  # schedule | cli | api | test
    owner: Mapped[str | None] = mapped_column(String(120))
    mode: Mapped[str] = mapped_column(String(16))  # model | degraded
    degraded_reason: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(24))  # ok | malformed | error | skipped
    error_kind: Mapped[str | None] = mapped_column(String(40))
    error: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(100))
    prompt_sha256: Mapped[str | None] = mapped_column(ForeignKey("ai_prompts.sha256"))
    response: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    cost: Mapped[float] = mapped_column(Float, default=0.0)  # estimated, in the price settings' currency
    proposals: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index("ix_ai_cycles_time", "started_at"),)


class AiProposal(Base):
    """One action the supervisor proposed, the decision that judged it and what became of it."""

    __tablename__ = "ai_proposals"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    cycle_id: Mapped[int] = mapped_column(ForeignKey("ai_cycles.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)  # position in the model's answer
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(16))  # model | rules
    mode: Mapped[str] = mapped_column(String(16))  # the mode in force: model | degraded
    action_type: Mapped[str] = mapped_column(String(64))  # the registered type, or ai.invalid
    proposed_type: Mapped[str] = mapped_column(String(64))  # what the model asked for, as given
    target_kind: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(128))
    params: Mapped[dict[str, Any]]
    rationale: Mapped[str] = mapped_column(Text, default="")
    raw: Mapped[Any] = mapped_column(JSON, nullable=True)  # the item as the model gave it
    validation_errors: Mapped[list[Any]]
    status: Mapped[str] = mapped_column(String(24))
    decision_id: Mapped[str | None] = mapped_column(ForeignKey("decisions.id"))
    outcome: Mapped[str | None] = mapped_column(String(24))  # the decision's outcome
    reasons: Mapped[list[Any]]
    executed: Mapped[bool] = mapped_column(Boolean, default=False)
    executed_at: Mapped[datetime | None]
    before: Mapped[dict[str, Any] | None]  # what execution changed, for undo
    kpi_links: Mapped[list[Any]]  # the links whose KPIs the action targets
    kpi_before: Mapped[dict[str, Any] | None]
    reviewed_by: Mapped[str | None] = mapped_column(String(128))
    reviewed_at: Mapped[datetime | None]
    review_reason: Mapped[str | None] = mapped_column(Text)
    approval_decision_id: Mapped[str | None] = mapped_column(String(40))
    undo_decision_id: Mapped[str | None] = mapped_column(String(40))
    undone_by: Mapped[str | None] = mapped_column(String(128))
    undone_at: Mapped[datetime | None]
    undo_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_ai_proposals_time", "created_at"),
        Index("ix_ai_proposals_status", "status", "created_at"),
        Index("ix_ai_proposals_type_time", "action_type", "created_at"),
    )
