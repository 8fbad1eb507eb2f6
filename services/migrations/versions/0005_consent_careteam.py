"""How a consent was signed (capacity code, date, method, right to revoke explained) and the
care workers assigned to a case (need to know).

Revision ID: 0005_consent_careteam
Revises: 0004_web_session
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005_consent_careteam"
down_revision = "0004_web_session"
branch_labels = None
depends_on = None

_STR = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table("consent") as batch:
        batch.add_column(
            sa.Column(
                "right_to_revoke_explained",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
            )
        )
        batch.add_column(sa.Column("signed_by", _STR(length=32), nullable=True))
        batch.add_column(sa.Column("signer_capacity", _STR(length=32), nullable=True))
        batch.add_column(sa.Column("signed_on", sa.Date(), nullable=True))
        batch.add_column(sa.Column("signing_method", _STR(length=32), nullable=True))
    # the default only fills the rows that existed before; the model always sets it
    with op.batch_alter_table("consent") as batch:
        batch.alter_column("right_to_revoke_explained", server_default=None)
    op.create_table(
        "care_team_assignment",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("referral_id", sa.Uuid(), nullable=False),
        sa.Column("organisation", _STR(length=64), nullable=False),
        sa.Column("subject", _STR(length=200), nullable=False),
        sa.Column("assigned_by", _STR(length=200), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_by", _STR(length=200), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["referral_id"], ["referral.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_care_team_assignment_referral_id",
        "care_team_assignment",
        ["referral_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_care_team_assignment_referral_id", table_name="care_team_assignment")
    op.drop_table("care_team_assignment")
    with op.batch_alter_table("consent") as batch:
        batch.drop_column("signing_method")
        batch.drop_column("signed_on")
        batch.drop_column("signer_capacity")
        batch.drop_column("signed_by")
        batch.drop_column("right_to_revoke_explained")
