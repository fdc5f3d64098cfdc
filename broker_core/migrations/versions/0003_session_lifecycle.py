"""sessions carry the lifecycle engine's schedule, lease and platform state

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21 14:30:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("execution_session", schema=None) as batch_op:
        batch_op.add_column(sa.Column("due_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("lease_owner", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True)
        )
        batch_op.add_column(sa.Column("lease_until", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("platform_state", sa.JSON(), nullable=True))
    with op.batch_alter_table("execution_session", schema=None) as batch_op:
        batch_op.create_index("ix_session_due", ["due_at"])
    # sessions accepted before the engine existed are picked up by it
    op.execute(
        "UPDATE execution_session SET due_at = prepare_at "
        "WHERE phase IN ('ACCEPTED', 'WAITING', 'PREPARING', 'AVAILABLE', 'RUNNING', 'RELEASING')"
    )


def downgrade() -> None:
    with op.batch_alter_table("execution_session", schema=None) as batch_op:
        batch_op.drop_index("ix_session_due")
        batch_op.drop_column("platform_state")
        batch_op.drop_column("lease_until")
        batch_op.drop_column("lease_owner")
        batch_op.drop_column("due_at")
