"""Schema management with alembic, run from code so a node (or an aggregator) can upgrade
itself at start-up. Each schema has its own revisions and its own version table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, create_engine

from .engine import check_reachable


@dataclass(frozen=True)
class Schema:
    location: Path
    version_table: str = "alembic_version"


NODE = Schema(Path(__file__).resolve().parent.parent / "migrations")


def alembic_config(schema: Schema = NODE) -> Config:
    config = Config()
    config.set_main_option("script_location", str(schema.location))
    config.attributes["version_table"] = schema.version_table
    return config


def upgrade(url: str, revision: str = "head", schema: Schema = NODE) -> None:
    check_reachable(url)  # a database that is not there is one line naming it, not a traceback
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config(schema)
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
    finally:
        engine.dispose()


def current_revision(engine: Engine, schema: Schema = NODE) -> str | None:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"version_table": schema.version_table}
        )
        return context.get_current_revision()


def head_revision(schema: Schema = NODE) -> str | None:
    return ScriptDirectory.from_config(alembic_config(schema)).get_current_head()


def run_migrations(metadata: MetaData) -> None:
    """The body of a schema's alembic ``env.py``: migrations only run through ``upgrade``."""
    from alembic import context

    config = context.config
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through broker_core.db.migrate")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=config.attributes.get("version_table", "alembic_version"),
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
