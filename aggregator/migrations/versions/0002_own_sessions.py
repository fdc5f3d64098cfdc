"""the aggregator's own sessions (a direct execution's FAILED session no upstream kept)

Revision ID: agg0002
Revises: agg0001
Create Date: 2026-12-02 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "agg0002"
down_revision = "agg0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agg_own_session",
        sa.Column("uuid", sa.String(length=36), nullable=False),
        sa.Column("offerset_uuid", sa.String(length=36), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["offerset_uuid"], ["agg_offer_set.uuid"]),
        sa.PrimaryKeyConstraint("uuid"),
    )


def downgrade() -> None:
    op.drop_table("agg_own_session")
