"""portal: users linked to their affiliate / advertiser, invitations, terms acceptances

A portal user (role affiliate or advertiser) belongs to exactly one business entity of its kind
and staff belong to none (check constraint ck_users_portal_entity). Before this revision a
portal-role user could only log in and see nothing; such an account has no entity that the
migration could guess, so the upgrade refuses, naming them, and an operator changes their role or
deletes them first. The downgrade keeps portal users (without their entity, as before 0008).

Terms acceptances are append-only: on PostgreSQL a trigger refuses UPDATE and DELETE; on SQLite
the ORM refuses them (server/portal/models.py).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 03:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PORTAL_ENTITY_RULE = (
    "(role = 'affiliate' AND affiliate_id IS NOT NULL AND advertiser_id IS NULL)"
    " OR (role = 'advertiser' AND advertiser_id IS NOT NULL AND affiliate_id IS NULL)"
    " OR (role NOT IN ('affiliate', 'advertiser') AND affiliate_id IS NULL AND advertiser_id IS NULL)"
)
ONE_ENTITY = "(affiliate_id IS NULL) <> (advertiser_id IS NULL)"
APPEND_ONLY_FUNCTION = """
CREATE OR REPLACE FUNCTION terms_acceptances_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'terms acceptances are append-only: % refused', TG_OP USING ERRCODE = 'restrict_violation';
END
$$
"""


def upgrade() -> None:
    orphans = (
        op.get_bind()
        .execute(sa.text("SELECT email FROM users WHERE role IN ('affiliate', 'advertiser') ORDER BY email"))
        .scalars()
        .all()
    )
    if orphans:
        raise RuntimeError(
            "these portal-role users have no affiliate or advertiser to belong to; change their role "
            f"or delete them, then upgrade again: {', '.join(orphans)}"
        )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("affiliate_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("advertiser_id", sa.String(length=40), nullable=True))
        batch_op.create_index(batch_op.f("ix_users_affiliate_id"), ["affiliate_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_users_advertiser_id"), ["advertiser_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_users_affiliate_id_affiliates"), "affiliates", ["affiliate_id"], ["id"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_users_advertiser_id_advertisers"), "advertisers", ["advertiser_id"], ["id"]
        )
        batch_op.create_check_constraint(batch_op.f("ck_users_portal_entity"), PORTAL_ENTITY_RULE)

    op.create_table(
        "portal_invitations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=False),
        sa.Column("affiliate_id", sa.String(length=40), nullable=True),
        sa.Column("advertiser_id", sa.String(length=40), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("accepted_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(ONE_ENTITY, name=op.f("ck_portal_invitations_one_entity")),
        sa.ForeignKeyConstraint(
            ["advertiser_id"], ["advertisers.id"], name=op.f("fk_portal_invitations_advertiser_id_advertisers")
        ),
        sa.ForeignKeyConstraint(
            ["affiliate_id"], ["affiliates.id"], name=op.f("fk_portal_invitations_affiliate_id_affiliates")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_portal_invitations_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_portal_invitations")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_portal_invitations_token_hash")),
    )
    with op.batch_alter_table("portal_invitations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_portal_invitations_email"), ["email"], unique=False)
        batch_op.create_index(batch_op.f("ix_portal_invitations_affiliate_id"), ["affiliate_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_portal_invitations_advertiser_id"), ["advertiser_id"], unique=False)

    op.create_table(
        "terms_acceptances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("affiliate_id", sa.String(length=40), nullable=True),
        sa.Column("advertiser_id", sa.String(length=40), nullable=True),
        sa.Column("document", sa.String(length=40), nullable=False),
        sa.Column("version", sa.String(length=20), nullable=False),
        sa.Column("text_sha256", sa.String(length=64), nullable=False),
        sa.Column("accepted_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("client_hash", sa.String(length=64), nullable=False),
        sa.Column("user_agent", sa.String(length=512), nullable=False),
        sa.CheckConstraint(ONE_ENTITY, name=op.f("ck_terms_acceptances_one_entity")),
        sa.ForeignKeyConstraint(
            ["advertiser_id"], ["advertisers.id"], name=op.f("fk_terms_acceptances_advertiser_id_advertisers")
        ),
        sa.ForeignKeyConstraint(
            ["affiliate_id"], ["affiliates.id"], name=op.f("fk_terms_acceptances_affiliate_id_affiliates")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_terms_acceptances_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_terms_acceptances")),
        sa.UniqueConstraint("user_id", "document", "version", name="uq_terms_acceptances_user_document_version"),
    )
    with op.batch_alter_table("terms_acceptances", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_terms_acceptances_user_id"), ["user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_terms_acceptances_affiliate_id"), ["affiliate_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_terms_acceptances_advertiser_id"), ["advertiser_id"], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND_ONLY_FUNCTION)
        op.execute(
            "CREATE TRIGGER terms_acceptances_append_only BEFORE UPDATE OR DELETE ON terms_acceptances "
            "FOR EACH ROW EXECUTE FUNCTION terms_acceptances_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS terms_acceptances_append_only ON terms_acceptances")
        op.execute("DROP FUNCTION IF EXISTS terms_acceptances_append_only()")
    with op.batch_alter_table("terms_acceptances", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_terms_acceptances_advertiser_id"))
        batch_op.drop_index(batch_op.f("ix_terms_acceptances_affiliate_id"))
        batch_op.drop_index(batch_op.f("ix_terms_acceptances_user_id"))
    op.drop_table("terms_acceptances")
    with op.batch_alter_table("portal_invitations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_portal_invitations_advertiser_id"))
        batch_op.drop_index(batch_op.f("ix_portal_invitations_affiliate_id"))
        batch_op.drop_index(batch_op.f("ix_portal_invitations_email"))
    op.drop_table("portal_invitations")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_users_portal_entity"), type_="check")
        batch_op.drop_constraint(batch_op.f("fk_users_advertiser_id_advertisers"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_users_affiliate_id_affiliates"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_users_advertiser_id"))
        batch_op.drop_index(batch_op.f("ix_users_affiliate_id"))
        batch_op.drop_column("advertiser_id")
        batch_op.drop_column("affiliate_id")
