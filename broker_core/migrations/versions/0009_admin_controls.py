"""admin controls: drained pools, maintenance windows, inventory overrides, the audit log

A pool can be drained (who, when, why), and notes when its last maintenance window ends. A
maintenance window is a row of its own whose capacity is booked in the ledger like any claim:
bookings of no session, naming their window (so ``booking.session_uuid`` may now be empty). An
admin's inventory change is kept as an override applied on top of what the platform gives.
Every state change is an audit event.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 18:00:00
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _text(length: int) -> sa.types.TypeEngine:
    return sqlmodel.sql.sqltypes.AutoString(length=length)


def upgrade() -> None:
    with op.batch_alter_table("resource_pool", schema=None) as batch_op:
        batch_op.add_column(sa.Column("drained_at", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("drained_by", _text(255), nullable=True))
        batch_op.add_column(sa.Column("drain_reason", _text(1024), nullable=True))
        batch_op.add_column(sa.Column("maintenance_until", sa.BigInteger(), nullable=True))
    op.create_table(
        "maintenance_window",
        sa.Column("uuid", _text(36), nullable=False),
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("start_at", sa.BigInteger(), nullable=False),
        sa.Column("end_at", sa.BigInteger(), nullable=False),
        sa.Column("amounts", sa.JSON(), nullable=True),
        sa.Column("reason", _text(1024), nullable=False),
        sa.Column("created_by", _text(255), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", sa.BigInteger(), nullable=True),
        sa.Column("deleted_by", _text(255), nullable=True),
        sa.ForeignKeyConstraint(["pool_id"], ["resource_pool.id"]),
        sa.PrimaryKeyConstraint("uuid"),
    )
    op.create_index("ix_maintenance_pool_end", "maintenance_window", ["pool_id", "end_at"])
    with op.batch_alter_table("booking", schema=None) as batch_op:
        batch_op.alter_column("session_uuid", existing_type=_text(36), nullable=True)
        batch_op.add_column(sa.Column("maintenance_uuid", _text(36), nullable=True))
        batch_op.create_index("ix_booking_maintenance_uuid", ["maintenance_uuid"])
        batch_op.create_foreign_key(
            "fk_booking_maintenance_uuid", "maintenance_window", ["maintenance_uuid"], ["uuid"]
        )
    op.create_table(
        "pool_override",
        sa.Column("pool_id", sa.Integer(), nullable=False),
        sa.Column("inventories", sa.JSON(), nullable=False),
        sa.Column("changed_by", _text(255), nullable=False),
        sa.Column("changed_at", sa.BigInteger(), nullable=False),
        sa.Column("reason", _text(1024), nullable=True),
        sa.ForeignKeyConstraint(["pool_id"], ["resource_pool.id"]),
        sa.PrimaryKeyConstraint("pool_id"),
    )
    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("actor", _text(255), nullable=False),
        sa.Column("action", _text(32), nullable=False),
        sa.Column("subject", _text(320), nullable=False),
        sa.Column("detail", _text(2048), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_at", "audit_event", ["at", "id"])
    op.create_index("ix_audit_actor_at", "audit_event", ["actor", "at", "id"])
    op.create_index("ix_audit_subject_at", "audit_event", ["subject", "at", "id"])


def downgrade() -> None:
    for name in ("ix_audit_subject_at", "ix_audit_actor_at", "ix_audit_at"):
        op.drop_index(name, table_name="audit_event")
    op.drop_table("audit_event")
    op.drop_table("pool_override")
    # a maintenance window's bookings have no session: they go with the windows
    op.execute("DELETE FROM allocation WHERE booking_id IN "
               "(SELECT id FROM booking WHERE session_uuid IS NULL)")  # fmt: skip
    op.execute("DELETE FROM booking WHERE session_uuid IS NULL")
    with op.batch_alter_table("booking", schema=None) as batch_op:
        batch_op.drop_constraint("fk_booking_maintenance_uuid", type_="foreignkey")
        batch_op.drop_index("ix_booking_maintenance_uuid")
        batch_op.drop_column("maintenance_uuid")
        batch_op.alter_column("session_uuid", existing_type=_text(36), nullable=False)
    op.drop_index("ix_maintenance_pool_end", table_name="maintenance_window")
    op.drop_table("maintenance_window")
    with op.batch_alter_table("resource_pool", schema=None) as batch_op:
        batch_op.drop_column("maintenance_until")
        batch_op.drop_column("drain_reason")
        batch_op.drop_column("drained_by")
        batch_op.drop_column("drained_at")
