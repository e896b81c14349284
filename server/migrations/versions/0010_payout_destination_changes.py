"""payout destination changes: when, by whom, self-service or not

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 04:10:00

The payouts policy holds a destination the affiliate changed through the portal for
`payouts.destination_change_hold_hours` (bundle data); existing profiles have no recorded change.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payout_profiles") as batch:
        batch.add_column(sa.Column("destination_changed_at", server.db.UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("destination_changed_by", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("destination_self_service", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("payout_profiles") as batch:
        batch.drop_column("destination_self_service")
        batch.drop_column("destination_changed_by")
        batch.drop_column("destination_changed_at")
