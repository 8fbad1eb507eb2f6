"""Witness cosignatures of audit tree heads (append-only, like the log itself).

Revision ID: 0007_audit_witness
Revises: 0004_web_session
"""

import sqlalchemy as sa
from alembic import op

from services.audit.witness import install_cosignature_triggers, remove_cosignature_triggers

revision = "0007_audit_witness"
down_revision = "0006_request_path"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_cosignature",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("log_key_id", sa.String(length=128), nullable=False),
        sa.Column("witness_key_id", sa.String(length=128), nullable=False),
        sa.Column("root_hash", sa.String(length=64), nullable=False),
        sa.Column("cosigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tree_size", "log_key_id", "witness_key_id", name="pk_audit_cosignature"
        ),
    )
    install_cosignature_triggers(op.get_bind())


def downgrade() -> None:
    remove_cosignature_triggers(op.get_bind())
    op.drop_table("audit_cosignature")
