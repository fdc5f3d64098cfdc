"""allocations carry the pool generation of their last change, not only of their claim

Every change of a booking's state now bumps its pools' generations and re-tags its
allocations, so a reader that has seen generation g catches up with the rows tagged > g.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 14:10:00
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("allocation", schema=None) as batch_op:
        batch_op.drop_index("ix_allocation_pool_generation")
        batch_op.alter_column("claim_generation", new_column_name="generation")
    # a second batch: SQLite's batch mode cannot index a column renamed in the same batch
    with op.batch_alter_table("allocation", schema=None) as batch_op:
        batch_op.create_index("ix_allocation_pool_generation", ["pool_id", "generation"])


def downgrade() -> None:
    with op.batch_alter_table("allocation", schema=None) as batch_op:
        batch_op.drop_index("ix_allocation_pool_generation")
        batch_op.alter_column("generation", new_column_name="claim_generation")
    with op.batch_alter_table("allocation", schema=None) as batch_op:
        batch_op.create_index("ix_allocation_pool_generation", ["pool_id", "claim_generation"])
