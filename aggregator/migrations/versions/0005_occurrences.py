"""the occurrences of recurring series accepted through the aggregator

Revision ID: agg0005
Revises: agg0004
Create Date: 2026-12-01 21:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "agg0005"
down_revision = "agg0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agg_occurrence",
        sa.Column("uuid", sa.String(36), primary_key=True),
        sa.Column("series_uuid", sa.String(36), nullable=False),
        sa.Column(
            "offerset_uuid", sa.String(36), sa.ForeignKey("agg_offer_set.uuid"), nullable=False
        ),
        sa.Column("upstream", sa.String(128), nullable=False),
        sa.Column("remote_uuid", sa.String(64), nullable=False),
        sa.Column("remote_url", sa.String(2048), nullable=False),
    )
    op.create_index("ix_agg_occurrence_series", "agg_occurrence", ["series_uuid"])


def downgrade() -> None:
    op.drop_index("ix_agg_occurrence_series", table_name="agg_occurrence")
    op.drop_table("agg_occurrence")
