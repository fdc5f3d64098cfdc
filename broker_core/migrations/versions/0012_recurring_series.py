"""recurring series: an occurrence's session names its series

A recurring request (``schedule.requested.recurrence``) is offered as one session per
alternative, the series, which books nothing itself, and one session per occurrence, each with
its own booking, naming its series in ``series_uuid``.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 21:30:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("execution_session", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("series_uuid", sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True)
        )
        batch_op.create_index("ix_execution_session_series_uuid", ["series_uuid"])


def downgrade() -> None:
    with op.batch_alter_table("execution_session", schema=None) as batch_op:
        batch_op.drop_index("ix_execution_session_series_uuid")
        batch_op.drop_column("series_uuid")
