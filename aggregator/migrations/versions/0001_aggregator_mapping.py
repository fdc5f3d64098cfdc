"""the aggregator's offer sets and the upstream sessions behind its offers

Revision ID: agg0001
Revises:
Create Date: 2026-11-21 15:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "agg0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agg_offer_set",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("result", sa.String(length=8), nullable=False),
        sa.Column("messages", sa.JSON(), nullable=False),
        sa.Column("accepted_uuid", sa.String(length=36), nullable=True),
        sa.PrimaryKeyConstraint("uuid"),
    )
    op.create_table(
        "agg_session",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("offerset_uuid", sa.String(length=36), nullable=False),
        sa.Column("upstream", sa.String(length=128), nullable=False),
        sa.Column("remote_uuid", sa.String(length=64), nullable=False),
        sa.Column("remote_url", sa.String(length=2048), nullable=False),
        sa.Column("rank", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["offerset_uuid"], ["agg_offer_set.uuid"]),
        sa.PrimaryKeyConstraint("uuid"),
    )
    op.create_index("ix_agg_session_offerset", "agg_session", ["offerset_uuid"])


def downgrade() -> None:
    op.drop_index("ix_agg_session_offerset", table_name="agg_session")
    op.drop_table("agg_session")
    op.drop_table("agg_offer_set")
