"""each combined part's offer set on its node, so the merged GET /offersets shows the combined
offer set in place of its parts' (the nodes list them to their owner only)

Revision ID: agg0006
Revises: agg0005
Create Date: 2026-12-02 01:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = "agg0006"
down_revision = "agg0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("agg_combined_part", sa.Column("remote_offerset", sa.String(64), nullable=True))
    op.create_index("ix_agg_combined_part_offerset", "agg_combined_part",
                    ["remote_offerset", "upstream"])  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_agg_combined_part_offerset", table_name="agg_combined_part")
    with op.batch_alter_table("agg_combined_part") as batch:
        batch.drop_column("remote_offerset")
