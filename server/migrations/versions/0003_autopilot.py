"""autopilot runs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 01:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "autopilot_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("link_id", sa.String(length=40), nullable=True),
        sa.Column("algorithm", sa.String(length=40), nullable=False),
        sa.Column("started_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=24), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("proposed", sa.JSON(), nullable=False),
        sa.Column("approved", sa.JSON(), nullable=True),
        sa.Column("algorithm_state", sa.JSON(), nullable=True),
        sa.Column("decision_id", sa.String(length=40), nullable=True),
        sa.Column("allocation_id", sa.Integer(), nullable=True),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("triggered_by", sa.String(length=128), nullable=True),
        sa.Column("owner", sa.String(length=120), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decisions.id"], name=op.f("fk_autopilot_runs_decision_id_decisions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_autopilot_runs")),
    )
    with op.batch_alter_table("autopilot_runs", schema=None) as batch_op:
        batch_op.create_index("ix_autopilot_runs_scope_time", ["scope", "started_at"], unique=False)
        batch_op.create_index("ix_autopilot_runs_time", ["started_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("autopilot_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_autopilot_runs_time")
        batch_op.drop_index("ix_autopilot_runs_scope_time")
    op.drop_table("autopilot_runs")
