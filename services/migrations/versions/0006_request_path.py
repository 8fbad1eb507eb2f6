"""One audit entry per access (its outcome and the categories withheld), the start intents
the worker's reconciler drives, and the stored answers of idempotent steps.

Revision ID: 0006_request_path
Revises: 0004_web_session
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0006_request_path"
down_revision = "0005_consent_careteam"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: entries written before keep their hashed fields and still verify.
    # A plain ADD COLUMN: rebuilding the table would trip its append-only triggers.
    op.add_column("audit_entry", sa.Column("outcome", sa.String(length=16), nullable=True))
    op.add_column("audit_entry", sa.Column("withheld", sa.JSON(), nullable=True))
    op.create_table(
        "workflow_start",
        sa.Column("referral_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["referral_id"], ["referral.id"]),
        sa.PrimaryKeyConstraint("referral_id"),
    )
    op.create_index("ix_workflow_start_started_at", "workflow_start", ["started_at"])
    op.create_table(
        "step_answer",
        sa.Column("organisation", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("fingerprint", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("referral_id", sa.Uuid(), nullable=False),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("organisation", "key"),
    )
    op.create_index("ix_step_answer_expires_at", "step_answer", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_step_answer_expires_at", table_name="step_answer")
    op.drop_table("step_answer")
    op.drop_index("ix_workflow_start_started_at", table_name="workflow_start")
    op.drop_table("workflow_start")
    with op.batch_alter_table("audit_entry") as batch:
        batch.drop_column("withheld")
        batch.drop_column("outcome")
