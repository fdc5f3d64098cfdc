"""Schema management with alembic, run from code so a node (or an aggregator) can upgrade
itself at start-up. Each schema has its own revisions and its own version table."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine


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
