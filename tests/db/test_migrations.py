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
from db.migrate import alembic_config, migrate, upgrade_to_head
from db.models import Base
from db.search import is_search_object, parse_query, search_messages
from tests.conftest import _create_database, _drop_database
from tests.factories import Sessionmaker, make_conversation, make_messages, make_user


def _models_only(name: str | None, *_: Any) -> bool:
    return not is_search_object(name)


def _differences(connection: Connection) -> list[Any]:
    # Search's column, index and FTS5 tables are each database's own (db/search.py).
    opts = {"compare_type": True, "include_name": _models_only}
    context = MigrationContext.configure(connection, opts=opts)
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


async def test_the_search_index_covers_the_rows_written_before_it(
    engine: AsyncEngine, sessionmaker: Sessionmaker
) -> None:
    user = await make_user(sessionmaker)
    conversation = await make_conversation(sessionmaker, owner_id=user)
    await migrate(engine, "0007_trusted_documents", down=True)
    await make_messages(
        sessionmaker,
        conversation_id=conversation,
        count=3,
        content="wombats dig burrow {i}",
        linked=False,
    )
    await migrate(engine, "head")
    await make_messages(sessionmaker, conversation_id=conversation, count=1, content="a wombat")

    async def found(words: str) -> list[str]:
        async with sessionmaker() as session:
            page = await search_messages(
                session,
                query=parse_query(words),
                owner_id=user,
                conversation_id=None,
                role=None,
                first=10,
                after=None,
            )
        return sorted(row.content for row in page.rows)

    assert await found("wombat") == [
        "a wombat",
        "wombats dig burrow 0",
        "wombats dig burrow 1",
        "wombats dig burrow 2",
    ]
    assert await found('"dig burrow 1"') == ["wombats dig burrow 1"]
