"""Deadlines of every open state in the cooperation framework, and the two retention
clocks of a referral (what the office holds, and the care data), each shredded apart.

Revision ID: 0008_retention_deadlines
Revises: 0007_audit_witness
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_retention_deadlines"
down_revision = "0007_audit_witness"
branch_labels = None
depends_on = None

_FRAMEWORK_COLUMNS = (
    "intake_deadline_days",
    "on_hold_limit_days",
    "max_missed_reports",
    "decision_deadline_days",
)


def upgrade() -> None:
    # Nullable: a framework without its own value runs by the engine's defaults.
    for name in _FRAMEWORK_COLUMNS:
        op.add_column("cooperation_framework", sa.Column(name, sa.Integer(), nullable=True))
    op.add_column("referral", sa.Column("care_purged_at", sa.DateTime(timezone=True)))
    op.add_column("referral", sa.Column("office_purged_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("referral") as batch:
        batch.drop_column("office_purged_at")
        batch.drop_column("care_purged_at")
    with op.batch_alter_table("cooperation_framework") as batch:
        for name in reversed(_FRAMEWORK_COLUMNS):
            batch.drop_column(name)
