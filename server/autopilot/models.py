"""What each autopilot cycle did: one row per link per allocation cycle and per currency per
budget cycle, with the outcome, the policy's reasons and the algorithm's state for the next
cycle (kept whatever the outcome, so that a denied cycle still advances the discounting)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base, utcnow

KINDS = ("allocation", "budget")
#: Decision outcomes, plus `skipped` (nothing to decide) and `error` (no decision could be asked).
OUTCOMES = ("allowed", "clamped", "denied", "error", "failed", "shadow", "pending_approval", "skipped")


class AutopilotRun(Base):
    __tablename__ = "autopilot_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # allocation | budget
    scope: Mapped[str] = mapped_column(String(80))  # the link id, or "campaigns:<currency>"
    link_id: Mapped[str | None] = mapped_column(String(40))
    algorithm: Mapped[str] = mapped_column(String(40))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime] = mapped_column(default=utcnow)
    outcome: Mapped[str] = mapped_column(String(24))
    reasons: Mapped[list[Any]]
    proposed: Mapped[dict[str, Any]]
    approved: Mapped[dict[str, Any] | None]
    algorithm_state: Mapped[dict[str, Any] | None]
    decision_id: Mapped[str | None] = mapped_column(ForeignKey("decisions.id"))
    allocation_id: Mapped[int | None] = mapped_column(Integer)
    trigger: Mapped[str] = mapped_column(String(16))  # schedule | api | cli | simulator
    triggered_by: Mapped[str | None] = mapped_column(String(128))
    owner: Mapped[str | None] = mapped_column(String(120))
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_autopilot_runs_scope_time", "scope", "started_at"),
        Index("ix_autopilot_runs_time", "started_at"),
    )
