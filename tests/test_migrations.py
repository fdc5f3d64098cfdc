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


def test_upgrades_keep_the_bookings_already_made(database_url):
    """A node upgraded in place keeps its claims and what generation they were made at."""
    migrate.upgrade(database_url, "0001")
    engine = create_engine(database_url)
    try:
        with engine.begin() as c:
            c.exec_driver_sql(
                "INSERT INTO resource_pool (id, name, platform, generation, longest_booking, "
                "enabled, updated_at) VALUES (1, 'sim/main', 'sim', 7, 3600, true, 0)"
            )
            c.exec_driver_sql(
                "INSERT INTO offer_set (uuid, result, created_at, expires_at, document) "
                "VALUES ('os', 'YES', 0, 10, '{}')"
            )
            c.exec_driver_sql(
                "INSERT INTO execution_session (uuid, offerset_uuid, phase, platform, created_at, "
                "modified_at, expires_at, prepare_at, start_at, end_at, generation, document) "
                "VALUES ('s', 'os', 'ACCEPTED', 'sim', 0, 0, 10, 100, 100, 3700, 1, '{}')"
            )
            c.exec_driver_sql(
                "INSERT INTO booking (id, session_uuid, offerset_uuid, state, start_at, end_at, "
                "created_at, modified_at) VALUES (1, 's', 'os', 'CONFIRMED', 100, 3700, 0, 0)"
            )
            c.exec_driver_sql(
                "INSERT INTO allocation (id, booking_id, pool_id, resource_class, amount, "
                "claim_generation) VALUES (1, 1, 1, 'cores', 4, 7)"
            )
        migrate.upgrade(database_url)
        with engine.connect() as c:
            rows = c.exec_driver_sql(
                "SELECT pool_id, resource_class, amount, generation FROM allocation"
            ).all()
        assert [tuple(r) for r in rows] == [(1, "cores", 4, 7)]
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
    assert f"expected {migrate.head_revision()}" in r.json()["checks"]["database"]
    assert unmigrated.get("/health/live").status_code == 200
    raw.dispose()
