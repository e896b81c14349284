"""decisions by target

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 03:30:00

The link and offer pages list the latest decisions about their target; without this index that is
a scan of the whole decisions table, which grows by every governed action.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_decisions_target_time", "decisions", ["target_kind", "target_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_decisions_target_time", table_name="decisions")
