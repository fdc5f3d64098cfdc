"""sessions name the project they are charged to; ended sessions record what they used

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 16:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("execution_session", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("project", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True)
        )
        batch_op.create_index("ix_execution_session_project", ["project"])
    op.create_table(
        "usage_record",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_uuid", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
        sa.Column("project", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("owner", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
        sa.Column("platform", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("resource_class", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("start_at", sa.BigInteger(), nullable=False),
        sa.Column("end_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_uuid", "resource_class"),
    )
    op.create_index("ix_usage_project_end", "usage_record", ["project", "end_at"])
    op.create_index("ix_usage_owner_end", "usage_record", ["owner", "end_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_owner_end", table_name="usage_record")
    op.drop_index("ix_usage_project_end", table_name="usage_record")
    op.drop_table("usage_record")
    with op.batch_alter_table("execution_session", schema=None) as batch_op:
        batch_op.drop_index("ix_execution_session_project")
        batch_op.drop_column("project")
