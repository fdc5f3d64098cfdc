"""fair holds: offer sets remember what was asked for; a caller's open offers are indexed

A caller's new request for the same thing replaces its open offer set (``request_key``, a
digest of the request), and every request reads what its caller holds (the index on owner,
phase and expiry), to keep it within the hold limits.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 10:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("offer_set", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("request_key", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )
    op.create_index(
        "ix_session_owner_phase_expires", "execution_session", ["owner", "phase", "expires_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_session_owner_phase_expires", table_name="execution_session")
    with op.batch_alter_table("offer_set", schema=None) as batch_op:
        batch_op.drop_column("request_key")
