"""financial documents: receipts, invoices, credit notes and their email deliveries

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 04:00:00

Issued documents are immutable: on PostgreSQL a trigger refuses UPDATE and DELETE on
financial_documents (a mistake is corrected by a credit note); on SQLite the ORM refuses them
(billing/models.py). Numbers come from document_sequences, one row per series and year.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IMMUTABLE_FUNCTION = """
CREATE OR REPLACE FUNCTION financial_documents_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'issued documents are immutable: % on % refused (correct a document with a credit note)',
    TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "document_sequences",
        sa.Column("series", sa.String(length=8), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("last_number", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("series", "year", name=op.f("pk_document_sequences")),
    )
    op.create_table(
        "financial_documents",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("series", sa.String(length=8), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("source_key", sa.String(length=200), nullable=False),
        sa.Column("affiliate_id", sa.String(length=40), nullable=True),
        sa.Column("advertiser_id", sa.String(length=40), nullable=True),
        sa.Column("payout_id", sa.String(length=40), nullable=True),
        sa.Column("credits_document_id", sa.String(length=40), nullable=True),
        sa.Column("period_start", sa.Date(), nullable=True),
        sa.Column("period_end", sa.Date(), nullable=True),
        sa.Column("recipient_name", sa.String(length=200), nullable=False),
        sa.Column("recipient_email", sa.String(length=254), nullable=True),
        sa.Column("totals", sa.JSON(), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("html_sha256", sa.String(length=64), nullable=False),
        sa.Column("pdf", sa.LargeBinary(), nullable=False),
        sa.Column("pdf_sha256", sa.String(length=64), nullable=False),
        sa.Column("issued_by", sa.String(length=128), nullable=False),
        sa.Column("issued_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["credits_document_id"],
            ["financial_documents.id"],
            name=op.f("fk_financial_documents_credits_document_id_financial_documents"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_financial_documents")),
        sa.UniqueConstraint("number", name=op.f("uq_financial_documents_number")),
        sa.UniqueConstraint("series", "year", "sequence", name="uq_financial_documents_series_number"),
        sa.UniqueConstraint("source_key", name=op.f("uq_financial_documents_source_key")),
    )
    with op.batch_alter_table("financial_documents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_financial_documents_advertiser_id"), ["advertiser_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_financial_documents_affiliate_id"), ["affiliate_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_financial_documents_issued_at"), ["issued_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_financial_documents_kind"), ["kind"], unique=False)

    op.create_table(
        "document_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.String(length=40), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(length=254), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("attempt_id", sa.String(length=40), nullable=True),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("next_attempt_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("claimed_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("sent_at", server.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("requested_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", server.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["financial_documents.id"],
            name=op.f("fk_document_deliveries_document_id_financial_documents"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_deliveries")),
        sa.UniqueConstraint("document_id", "generation", name="uq_document_deliveries_generation"),
    )
    with op.batch_alter_table("document_deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_document_deliveries_document_id"), ["document_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_document_deliveries_status"), ["status"], unique=False)

    if op.get_bind().dialect.name == "postgresql":
        op.execute(IMMUTABLE_FUNCTION)
        op.execute(
            "CREATE TRIGGER financial_documents_immutable BEFORE UPDATE OR DELETE ON financial_documents "
            "FOR EACH ROW EXECUTE FUNCTION financial_documents_immutable()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS financial_documents_immutable ON financial_documents")
        op.execute("DROP FUNCTION IF EXISTS financial_documents_immutable()")
    with op.batch_alter_table("document_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_document_deliveries_status"))
        batch_op.drop_index(batch_op.f("ix_document_deliveries_document_id"))
    op.drop_table("document_deliveries")
    with op.batch_alter_table("financial_documents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_financial_documents_kind"))
        batch_op.drop_index(batch_op.f("ix_financial_documents_issued_at"))
        batch_op.drop_index(batch_op.f("ix_financial_documents_affiliate_id"))
        batch_op.drop_index(batch_op.f("ix_financial_documents_advertiser_id"))
    op.drop_table("financial_documents")
    op.drop_table("document_sequences")
