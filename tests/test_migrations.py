"""alembic migrations build exactly the schema the models declare, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine
from sqlmodel import SQLModel

import broker_core.db.tables  # noqa: F401
from broker_core.db import migrate


def test_migrations_match_the_models(database_url):
    migrate.upgrade(database_url)
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
        assert diff == []
        assert migrate.current_revision(engine) == migrate.head_revision()
    finally:
        engine.dispose()


def test_upgrade_is_idempotent(sqlite_url):
    migrate.upgrade(sqlite_url)
    migrate.upgrade(sqlite_url)


def test_readiness_reports_an_unmigrated_database(broker, client_factory, tmp_path):
    from dataclasses import replace

    from broker_core.config import DatabaseConfig
    from broker_core.db.engine import open_database

    ready = client_factory(broker)
    assert ready.get("/health/ready").json() == {"status": "ok", "checks": {"database": "ok"}}
    raw = open_database(DatabaseConfig(url=f"sqlite:///{tmp_path / 'raw.db'}"))
    unmigrated = client_factory(replace(broker, db=raw))
    r = unmigrated.get("/health/ready")
    assert r.status_code == 503 and r.json()["status"] == "unavailable"
    assert "expected 0001" in r.json()["checks"]["database"]
    assert unmigrated.get("/health/live").status_code == 200
    raw.dispose()
