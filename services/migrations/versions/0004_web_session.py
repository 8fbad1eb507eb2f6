"""Server-side web sessions: the browser's cookie holds only a random secret (a cookie with
the tokens in it outgrew the 4 KiB browsers store).

Revision ID: 0004_web_session
Revises: 0003_crypto
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004_web_session"
down_revision = "0003_crypto"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_session",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_web_session_expires_at", "web_session", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_web_session_expires_at", table_name="web_session")
    op.drop_table("web_session")
