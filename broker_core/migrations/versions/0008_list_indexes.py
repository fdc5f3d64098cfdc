"""lists: indexes in the order of GET /sessions and GET /offersets

Sessions are listed by booked start then uuid, offer sets by creation then uuid, a caller's
own (owner first) or, for admins, everyone's; each list walks its index in that order and
stops after a page (keyset pagination).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 17:30:00
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

INDEXES = [
    ("ix_session_owner_start", "execution_session", ["owner", "start_at", "uuid"]),
    ("ix_session_start", "execution_session", ["start_at", "uuid"]),
    ("ix_offer_set_owner_created", "offer_set", ["owner", "created_at", "uuid"]),
    ("ix_offer_set_created", "offer_set", ["created_at", "uuid"]),
]


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
