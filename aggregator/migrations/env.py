"""Alembic environment of the aggregator's schema (run through broker_core.db.migrate)."""

from aggregator.tables import metadata
from broker_core.db.migrate import run_migrations

run_migrations(metadata)
