"""The pseudonym key version each referral's pseudonyms were made with, so a rotation knows
what it still has to re-derive and a version is retired only when nothing uses it. NULL:
made before versions were recorded (the first rotation re-derives them).

Revision ID: 0012_pseudonym_key_version
Revises: 0011_audit_tiles
"""

import sqlalchemy as sa
from alembic import op

revision = "0012_pseudonym_key_version"
down_revision = "0011_audit_tiles"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("referral") as batch:
        batch.add_column(sa.Column("pseudonym_key_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("referral") as batch:
        batch.drop_column("pseudonym_key_id")
