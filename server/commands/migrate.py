"""Apply the Alembic migrations over the owner connection."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

import migrations
from server.db import DatabaseUrls, create_engine, ensure_database, sqlalchemy_url

# The `migrations` package, wherever it is installed (the source tree or a wheel).
MIGRATIONS = Path(migrations.__file__).resolve().parent


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("postgresql://x/y")).get_current_head()


def _upgrade(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


async def migrate(urls: DatabaseUrls) -> None:
    await ensure_database(urls)
    config = alembic_config(urls.owner)
    engine = create_engine(urls.owner, pool_size=1)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade, config)
    finally:
        await engine.dispose()


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def current_revision(engine_url: str) -> str | None:
    engine = create_engine(engine_url, pool_size=1)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_current)
    finally:
        await engine.dispose()


def run_migrate(urls: DatabaseUrls) -> None:
    asyncio.run(migrate(urls))
