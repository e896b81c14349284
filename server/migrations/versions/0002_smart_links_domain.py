"""smart links domain

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 00:53:09.779389
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "advertisers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_advertisers")),
    )
    op.create_table(
        "affiliates",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_affiliates")),
    )
    op.create_table(
        "arm_stats",
        sa.Column("link_id", sa.String(length=40), nullable=False),
        sa.Column("offer_id", sa.String(length=40), nullable=False),
        sa.Column("hour", sa.Integer(), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.Column("bot_clicks", sa.Integer(), nullable=False),
        sa.Column("conversions", sa.Integer(), nullable=False),
        sa.Column("revenue", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.PrimaryKeyConstraint("link_id", "offer_id", "hour", name=op.f("pk_arm_stats")),
    )
    op.create_table(
        "clicks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("link_id", sa.String(length=40), nullable=False),
        sa.Column("offer_id", sa.String(length=40), nullable=True),
        sa.Column("allocation_id", sa.Integer(), nullable=True),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("is_fallback", sa.Boolean(), nullable=False),
        sa.Column("is_bot", sa.Boolean(), nullable=False),
        sa.Column("bot_reason", sa.String(length=32), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("device", sa.String(length=16), nullable=True),
        sa.Column("ip_hash", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.Column("subs", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clicks")),
    )
    with op.batch_alter_table("clicks", schema=None) as batch_op:
        batch_op.create_index("ix_clicks_link_time", ["link_id", "created_at"], unique=False)

    op.create_table(
        "job_leases",
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("owner", sa.String(length=120), nullable=False),
        sa.Column("expires_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_leases")),
    )
    op.create_table(
        "traffic_sources",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("cost_model", sa.String(length=8), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_traffic_sources")),
    )
    op.create_table(
        "conversions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("click_id", sa.String(length=32), nullable=False),
        sa.Column("txid", sa.String(length=128), nullable=False),
        sa.Column("link_id", sa.String(length=40), nullable=False),
        sa.Column("offer_id", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("booked_entry_id", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(["click_id"], ["clicks.id"], name=op.f("fk_conversions_click_id_clicks")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversions")),
        sa.UniqueConstraint("click_id", "txid", name="uq_conversions_click_txid"),
    )
    with op.batch_alter_table("conversions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_conversions_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_conversions_link_id"), ["link_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_conversions_offer_id"), ["offer_id"], unique=False)

    op.create_table(
        "offers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("advertiser_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("url_template", sa.Text(), nullable=False),
        sa.Column("payout", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("daily_cap", sa.Integer(), nullable=True),
        sa.Column("countries", sa.JSON(), nullable=False),
        sa.Column("devices", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["advertiser_id"], ["advertisers.id"], name=op.f("fk_offers_advertiser_id_advertisers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_offers")),
    )
    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_offers_advertiser_id"), ["advertiser_id"], unique=False)

    op.create_table(
        "smart_links",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("affiliate_id", sa.String(length=40), nullable=False),
        sa.Column("algorithm", sa.String(length=40), nullable=False),
        sa.Column("algorithm_params", sa.JSON(), nullable=False),
        sa.Column("fallback_offer_id", sa.String(length=40), nullable=True),
        sa.Column("commission_rate", sa.Numeric(precision=6, scale=4), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("current_allocation_id", sa.Integer(), nullable=True),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["affiliate_id"], ["affiliates.id"], name=op.f("fk_smart_links_affiliate_id_affiliates")
        ),
        sa.ForeignKeyConstraint(
            ["fallback_offer_id"], ["offers.id"], name=op.f("fk_smart_links_fallback_offer_id_offers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_smart_links")),
        sa.UniqueConstraint("slug", name=op.f("uq_smart_links_slug")),
    )
    with op.batch_alter_table("smart_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_smart_links_affiliate_id"), ["affiliate_id"], unique=False)

    op.create_table(
        "allocations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("link_id", sa.String(length=40), nullable=False),
        sa.Column("weights", sa.JSON(), nullable=False),
        sa.Column("algorithm", sa.String(length=40), nullable=False),
        sa.Column("algorithm_version", sa.String(length=20), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("decision_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["decision_id"], ["decisions.id"], name=op.f("fk_allocations_decision_id_decisions")),
        sa.ForeignKeyConstraint(
            ["link_id"], ["smart_links.id"], name=op.f("fk_allocations_link_id_smart_links"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_allocations")),
    )
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.create_index("ix_allocations_link_time", ["link_id", "created_at"], unique=False)
    # smart_links and allocations reference each other: the link's FK comes once both exist.
    with op.batch_alter_table("smart_links", schema=None) as batch_op:
        batch_op.create_foreign_key(
            "fk_smart_links_current_allocation", "allocations", ["current_allocation_id"], ["id"]
        )

    op.create_table(
        "campaigns",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("traffic_source_id", sa.String(length=40), nullable=False),
        sa.Column("link_id", sa.String(length=40), nullable=True),
        sa.Column("daily_budget", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("daily_cap", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["link_id"], ["smart_links.id"], name=op.f("fk_campaigns_link_id_smart_links")),
        sa.ForeignKeyConstraint(
            ["traffic_source_id"], ["traffic_sources.id"], name=op.f("fk_campaigns_traffic_source_id_traffic_sources")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
    )
    op.create_table(
        "link_arms",
        sa.Column("link_id", sa.String(length=40), nullable=False),
        sa.Column("offer_id", sa.String(length=40), nullable=False),
        sa.Column("added_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["link_id"], ["smart_links.id"], name=op.f("fk_link_arms_link_id_smart_links"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["offer_id"], ["offers.id"], name=op.f("fk_link_arms_offer_id_offers")),
        sa.PrimaryKeyConstraint("link_id", "offer_id", name=op.f("pk_link_arms")),
    )
    op.create_table(
        "campaign_costs",
        sa.Column("campaign_id", sa.String(length=40), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=18, scale=4), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.Column("imported_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["campaign_id"], ["campaigns.id"], name=op.f("fk_campaign_costs_campaign_id_campaigns"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("campaign_id", "day", name=op.f("pk_campaign_costs")),
    )


def downgrade() -> None:
    op.drop_table("campaign_costs")
    op.drop_table("link_arms")
    op.drop_table("campaigns")
    with op.batch_alter_table("smart_links", schema=None) as batch_op:
        batch_op.drop_constraint("fk_smart_links_current_allocation", type_="foreignkey")
    with op.batch_alter_table("allocations", schema=None) as batch_op:
        batch_op.drop_index("ix_allocations_link_time")

    op.drop_table("allocations")
    with op.batch_alter_table("smart_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_smart_links_affiliate_id"))

    op.drop_table("smart_links")
    with op.batch_alter_table("offers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_offers_advertiser_id"))

    op.drop_table("offers")
    with op.batch_alter_table("conversions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_conversions_offer_id"))
        batch_op.drop_index(batch_op.f("ix_conversions_link_id"))
        batch_op.drop_index(batch_op.f("ix_conversions_created_at"))

    op.drop_table("conversions")
    op.drop_table("traffic_sources")
    op.drop_table("job_leases")
    with op.batch_alter_table("clicks", schema=None) as batch_op:
        batch_op.drop_index("ix_clicks_link_time")

    op.drop_table("clicks")
    op.drop_table("arm_stats")
    op.drop_table("affiliates")
    op.drop_table("advertisers")
