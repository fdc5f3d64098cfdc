"""combined offers and their two-phase bookings (one booking across several sites)

Revision ID: agg0004
Revises: agg0003
Create Date: 2026-12-01 21:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "agg0004"
down_revision = "agg0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agg_combined",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("offerset_uuid", sa.String(length=36), nullable=False),
        sa.Column("rank", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("modified_at", sa.BigInteger(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("messages", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["offerset_uuid"], ["agg_offer_set.uuid"]),
        sa.PrimaryKeyConstraint("uuid"),
    )
    op.create_index("ix_agg_combined_offerset", "agg_combined", ["offerset_uuid"])
    op.create_index("ix_agg_combined_state", "agg_combined", ["state"])
    op.create_table(
        "agg_combined_part",
        sa.Column("combined_uuid", sa.String(length=36), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("upstream", sa.String(length=128), nullable=False),
        sa.Column("remote_uuid", sa.String(length=64), nullable=False),
        sa.Column("remote_url", sa.String(length=2048), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(["combined_uuid"], ["agg_combined.uuid"]),
        sa.PrimaryKeyConstraint("combined_uuid", "position"),
    )


def downgrade() -> None:
    op.drop_table("agg_combined_part")
    op.drop_index("ix_agg_combined_state", table_name="agg_combined")
    op.drop_index("ix_agg_combined_offerset", table_name="agg_combined")
    op.drop_table("agg_combined")
