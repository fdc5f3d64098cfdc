"""Alembic environment of the node's schema (run through broker_core.db.migrate)."""

from sqlmodel import SQLModel

import broker_core.db.tables  # noqa: F401  (registers the tables on the metadata)
from broker_core.db.migrate import run_migrations

run_migrations(SQLModel.metadata)
