"""Wrapped per-referral data keys (envelope encryption, crypto-shredding).

Revision ID: 0003_crypto
Revises: 0002_audit
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_crypto"
down_revision = "0002_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "referral_data_key",
        sa.Column("referral_id", sa.Uuid(), nullable=False),
        sa.Column("kek_version", sa.String(length=64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("referral_id"),
    )
    # rewrap walks live keys of old KEK versions.
    op.create_index(
        "ix_referral_data_key_kek_version", "referral_data_key", ["kek_version"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_referral_data_key_kek_version", table_name="referral_data_key")
    op.drop_table("referral_data_key")
