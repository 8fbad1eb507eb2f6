"""The audit log's stored tree: the hash of every complete subtree, so that proofs read
O(log n) rows and no process keeps the leaves in memory. Existing entries are backfilled.

Revision ID: 0011_audit_tiles
Revises: 0007_audit_witness
"""

from collections.abc import Iterator

import sqlalchemy as sa
from alembic import op

from services.audit.merkle import stored_nodes
from services.audit.models import install_append_only_triggers

revision = "0011_audit_tiles"
down_revision = "0010_audit_events"
branch_labels = None
depends_on = None

BACKFILL_ROWS = 5000


def upgrade() -> None:
    op.create_table(
        "audit_tree_node",
        sa.Column("node", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("node", name="pk_audit_tree_node"),
    )
    conn = op.get_bind()
    entries = sa.table("audit_entry", sa.column("index", sa.BigInteger), sa.column("leaf_hash"))
    nodes = sa.table("audit_tree_node", sa.column("node", sa.BigInteger), sa.column("hash"))

    def leaf_hashes() -> Iterator[bytes]:
        # Keyset pages: the leaves stream through in O(page) memory, whatever the log's size.
        after = -1
        while True:
            page = conn.execute(
                sa.select(entries.c.index, entries.c.leaf_hash)
                .where(entries.c.index > after)
                .order_by(entries.c.index)
                .limit(BACKFILL_ROWS)
            ).all()
            if not page:
                return
            for index, leaf_hash in page:
                if index != after + 1:
                    raise RuntimeError(f"audit entry {after + 1} is missing: cannot build the tree")
                after = index
                yield bytes.fromhex(leaf_hash)

    batch: list[dict[str, object]] = []
    for key, digest in stored_nodes(leaf_hashes()):
        batch.append({"node": key, "hash": digest})
        if len(batch) >= BACKFILL_ROWS:
            conn.execute(sa.insert(nodes), batch)
            batch = []
    if batch:
        conn.execute(sa.insert(nodes), batch)
    install_append_only_triggers(conn)


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("DROP TRIGGER IF EXISTS audit_tree_node_append_only ON audit_tree_node")
        )
        conn.execute(
            sa.text("DROP TRIGGER IF EXISTS audit_tree_node_no_truncate ON audit_tree_node")
        )
    else:
        for op_name in ("update", "delete"):
            conn.execute(sa.text(f"DROP TRIGGER IF EXISTS audit_tree_node_no_{op_name}"))
    op.drop_table("audit_tree_node")
