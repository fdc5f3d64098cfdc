"""pool traits: what a pool's accelerators are (GPU_A100, GPU_MEM_80G), placement-style

A request's accelerator model and memory are matched against them; a pool without any has
none (NULL, as every pool before this revision).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 21:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("resource_pool", schema=None) as batch_op:
        batch_op.add_column(sa.Column("traits", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("resource_pool", schema=None) as batch_op:
        batch_op.drop_column("traits")
