"""Tamper-evident audit log: Merkle leaves, signed tree heads, append-only triggers.

Revision ID: 0002_audit
Revises: 0001_core
"""

import sqlalchemy as sa
from alembic import op

from services.audit.models import install_append_only_triggers, remove_append_only_triggers

revision = "0002_audit"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_entry",
        # The leaf index is assigned by the log, never by the database.
        sa.Column("index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("actor_subject", sa.String(length=255), nullable=False),
        sa.Column("actor_organisation", sa.String(length=255), nullable=False),
        sa.Column("actor_role", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=128), nullable=False),
        sa.Column("referral_pseudonym", sa.String(length=64), nullable=True),
        sa.Column("categories", sa.JSON(), nullable=False),
        sa.Column("decision", sa.String(length=8), nullable=True),
        sa.Column("policy_ids", sa.JSON(), nullable=False),
        sa.Column("purpose_of_use", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("trace_id", sa.String(length=128), nullable=True),
        sa.Column("leaf_hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("index", name="pk_audit_entry"),
        sa.UniqueConstraint("id", name="uq_audit_entry_id"),
    )
    op.create_index("ix_audit_entry_referral_pseudonym", "audit_entry", ["referral_pseudonym"])
    op.create_index("ix_audit_entry_actor_subject", "audit_entry", ["actor_subject"])
    op.create_index("ix_audit_entry_recorded_at", "audit_entry", ["recorded_at"])
    op.create_table(
        "audit_tree_head",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("key_id", sa.String(length=128), nullable=False),
        sa.Column("root_hash", sa.String(length=64), nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("tree_size", "key_id", name="pk_audit_tree_head"),
    )
    install_append_only_triggers(op.get_bind())


def downgrade() -> None:
    remove_append_only_triggers(op.get_bind())
    op.drop_table("audit_tree_head")
    op.drop_index("ix_audit_entry_recorded_at", table_name="audit_entry")
    op.drop_index("ix_audit_entry_actor_subject", table_name="audit_entry")
    op.drop_index("ix_audit_entry_referral_pseudonym", table_name="audit_entry")
    op.drop_table("audit_entry")
