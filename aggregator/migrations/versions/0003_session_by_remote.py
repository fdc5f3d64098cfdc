"""an upstream's session by its own uuid: GET /sessions shows the aggregator's uuid for it

Revision ID: agg0003
Revises: agg0002
Create Date: 2026-12-01 17:45:00
"""

from alembic import op

revision = "agg0003"
down_revision = "agg0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_agg_session_remote", "agg_session", ["remote_uuid", "upstream"])


def downgrade() -> None:
    op.drop_index("ix_agg_session_remote", table_name="agg_session")
