"""Audit entries name the person (a keyed pseudonym), their source node and the client's
network address (IHE BALP / ATNA); messages to justice note when the office first read them.

Revision ID: 0010_audit_events
Revises: 0007_audit_witness
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_audit_events"
down_revision = "0009_unlinkable_purge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: entries written before keep their hashed fields and still verify.
    # A plain ADD COLUMN: rebuilding the table would trip its append-only triggers.
    op.add_column("audit_entry", sa.Column("person_pseudonym", sa.String(length=64), nullable=True))
    op.add_column("audit_entry", sa.Column("source_node", sa.String(length=128), nullable=True))
    op.add_column("audit_entry", sa.Column("client_address", sa.String(length=64), nullable=True))
    op.create_index("ix_audit_entry_person_pseudonym", "audit_entry", ["person_pseudonym"])
    op.add_column(
        "justice_message", sa.Column("received_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    with op.batch_alter_table("justice_message") as batch:
        batch.drop_column("received_at")
    op.drop_index("ix_audit_entry_person_pseudonym", table_name="audit_entry")
    with op.batch_alter_table("audit_entry") as batch:
        batch.drop_column("client_address")
        batch.drop_column("source_node")
        batch.drop_column("person_pseudonym")
