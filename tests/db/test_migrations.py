"""The migration history and the models describe the same database, on both backends."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import make_engine
from db.migrate import alembic_config, upgrade_to_head
from db.models import Base
from tests.conftest import _create_database, _drop_database


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    with warnings.catch_warnings():
        # SQLite's reflection cannot read expression indexes; they are checked by name below.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
        warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression")
        return list(compare_metadata(context, Base.metadata))


def _index_names(connection: Connection) -> set[str]:
    if connection.dialect.name == "sqlite":
        query = "SELECT name FROM sqlite_master WHERE type = 'index'"
    else:
        query = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
    return {name for (name,) in connection.execute(text(query))}


async def test_the_migrated_schema_matches_the_models(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        differences = await connection.run_sync(_differences)
    assert differences == []


async def test_every_access_path_has_its_index(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        names = await connection.run_sync(_index_names)
    assert {
        "uq_users_username_key",
        "uq_users_email_key",
        "ix_conversations_user_updated",
        "ix_messages_conversation_created",
    } <= names


@pytest.mark.postgres_only
async def test_hosts_migrating_one_new_database_at_once_all_succeed(database_url: str) -> None:
    # Several hosts started together each run `serve`, which migrates first: they must wait
    # for one another, not race to create the same tables.
    admin_url = make_url(database_url)
    name = f"chatql_race_{uuid.uuid4().hex[:12]}"
    await _create_database(database_url, name)
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    engines = [make_engine(url) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(upgrade_to_head(engine) for engine in engines), return_exceptions=True
        )
        assert results == [None, None, None, None]
        async with engines[0].connect() as connection:
            versions = await connection.execute(text("SELECT version_num FROM alembic_version"))
            heads = [row[0] for row in versions]
            differences = await connection.run_sync(_differences)
    finally:
        for engine in engines:
            await engine.dispose()
        await _drop_database(database_url, name)
    assert heads == [ScriptDirectory.from_config(alembic_config()).get_current_head()]
    assert differences == []
