"""notification outbox

The notifications of session events (webhooks, e-mail), one row per event and channel, written
in the transaction of the change that causes the event and delivered by a leasing worker.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 21:30:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def _text(length: int) -> sa.types.TypeEngine:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    op.create_table(
        "notification_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", _text(40), nullable=False),
        sa.Column("session_uuid", _text(36), nullable=False),
        sa.Column("event", _text(32), nullable=False),
        sa.Column("channel", _text(8), nullable=False),
        sa.Column("state", _text(12), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("scheduled_at", sa.BigInteger(), nullable=False),
        sa.Column("due_at", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", _text(1024), nullable=True),
        sa.Column("lease_owner", _text(128), nullable=True),
        sa.Column("lease_until", sa.BigInteger(), nullable=True),
        sa.Column("delivered_at", sa.BigInteger(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
    )
    op.create_index("ix_outbox_due", "notification_outbox", ["state", "due_at"])
    op.create_index(
        "ix_outbox_session_order",
        "notification_outbox",
        ["session_uuid", "channel", "state", "scheduled_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_session_order", table_name="notification_outbox")
    op.drop_index("ix_outbox_due", table_name="notification_outbox")
    op.drop_table("notification_outbox")
