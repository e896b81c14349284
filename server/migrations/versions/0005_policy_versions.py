"""policy lifecycle: versions, activations, impact reports, shadow results, sidecar status
reports, OPA decision-log events; decisions.opa_decision_id

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import server.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = server.db.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "policy_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("revision", sa.String(length=80), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("bundle", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("signed", sa.Boolean(), nullable=False),
        sa.Column("author", sa.String(length=128), nullable=False),
        sa.Column("author_name", sa.String(length=254), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("git_commit", sa.String(length=40), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("built_at", UTC, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("check_ok", sa.Boolean(), nullable=False),
        sa.Column("check_output", sa.Text(), nullable=False),
        sa.Column("tests_passed", sa.Integer(), nullable=False),
        sa.Column("tests_failed", sa.Integer(), nullable=False),
        sa.Column("test_failures", sa.JSON(), nullable=False),
        sa.Column("coverage", sa.Float(), nullable=True),
        sa.Column("coverage_threshold", sa.Float(), nullable=False),
        sa.Column("sources", sa.JSON(), nullable=False),
        sa.Column("status_changed_at", UTC, nullable=False),
        sa.Column("activated_at", UTC, nullable=True),
        sa.Column("activated_by", sa.String(length=128), nullable=True),
        sa.Column("publish_decision_id", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_versions")),
        sa.UniqueConstraint("revision", name=op.f("uq_policy_versions_revision")),
    )
    op.create_index(op.f("ix_policy_versions_status"), "policy_versions", ["status"], unique=False)

    op.create_table(
        "policy_activations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("revision", sa.String(length=80), nullable=False),
        sa.Column("previous_revision", sa.String(length=80), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("actor_id", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("impact_report_id", sa.Integer(), nullable=True),
        sa.Column("changed_share", sa.Float(), nullable=True),
        sa.Column("decision_id", sa.String(length=40), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("confirmed_at", UTC, nullable=True),
        sa.Column("confirmed_by", sa.String(length=64), nullable=True),
        sa.Column("enforced_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_activations")),
    )
    op.create_index(op.f("ix_policy_activations_created_at"), "policy_activations", ["created_at"], unique=False)
    op.create_index(op.f("ix_policy_activations_revision"), "policy_activations", ["revision"], unique=False)

    op.create_table(
        "policy_impact_reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("candidate_revision", sa.String(length=80), nullable=False),
        sa.Column("baseline_revision", sa.String(length=80), nullable=True),
        sa.Column("sample_requested", sa.Integer(), nullable=False),
        sa.Column("sample_size", sa.Integer(), nullable=False),
        sa.Column("baseline_replayed", sa.Integer(), nullable=False),
        sa.Column("allow_to_deny", sa.Integer(), nullable=False),
        sa.Column("deny_to_allow", sa.Integer(), nullable=False),
        sa.Column("other_changes", sa.Integer(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("changed_share", sa.Float(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_impact_reports")),
    )
    op.create_index(
        op.f("ix_policy_impact_reports_candidate_revision"), "policy_impact_reports", ["candidate_revision"]
    )

    op.create_table(
        "policy_shadow_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("decision_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("action_type", sa.String(length=64), nullable=False),
        sa.Column("active_revision", sa.String(length=80), nullable=True),
        sa.Column("shadow_revision", sa.String(length=80), nullable=False),
        sa.Column("active_allow", sa.Boolean(), nullable=False),
        sa.Column("shadow_allow", sa.Boolean(), nullable=True),
        sa.Column("agree", sa.Boolean(), nullable=False),
        sa.Column("active_reasons", sa.JSON(), nullable=False),
        sa.Column("shadow_reasons", sa.JSON(), nullable=False),
        sa.Column("shadow_result", sa.JSON(), nullable=True),
        sa.Column("error", sa.String(length=40), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_shadow_results")),
    )
    op.create_index(op.f("ix_policy_shadow_results_decision_id"), "policy_shadow_results", ["decision_id"])
    op.create_index(
        "ix_policy_shadow_results_revision_time", "policy_shadow_results", ["shadow_revision", "created_at"]
    )

    op.create_table(
        "policy_sidecars",
        sa.Column("instance_id", sa.String(length=64), nullable=False),
        sa.Column("sidecar", sa.String(length=64), nullable=False),
        sa.Column("opa_version", sa.String(length=32), nullable=True),
        sa.Column("active_revision", sa.String(length=80), nullable=True),
        sa.Column("last_activation", UTC, nullable=True),
        sa.Column("bundle_error", sa.Text(), nullable=True),
        sa.Column("decision_log_error", sa.Text(), nullable=True),
        sa.Column("dropped_events", sa.Integer(), nullable=False),
        sa.Column("upload_failures", sa.Integer(), nullable=False),
        sa.Column("plugins", sa.JSON(), nullable=False),
        sa.Column("first_seen_at", UTC, nullable=False),
        sa.Column("reported_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("instance_id", name=op.f("pk_policy_sidecars")),
    )
    op.create_index(op.f("ix_policy_sidecars_sidecar"), "policy_sidecars", ["sidecar"])

    op.create_table(
        "opa_decision_logs",
        sa.Column("decision_id", sa.String(length=64), nullable=False),
        sa.Column("sidecar", sa.String(length=64), nullable=False),
        sa.Column("instance_id", sa.String(length=64), nullable=True),
        sa.Column("path", sa.String(length=200), nullable=False),
        sa.Column("revision", sa.String(length=80), nullable=True),
        sa.Column("input", sa.JSON(), nullable=True),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("erased", sa.JSON(), nullable=False),
        sa.Column("masked", sa.JSON(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("requested_by", sa.String(length=80), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("timestamp", UTC, nullable=False),
        sa.Column("received_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("decision_id", name=op.f("pk_opa_decision_logs")),
    )
    op.create_index(op.f("ix_opa_decision_logs_path"), "opa_decision_logs", ["path"])
    op.create_index(op.f("ix_opa_decision_logs_revision"), "opa_decision_logs", ["revision"])
    op.create_index(op.f("ix_opa_decision_logs_timestamp"), "opa_decision_logs", ["timestamp"])

    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("opa_decision_id", sa.String(length=64), nullable=True))
        batch.create_index(batch.f("ix_decisions_opa_decision_id"), ["opa_decision_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_index(batch.f("ix_decisions_opa_decision_id"))
        batch.drop_column("opa_decision_id")
    op.drop_index(op.f("ix_opa_decision_logs_timestamp"), table_name="opa_decision_logs")
    op.drop_index(op.f("ix_opa_decision_logs_revision"), table_name="opa_decision_logs")
    op.drop_index(op.f("ix_opa_decision_logs_path"), table_name="opa_decision_logs")
    op.drop_table("opa_decision_logs")
    op.drop_index(op.f("ix_policy_sidecars_sidecar"), table_name="policy_sidecars")
    op.drop_table("policy_sidecars")
    op.drop_index("ix_policy_shadow_results_revision_time", table_name="policy_shadow_results")
    op.drop_index(op.f("ix_policy_shadow_results_decision_id"), table_name="policy_shadow_results")
    op.drop_table("policy_shadow_results")
    op.drop_index(op.f("ix_policy_impact_reports_candidate_revision"), table_name="policy_impact_reports")
    op.drop_table("policy_impact_reports")
    op.drop_index(op.f("ix_policy_activations_revision"), table_name="policy_activations")
    op.drop_index(op.f("ix_policy_activations_created_at"), table_name="policy_activations")
    op.drop_table("policy_activations")
    op.drop_index(op.f("ix_policy_versions_status"), table_name="policy_versions")
    op.drop_table("policy_versions")
