"""Per-referral Temporal payload keys, destroyed by the purge (nothing left links back).

Revision ID: 0009_unlinkable_purge
Revises: 0007_audit_witness
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_unlinkable_purge"
down_revision = "0008_retention_deadlines"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "referral_payload_key",
        sa.Column("referral_id", sa.Uuid(), nullable=False),
        sa.Column("wrapping_key_id", sa.String(length=64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("referral_id"),
    )


def downgrade() -> None:
    op.drop_table("referral_payload_key")
